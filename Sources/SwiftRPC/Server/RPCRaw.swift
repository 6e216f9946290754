/// A request as a raw handler sees it. The params bytes are valid only while the handler
/// runs.
///
/// ```swift
/// try server.registerRawInline("Bench.Echo") { request in
///     guard let arg = request.argument(0) else {
///         throw RPCError(.invalidArgument, "Bench.Echo takes one argument")
///     }
///     return .echo(arg)   // sent back straight from the request's bytes
/// }
/// ```
public struct RPCRawRequest {
    /// The encoded MessagePack params array.
    public let params: UnsafeRawBufferPointer
    /// The call's context.
    public let context: RPCContext

    /// The byte range within ``params`` of argument `index`, or `nil` when there is none.
    public func argument(_ index: Int) -> Range<Int>? {
        CoreMessagePack.arrayElement(index, of: params)
    }
}

/// A raw handler's answer.
public enum RPCRawReply: Sendable {
    /// Send back these bytes of the request's params (one whole MessagePack value).
    case echo(Range<Int>)
    /// Send these bytes: exactly one encoded MessagePack value.
    case bytes([UInt8])
}
