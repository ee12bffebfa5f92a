// `subinterp.Queue`, `subinterp.SharedBuffer` and the item encoding, for the built-in module.
// Heap types created per interpreter (multi-phase init); every object holds a reference to a
// host-owned queue or buffer, never a Python object of another interpreter.
#include "channels_module.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    cpy_object_head head;
    cpy_queue *queue;
} cpy_queue_object;

typedef struct {
    cpy_object_head head;
    cpy_buffer *buffer;
    Py_ssize_t exports;
} cpy_buffer_object;

static cpy_module_state *cpy_state_of(PyObject *object) {
    return cpy_PyType_GetModuleState(cpy_type(object));
}

static void cpy_dealloc(PyObject *self) {
    PyTypeObject *type = cpy_type(self);
    void (*free_slot)(void *) = cpy_PyType_GetSlot(type, CPY_TP_FREE);
    free_slot(self);
    cpy_decref((PyObject *)type);
}

// MARK: - Wrapping handles

PyObject *cpy_wrap_queue(cpy_module_state *state, cpy_queue *queue) {
    PyObject *(*alloc)(PyTypeObject *, Py_ssize_t) = cpy_PyType_GetSlot(state->queue_type, 47 /* Py_tp_alloc */);
    cpy_queue_object *object = (cpy_queue_object *)alloc(state->queue_type, 0);
    if (object == NULL) {
        cpy_queue_release(queue);
        return NULL;
    }
    object->queue = queue;
    return (PyObject *)object;
}

PyObject *cpy_wrap_buffer(cpy_module_state *state, cpy_buffer *buffer) {
    PyObject *(*alloc)(PyTypeObject *, Py_ssize_t) = cpy_PyType_GetSlot(state->buffer_type, 47 /* Py_tp_alloc */);
    cpy_buffer_object *object = (cpy_buffer_object *)alloc(state->buffer_type, 0);
    if (object == NULL) {
        cpy_buffer_release(buffer);
        return NULL;
    }
    object->buffer = buffer;
    object->exports = 0;
    return (PyObject *)object;
}

cpy_queue *cpy_queue_of(cpy_module_state *state, PyObject *object) {
    return cpy_type(object) == state->queue_type ? ((cpy_queue_object *)object)->queue : NULL;
}

cpy_buffer *cpy_buffer_of(cpy_module_state *state, PyObject *object) {
    return cpy_type(object) == state->buffer_type ? ((cpy_buffer_object *)object)->buffer : NULL;
}

// MARK: - Encoding

typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
} cpy_writer;

static int cpy_reserve(cpy_writer *writer, size_t more) {
    if (writer->size + more <= writer->capacity) return 0;
    size_t capacity = writer->capacity ? writer->capacity : 64;
    while (capacity < writer->size + more) capacity *= 2;
    unsigned char *grown = realloc(writer->data, capacity);
    if (grown == NULL) return -1;
    writer->data = grown;
    writer->capacity = capacity;
    return 0;
}

static int cpy_put(cpy_writer *writer, unsigned char tag, const void *data, size_t size, int with_length) {
    if (cpy_reserve(writer, 1 + (with_length ? 8 : 0) + size) < 0) return -1;
    writer->data[writer->size++] = tag;
    if (with_length) {
        uint64_t length = size;
        memcpy(writer->data + writer->size, &length, 8);
        writer->size += 8;
    }
    if (size) memcpy(writer->data + writer->size, data, size);
    writer->size += size;
    return 0;
}

static int cpy_encode_value(cpy_module_state *state, PyObject *module, cpy_writer *writer, PyObject *object, int depth);

static int cpy_encode_pickled(PyObject *module, cpy_writer *writer, PyObject *object) {
    PyObject *dumps = cpy_PyObject_GetAttrString(module, "_pickle_dumps");
    if (dumps == NULL) return -1;
    PyObject *arguments[1] = {object};
    PyObject *pickled = cpy_PyObject_Vectorcall(dumps, arguments, 1, NULL);
    cpy_decref(dumps);
    if (pickled == NULL) return -1;
    char *data;
    Py_ssize_t length;
    int result = cpy_PyBytes_AsStringAndSize(pickled, &data, &length);
    if (result == 0) result = cpy_put(writer, 'p', data, (size_t)length, 1);
    cpy_decref(pickled);
    return result;
}

