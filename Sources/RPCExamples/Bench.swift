import Dispatch
import SwiftRPC

/// The benchmark service: `Bench.Echo` returns its single argument unchanged, whatever
/// MessagePack value it is (`bin` for bytes), straight from the request's bytes.
///
/// ```swift
/// let echoed = try await client.call(Bench.echo, [1, 2, 3] as [UInt8])
/// ```
public enum Bench {
    /// Echo of a byte payload (any argument type echoes; this descriptor types it as bytes).
    public static let echo = RPCMethod<[UInt8], [UInt8]>("Bench.Echo")
    /// Sleeps the given milliseconds, then returns them; cancelling the call (or its
    /// deadline passing) interrupts the sleep.
    public static let sleep = RPCMethod<Int, Int>("Bench.Sleep")

    /// Server stream, params `[count, size]`: `count` elements, each a `bin` of `size` bytes
    /// whose first 4 bytes (when `size >= 4`) are the element's index, big-endian, the rest
    /// zero; then the end, with result nil.
    public static let stream = RPCServerStreamMethod<[Int], [UInt8]>("Bench.Stream")
    /// Client stream, params `[]`: takes `bin` elements; after the half-close, ends with
    /// `{"count": elements, "bytes": total bytes}`.
    public static let upload = RPCClientStreamMethod<RPCNoArguments, [UInt8], UploadSummary>("Bench.Upload")
    /// Bidirectional, params `[]`: sends back each element it receives (any MessagePack
    /// value), in order; after the half-close, once every echo is sent, ends with nil.
    public static let echoStream = RPCBidiStreamMethod<RPCNoArguments, RPCEncodedValue, RPCEncodedValue>("Bench.EchoStream")

    /// What `Bench.Upload` replies.
    public struct UploadSummary: Codable, Sendable, Hashable {
        /// Elements received.
        public var count: Int
        /// Their bytes, summed.
        public var bytes: Int

        public init(count: Int, bytes: Int) {
            self.count = count
            self.bytes = bytes
        }
    }

    /// The largest `size` `Bench.Stream` accepts (an element must fit a default frame).
    public static let maxStreamElementSize = 4 << 20 - 64

    /// Registers the three reference streams on `server`. They never block, so they run on
    /// their connections' loops (`onLoop`), as `Bench.Echo` runs inline.
    public static func registerStreams(on server: RPCServer) throws(RPCError) {
        try server.register(stream, onLoop: true) { args, writer, _ in
            guard args.count >= 2, args[0] >= 0, args[1] >= 0, args[1] <= maxStreamElementSize else {
                throw RPCError(.invalidArgument, "Bench.Stream takes [count >= 0, 0 <= size <= \(maxStreamElementSize)]")
            }
            let (count, size) = (args[0], args[1])
            var element = [UInt8](repeating: 0, count: size)
            for index in 0..<count {
                if size >= 4 {
                    let i = UInt32(truncatingIfNeeded: index)
                    element[0] = UInt8(i >> 24)
                    element[1] = UInt8(i >> 16 & 0xff)
                    element[2] = UInt8(i >> 8 & 0xff)
                    element[3] = UInt8(i & 0xff)
                }
                try await writer.write(element)
            }
        }
        try server.register(upload, onLoop: true) { _, elements, _ in
            var summary = UploadSummary(count: 0, bytes: 0)
            for try await element in elements {
                summary.count += 1
                summary.bytes += element.count
            }
            return summary
        }
        try server.register(echoStream, onLoop: true) { _, elements, writer, _ in
            for try await element in elements { try await writer.write(element) }
        }
    }
}

/// Serves ``Bench``.
public struct BenchService: RPCService {
    public init() {}

    public func register(into methods: inout RPCMethodTable) {
        methods.addRawInline("Bench.Echo") { request in
            guard let argument = request.argument(0) else {
                throw RPCError(.invalidArgument, "Bench.Echo takes exactly one argument")
            }
            return .echo(argument)
        }
        methods.add(Bench.sleep) { milliseconds, _ in
            guard milliseconds >= 0 else { throw RPCError(.invalidArgument, "Bench.Sleep takes milliseconds >= 0") }
            try await CancellableSleep.sleep(milliseconds: milliseconds) // throws when cancelled
            return milliseconds
        }
    }
}

/// Registers every reference service (`Arith.*`, `Bench.*`) on `server`.
public func registerReferenceServices(on server: RPCServer) throws(RPCError) {
    try server.register(ArithService())
    try server.register(BenchService())
    try Bench.registerStreams(on: server)
}

/// A sleep that gives everything back the moment it is cancelled.
///
/// Not `Task.sleep`: in the Swift 6.3 runtime a cancelled `Task.sleep` resumes at once but
/// leaves its timer job (about 700 bytes) queued until the deadline it would have slept to,
/// so 160,000 `Bench.Sleep(60000)` handlers cancelled together (their connections closed)
/// held 116 MB for a minute. A dispatch timer is cancelled, and freed, with the sleep.
enum CancellableSleep {
    private static let queue = DispatchQueue(label: "Bench.Sleep")

    /// One sleep: resumed once, by its timer or by its cancellation, whichever comes first.
    /// The timer is active before the sleep is published, so whichever ends it may cancel
    /// it (libdispatch traps on releasing a source that was never activated).
    /// `@unchecked Sendable`: `state` is only touched under its lock.
    private final class Sleeper: @unchecked Sendable {
        enum State {
            case starting
            case sleeping(UnsafeContinuation<Void, any Error>)
            case ended(cancelled: Bool)  // before the continuation was handed over, or after
        }
        let state = Locked(State.starting)
        let timer = DispatchSource.makeTimerSource(queue: CancellableSleep.queue)

        func start(_ continuation: UnsafeContinuation<Void, any Error>, milliseconds: Int) {
            timer.setEventHandler { [self] in finish(cancelled: false) }
            timer.schedule(deadline: .now() + .milliseconds(milliseconds))
            timer.activate()
            let endedEarly = state.withLock { state -> Bool? in
                guard case .ended(let cancelled) = state else {
                    state = .sleeping(continuation)
                    return nil
                }
                return cancelled
            }
            switch endedEarly {
            case nil: return
            case true?: continuation.resume(throwing: CancellationError())
            case false?: continuation.resume()
            }
        }

        func finish(cancelled: Bool) {
            let continuation = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
                switch state {
                case .starting:
                    state = .ended(cancelled: cancelled)
                    return nil
                case .sleeping(let continuation):
                    state = .ended(cancelled: cancelled)
                    return continuation
                case .ended:
                    return nil
                }
            }
            timer.cancel()
            if cancelled { continuation?.resume(throwing: CancellationError()) } else { continuation?.resume() }
        }
    }

    static func sleep(milliseconds: Int) async throws {
        guard milliseconds > 0 else { return try Task.checkCancellation() }
        let sleeper = Sleeper()
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { sleeper.start($0, milliseconds: milliseconds) }
        } onCancel: {
            sleeper.finish(cancelled: true)
        }
    }
}
