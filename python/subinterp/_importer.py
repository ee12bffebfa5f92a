"""Makes the `subinterp` package importable in an interpreter the host creates.

Run by the host (package.c) in each new interpreter, after it has put `subinterp._core` into
`sys.modules`. In a plain Python process the package is imported from `directory`, where the
running extension module lives; in the `subinterp` command there is no such directory, and the
package's sources come from the binary instead.
"""

import sys


def install(source, core):
    """`source`: the package's directory (str), or {module name: (source, is_package)}.

    Once per interpreter: the host's workers of kind main all enter the process's main
    interpreter and run this each time, and one finder serves them all."""
    if any(type(finder).__module__ == __name__ for finder in sys.meta_path):
        return
    if isinstance(source, str):
        finder = _DirectoryFinder(source)
    else:
        finder = _BuiltinSourceFinder(source, core)
    sys.meta_path.insert(0, finder)


class _DirectoryFinder:
    """Finds `subinterp` in the directory of the running extension, whatever `sys.path` says, so
    that every interpreter imports the same files (submodules follow the package's __path__)."""

    def __init__(self, directory):
        self._parent = directory.rstrip("/").rpartition("/")[0] or "/"

    def find_spec(self, name, path=None, target=None):
        if name != "subinterp":
            return None
        return sys.modules["_frozen_importlib_external"].PathFinder.find_spec(name, [self._parent])


class _BuiltinSourceFinder:
    """Serves the package's modules from the sources built into the host. Each module is
    compiled once per process: later interpreters load the marshalled code."""

    def __init__(self, sources, core):
        self._sources = sources
        self._core = core

    def find_spec(self, name, path=None, target=None):
        entry = self._sources.get(name)
        if entry is None:
            return None
        is_package = entry[1]
        spec = sys.modules["_frozen_importlib"].ModuleSpec(
            name, self, origin=self._filename(name), is_package=is_package)
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self._code(module.__name__), module.__dict__)

    def get_source(self, name):
        return self._sources[name][0].decode("utf-8")

    def _filename(self, name):
        # A relative name without angle brackets: tracebacks then show the source lines, which
        # `linecache` gets from `get_source` above.
        if self._sources[name][1]:
            return name.replace(".", "/") + "/__init__.py"
        return name.replace(".", "/") + ".py"

    def _code(self, name):
        import marshal
        cached = self._core._code_cache(name)
        if cached is not None:
            return marshal.loads(cached)
        code = compile(self._sources[name][0], self._filename(name), "exec")
        self._core._code_cache(name, marshal.dumps(code))
        return code
