// Internal to the CPython target: the `subinterp` module's state and the pieces of
// channels_module.c that module.c uses.
#ifndef SUBINTERP_CHANNELS_MODULE_H
#define SUBINTERP_CHANNELS_MODULE_H

#include "channels.h"
#include "cpython.h"

typedef struct {
    long worker_index;
    long worker_count;
    PyTypeObject *queue_type;
    PyTypeObject *buffer_type;
    PyObject *queue_empty;
    PyObject *queue_full;
} cpy_module_state;

/// Creates the types and exceptions in `module` (its exec slot). -1 with an exception on failure.
int cpy_channels_exec(PyObject *module, cpy_module_state *state);
int cpy_channels_traverse(cpy_module_state *state, int (*visit)(PyObject *, void *), void *arg);
void cpy_channels_clear(cpy_module_state *state);

PyObject *cpy_wrap_queue(cpy_module_state *state, cpy_queue *queue);
PyObject *cpy_wrap_buffer(cpy_module_state *state, cpy_buffer *buffer);
cpy_queue *cpy_queue_of(cpy_module_state *state, PyObject *object);
cpy_buffer *cpy_buffer_of(cpy_module_state *state, PyObject *object);
cpy_item *cpy_encode(cpy_module_state *state, PyObject *module, PyObject *object);
PyObject *cpy_decode(cpy_module_state *state, PyObject *module, cpy_item *item);

/// Module-level functions: create_queue, queue, _queue_from_id, _buffer_from_id.
PyObject *cpy_module_create_queue(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *cpy_module_named_queue(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *cpy_module_queue_from_id(PyObject *module, PyObject *arg);
PyObject *cpy_module_buffer_from_id(PyObject *module, PyObject *arg);
/// Module `__getattr__` (PEP 562): creates QueueEmpty and QueueFull when first asked for.
PyObject *cpy_module_getattr(PyObject *module, PyObject *name);

#endif
