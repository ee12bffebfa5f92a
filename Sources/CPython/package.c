// The Python layer of the `subinterp` package, built into the binary, and what makes the package
// importable in each interpreter the host creates. See package.h.
#define _GNU_SOURCE  // dladdr
#include "package.h"
#include "cpython.h"
#include "executor.h"

#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The package's Python sources, written once in python/subinterp/ and embedded here (C23
// `#embed`, which clang accepts as an extension in the C mode SwiftPM uses; SwiftPM rebuilds
// this file when one of them changes). The wheel ships the same files as ordinary modules.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wc23-extensions"
static const char cpy_source_init[] = {
#embed "../../python/subinterp/__init__.py" suffix(, )
    0};
static const char cpy_source_worker[] = {
#embed "../../python/subinterp/_worker.py" suffix(, )
    0};
static const char cpy_source_executor[] = {
#embed "../../python/subinterp/_executor.py" suffix(, )
    0};
static const char cpy_source_importer[] = {
#embed "../../python/subinterp/_importer.py" suffix(, )
    0};
// Not a module of the package: the program a pool's worker process runs (see package.h).
static const char cpy_source_process_worker[] = {
#embed "../../python/subinterp/_process_worker.py" suffix(, )
    0};
#pragma clang diagnostic pop

static const struct {
    const char *name;
    const char *source;
    size_t size;
    int is_package;
} cpy_sources[] = {
    {"subinterp", cpy_source_init, sizeof cpy_source_init - 1, 1},
    {"subinterp._worker", cpy_source_worker, sizeof cpy_source_worker - 1, 0},
    {"subinterp._executor", cpy_source_executor, sizeof cpy_source_executor - 1, 0},
    {"subinterp._importer", cpy_source_importer, sizeof cpy_source_importer - 1, 0},
};

static char *cpy_directory = NULL;

const char *cpy_process_worker_source(void) { return cpy_source_process_worker; }

int cpy_spawn_file_actions_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

void cpy_package_set_directory(const char *directory) {
    free(cpy_directory);
    cpy_directory = directory ? strdup(directory) : NULL;
}

const char *cpy_package_binary_directory(void) {
    static char directory[4096];
    Dl_info info;
    if (dladdr((void *)cpy_package_binary_directory, &info) == 0 || info.dli_fname == NULL) return NULL;
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", info.dli_fname);
    snprintf(directory, sizeof directory, "%s", dirname(copy));
    return directory;
}

/// `sys.modules["subinterp._core"]`, made from this binary's module definition if missing.
static int cpy_install_core(PyObject *modules) {
    if (cpy_PyDict_GetItemString(modules, "subinterp._core") != NULL) return 0;
    PyObject *bootstrap = cpy_PyDict_GetItemString(modules, "_frozen_importlib");  // borrowed
    PyObject *spec_type = bootstrap ? cpy_PyObject_GetAttrString(bootstrap, "ModuleSpec") : NULL;
    if (spec_type == NULL) {
        if (!cpy_PyErr_Occurred()) cpy_PyErr_SetString(cpy_exc_import_error(), "importlib is not set up");
        return -1;
    }
    PyObject *name = cpy_PyUnicode_FromStringAndSize("subinterp._core", 15);
    PyObject *arguments = name ? cpy_PyTuple_New(2) : NULL;
    PyObject *keywords = arguments ? cpy_PyDict_New() : NULL;
    PyObject *origin = keywords ? cpy_PyUnicode_FromStringAndSize("built-in", 8) : NULL;
    PyObject *spec = NULL;
    if (origin != NULL && cpy_PyDict_SetItemString(keywords, "origin", origin) == 0) {
        cpy_incref(name);
        cpy_PyTuple_SetItem(arguments, 0, name);
        cpy_PyTuple_SetItem(arguments, 1, cpy_new_none());
        spec = cpy_PyObject_Call(spec_type, arguments, keywords);
    }
    cpy_xdecref(origin);
    cpy_xdecref(keywords);
    cpy_xdecref(arguments);
    cpy_xdecref(name);
    cpy_decref(spec_type);
    if (spec == NULL) return -1;
    PyModuleDef *definition = cpy_module_definition();
    PyObject *module = cpy_PyModule_FromDefAndSpec2(definition, spec, 1013 /* PYTHON_API_VERSION */);
    int result = module != NULL && cpy_PyModule_ExecDef(module, definition) == 0
                     && cpy_PyObject_SetAttrString(module, "__spec__", spec) == 0
                     && cpy_PyDict_SetItemString(modules, "subinterp._core", module) == 0
                 ? 0 : -1;
    cpy_xdecref(module);
    cpy_decref(spec);
    return result;
}

