// The `subinterp` package in the interpreters the host creates: its native core
// (`subinterp._core`, module.c) and its Python layer (python/subinterp/*.py in the repository).
#ifndef SUBINTERP_PACKAGE_H
#define SUBINTERP_PACKAGE_H

#include "cpython.h"

#include <spawn.h>

/// Where the package is on disk, when the host is the extension module of a pip-installed
/// package (its directory); NULL (the default) serves the Python sources built into this binary.
/// Call once, before any interpreter is created.
void cpy_package_set_directory(const char *directory);

/// The directory that holds this binary (the extension module), or NULL. Found with `dladdr`.
const char *cpy_package_binary_directory(void);

/// The source of python/subinterp/_process_worker.py, NUL-terminated: the loop a pool's worker
/// process runs (`Pool/ProcessWorker.swift` passes it to `python -c`).
const char *cpy_process_worker_source(void);

/// `posix_spawn_file_actions_addclosefrom_np` (glibc >= 2.34, a GNU extension Swift's Glibc
/// module does not declare): the spawned worker process gets no descriptor from `from` on.
int cpy_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int from);

/// In the current interpreter (its GIL held): puts this binary's `subinterp._core` into
/// `sys.modules`, so that every interpreter uses the same native code and C state (never a
/// second copy of the extension), and makes `import subinterp` find the package. Returns 0, or
/// -1 with a Python exception set.
int cpy_package_install(void);

/// Adds the package's helpers to `subinterp._core` (its exec slot). -1 with an exception on failure.
int cpy_package_exec(PyObject *module);

#endif