static int cpy_encode_value(cpy_module_state *state, PyObject *module, cpy_writer *writer, PyObject *object, int depth) {
    if (depth > 512) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "value nested more than 512 levels deep (or it contains itself)");
        return -1;
    }
    PyTypeObject *type = cpy_type(object);
    if (object == cpy_none()) return cpy_put(writer, 'N', NULL, 0, 0);
    if (type == cpy_bool_type()) return cpy_put(writer, object == cpy_true() ? 'T' : 'F', NULL, 0, 0);
    if (type == cpy_long_type()) {
        int overflow = 0;
        long long value = cpy_PyLong_AsLongLongAndOverflow(object, &overflow);
        if (overflow == 0) {
            int64_t v = value;
            return cpy_put(writer, 'i', &v, 8, 0);
        }
        PyObject *text = cpy_PyNumber_ToBase(object, 16);
        if (text == NULL) return -1;
        Py_ssize_t length;
        const char *utf8 = cpy_PyUnicode_AsUTF8AndSize(text, &length);
        int result = utf8 ? cpy_put(writer, 'I', utf8, (size_t)length, 1) : -1;
        cpy_decref(text);
        return result;
    }
    if (type == cpy_float_type()) {
        double value = cpy_PyFloat_AsDouble(object);
        return cpy_put(writer, 'f', &value, 8, 0);
    }
    if (type == cpy_unicode_type()) {
        Py_ssize_t length;
        const char *utf8 = cpy_PyUnicode_AsUTF8AndSize(object, &length);
        if (utf8 != NULL) return cpy_put(writer, 's', utf8, (size_t)length, 1);
        cpy_PyErr_Clear();  // lone surrogates: no UTF-8 form, so it crosses pickled
        return cpy_encode_pickled(module, writer, object);
    }
    if (type == cpy_bytes_type()) {
        char *data;
        Py_ssize_t length;
        if (cpy_PyBytes_AsStringAndSize(object, &data, &length) < 0) return -1;
        return cpy_put(writer, 'b', data, (size_t)length, 1);
    }
    if (type == cpy_list_type() || type == cpy_tuple_type() || type == cpy_dict_type()) {
        // Pickling an element runs Python code that may change or free this container: write a
        // snapshot that holds a reference to every element (ENCODING.md, "Snapshots"). A tuple
        // cannot change, and whoever passed it holds it.
        unsigned char tag = type == cpy_list_type() ? 'l' : type == cpy_tuple_type() ? 't' : 'd';
        PyObject *snapshot = tag == 'l' ? cpy_PyList_AsTuple(object) : tag == 'd' ? cpy_PyDict_Items(object) : object;
        if (snapshot == NULL) return -1;
        Py_ssize_t count = tag == 'd' ? cpy_PyList_Size(snapshot) : cpy_PyTuple_Size(snapshot);
        uint64_t n = (uint64_t)count;
        int result = cpy_reserve(writer, 9);
        if (result == 0) {
            writer->data[writer->size++] = tag;
            memcpy(writer->data + writer->size, &n, 8);
            writer->size += 8;
        }
        for (Py_ssize_t i = 0; result == 0 && i < count; i++) {
            if (tag == 'd') {
                PyObject *pair = cpy_PyList_GetItem(snapshot, i);  // a (key, value) tuple only we hold
                result = cpy_encode_value(state, module, writer, cpy_PyTuple_GetItem(pair, 0), depth + 1);
                if (result == 0) result = cpy_encode_value(state, module, writer, cpy_PyTuple_GetItem(pair, 1), depth + 1);
            } else {
                result = cpy_encode_value(state, module, writer, cpy_PyTuple_GetItem(snapshot, i), depth + 1);
            }
        }
        if (snapshot != object) cpy_decref(snapshot);
        return result;
    }
    if (type == state->queue_type) {
        cpy_queue *queue = ((cpy_queue_object *)object)->queue;
        if (cpy_put(writer, 'Q', &queue, sizeof queue, 0) < 0) return -1;
        cpy_queue_retain(queue);
        return 0;
    }
    if (type == state->buffer_type) {
        cpy_buffer *buffer = ((cpy_buffer_object *)object)->buffer;
        if (cpy_put(writer, 'B', &buffer, sizeof buffer, 0) < 0) return -1;
        cpy_buffer_retain(buffer);
        return 0;
    }
    return cpy_encode_pickled(module, writer, object);
}

cpy_item *cpy_encode(cpy_module_state *state, PyObject *module, PyObject *object) {
    cpy_writer writer = {NULL, 0, 0};
    if (cpy_encode_value(state, module, &writer, object, 0) < 0) {
        // Release the handles already written, then drop the bytes.
        cpy_item *partial = writer.data ? cpy_item_create(writer.data, writer.size) : NULL;
        cpy_item_free(partial);
        free(writer.data);
        return NULL;
    }
    cpy_item *item = cpy_item_create(writer.data, writer.size);
    free(writer.data);
    if (item == NULL) cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory encoding a value");
    return item;
}

// MARK: - Decoding

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
} cpy_reader;

static int cpy_read_length(cpy_reader *reader, uint64_t *length) {
    if (reader->offset + 8 > reader->size) return -1;
    memcpy(length, reader->data + reader->offset, 8);
    reader->offset += 8;
    return 0;
}

