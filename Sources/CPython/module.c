// The built-in module `subinterp`, importable in every interpreter the host creates.
// Multi-phase init with per-interpreter-GIL support: all state lives in module state, no C global
// holds a Python object. Process-wide things (the output lock) are plain C.
#include "cpython.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

typedef struct {
    long worker_index;
    long worker_count;
} cpy_module_state;

/// Serializes writes to the host's standard output and error, so that lines written by
/// different interpreters never interleave.
static pthread_mutex_t cpy_output_lock = PTHREAD_MUTEX_INITIALIZER;

static PyObject *cpy_module_write(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "_write(fd, data) takes exactly 2 arguments");
        return NULL;
    }
    long fd = cpy_PyLong_AsLong(args[0]);
    if (fd == -1 && cpy_PyErr_Occurred()) {
        return NULL;
    }
    char *data;
    Py_ssize_t length;
    if (cpy_PyBytes_AsStringAndSize(args[1], &data, &length) < 0) {
        return NULL;
    }
    // `data` stays valid while the GIL is released: args[1] is held by our caller.
    PyThreadState *saved = cpy_PyEval_SaveThread();
    pthread_mutex_lock(&cpy_output_lock);
    int failure = 0;
    while (length > 0) {
        ssize_t written = write((int)fd, data, (size_t)length);
        if (written < 0) {
            if (errno == EINTR) {
                continue;
            }
            failure = errno;
            break;
        }
        data += written;
        length -= written;
    }
    pthread_mutex_unlock(&cpy_output_lock);
    cpy_PyEval_RestoreThread(saved);
    if (failure != 0) {
        // An OSError the way Python reports it; EPIPE is what a closed pipe gives.
        PyObject *code = cpy_PyLong_FromLongLong(failure);
        if (code != NULL) {
            cpy_PyErr_SetObject(cpy_exc_os_error(), code);
            cpy_decref(code);
        }
        return NULL;
    }
    return cpy_new_none();
}

static PyObject *cpy_module_worker_index(PyObject *module, PyObject *unused) {
    (void)unused;
    cpy_module_state *state = cpy_PyModule_GetState(module);
    return cpy_PyLong_FromLongLong(state->worker_index);
}

static PyObject *cpy_module_worker_count(PyObject *module, PyObject *unused) {
    (void)unused;
    cpy_module_state *state = cpy_PyModule_GetState(module);
    return cpy_PyLong_FromLongLong(state->worker_count);
}

static int cpy_module_exec(PyObject *module) {
    cpy_module_state *state = cpy_PyModule_GetState(module);
    state->worker_index = 0;
    state->worker_count = 1;
    return 0;
}

static PyMethodDef cpy_module_methods[] = {
    {"_write", (void *)cpy_module_write, CPY_METH_FASTCALL,
     "_write(fd, data): write bytes to a file descriptor under the host's output lock."},
    {"worker_index", (void *)cpy_module_worker_index, CPY_METH_NOARGS,
     "worker_index() -> int: this interpreter's index among the workers started together (0-based)."},
    {"worker_count", (void *)cpy_module_worker_count, CPY_METH_NOARGS,
     "worker_count() -> int: how many workers were started together."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot cpy_module_slots[] = {
    {CPY_MOD_EXEC, (void *)cpy_module_exec},
    {CPY_MOD_MULTIPLE_INTERPRETERS, CPY_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};

// The head of a statically allocated object is immortal in 3.12 and 3.13 (refcount UINT_MAX).
static PyModuleDef cpy_module_def = {
    .m_base = {.ob_base = {.ob_refcnt = 0xFFFFFFFF, .ob_type = NULL}},
    .m_name = "subinterp",
    .m_doc = "Host services for code running in a Subinterpreters interpreter.",
    .m_size = sizeof(cpy_module_state),
    .m_methods = cpy_module_methods,
    .m_slots = cpy_module_slots,
};

static PyObject *cpy_module_init(void) { return cpy_PyModuleDef_Init(&cpy_module_def); }

int cpy_register_module(void) { return cpy_PyImport_AppendInittab("subinterp", cpy_module_init); }

int cpy_module_set_worker(long index, long count) {
    PyObject *module = cpy_PyImport_ImportModule("subinterp");
    if (module == NULL) {
        return -1;
    }
    cpy_module_state *state = cpy_PyModule_GetState(module);
    state->worker_index = index;
    state->worker_count = count;
    cpy_decref(module);
    return 0;
}
