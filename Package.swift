// swift-tools-version: 6.2
// SwiftRPC: a high-performance RPC framework for Swift on Linux.
// Layers, each depending only on the one below: CRPCCore (C) -> SwiftRPC -> rpcbench.
import PackageDescription

// Every target of ours builds without warnings: a new one fails the build (and so CI),
// in debug and release alike. Dependencies' warnings are theirs and stay warnings.
let noWarnings: [SwiftSetting] = [.treatAllWarnings(as: .error)]
let cNoWarnings: [CSetting] = [.unsafeFlags(["-Wall", "-Wextra"]), .treatAllWarnings(as: .error)]

let package = Package(
    name: "SwiftRPC",
    products: [
        .library(name: "SwiftRPC", targets: ["SwiftRPC"]),
        .library(name: "CRPCCore", targets: ["CRPCCore"]),
        .library(name: "SwiftRPCDiscovery", targets: ["SwiftRPCDiscovery"]),
        .executable(name: "rpcbench", targets: ["rpcbench"]),
        .executable(name: "crpc-cbench", targets: ["crpc-cbench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        // Observability: metrics and distributed tracing are recorded only when the
        // application bootstraps a backend (see Sources/SwiftRPC/Observability).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // Only for `swift package generate-documentation` (scripts/docs.sh).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The C core: io_uring loops, sockets, framing, MessagePack envelope. `include/crpc.h`
        // (reached through the Sources/CRPCCore/include symlink) is its only public header.
        .target(
            name: "CRPCCore",
            path: "Sources/CRPCCore",
            publicHeadersPath: "include",
            // Sources/CMsgPack/msgpack_rules.h: the MessagePack rules it shares with the coder.
            cSettings: [.unsafeFlags(["-std=gnu11", "-O2"]), .headerSearchPath("../CMsgPack")] + cNoWarnings,
            linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("msgpackc"), .linkedLibrary("ssl"), .linkedLibrary("crypto"), .linkedLibrary("pthread")]
        ),
        // msgpack-c for the Swift Codable coder.
        .systemLibrary(
            name: "CMsgPack",
            path: "Sources/CMsgPack",
            pkgConfig: "msgpack",
            providers: [.apt(["libmsgpack-dev"])]
        ),
        // The MessagePack Codable coder: the only Swift target besides SwiftRPC's Core/ that
        // touches a C module (msgpack-c), and nothing of the RPC layer.
        .target(
            name: "SwiftRPCMessagePack",
            dependencies: ["CMsgPack"],
            // Every call encodes its params and decodes its reply here: cross-module
            // optimization lets SwiftRPC inline and specialize the coder as it did when the
            // coder was part of it (without it the Swift client's W2 rate fell ~15%).
            swiftSettings: [.unsafeFlags(["-cross-module-optimization"])] + noWarnings
        ),
        .target(
            name: "SwiftRPC",
            dependencies: [
                "CRPCCore", "SwiftRPCMessagePack",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: noWarnings
        ),
        // Beyond one server: discovery (etcd or a static list), selectors, fail modes,
        // broadcast and pooling. The HTTP client stays out of the core SwiftRPC target.
        .target(
            name: "SwiftRPCDiscovery",
            dependencies: [
                "SwiftRPC",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: noWarnings
        ),
        // The reference services (Bench.Echo, Arith.*), served by `rpcbench serve`.
        .target(
            name: "RPCExamples",
            dependencies: ["SwiftRPC"],
            swiftSettings: noWarnings
        ),
        .executableTarget(
            name: "rpcbench",
            dependencies: [
                "SwiftRPC", "RPCExamples", "SwiftRPCDiscovery",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            // The load generator's per-call state (call slots, the tally) lives in classes
            // confined to the client loop's thread. Dynamic exclusivity checks on it cost ~2%
            // of the client's CPU on W2: they measured the harness, not SwiftRPC, which keeps
            // them on like any user's code.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])] + noWarnings
        ),
        // The C-level load generator and server: measures the core alone through crpc.h.
        .executableTarget(
            name: "crpc-cbench",
            dependencies: ["CRPCCore"],
            path: "Sources/crpc-cbench",
            cSettings: [.unsafeFlags(["-std=gnu11", "-O2"])] + cNoWarnings,
            linkerSettings: [.linkedLibrary("m")]
        ),
        .testTarget(
            name: "SwiftRPCTests",
            dependencies: [
                "SwiftRPC", "SwiftRPCMessagePack", "RPCExamples", "CMsgPack",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: noWarnings
        ),
        .testTarget(
            name: "SwiftRPCDiscoveryTests",
            dependencies: ["SwiftRPC", "SwiftRPCDiscovery", "RPCExamples"],
            swiftSettings: noWarnings
        ),
    ],
    swiftLanguageModes: [.v6]
)