static PyObject *cpy_decode_value(cpy_module_state *state, PyObject *module, cpy_reader *reader) {
    if (reader->offset >= reader->size) goto corrupt;
    unsigned char tag = reader->data[reader->offset++];
    uint64_t length;
    switch (tag) {
    case 'N': return cpy_new_none();
    case 'T': return cpy_PyBool_FromLong(1);
    case 'F': return cpy_PyBool_FromLong(0);
    case 'i': {
        if (reader->offset + 8 > reader->size) goto corrupt;
        int64_t value;
        memcpy(&value, reader->data + reader->offset, 8);
        reader->offset += 8;
        return cpy_PyLong_FromLongLong(value);
    }
    case 'f': {
        if (reader->offset + 8 > reader->size) goto corrupt;
        double value;
        memcpy(&value, reader->data + reader->offset, 8);
        reader->offset += 8;
        return cpy_PyFloat_FromDouble(value);
    }
    case 'I': case 's': case 'b': case 'p': {
        if (cpy_read_length(reader, &length) < 0 || length > reader->size - reader->offset) goto corrupt;
        const char *bytes = (const char *)reader->data + reader->offset;
        reader->offset += length;
        if (tag == 's') return cpy_PyUnicode_DecodeUTF8(bytes, (Py_ssize_t)length, "surrogatepass");
        if (tag == 'b') return cpy_PyBytes_FromStringAndSize(bytes, (Py_ssize_t)length);
        if (tag == 'I') {
            int negative = length > 0 && bytes[0] == '-';
            size_t prefix = negative ? 3 : 2;
            if (length <= prefix || bytes[prefix - 2] != '0' || bytes[prefix - 1] != 'x') goto corrupt;
            char *text = malloc(length + 1);
            if (text == NULL) goto corrupt;
            memcpy(text, bytes, length);
            text[length] = 0;
            char *end = NULL;
            PyObject *value = cpy_PyLong_FromString(text + prefix, &end, 16);
            int complete = end == text + length;
            free(text);
            if (value == NULL) goto corrupt;
            if (!complete) {
                cpy_decref(value);
                goto corrupt;
            }
            if (negative) {
                PyObject *negated = cpy_PyNumber_Negative(value);
                cpy_decref(value);
                value = negated;
            }
            return value;
        }
        PyObject *pickled = cpy_PyBytes_FromStringAndSize(bytes, (Py_ssize_t)length);
        if (pickled == NULL) return NULL;
        PyObject *loads = cpy_PyObject_GetAttrString(module, "_pickle_loads");
        PyObject *arguments[1] = {pickled};
        PyObject *value = loads ? cpy_PyObject_Vectorcall(loads, arguments, 1, NULL) : NULL;
        cpy_xdecref(loads);
        cpy_decref(pickled);
        return value;
    }
    case 'Q': case 'B': {
        if (sizeof(void *) > reader->size - reader->offset) goto corrupt;
        void *pointer;
        memcpy(&pointer, reader->data + reader->offset, sizeof pointer);
        reader->offset += sizeof pointer;
        // A reference of the new object's own: the item keeps its reference until it is freed.
        if (tag == 'Q') {
            cpy_queue_retain(pointer);
            return cpy_wrap_queue(state, pointer);
        }
        cpy_buffer_retain(pointer);
        return cpy_wrap_buffer(state, pointer);
    }
    case 'l': case 't': {
        // Each element takes at least one byte: a count past the end is corrupt, not a huge allocation.
        if (cpy_read_length(reader, &length) < 0 || length > reader->size - reader->offset) goto corrupt;
        PyObject *sequence = tag == 'l' ? cpy_PyList_New((Py_ssize_t)length) : cpy_PyTuple_New((Py_ssize_t)length);
        if (sequence == NULL) return NULL;
        for (uint64_t i = 0; i < length; i++) {
            PyObject *item = cpy_decode_value(state, module, reader);
            if (item == NULL) {
                cpy_decref(sequence);
                return NULL;
            }
            if (tag == 'l') cpy_PyList_SetItem(sequence, (Py_ssize_t)i, item);
            else cpy_PyTuple_SetItem(sequence, (Py_ssize_t)i, item);
        }
        return sequence;
    }
    case 'd': {
        if (cpy_read_length(reader, &length) < 0 || length > (reader->size - reader->offset) / 2) goto corrupt;
        PyObject *dict = cpy_PyDict_New();
        if (dict == NULL) return NULL;
        for (uint64_t i = 0; i < length; i++) {
            PyObject *key = cpy_decode_value(state, module, reader);
            PyObject *value = key ? cpy_decode_value(state, module, reader) : NULL;
            int failed = value == NULL || cpy_PyDict_SetItem(dict, key, value) < 0;
            cpy_xdecref(key);
            cpy_xdecref(value);
            if (failed) {
                cpy_decref(dict);
                return NULL;
            }
        }
        return dict;
    }
    default:
        break;
    }
corrupt:
    cpy_PyErr_SetString(cpy_exc_runtime_error(), "corrupt item in a subinterp queue");
    return NULL;
}

PyObject *cpy_decode(cpy_module_state *state, PyObject *module, cpy_item *item) {
    // Decoded objects take references of their own, so the item is freed the same way whether
    // decoding succeeds or fails part-way, and nothing leaks (ENCODING.md, "Handles").
    cpy_reader reader = {cpy_item_data(item), cpy_item_size(item), 0};
    PyObject *value = cpy_decode_value(state, module, &reader);
    if (value != NULL && reader.offset != reader.size) {
        cpy_decref(value);
        value = NULL;
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "corrupt item in a subinterp queue (bytes after the value)");
    }
    cpy_item_free(item);
    return value;
}

// MARK: - Arguments

