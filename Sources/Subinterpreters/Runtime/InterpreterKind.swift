/// Where an `Interpreter` (or a pool's worker) runs its Python code.
public enum InterpreterKind: String, Sendable, Hashable, Codable {
    /// A fresh isolated sub-interpreter with its own GIL (the default): parallel with every
    /// other one, but extension modules without multi-phase init and per-interpreter GIL
    /// support refuse to load in it.
    case isolated
    /// The process's main interpreter, entered from a thread of its own: every extension module
    /// loads (numpy, orjson, pydantic-core, …), as in a plain `python` process. It shares the
    /// main interpreter's GIL, modules and globals with every other worker of this kind in the
    /// process, so one such worker per process is the useful number (a worker process of
    /// `subinterp serve --isolation processes`). Its code can be interrupted like an isolated
    /// interpreter's; closing it ends its thread, not the main interpreter.
    case main
}
