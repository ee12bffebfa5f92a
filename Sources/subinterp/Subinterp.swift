import ArgumentParser

@main
struct Subinterp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run Python in parallel on isolated sub-interpreters.")
}