/// Reads positional and keyword arguments by name; unknown or repeated ones raise TypeError.
static int cpy_parse(const char *function, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     const char *const *names, int count, PyObject **values) {
    for (int i = 0; i < count; i++) values[i] = NULL;
    if (nargs > count) {
        char message[160];
        snprintf(message, sizeof message, "%s() takes at most %d arguments (%zd given)", function, count, nargs);
        cpy_PyErr_SetString(cpy_exc_type_error(), message);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) values[i] = args[i];
    Py_ssize_t keywords = kwnames ? cpy_PyTuple_Size(kwnames) : 0;
    for (Py_ssize_t k = 0; k < keywords; k++) {
        Py_ssize_t length;
        const char *name = cpy_PyUnicode_AsUTF8AndSize(cpy_PyTuple_GetItem(kwnames, k), &length);
        if (name == NULL) return -1;
        int found = -1;
        for (int i = 0; i < count; i++) {
            if (strcmp(names[i], name) == 0) found = i;
        }
        if (found < 0 || values[found] != NULL) {
            char message[160];
            snprintf(message, sizeof message, "%s() got %s argument '%s'", function,
                     found < 0 ? "an unexpected keyword" : "multiple values for", name);
            cpy_PyErr_SetString(cpy_exc_type_error(), message);
            return -1;
        }
        values[found] = args[nargs + k];
    }
    return 0;
}

/// `timeout` as seconds (negative: wait forever). -1 with an exception if it is not a number >= 0.
static int cpy_timeout(PyObject *value, double *timeout) {
    if (value == NULL || value == cpy_none()) {
        *timeout = -1;
        return 0;
    }
    double seconds = cpy_PyFloat_AsDouble(value);
    if (seconds == -1.0 && cpy_PyErr_Occurred()) return -1;
    if (!(seconds >= 0)) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "'timeout' must be a non-negative number");
        return -1;
    }
    *timeout = seconds;
    return 0;
}

static int cpy_flag(PyObject *value, int fallback) {
    return value == NULL ? fallback : cpy_PyObject_IsTrue(value);
}

/// Creates QueueEmpty and QueueFull (subclasses of queue.Empty and queue.Full) on first use:
/// importing `queue` pulls in threading and more, which would slow every interpreter's start.
static int cpy_queue_exceptions(PyObject *module, cpy_module_state *state) {
    if (state->queue_empty != NULL) return 0;
    PyObject *queue_module = cpy_PyImport_ImportModule("queue");
    if (queue_module == NULL) return -1;
    PyObject *empty = cpy_PyObject_GetAttrString(queue_module, "Empty");
    PyObject *full = cpy_PyObject_GetAttrString(queue_module, "Full");
    cpy_decref(queue_module);
    PyObject *queue_empty = empty ? cpy_PyErr_NewException("subinterp.QueueEmpty", empty, NULL) : NULL;
    PyObject *queue_full = full ? cpy_PyErr_NewException("subinterp.QueueFull", full, NULL) : NULL;
    cpy_xdecref(empty);
    cpy_xdecref(full);
    if (queue_empty == NULL || queue_full == NULL || cpy_PyModule_AddObjectRef(module, "QueueEmpty", queue_empty) < 0
        || cpy_PyModule_AddObjectRef(module, "QueueFull", queue_full) < 0) {
        cpy_xdecref(queue_empty);
        cpy_xdecref(queue_full);
        return -1;
    }
    state->queue_empty = queue_empty;
    state->queue_full = queue_full;
    return 0;
}

PyObject *cpy_module_getattr(PyObject *module, PyObject *name) {
    Py_ssize_t length;
    const char *text = cpy_PyUnicode_AsUTF8AndSize(name, &length);
    if (text == NULL) return NULL;
    if (strcmp(text, "QueueEmpty") == 0 || strcmp(text, "QueueFull") == 0) {
        cpy_module_state *state = cpy_PyModule_GetState(module);
        if (cpy_queue_exceptions(module, state) < 0) return NULL;
        PyObject *value = text[5] == 'E' ? state->queue_empty : state->queue_full;
        cpy_incref(value);
        return value;
    }
    char message[200];
    snprintf(message, sizeof message, "module 'subinterp' has no attribute '%.100s'", text);
    cpy_PyErr_SetString(cpy_exc_attribute_error(), message);
    return NULL;
}

/// Raises the error for a wait that ended without an item.
static void cpy_raise_wait(PyObject *module, cpy_module_state *state, int reason, int putting) {
    if (reason == CPY_WAIT_TIMEOUT) {
        if (cpy_queue_exceptions(module, state) < 0) return;
        cpy_PyErr_SetObject(putting ? state->queue_full : state->queue_empty, cpy_none());
    } else if (reason == CPY_WAIT_CANCELLED) {
        PyObject *cancelled = cpy_PyObject_GetAttrString(module, "CancelledError");
        if (cancelled != NULL) {
            cpy_PyErr_SetString(cancelled, "the call was cancelled while it waited on a queue");
            cpy_decref(cancelled);
        }
    } else {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "the interpreter is closing; a blocking queue wait cannot go on");
    }
}

// MARK: - Queue

