// The MessagePack `Codable` coder is its own target (SwiftRPCMessagePack, which alone imports
// msgpack-c's C module); `import SwiftRPC` brings its public API (MessagePackEncoder,
// MessagePackDecoder) along, as before the split.
@_exported import SwiftRPCMessagePack
