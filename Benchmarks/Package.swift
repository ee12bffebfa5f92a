// swift-tools-version:6.0
import PackageDescription

// Benchmarks live in their own package so `swift test` at the root never builds or runs them.
let package = Package(
    name: "SubinterpretersBenchmarks",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .executableTarget(
            name: "subinterp-bench",
            dependencies: [
                .product(name: "Subinterpreters", package: "main"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        )
    ]
)