static PyObject *cpy_queue_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *maxsize_object = NULL;
    Py_ssize_t positional = args ? cpy_PyTuple_Size(args) : 0;
    if (positional > 1 || (kwargs && cpy_PyDict_Size(kwargs) > 1)) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "Queue(maxsize=0) takes one argument");
        return NULL;
    }
    if (positional == 1) maxsize_object = cpy_PyTuple_GetItem(args, 0);
    if (kwargs && cpy_PyDict_Size(kwargs) == 1) {
        PyObject *key = cpy_PyUnicode_FromStringAndSize("maxsize", 7);
        maxsize_object = key ? cpy_PyDict_GetItemWithError(kwargs, key) : NULL;
        cpy_xdecref(key);
        if (maxsize_object == NULL) {
            if (!cpy_PyErr_Occurred()) cpy_PyErr_SetString(cpy_exc_type_error(), "Queue() takes only 'maxsize'");
            return NULL;
        }
    }
    Py_ssize_t maxsize = maxsize_object ? cpy_PyLong_AsSsize_t(maxsize_object) : 0;
    if (maxsize == -1 && cpy_PyErr_Occurred()) return NULL;
    cpy_queue *queue = cpy_queue_create(maxsize);
    if (queue == NULL) {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory creating a queue");
        return NULL;
    }
    return cpy_wrap_queue(cpy_PyType_GetModuleState(type), queue);
}

static void cpy_queue_dealloc(PyObject *self) {
    cpy_queue_release(((cpy_queue_object *)self)->queue);
    cpy_dealloc(self);
}

static PyObject *cpy_queue_put_impl(PyObject *self, PyObject *item_object, int block, double timeout) {
    cpy_module_state *state = cpy_state_of(self);
    PyObject *module = cpy_PyType_GetModule(cpy_type(self));
    cpy_item *item = cpy_encode(state, module, item_object);
    if (item == NULL) return NULL;
    cpy_queue *queue = ((cpy_queue_object *)self)->queue;
    unsigned long thread = cpy_PyThread_get_thread_ident();
    PyThreadState *saved = cpy_PyEval_SaveThread();
    int result = cpy_queue_put(queue, item, block, timeout, thread);
    cpy_PyEval_RestoreThread(saved);
    if (result != 0) {
        cpy_item_free(item);
        cpy_raise_wait(module, state, result, 1);
        return NULL;
    }
    return cpy_new_none();
}

static PyObject *cpy_queue_get_impl(PyObject *self, int block, double timeout) {
    cpy_module_state *state = cpy_state_of(self);
    PyObject *module = cpy_PyType_GetModule(cpy_type(self));
    cpy_queue *queue = ((cpy_queue_object *)self)->queue;
    cpy_item *item = NULL;
    int result;
    // An item that is already there needs no GIL release.
    if ((result = cpy_queue_get(queue, &item, 0, 0, 0)) != 0 && block) {
        unsigned long thread = cpy_PyThread_get_thread_ident();
        PyThreadState *saved = cpy_PyEval_SaveThread();
        result = cpy_queue_get(queue, &item, 1, timeout, thread);
        cpy_PyEval_RestoreThread(saved);
    }
    if (result != 0) {
        cpy_raise_wait(module, state, result, 0);
        return NULL;
    }
    return cpy_decode(state, module, item);
}

static PyObject *cpy_queue_put_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"obj", "block", "timeout"};
    PyObject *values[3];
    if (cpy_parse("put", args, nargs, kwnames, names, 3, values) < 0) return NULL;
    if (values[0] == NULL) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "put() missing required argument 'obj'");
        return NULL;
    }
    double timeout;
    int block = cpy_flag(values[1], 1);
    if (block < 0 || cpy_timeout(values[2], &timeout) < 0) return NULL;
    return cpy_queue_put_impl(self, values[0], block, timeout);
}

static PyObject *cpy_queue_get_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"block", "timeout"};
    PyObject *values[2];
    if (cpy_parse("get", args, nargs, kwnames, names, 2, values) < 0) return NULL;
    double timeout;
    int block = cpy_flag(values[0], 1);
    if (block < 0 || cpy_timeout(values[1], &timeout) < 0) return NULL;
    return cpy_queue_get_impl(self, block, timeout);
}

static PyObject *cpy_queue_put_nowait(PyObject *self, PyObject *item) { return cpy_queue_put_impl(self, item, 0, 0); }
static PyObject *cpy_queue_get_nowait(PyObject *self, PyObject *unused) {
    (void)unused;
    return cpy_queue_get_impl(self, 0, 0);
}

static PyObject *cpy_queue_qsize(PyObject *self, PyObject *unused) {
    (void)unused;
    return cpy_PyLong_FromLongLong(cpy_queue_count(((cpy_queue_object *)self)->queue));
}

static PyObject *cpy_queue_empty(PyObject *self, PyObject *unused) {
    (void)unused;
    return cpy_PyBool_FromLong(cpy_queue_count(((cpy_queue_object *)self)->queue) == 0);
}

static PyObject *cpy_queue_full(PyObject *self, PyObject *unused) {
    (void)unused;
    cpy_queue *queue = ((cpy_queue_object *)self)->queue;
    Py_ssize_t maxsize = cpy_queue_maxsize(queue);
    return cpy_PyBool_FromLong(maxsize > 0 && cpy_queue_count(queue) >= maxsize);
}

/// `(module.<rebuild>, (id,))`: pickles a handle as a reference by id, so that unpickled in any
/// interpreter of this process it is the same queue or buffer.
static PyObject *cpy_reduce_by_id(PyObject *self, const char *rebuild_name, int64_t handle_id) {
    PyObject *module = cpy_PyType_GetModule(cpy_type(self));
    PyObject *rebuild = cpy_PyObject_GetAttrString(module, rebuild_name);
    PyObject *id = cpy_PyLong_FromLongLong(handle_id);
    PyObject *arguments = id ? cpy_PyTuple_New(1) : NULL;
    PyObject *result = rebuild && arguments ? cpy_PyTuple_New(2) : NULL;
    if (result == NULL) {
        cpy_xdecref(rebuild);
        cpy_xdecref(id);
        cpy_xdecref(arguments);
        return NULL;
    }
    cpy_PyTuple_SetItem(arguments, 0, id);
    cpy_PyTuple_SetItem(result, 0, rebuild);
    cpy_PyTuple_SetItem(result, 1, arguments);
    return result;
}

