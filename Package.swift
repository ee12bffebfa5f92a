// swift-tools-version:6.0
import PackageDescription

// Python is not linked at build time: `CPython` loads the libpython it is pointed at (or the newest
// CPython >= 3.12 it finds) when the runtime starts. That keeps `swift build` free of any Python
// setup, lets `--python` pick a virtual environment of another version at run time, and keeps the
// library usable as a dependency without unsafe flags.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Subinterpreters",
    products: [
        .library(name: "Subinterpreters", targets: ["Subinterpreters"]),
        .library(name: "SubinterpServer", targets: ["SubinterpServer"]),
        .executable(name: "subinterp", targets: ["subinterp"]),
        // The extension module of the Python package (python/, pyproject.toml): its build backend
        // builds this in release with the Swift runtime linked in and installs it as
        // subinterp/_core.*.so. Only the library and the executor go in, not the server.
        .library(name: "SubinterpPython", type: .dynamic, targets: ["SubinterpPython"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/attaswift/BigInt", from: "6.0.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        .target(
            name: "CPython",
            linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread")]
        ),
        .target(
            name: "Subinterpreters",
            dependencies: [
                "CPython",
                .product(name: "BigInt", package: "BigInt"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "SubinterpServer",
            dependencies: [
                "Subinterpreters",
                "CPython",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "SubinterpPython",
            dependencies: ["Subinterpreters", "CPython"],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "subinterp",
            dependencies: [
                "Subinterpreters",
                "SubinterpServer",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "SubinterpretersTests",
            dependencies: [
                "Subinterpreters", "SubinterpServer", "subinterp", .product(name: "BigInt", package: "BigInt"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
    ]
)
