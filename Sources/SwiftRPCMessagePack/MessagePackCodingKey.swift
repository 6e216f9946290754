// MessagePackKey: the coding key the MessagePack coder makes up itself, for array indices in
// coding paths, the "super" key of superEncoder()/superDecoder(), and Int-keyed dictionaries.
//
// Coding paths are built lazily. The encoder and decoder states keep one path array for the value
// being coded; a container remembers only how long that array was when it was made (`depth`) plus
// any keys of its own (`extra`, non-empty only for nested containers and super coders), so the
// hot path never copies a path. `codingPath` is assembled only when asked for, usually for an error.

/// A coding key made by the MessagePack coder: an array index, "super", or an integer map key.
/// Index and integer keys build their `stringValue` only when asked (for an error message), so
/// making one on the hot path costs nothing.
struct MessagePackKey: CodingKey {
    private enum Storage {
        case string(String)
        case int(Int)
        case index(Int)
    }

    private let storage: Storage

    init(stringValue: String) { storage = .string(stringValue) }

    init(intValue: Int) { storage = .int(intValue) }

    /// The key of element `index` of an array; reads "Index 3" like the standard library's coders.
    init(index: Int) { storage = .index(index) }

    var stringValue: String {
        switch storage {
        case .string(let string): string
        case .int(let int): String(int)
        case .index(let index): "Index \(index)"
        }
    }

    var intValue: Int? {
        switch storage {
        case .string: nil
        case .int(let int), .index(let int): int
        }
    }

    /// The key `superEncoder()` and `superDecoder()` use.
    static let superKey = MessagePackKey(stringValue: "super")
}

/// Identities of generic types the coder special-cases. Spelling `[UInt8].self` at a use site
/// looks the metadata up in the runtime's cache every time; comparing these is one instruction.
enum MessagePackTypeID {
    static let bytes = ObjectIdentifier([UInt8].self)
}

/// The coding path of a container: the first `depth` keys of the coder's current path, then
/// `extra`, then optionally `key`.
@inline(__always)
func messagePackCodingPath(
    _ base: [any CodingKey], depth: Int, extra: [any CodingKey], appending key: (any CodingKey)? = nil
) -> [any CodingKey] {
    var path = Array(base.prefix(depth))
    path.append(contentsOf: extra)
    if let key { path.append(key) }
    return path
}

/// Reinterprets `value` as `U` after the caller has checked that `T` and `U` are the same type.
/// Avoids a dynamic cast on the coder's per-value fast paths.
@inline(__always)
func messagePackIdentityCast<T, U>(_ value: T, to type: U.Type) -> U {
    unsafeBitCast(value, to: U.self)
}

/// `messagePackIdentityCast` for a value the caller owns and gives up: it is moved out as
/// `U`, and `placeholder` (an empty value, which holds no storage) takes its place. A cast
/// would copy it, a retain and a release of its storage on every decoded reply.
@inline(__always)
func messagePackMoveCast<T, U>(_ value: inout T, to type: U.Type, leaving placeholder: T) -> U {
    withUnsafeMutablePointer(to: &value) { pointer in
        let moved = UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: U.self).move()
        pointer.initialize(to: placeholder)
        return moved
    }
}