static PyObject *cpy_queue_reduce(PyObject *self, PyObject *unused) {
    (void)unused;
    return cpy_reduce_by_id(self, "_queue_from_id", cpy_queue_id(((cpy_queue_object *)self)->queue));
}

static PyObject *cpy_queue_id_get(PyObject *self, void *unused) {
    (void)unused;
    return cpy_PyLong_FromLongLong(cpy_queue_id(((cpy_queue_object *)self)->queue));
}

static PyObject *cpy_queue_maxsize_get(PyObject *self, void *unused) {
    (void)unused;
    return cpy_PyLong_FromLongLong(cpy_queue_maxsize(((cpy_queue_object *)self)->queue));
}

static PyObject *cpy_queue_repr(PyObject *self) {
    cpy_queue *queue = ((cpy_queue_object *)self)->queue;
    char text[96];
    snprintf(text, sizeof text, "subinterp.Queue(id=%lld, maxsize=%zd)", (long long)cpy_queue_id(queue), cpy_queue_maxsize(queue));
    return cpy_PyUnicode_FromStringAndSize(text, (Py_ssize_t)strlen(text));
}

/// Queues are equal when they are the same host queue, whichever interpreter holds them.
static PyObject *cpy_handle_richcompare(PyObject *self, PyObject *other, int op) {
    if ((op != 2 && op != 3) || cpy_type(other) != cpy_type(self)) {
        cpy_incref(cpy_not_implemented());
        return cpy_not_implemented();
    }
    void *a = ((cpy_queue_object *)self)->queue;
    void *b = ((cpy_queue_object *)other)->queue;
    return cpy_PyBool_FromLong(op == 2 ? a == b : a != b);
}

static Py_ssize_t cpy_queue_hash(PyObject *self) {
    Py_ssize_t hash = (Py_ssize_t)cpy_queue_id(((cpy_queue_object *)self)->queue);
    return hash == -1 ? -2 : hash;
}

static PyMethodDef cpy_queue_methods[] = {
    {"put", (void *)cpy_queue_put_method, CPY_METH_FASTCALL | CPY_METH_KEYWORDS,
     "put(obj, block=True, timeout=None): add obj; waits while the queue is full (raises QueueFull)."},
    {"get", (void *)cpy_queue_get_method, CPY_METH_FASTCALL | CPY_METH_KEYWORDS,
     "get(block=True, timeout=None): remove and return the oldest item; waits while empty (raises QueueEmpty)."},
    {"put_nowait", (void *)cpy_queue_put_nowait, CPY_METH_O, "put_nowait(obj): put(obj, block=False)."},
    {"get_nowait", (void *)cpy_queue_get_nowait, CPY_METH_NOARGS, "get_nowait(): get(block=False)."},
    {"qsize", (void *)cpy_queue_qsize, CPY_METH_NOARGS, "qsize(): how many items are queued."},
    {"empty", (void *)cpy_queue_empty, CPY_METH_NOARGS, "empty(): whether no item is queued."},
    {"full", (void *)cpy_queue_full, CPY_METH_NOARGS, "full(): whether the queue is at maxsize."},
    {"__reduce__", (void *)cpy_queue_reduce, CPY_METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cpy_queue_getset[] = {
    {"id", cpy_queue_id_get, NULL, "The queue's process-wide id.", NULL},
    {"maxsize", cpy_queue_maxsize_get, NULL, "The most items the queue holds (0: no limit).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot cpy_queue_slots[] = {
    {CPY_TP_NEW, (void *)cpy_queue_new},
    {CPY_TP_DEALLOC, (void *)cpy_queue_dealloc},
    {CPY_TP_METHODS, cpy_queue_methods},
    {CPY_TP_GETSET, cpy_queue_getset},
    {CPY_TP_REPR, (void *)cpy_queue_repr},
    {CPY_TP_RICHCOMPARE, (void *)cpy_handle_richcompare},
    {CPY_TP_HASH, (void *)cpy_queue_hash},
    {CPY_TP_DOC, "Queue(maxsize=0): a FIFO queue shared by every interpreter of the process.\n\n"
                 "Basic values cross natively, other objects pickled; queues and SharedBuffers cross as themselves."},
    {0, NULL},
};

static PyType_Spec cpy_queue_spec = {
    "subinterp.Queue", sizeof(cpy_queue_object), 0, CPY_TPFLAGS_DEFAULT | CPY_TPFLAGS_IMMUTABLETYPE, cpy_queue_slots,
};

// MARK: - SharedBuffer

static PyObject *cpy_buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (!args || cpy_PyTuple_Size(args) != 1 || (kwargs && cpy_PyDict_Size(kwargs) > 0)) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "SharedBuffer(size) takes the size in bytes");
        return NULL;
    }
    Py_ssize_t size = cpy_PyLong_AsSsize_t(cpy_PyTuple_GetItem(args, 0));
    if (size == -1 && cpy_PyErr_Occurred()) return NULL;
    if (size < 0) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "SharedBuffer size must be >= 0");
        return NULL;
    }
    cpy_buffer *buffer = cpy_buffer_create((size_t)size);
    if (buffer == NULL) {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory creating a SharedBuffer");
        return NULL;
    }
    return cpy_wrap_buffer(cpy_PyType_GetModuleState(type), buffer);
}

