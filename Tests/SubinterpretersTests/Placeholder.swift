import Testing
@testable import Subinterpreters

@Test func smoke() async throws {
    let i = try await Interpreter()
    try await i.exec("x = 21\nprint('hello from', __name__)")
    let v = try await i.eval("x * 2")
    #expect(v == 42)
    let r = try await i.call("math.factorial", 30)
    print(r)
    await i.close()
}
