import Dispatch

/// Runs blocking work (a connect with a timeout) off Swift concurrency's cooperative
/// threads, which must never block.
enum BlockingWork {
    private static let queue = DispatchQueue(label: "SwiftRPC.blocking", attributes: .concurrent)

    static func run(_ work: @escaping @Sendable () -> Void) {
        queue.async(execute: work)
    }
}