static void cpy_buffer_dealloc(PyObject *self) {
    cpy_buffer_release(((cpy_buffer_object *)self)->buffer);
    cpy_dealloc(self);
}

/// A memoryview holds this object, and this object holds the host buffer: a view cannot
/// outlive the memory it shows.
static int cpy_buffer_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    cpy_buffer *buffer = ((cpy_buffer_object *)self)->buffer;
    if (cpy_PyBuffer_FillInfo(view, self, cpy_buffer_data(buffer), (Py_ssize_t)cpy_buffer_size(buffer), 0, flags) < 0) return -1;
    ((cpy_buffer_object *)self)->exports++;
    return 0;
}

static void cpy_buffer_releasebuffer(PyObject *self, Py_buffer *view) {
    (void)view;
    ((cpy_buffer_object *)self)->exports--;
}

static PyObject *cpy_buffer_size_get(PyObject *self, void *unused) {
    (void)unused;
    return cpy_PyLong_FromLongLong((long long)cpy_buffer_size(((cpy_buffer_object *)self)->buffer));
}

static PyObject *cpy_buffer_id_get(PyObject *self, void *unused) {
    (void)unused;
    return cpy_PyLong_FromLongLong(cpy_buffer_id(((cpy_buffer_object *)self)->buffer));
}

static PyObject *cpy_buffer_view_get(PyObject *self, void *unused) {
    (void)unused;
    return cpy_PyMemoryView_FromObject(self);
}

static PyObject *cpy_buffer_reduce(PyObject *self, PyObject *unused) {
    (void)unused;
    return cpy_reduce_by_id(self, "_buffer_from_id", cpy_buffer_id(((cpy_buffer_object *)self)->buffer));
}

static PyObject *cpy_buffer_repr(PyObject *self) {
    cpy_buffer *buffer = ((cpy_buffer_object *)self)->buffer;
    char text[96];
    snprintf(text, sizeof text, "subinterp.SharedBuffer(id=%lld, size=%zu)", (long long)cpy_buffer_id(buffer), cpy_buffer_size(buffer));
    return cpy_PyUnicode_FromStringAndSize(text, (Py_ssize_t)strlen(text));
}

static Py_ssize_t cpy_buffer_length(PyObject *self) { return (Py_ssize_t)cpy_buffer_size(((cpy_buffer_object *)self)->buffer); }

static PyMethodDef cpy_buffer_methods[] = {
    {"__reduce__", (void *)cpy_buffer_reduce, CPY_METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cpy_buffer_getset[] = {
    {"size", cpy_buffer_size_get, NULL, "The size in bytes.", NULL},
    {"id", cpy_buffer_id_get, NULL, "The buffer's process-wide id.", NULL},
    {"view", cpy_buffer_view_get, NULL, "A new writable memoryview of the whole buffer.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot cpy_buffer_slots[] = {
    {CPY_TP_NEW, (void *)cpy_buffer_new},
    {CPY_TP_DEALLOC, (void *)cpy_buffer_dealloc},
    {CPY_TP_METHODS, cpy_buffer_methods},
    {CPY_TP_GETSET, cpy_buffer_getset},
    {CPY_TP_REPR, (void *)cpy_buffer_repr},
    {CPY_TP_RICHCOMPARE, (void *)cpy_handle_richcompare},
    {CPY_TP_HASH, (void *)cpy_queue_hash},
    {CPY_BF_GETBUFFER, (void *)cpy_buffer_getbuffer},
    {CPY_BF_RELEASEBUFFER, (void *)cpy_buffer_releasebuffer},
    {45 /* Py_sq_length */, (void *)cpy_buffer_length},
    {CPY_TP_DOC, "SharedBuffer(size): zero-filled memory owned by the host, seen in every interpreter it reaches.\n\n"
                 "memoryview(buffer) (or buffer.view) reads and writes it in place; passing it through a queue or a\n"
                 "call copies nothing. It is freed when the last holder in any interpreter lets go."},
    {0, NULL},
};

static PyType_Spec cpy_buffer_spec = {
    "subinterp.SharedBuffer", sizeof(cpy_buffer_object), 0, CPY_TPFLAGS_DEFAULT | CPY_TPFLAGS_IMMUTABLETYPE, cpy_buffer_slots,
};

// MARK: - Module functions

PyObject *cpy_module_create_queue(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"maxsize"};
    PyObject *values[1];
    if (cpy_parse("create_queue", args, nargs, kwnames, names, 1, values) < 0) return NULL;
    Py_ssize_t maxsize = values[0] ? cpy_PyLong_AsSsize_t(values[0]) : 0;
    if (maxsize == -1 && cpy_PyErr_Occurred()) return NULL;
    cpy_queue *queue = cpy_queue_create(maxsize);
    if (queue == NULL) {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory creating a queue");
        return NULL;
    }
    return cpy_wrap_queue(cpy_PyModule_GetState(module), queue);
}

PyObject *cpy_module_named_queue(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"name", "maxsize"};
    PyObject *values[2];
    if (cpy_parse("queue", args, nargs, kwnames, names, 2, values) < 0) return NULL;
    if (values[0] == NULL || cpy_type(values[0]) != cpy_unicode_type()) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "queue(name, maxsize=0) needs the name as a str");
        return NULL;
    }
    Py_ssize_t length;
    const char *name = cpy_PyUnicode_AsUTF8AndSize(values[0], &length);
    if (name == NULL) return NULL;
    Py_ssize_t maxsize = values[1] ? cpy_PyLong_AsSsize_t(values[1]) : 0;
    if (maxsize == -1 && cpy_PyErr_Occurred()) return NULL;
    cpy_queue *queue = cpy_queue_named(name, maxsize);
    if (queue == NULL) {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory creating a queue");
        return NULL;
    }
    return cpy_wrap_queue(cpy_PyModule_GetState(module), queue);
}