/// What `_importer.install` gets: the package directory, or {name: (source bytes, is_package)}.
static PyObject *cpy_package_source(void) {
    if (cpy_directory != NULL) return cpy_PyUnicode_FromStringAndSize(cpy_directory, (Py_ssize_t)strlen(cpy_directory));
    PyObject *sources = cpy_PyDict_New();
    if (sources == NULL) return NULL;
    for (size_t i = 0; i < sizeof cpy_sources / sizeof cpy_sources[0]; i++) {
        PyObject *entry = cpy_PyTuple_New(2);
        PyObject *source = cpy_PyBytes_FromStringAndSize(cpy_sources[i].source, (Py_ssize_t)cpy_sources[i].size);
        PyObject *is_package = cpy_PyBool_FromLong(cpy_sources[i].is_package);
        if (entry == NULL || source == NULL || is_package == NULL) {
            cpy_xdecref(entry);
            cpy_xdecref(source);
            cpy_xdecref(is_package);
            cpy_decref(sources);
            return NULL;
        }
        cpy_PyTuple_SetItem(entry, 0, source);
        cpy_PyTuple_SetItem(entry, 1, is_package);
        int failed = cpy_PyDict_SetItemString(sources, cpy_sources[i].name, entry) < 0;
        cpy_decref(entry);
        if (failed) {
            cpy_decref(sources);
            return NULL;
        }
    }
    return sources;
}

int cpy_package_install(void) {
    PyObject *modules = cpy_PyImport_GetModuleDict();  // borrowed
    if (cpy_install_core(modules) < 0) return -1;
    PyObject *core = cpy_PyDict_GetItemString(modules, "subinterp._core");  // borrowed
    PyObject *code = cpy_Py_CompileString(cpy_source_importer, "subinterp/_importer.py", 257 /* Py_file_input */);
    if (code == NULL) return -1;
    PyObject *globals = cpy_PyDict_New();
    PyObject *builtins = cpy_PyEval_GetBuiltins();  // borrowed
    PyObject *name = cpy_PyUnicode_FromStringAndSize("subinterp._importer", 19);
    int result = -1;
    if (globals != NULL && name != NULL && cpy_PyDict_SetItemString(globals, "__builtins__", builtins) == 0
        && cpy_PyDict_SetItemString(globals, "__name__", name) == 0) {
        PyObject *done = cpy_PyEval_EvalCode(code, globals, globals);
        PyObject *install = done ? cpy_PyDict_GetItemString(globals, "install") : NULL;  // borrowed
        PyObject *source = install ? cpy_package_source() : NULL;
        if (source != NULL) {
            PyObject *arguments[2] = {source, core};
            PyObject *installed = cpy_PyObject_Vectorcall(install, arguments, 2, NULL);
            result = installed != NULL ? 0 : -1;
            cpy_xdecref(installed);
            cpy_decref(source);
        }
        cpy_xdecref(done);
    }
    cpy_xdecref(name);
    cpy_xdecref(globals);
    cpy_decref(code);
    return result;
}

// MARK: - Compiled modules, shared by the interpreters of the process

typedef struct cpy_cached_code {
    char *name;
    char *data;
    size_t size;
    struct cpy_cached_code *next;
} cpy_cached_code;

static pthread_mutex_t cpy_code_lock = PTHREAD_MUTEX_INITIALIZER;
static cpy_cached_code *cpy_code_cache = NULL;

/// _code_cache(name) -> bytes | None; _code_cache(name, marshalled): stores it. Code objects
/// cannot cross interpreters; their marshalled bytes can, and loading them is much faster than
/// compiling the source again in each new interpreter.
static PyObject *cpy_module_code_cache(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 1 || nargs > 2) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "_code_cache(name[, data])");
        return NULL;
    }
    Py_ssize_t length;
    const char *name = cpy_PyUnicode_AsUTF8AndSize(args[0], &length);
    if (name == NULL) return NULL;
    if (nargs == 2) {
        char *data;
        Py_ssize_t size;
        if (cpy_PyBytes_AsStringAndSize(args[1], &data, &size) < 0) return NULL;
        cpy_cached_code *entry = calloc(1, sizeof *entry);
        if (entry != NULL) {
            entry->name = strdup(name);
            entry->data = malloc((size_t)size);
            if (entry->name == NULL || entry->data == NULL) {
                free(entry->name);
                free(entry->data);
                free(entry);
            } else {
                memcpy(entry->data, data, (size_t)size);
                entry->size = (size_t)size;
                pthread_mutex_lock(&cpy_code_lock);
                entry->next = cpy_code_cache;
                cpy_code_cache = entry;
                pthread_mutex_unlock(&cpy_code_lock);
            }
        }
        return cpy_new_none();
    }
    pthread_mutex_lock(&cpy_code_lock);
    cpy_cached_code *entry = cpy_code_cache;
    while (entry != NULL && strcmp(entry->name, name) != 0) entry = entry->next;
    pthread_mutex_unlock(&cpy_code_lock);
    // Entries are never removed, so `entry` stays valid after the lock.
    if (entry == NULL) return cpy_new_none();
    return cpy_PyBytes_FromStringAndSize(entry->data, (Py_ssize_t)entry->size);
}

static PyMethodDef cpy_package_functions[] = {
    {"_code_cache", (void *)cpy_module_code_cache, CPY_METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

int cpy_package_exec(PyObject *module) { return cpy_PyModule_AddFunctions(module, cpy_package_functions); }
