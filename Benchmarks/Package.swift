// swift-tools-version:6.0
import PackageDescription

// Benchmarks live in their own package so `swift test` at the root never builds or runs them.
// The root package is named explicitly: a path dependency is otherwise known by the name of the
// folder it was cloned into. CI (.ci/run) builds this package so that cannot break unnoticed.
let package = Package(
    name: "SubinterpretersBenchmarks",
    dependencies: [
        .package(name: "Subinterpreters", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .executableTarget(
            name: "subinterp-bench",
            dependencies: [
                .product(name: "Subinterpreters", package: "Subinterpreters"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        )
    ]
)