PyObject *cpy_module_queue_from_id(PyObject *module, PyObject *arg) {
    long long id = cpy_PyLong_AsLongLongAndOverflow(arg, &(int){0});
    cpy_queue *queue = cpy_queue_find(id);
    if (queue == NULL) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "that subinterp.Queue no longer exists (every holder let go of it)");
        return NULL;
    }
    return cpy_wrap_queue(cpy_PyModule_GetState(module), queue);
}

PyObject *cpy_module_buffer_from_id(PyObject *module, PyObject *arg) {
    long long id = cpy_PyLong_AsLongLongAndOverflow(arg, &(int){0});
    cpy_buffer *buffer = cpy_buffer_find(id);
    if (buffer == NULL) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "that subinterp.SharedBuffer no longer exists (every holder let go of it)");
        return NULL;
    }
    return cpy_wrap_buffer(cpy_PyModule_GetState(module), buffer);
}

// MARK: - Module state

int cpy_channels_exec(PyObject *module, cpy_module_state *state) {
    state->queue_type = (PyTypeObject *)cpy_PyType_FromModuleAndSpec(module, &cpy_queue_spec, NULL);
    if (state->queue_type == NULL || cpy_PyModule_AddType(module, state->queue_type) < 0) return -1;
    state->buffer_type = (PyTypeObject *)cpy_PyType_FromModuleAndSpec(module, &cpy_buffer_spec, NULL);
    if (state->buffer_type == NULL || cpy_PyModule_AddType(module, state->buffer_type) < 0) return -1;
    return 0;
}

int cpy_channels_traverse(cpy_module_state *state, int (*visit)(PyObject *, void *), void *arg) {
    PyObject *objects[] = {(PyObject *)state->queue_type, (PyObject *)state->buffer_type, state->queue_empty, state->queue_full};
    for (int i = 0; i < 4; i++) {
        if (objects[i] != NULL) {
            int result = visit(objects[i], arg);
            if (result) return result;
        }
    }
    return 0;
}

void cpy_channels_clear(cpy_module_state *state) {
    cpy_xdecref((PyObject *)state->queue_type);
    cpy_xdecref((PyObject *)state->buffer_type);
    cpy_xdecref(state->queue_empty);
    cpy_xdecref(state->queue_full);
    state->queue_type = NULL;
    state->buffer_type = NULL;
    state->queue_empty = NULL;
    state->queue_full = NULL;
}

// MARK: - For Swift

static cpy_module_state *cpy_current_state(PyObject **module) {
    *module = cpy_PyImport_ImportModule("subinterp._core");
    return *module ? cpy_PyModule_GetState(*module) : NULL;
}

PyObject *cpy_host_wrap_queue(cpy_queue *queue) {
    PyObject *module;
    cpy_module_state *state = cpy_current_state(&module);
    if (state == NULL) return NULL;
    cpy_queue_retain(queue);
    PyObject *object = cpy_wrap_queue(state, queue);
    cpy_decref(module);
    return object;
}

PyObject *cpy_host_wrap_buffer(cpy_buffer *buffer) {
    PyObject *module;
    cpy_module_state *state = cpy_current_state(&module);
    if (state == NULL) return NULL;
    cpy_buffer_retain(buffer);
    PyObject *object = cpy_wrap_buffer(state, buffer);
    cpy_decref(module);
    return object;
}

cpy_queue *cpy_host_queue_of(PyObject *object) {
    PyObject *module;
    cpy_module_state *state = cpy_current_state(&module);
    if (state == NULL) {
        cpy_PyErr_Clear();
        return NULL;
    }
    cpy_queue *queue = cpy_queue_of(state, object);
    if (queue) cpy_queue_retain(queue);
    cpy_decref(module);
    return queue;
}

cpy_buffer *cpy_host_buffer_of(PyObject *object) {
    PyObject *module;
    cpy_module_state *state = cpy_current_state(&module);
    if (state == NULL) {
        cpy_PyErr_Clear();
        return NULL;
    }
    cpy_buffer *buffer = cpy_buffer_of(state, object);
    if (buffer) cpy_buffer_retain(buffer);
    cpy_decref(module);
    return buffer;
}
