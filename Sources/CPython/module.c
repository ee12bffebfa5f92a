// The module `subinterp._core`, the native core of the `subinterp` package: in every interpreter
// the host creates (package.c puts it there) and, as an extension module, in a plain Python process.
// Multi-phase init with per-interpreter-GIL support: all state lives in module state, no C global
// holds a Python object. Process-wide things (the output lock) are plain C.
#include "channels_module.h"
#include "cpython.h"
#include "executor.h"
#include "package.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

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
    if (cpy_channels_exec(module, state) < 0) return -1;
    if (cpy_executor_exec(module) < 0) return -1;
    return cpy_package_exec(module);
}

static int cpy_module_traverse(PyObject *module, int (*visit)(PyObject *, void *), void *arg) {
    cpy_module_state *state = cpy_PyModule_GetState(module);
    return state ? cpy_channels_traverse(state, visit, arg) : 0;
}

static int cpy_module_clear(PyObject *module) {
    cpy_module_state *state = cpy_PyModule_GetState(module);
    if (state) cpy_channels_clear(state);
    return 0;
}

static void cpy_module_free(void *module) { cpy_module_clear(module); }

static PyMethodDef cpy_module_methods[] = {
    {"_write", (void *)cpy_module_write, CPY_METH_FASTCALL,
     "_write(fd, data): write bytes to a file descriptor under the host's output lock."},
    {"worker_index", (void *)cpy_module_worker_index, CPY_METH_NOARGS,
     "worker_index() -> int: this interpreter's index among the workers started together (0-based)."},
    {"worker_count", (void *)cpy_module_worker_count, CPY_METH_NOARGS,
     "worker_count() -> int: how many workers were started together."},
    {"create_queue", (void *)cpy_module_create_queue, CPY_METH_FASTCALL | CPY_METH_KEYWORDS,
     "create_queue(maxsize=0) -> Queue: a new queue (as in concurrent.interpreters)."},
    {"queue", (void *)cpy_module_named_queue, CPY_METH_FASTCALL | CPY_METH_KEYWORDS,
     "queue(name, maxsize=0) -> Queue: the process-wide queue with this name, created on first use.\n"
     "Named queues live as long as the process."},
    {"_queue_from_id", (void *)cpy_module_queue_from_id, CPY_METH_O, NULL},
    {"__getattr__", (void *)cpy_module_getattr, CPY_METH_O, NULL},
    {"_buffer_from_id", (void *)cpy_module_buffer_from_id, CPY_METH_O, NULL},
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
    .m_name = "subinterp._core",
    .m_doc = "The native core of the subinterp package: channels, the executor's pools, host services.",
    .m_size = sizeof(cpy_module_state),
    .m_methods = cpy_module_methods,
    .m_slots = cpy_module_slots,
    .m_traverse = cpy_module_traverse,
    .m_clear = cpy_module_clear,
    .m_free = cpy_module_free,
};

PyModuleDef *cpy_module_definition(void) { return &cpy_module_def; }

int cpy_module_set_worker(long index, long count) {
    PyObject *module = cpy_PyImport_ImportModule("subinterp._core");
    if (module == NULL) {
        return -1;
    }
    cpy_module_state *state = cpy_PyModule_GetState(module);
    state->worker_index = index;
    state->worker_count = count;
    cpy_decref(module);
    return 0;
}
