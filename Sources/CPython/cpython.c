// Resolves the CPython C API from the libpython chosen at run time. See cpython.h.
#define _GNU_SOURCE  // dladdr, RTLD_DEFAULT
#include "cpython.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#define CPY_DEFINE(ret, name, params, args) ret(*cpy_ptr_##name) params = NULL;
#define CPY_DEFINE_VOID(name, params, args) void(*cpy_ptr_##name) params = NULL;
CPY_FUNCTIONS(CPY_DEFINE, CPY_DEFINE_VOID)
#undef CPY_DEFINE
#undef CPY_DEFINE_VOID

#define CPY_DEFINE_OBJECT(type, name, symbol, direct) type cpy_obj_##name = NULL;
CPY_OBJECTS(CPY_DEFINE_OBJECT)
#undef CPY_DEFINE_OBJECT

static unsigned long cpy_loaded_version = 0;
static char cpy_loaded_path[4096];

unsigned long cpy_version(void) { return cpy_loaded_version; }

/// Checks the version of the C API found through `library` (a dlopen handle, or RTLD_DEFAULT for
/// the running process) and resolves every function and object from it. `what` names it in errors.
static int cpy_resolve(void *library, const char *what, char *error, size_t error_size) {
    const unsigned long *version = dlsym(library, "Py_Version");
    if (version == NULL) {
        snprintf(error, error_size, "%s is not a CPython >= 3.12 library (no Py_Version)", what);
        return -1;
    }
    unsigned long minor = (*version >> 16) & 0xFF;
    if ((*version >> 24) != 3 || minor < 12 || minor > 13) {
        snprintf(error, error_size, "%s is Python %lu.%lu; this build supports 3.12 and 3.13", what,
                 *version >> 24, minor);
        return -1;
    }
    // Free-threaded builds have another object layout; they export this symbol, GIL builds do not.
    if (dlsym(library, "_Py_MergeZeroLocalRefcount") != NULL) {
        snprintf(error, error_size, "%s is a free-threaded build; use a default (GIL) build of CPython", what);
        return -1;
    }
#define CPY_RESOLVE(name)                                                                          \
    do {                                                                                           \
        *(void **)(&cpy_ptr_##name) = dlsym(library, #name);                                       \
        if (cpy_ptr_##name == NULL) {                                                              \
            snprintf(error, error_size, "%s lacks the C API function %s", what, #name);            \
            return -1;                                                                             \
        }                                                                                          \
    } while (0);
#define CPY_RESOLVE_FUNCTION(ret, name, params, args) CPY_RESOLVE(name)
#define CPY_RESOLVE_VOID(name, params, args) CPY_RESOLVE(name)
    CPY_FUNCTIONS(CPY_RESOLVE_FUNCTION, CPY_RESOLVE_VOID)
#undef CPY_RESOLVE_FUNCTION
#undef CPY_RESOLVE_VOID
#undef CPY_RESOLVE
#define CPY_RESOLVE_OBJECT(type, name, symbol, direct)                                            \
    do {                                                                                           \
        void *address = dlsym(library, #symbol);                                                   \
        if (address == NULL) {                                                                     \
            snprintf(error, error_size, "%s lacks %s", what, #symbol);                             \
            return -1;                                                                             \
        }                                                                                          \
        cpy_obj_##name = direct ? (type)address : *(type *)address;                                \
    } while (0);
    CPY_OBJECTS(CPY_RESOLVE_OBJECT)
#undef CPY_RESOLVE_OBJECT
    Dl_info info;
    if (dladdr(version, &info) != 0 && info.dli_fname != NULL) {
        snprintf(cpy_loaded_path, sizeof cpy_loaded_path, "%s", info.dli_fname);
    }
    cpy_loaded_version = *version;
    return 0;
}

int cpy_load(const char *path, char *error, size_t error_size) {
    if (cpy_loaded_version != 0) {
        return 0;
    }
    // RTLD_GLOBAL: extension modules loaded later resolve their Py* symbols against this library.
    void *library = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (library == NULL) {
        snprintf(error, error_size, "cannot load %s: %s", path, dlerror());
        return -1;
    }
    return cpy_resolve(library, path, error, error_size);
}

int cpy_load_process(char *error, size_t error_size) {
    if (cpy_loaded_version != 0) {
        return 0;
    }
    // The running python's C API is in the global scope: in libpython, which the executable
    // needs, or in the executable itself, which exports it for extension modules.
    return cpy_resolve(RTLD_DEFAULT, "the running Python", error, error_size);
}

const char *cpy_library_path(void) { return cpy_loaded_version != 0 ? cpy_loaded_path : NULL; }

#include <signal.h>
#include <stdlib.h>

int cpy_initialize(const char *executable, char *error, size_t error_size) {
    // Python installs a SIGINT handler and ignores SIGPIPE and SIGXFSZ as it starts; the host
    // owns signals, so put back what was there.
    const int signals[] = {SIGINT, SIGPIPE, SIGXFSZ};
    struct sigaction previous[3];
    for (int i = 0; i < 3; i++) {
        sigaction(signals[i], NULL, &previous[i]);
    }
    void *config = calloc(1, CPY_CONFIG_BUFFER_SIZE);
    if (config == NULL) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    cpy_PyConfig_InitPythonConfig(config);
    // argv[0] is the executable: it sets sys.executable, and a virtual environment's pyvenv.cfg
    // beside it sets sys.prefix and so site-packages.
    char *argv[1] = {(char *)executable};
    PyStatus status = cpy_PyConfig_SetBytesArgv(config, 1, argv);
    if (!cpy_PyStatus_Exception(status)) {
        status = cpy_Py_InitializeFromConfig(config);
    }
    cpy_PyConfig_Clear(config);
    free(config);
    for (int i = 0; i < 3; i++) {
        sigaction(signals[i], &previous[i], NULL);
    }
    if (cpy_PyStatus_Exception(status)) {
        snprintf(error, error_size, "%s", status.err_msg ? status.err_msg : "unknown error");
        return -1;
    }
    return 0;
}
