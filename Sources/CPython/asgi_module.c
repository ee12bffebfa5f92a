// The module `_subinterp_asgi`, made for one ASGI worker interpreter by `cpy_asgi_install`.
// It takes the worker's mailbox events into its asyncio loop and gives the app its `receive`
// and `send`: the per-request path, kept in C so a request costs the objects the app needs and
// little else. Lifespan, the loop and its selector are Python (ASGIAdapter.swift).
//
// A request is a `Request` object: its task runs `app(scope, receive, send)`, started eagerly
// (it runs until its first real suspension as it is created, so a response that never waits
// needs no extra loop iteration). `receive()` and `send()` return an `Awaitable`: already done
// when the event is at hand or the connection has room, otherwise waiting on a future the
// mailbox resolves. Multi-phase init, per-interpreter GIL; state lives in module state.
#include "asgi_internal.h"
#include "channels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// MARK: - Module state

enum {
    K_TYPE, K_ASGI, K_VERSION, K_SPEC_VERSION, K_HTTP_VERSION, K_METHOD, K_SCHEME, K_PATH, K_RAW_PATH,
    K_QUERY_STRING, K_ROOT_PATH, K_HEADERS, K_CLIENT, K_SERVER, K_STATE, K_SUBPROTOCOLS, K_BODY, K_MORE_BODY,
    K_STATUS, K_BYTES, K_TEXT, K_CODE, K_REASON, K_SUBPROTOCOL,
    V_HTTP, V_WEBSOCKET, V_HTTP_REQUEST, V_HTTP_DISCONNECT, V_RESPONSE_START, V_RESPONSE_BODY, V_WS_CONNECT,
    V_WS_RECEIVE, V_WS_DISCONNECT, V_WS_ACCEPT, V_WS_SEND, V_WS_CLOSE, V_1_0, V_1_1, V_2, V_3_0, V_SPEC,
    V_HTTPS, V_WS, V_WSS,
    M_DONE, M_CANCEL, M_CANCELLED, M_EXCEPTION, M_SET_RESULT, M_ADD_DONE_CALLBACK, M_AWAIT, M_THROW, M_CLOSE,
    M_DONE_CALLBACK, M_RECEIVE, M_SEND, A_LOOP, A_EAGER_START,
    STRING_COUNT
};

static const char *const cpy_asgi_string_values[STRING_COUNT] = {
    "type", "asgi", "version", "spec_version", "http_version", "method", "scheme", "path", "raw_path",
    "query_string", "root_path", "headers", "client", "server", "state", "subprotocols", "body", "more_body",
    "status", "bytes", "text", "code", "reason", "subprotocol",
    "http", "websocket", "http.request", "http.disconnect", "http.response.start", "http.response.body",
    "websocket.connect", "websocket.receive", "websocket.disconnect", "websocket.accept", "websocket.send",
    "websocket.close", "1.0", "1.1", "2", "3.0", "2.5", "https", "ws", "wss",
    "done", "cancel", "cancelled", "exception", "set_result", "add_done_callback", "__await__", "throw", "close",
    "_done", "receive", "send", "loop", "eager_start",
};

// Methods whose str objects are made once.
static const char *const cpy_asgi_methods[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"};
#define METHOD_COUNT 7

typedef struct cpy_asgi_request cpy_asgi_request;

typedef struct {
    cpy_asgi_worker *worker;
    PyTypeObject *request_type;
    PyTypeObject *awaitable_type;
    PyObject *client_disconnected;
    /// The awaitable `send()` returns when it is done: stateless, shared.
    PyObject *done;
    PyObject *loop;
    PyObject *app;
    PyObject *lifespan_state;
    PyObject *root_path;
    PyObject *root_path_bytes;
    PyObject *task_type;
    PyObject *future_type;
    PyObject *task_kwnames;
    PyObject *future_kwnames;
    PyObject *on_control;
    PyObject *format_exception;
    PyObject *wrap_awaitable;
    PyObject *interrupt_type;
    /// The last server address, reused while it stays the same.
    PyObject *server;
    char *server_host;
    size_t server_host_length;
    int server_port;
    PyObject *methods[METHOD_COUNT];
    PyObject *strings[STRING_COUNT];
    /// Requests whose task has not ended, each holding a reference: a request waiting on a
    /// future only it knows (back-pressure, receive) is reachable from nothing else, and the
    /// garbage collector would destroy it and its pending task. Unlinked when the task ends.
    cpy_asgi_request *active;
    int serving;
} cpy_asgi_state;

#define S(state, key) ((state)->strings[key])

// MARK: - Objects

#define R_HTTP 1
#define R_WEBSOCKET 2

// The send side: HTTP init → started (head held) → streaming (head went to the host) →
// complete. WebSocket: init (handshake pending) → streaming (accepted) → complete (closed).
#define ST_INIT 0
#define ST_STARTED 1
#define ST_STREAMING 2
#define ST_COMPLETE 3

#define F_DISCONNECTED 1
#define F_BODY_DONE 2     // the last body chunk went to the app
#define F_DEMANDED 4      // the host was asked for the next chunk or message
#define F_FINISHED 8      // the task ended and the host was told
#define F_CONNECT_SENT 16 // websocket.connect went to the app
#define F_INPUT_CLOSED 32 // the client stopped sending: receive() says disconnect, send() still works

struct cpy_asgi_request {
    cpy_object_head head;
    cpy_asgi_stream *stream;
    void *exchange;
    cpy_asgi_request *prev;
    cpy_asgi_request *next;
    int kind;
    int state;
    int flags;
    int close_code;
    PyObject *close_reason;
    PyObject *status;
    PyObject *headers;
    PyObject *task;
    PyObject *receivers;
    PyObject *writer;
    cpy_asgi_event *inbox;
    cpy_asgi_event *inbox_tail;
};

typedef struct {
    cpy_object_head head;
    PyObject *value;
    PyObject *future;
    PyObject *iter;
    /// For a receive() that waits: the request it takes its event from once woken.
    PyObject *request;
} cpy_asgi_awaitable;

static PyObject *cpy_asgi_receive_now(cpy_asgi_state *state, cpy_asgi_request *request);
static PyObject *cpy_asgi_receive_wait(cpy_asgi_state *state, cpy_asgi_request *request);

static cpy_asgi_state *cpy_asgi_state_of(PyObject *object) { return cpy_PyType_GetModuleState(cpy_type(object)); }

static PyObject *cpy_asgi_alloc(PyTypeObject *type) {
    PyObject *(*alloc)(PyTypeObject *, Py_ssize_t) = cpy_PyType_GetSlot(type, 47 /* Py_tp_alloc */);
    return alloc(type, 0);
}

static void cpy_asgi_free_object(PyObject *self) {
    PyTypeObject *type = cpy_type(self);
    void (*free_slot)(void *) = cpy_PyType_GetSlot(type, CPY_TP_FREE);
    free_slot(self);
    cpy_decref((PyObject *)type);
}

#define CLEAR(field)                 \
    do {                             \
        PyObject *old_ = (field);    \
        (field) = NULL;              \
        cpy_xdecref(old_);           \
    } while (0)

#define VISIT(field)                                   \
    do {                                               \
        if ((field) != NULL) {                         \
            int result_ = visit((PyObject *)(field), arg); \
            if (result_) return result_;               \
        }                                              \
    } while (0)

static PyObject *cpy_asgi_call_method(cpy_asgi_state *state, int name, PyObject *self, PyObject *argument) {
    PyObject *arguments[2] = {self, argument};
    return cpy_PyObject_VectorcallMethod(S(state, name), arguments, argument ? 2 : 1, NULL);
}

/// Raises `type` with a message that may quote an object's repr (`%R` in the format, once).
static void cpy_asgi_raise(PyObject *type, const char *format, PyObject *quoted) {
    char message[512];
    if (quoted != NULL) {
        PyObject *repr = cpy_PyObject_Repr(quoted);
        Py_ssize_t length = 0;
        const char *text = repr ? cpy_PyUnicode_AsUTF8AndSize(repr, &length) : NULL;
        if (text == NULL) {
            cpy_PyErr_Clear();
            text = "?";
        }
        snprintf(message, sizeof message, format, text);
        cpy_xdecref(repr);
    } else {
        snprintf(message, sizeof message, "%s", format);
    }
    cpy_PyErr_SetString(type, message);
}

// MARK: - Awaitable

static PyObject *cpy_asgi_ready(cpy_asgi_state *state, PyObject *value /* stolen */) {
    if (value == NULL) return NULL;
    cpy_asgi_awaitable *awaitable = (cpy_asgi_awaitable *)cpy_asgi_alloc(state->awaitable_type);
    if (awaitable == NULL) {
        cpy_decref(value);
        return NULL;
    }
    awaitable->value = value;
    return (PyObject *)awaitable;
}

/// An awaitable that waits on `future` (borrowed). A receive() passes its `request`: woken,
/// it takes its event from the request then.
static PyObject *cpy_asgi_waiting(cpy_asgi_state *state, PyObject *future, PyObject *request) {
    cpy_asgi_awaitable *awaitable = (cpy_asgi_awaitable *)cpy_asgi_alloc(state->awaitable_type);
    if (awaitable == NULL) return NULL;
    cpy_incref(future);
    awaitable->future = future;
    if (request != NULL) cpy_incref(request);
    awaitable->request = request;
    return (PyObject *)awaitable;
}

static int cpy_asgi_awaitable_step(PyObject *self, PyObject *argument, PyObject **result) {
    cpy_asgi_awaitable *awaitable = (cpy_asgi_awaitable *)self;
    while (awaitable->future != NULL) {
        if (awaitable->iter == NULL) {
            // The future's own iterator: it marks the future as blocking and yields it, which
            // is what an asyncio Task waits on.
            awaitable->iter = cpy_asgi_call_method(cpy_asgi_state_of(self), M_AWAIT, awaitable->future, NULL);
            if (awaitable->iter == NULL) return CPY_PYGEN_ERROR;
        }
        int status = cpy_PyIter_Send(awaitable->iter, argument, result);
        if (status == CPY_PYGEN_NEXT) return status;
        CLEAR(awaitable->iter);
        CLEAR(awaitable->future);
        if (status == CPY_PYGEN_ERROR || awaitable->request == NULL) return status;
        // A receive() woken up takes its event only now that it runs: if its task was
        // cancelled in between, the event stays for the next receive(). If another receive()
        // took it first, this one waits again.
        cpy_decref(*result);
        *result = NULL;
        cpy_asgi_state *state = cpy_asgi_state_of(self);
        cpy_asgi_request *request = (cpy_asgi_request *)awaitable->request;
        PyObject *message = cpy_asgi_receive_now(state, request);
        if (message != NULL) {
            *result = message;
            CLEAR(awaitable->request);
            return CPY_PYGEN_RETURN;
        }
        if (cpy_PyErr_Occurred()) return CPY_PYGEN_ERROR;
        awaitable->future = cpy_asgi_receive_wait(state, request);
        if (awaitable->future == NULL) return CPY_PYGEN_ERROR;
        argument = cpy_none();
    }
    *result = awaitable->value ? awaitable->value : cpy_none();
    cpy_incref(*result);
    return CPY_PYGEN_RETURN;
}

static PyObject *cpy_asgi_awaitable_await(PyObject *self) {
    cpy_incref(self);
    return self;
}

/// Ends a step that returned `value` the way a generator does: StopIteration(value).
static void cpy_asgi_stop(PyObject *value /* stolen */) {
    PyObject *arguments[1] = {value};
    PyObject *stop = cpy_PyObject_Vectorcall(cpy_exc_stop_iteration(), arguments, 1, NULL);
    cpy_decref(value);
    if (stop != NULL) {
        cpy_PyErr_SetObject(cpy_exc_stop_iteration(), stop);
        cpy_decref(stop);
    }
}

static PyObject *cpy_asgi_awaitable_next(PyObject *self) {
    PyObject *result = NULL;
    int status = cpy_asgi_awaitable_step(self, cpy_none(), &result);
    if (status == CPY_PYGEN_NEXT) return result;
    if (status == CPY_PYGEN_RETURN) {
        if (result == cpy_none()) {
            cpy_decref(result);  // NULL without an exception is StopIteration
        } else {
            cpy_asgi_stop(result);
        }
    }
    return NULL;
}

static PyObject *cpy_asgi_awaitable_send(PyObject *self, PyObject *argument) {
    PyObject *result = NULL;
    int status = cpy_asgi_awaitable_step(self, argument, &result);
    if (status == CPY_PYGEN_NEXT) return result;
    if (status == CPY_PYGEN_RETURN) cpy_asgi_stop(result);
    return NULL;
}

static PyObject *cpy_asgi_awaitable_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    cpy_asgi_awaitable *awaitable = (cpy_asgi_awaitable *)self;
    if (nargs < 1 || nargs > 3) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "throw() takes from 1 to 3 arguments");
        return NULL;
    }
    if (awaitable->iter != NULL && cpy_asgi_state_of(self) != NULL) {
        PyObject *arguments[4] = {awaitable->iter, args[0], nargs > 1 ? args[1] : NULL, nargs > 2 ? args[2] : NULL};
        PyObject *result = cpy_PyObject_VectorcallMethod(S(cpy_asgi_state_of(self), M_THROW), arguments, (size_t)nargs + 1, NULL);
        if (result == NULL) {
            CLEAR(awaitable->iter);
            CLEAR(awaitable->future);
            CLEAR(awaitable->request);
        }
        return result;
    }
    CLEAR(awaitable->future);
    CLEAR(awaitable->request);
    PyObject *given = args[0];
    if (cpy_PyType_GetFlags(cpy_type(given)) & CPY_TPFLAGS_BASE_EXC_SUBCLASS) {
        cpy_PyErr_SetObject((PyObject *)cpy_type(given), given);
    } else if (cpy_PyType_GetFlags(cpy_type(given)) & CPY_TPFLAGS_TYPE_SUBCLASS) {
        cpy_PyErr_SetObject(given, nargs > 1 ? args[1] : cpy_none());
    } else {
        cpy_PyErr_SetString(cpy_exc_type_error(), "exceptions must be classes or instances deriving from BaseException");
    }
    return NULL;
}

static PyObject *cpy_asgi_awaitable_close(PyObject *self, PyObject *unused) {
    (void)unused;
    cpy_asgi_awaitable *awaitable = (cpy_asgi_awaitable *)self;
    // No state: the interpreter is ending (its types cleared); there is nothing left to close.
    if (awaitable->iter != NULL && cpy_asgi_state_of(self) != NULL) {
        PyObject *result = cpy_asgi_call_method(cpy_asgi_state_of(self), M_CLOSE, awaitable->iter, NULL);
        if (result == NULL) return NULL;
        cpy_decref(result);
    }
    CLEAR(awaitable->iter);
    CLEAR(awaitable->future);
    CLEAR(awaitable->request);
    return cpy_new_none();
}

static int cpy_asgi_awaitable_traverse(PyObject *self, int (*visit)(PyObject *, void *), void *arg) {
    cpy_asgi_awaitable *awaitable = (cpy_asgi_awaitable *)self;
    VISIT(cpy_type(self));
    VISIT(awaitable->value);
    VISIT(awaitable->future);
    VISIT(awaitable->iter);
    VISIT(awaitable->request);
    return 0;
}

static int cpy_asgi_awaitable_clear(PyObject *self) {
    cpy_asgi_awaitable *awaitable = (cpy_asgi_awaitable *)self;
    CLEAR(awaitable->value);
    CLEAR(awaitable->future);
    CLEAR(awaitable->iter);
    CLEAR(awaitable->request);
    return 0;
}

static void cpy_asgi_awaitable_dealloc(PyObject *self) {
    cpy_PyObject_GC_UnTrack(self);
    cpy_asgi_awaitable_clear(self);
    cpy_asgi_free_object(self);
}

static PyMethodDef cpy_asgi_awaitable_methods[] = {
    {"send", (void *)cpy_asgi_awaitable_send, CPY_METH_O, NULL},
    {"throw", (void *)cpy_asgi_awaitable_throw, CPY_METH_FASTCALL, NULL},
    {"close", (void *)cpy_asgi_awaitable_close, CPY_METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cpy_asgi_awaitable_slots[] = {
    {CPY_AM_AWAIT, (void *)cpy_asgi_awaitable_await},
    {CPY_AM_SEND, (void *)cpy_asgi_awaitable_step},
    {CPY_TP_ITER, (void *)cpy_asgi_awaitable_await},
    {CPY_TP_ITERNEXT, (void *)cpy_asgi_awaitable_next},
    {CPY_TP_METHODS, cpy_asgi_awaitable_methods},
    {CPY_TP_TRAVERSE, (void *)cpy_asgi_awaitable_traverse},
    {CPY_TP_CLEAR, (void *)cpy_asgi_awaitable_clear},
    {CPY_TP_DEALLOC, (void *)cpy_asgi_awaitable_dealloc},
    {CPY_TP_DOC, "What receive() and send() return: a coroutine-like awaitable, done at once when it can be."},
    {0, NULL},
};

static PyType_Spec cpy_asgi_awaitable_spec = {
    "_subinterp_asgi.Awaitable", sizeof(cpy_asgi_awaitable), 0,
    CPY_TPFLAGS_DEFAULT | CPY_TPFLAGS_IMMUTABLETYPE | CPY_TPFLAGS_HAVE_GC | CPY_TPFLAGS_DISALLOW_INSTANTIATION,
    cpy_asgi_awaitable_slots,
};

// MARK: - Futures

static PyObject *cpy_asgi_new_future(cpy_asgi_state *state) {
    PyObject *arguments[1] = {state->loop};
    return cpy_PyObject_Vectorcall(state->future_type, arguments, 0, state->future_kwnames);
}

/// Sets a future's result unless it is done (cancelled by its awaiter); returns 1 if set.
static int cpy_asgi_resolve(cpy_asgi_state *state, PyObject *future, PyObject *value) {
    PyObject *done = cpy_asgi_call_method(state, M_DONE, future, NULL);
    if (done == NULL) {
        cpy_PyErr_WriteUnraisable(future);
        return 0;
    }
    int finished = done == cpy_true();
    cpy_decref(done);
    if (finished) return 0;
    PyObject *result = cpy_asgi_call_method(state, M_SET_RESULT, future, value ? value : cpy_none());
    if (result == NULL) {
        cpy_PyErr_WriteUnraisable(future);
        return 0;
    }
    cpy_decref(result);
    return 1;
}

// MARK: - Messages to the app

static PyObject *cpy_asgi_new_message(cpy_asgi_state *state, int type) {
    PyObject *message = cpy_PyDict_New();
    if (message != NULL && cpy_PyDict_SetItem(message, S(state, K_TYPE), S(state, type)) < 0) {
        cpy_decref(message);
        return NULL;
    }
    return message;
}

static int cpy_asgi_set_new(PyObject *dict, PyObject *key, PyObject *value /* stolen */) {
    if (value == NULL) return -1;
    int result = cpy_PyDict_SetItem(dict, key, value);
    cpy_decref(value);
    return result;
}

static PyObject *cpy_asgi_disconnect_message(cpy_asgi_state *state, cpy_asgi_request *request) {
    if (request->kind == R_HTTP) return cpy_asgi_new_message(state, V_HTTP_DISCONNECT);
    PyObject *message = cpy_asgi_new_message(state, V_WS_DISCONNECT);
    if (message == NULL) return NULL;
    PyObject *reason = request->close_reason;
    if (reason != NULL) {
        cpy_incref(reason);
    } else {
        reason = cpy_PyUnicode_FromStringAndSize("", 0);
    }
    if (cpy_asgi_set_new(message, S(state, K_CODE), cpy_PyLong_FromLongLong(request->close_code)) < 0
        || cpy_asgi_set_new(message, S(state, K_REASON), reason) < 0) {
        cpy_decref(message);
        return NULL;
    }
    return message;
}

/// The message for the oldest inbox event, which it removes.
static PyObject *cpy_asgi_take_inbox(cpy_asgi_state *state, cpy_asgi_request *request) {
    cpy_asgi_event *event = request->inbox;
    request->inbox = event->next;
    if (request->inbox == NULL) request->inbox_tail = NULL;
    event->next = NULL;
    const char *payload = (const char *)cpy_asgi_event_payload(event);
    PyObject *message = NULL;
    if (request->kind == R_HTTP) {
        int more = (event->flags & CPY_ASGI_MORE) != 0;
        if (!more) request->flags |= F_BODY_DONE;
        message = cpy_asgi_new_message(state, V_HTTP_REQUEST);
        if (message != NULL
            && (cpy_asgi_set_new(message, S(state, K_BODY), cpy_PyBytes_FromStringAndSize(payload, (Py_ssize_t)event->payload_length)) < 0
                || cpy_PyDict_SetItem(message, S(state, K_MORE_BODY), more ? cpy_true() : cpy_false()) < 0)) {
            CLEAR(message);
        }
    } else {
        message = cpy_asgi_new_message(state, V_WS_RECEIVE);
        PyObject *content = event->kind == CPY_ASGI_TEXT
                                ? cpy_PyUnicode_DecodeUTF8(payload, (Py_ssize_t)event->payload_length, "replace")
                                : cpy_PyBytes_FromStringAndSize(payload, (Py_ssize_t)event->payload_length);
        if (message != NULL && cpy_asgi_set_new(message, S(state, event->kind == CPY_ASGI_TEXT ? K_TEXT : K_BYTES), content) < 0) {
            CLEAR(message);
        } else if (message == NULL) {
            cpy_xdecref(content);
        }
    }
    cpy_asgi_event_free(event);
    return message;
}

/// Wakes every waiting receive(): an event arrived, or there will be none (disconnect, response
/// complete). Each takes what there is when it runs.
static void cpy_asgi_wake(cpy_asgi_state *state, cpy_asgi_request *request) {
    PyObject *receivers = request->receivers;
    request->receivers = NULL;
    if (receivers == NULL) return;
    Py_ssize_t count = cpy_PyList_Size(receivers);
    for (Py_ssize_t i = 0; i < count; i++) cpy_asgi_resolve(state, cpy_PyList_GetItem(receivers, i), NULL);
    cpy_decref(receivers);
}

// MARK: - Request: receive

/// The app's next event if there is one now (a new reference), else NULL: with an exception set
/// on failure, without one if the app must wait.
static PyObject *cpy_asgi_receive_now(cpy_asgi_state *state, cpy_asgi_request *request) {
    if (request->kind == R_WEBSOCKET && !(request->flags & F_CONNECT_SENT)) {
        request->flags |= F_CONNECT_SENT;
        return cpy_asgi_new_message(state, V_WS_CONNECT);
    }
    if (request->inbox != NULL) return cpy_asgi_take_inbox(state, request);
    if ((request->flags & (F_DISCONNECTED | F_FINISHED | F_INPUT_CLOSED)) || (request->kind == R_HTTP && request->state == ST_COMPLETE)) {
        return cpy_asgi_disconnect_message(state, request);
    }
    return NULL;
}

/// A future the next event wakes (a new reference). Asks the host for more only now that the
/// app waits for it (an HTTP body whose last chunk went out has none: then this waits for the
/// disconnect or the end of the response).
static PyObject *cpy_asgi_receive_wait(cpy_asgi_state *state, cpy_asgi_request *request) {
    int more_to_come = request->kind == R_WEBSOCKET || !(request->flags & F_BODY_DONE);
    if (more_to_come && !(request->flags & F_DEMANDED)) {
        request->flags |= F_DEMANDED;
        const cpy_asgi_host *host = cpy_asgi_host_functions();
        if (host->demand) host->demand(request->exchange);
    }
    PyObject *future = cpy_asgi_new_future(state);
    if (future == NULL) return NULL;
    // Receives whose callers gave up (cancelled waits) do not pile up.
    PyObject *kept = cpy_PyList_New(0);
    if (kept != NULL && cpy_PyList_Append(kept, future) < 0) CLEAR(kept);
    Py_ssize_t count = request->receivers ? cpy_PyList_Size(request->receivers) : 0;
    for (Py_ssize_t i = 0; kept != NULL && i < count; i++) {
        PyObject *waiting = cpy_PyList_GetItem(request->receivers, i);
        PyObject *done = cpy_asgi_call_method(state, M_DONE, waiting, NULL);
        if (done == NULL || (done != cpy_true() && cpy_PyList_Append(kept, waiting) < 0)) CLEAR(kept);
        cpy_xdecref(done);
    }
    if (kept == NULL) {
        cpy_decref(future);
        return NULL;
    }
    CLEAR(request->receivers);
    request->receivers = kept;
    return future;
}

static PyObject *cpy_asgi_receive(PyObject *self, PyObject *unused) {
    (void)unused;
    cpy_asgi_request *request = (cpy_asgi_request *)self;
    cpy_asgi_state *state = cpy_asgi_state_of(self);
    PyObject *message = cpy_asgi_receive_now(state, request);
    if (message != NULL) return cpy_asgi_ready(state, message);
    if (cpy_PyErr_Occurred()) return NULL;
    PyObject *future = cpy_asgi_receive_wait(state, request);
    if (future == NULL) return NULL;
    PyObject *awaitable = cpy_asgi_waiting(state, future, self);
    cpy_decref(future);
    return awaitable;
}

// MARK: - Request: send

static int cpy_asgi_is_token_char(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/// bytes for a bytes-like object (a new reference), or NULL with TypeError naming `what`.
static PyObject *cpy_asgi_as_bytes(PyObject *object, const char *what) {
    if (cpy_type(object) == cpy_bytes_type()) {
        cpy_incref(object);
        return object;
    }
    Py_buffer view;
    if (cpy_PyObject_GetBuffer(object, &view, 0) < 0) {
        cpy_PyErr_Clear();
        cpy_asgi_raise(cpy_exc_type_error(), what, (PyObject *)cpy_type(object));
        return NULL;
    }
    PyObject *bytes = cpy_PyBytes_FromStringAndSize(view.buf, view.len);
    cpy_PyBuffer_Release(&view);
    return bytes;
}

/// The response headers as a new list of (bytes, bytes), checked: names are tokens, values hold
/// no CR, LF or NUL (they would let a header forge the rest of the response).
static PyObject *cpy_asgi_check_headers(PyObject *headers, int forbid_subprotocol) {
    PyObject *checked = cpy_PyList_New(0);
    if (checked == NULL || headers == NULL || headers == cpy_none()) return checked;
    PyObject *iterator = cpy_PyObject_GetIter(headers);
    if (iterator == NULL) {
        cpy_decref(checked);
        cpy_asgi_raise(cpy_exc_type_error(), "the headers must be an iterable of [name, value] pairs, not %s", (PyObject *)cpy_type(headers));
        return NULL;
    }
    PyObject *pair;
    while ((pair = cpy_PyIter_Next(iterator)) != NULL) {
        PyObject *name = NULL, *value = NULL, *item = NULL;
        PyTypeObject *type = cpy_type(pair);
        Py_ssize_t count = type == cpy_tuple_type() ? cpy_PyTuple_Size(pair) : type == cpy_list_type() ? cpy_PyList_Size(pair) : -1;
        if (count != 2) {
            cpy_asgi_raise(cpy_exc_type_error(), "each header must be a [name, value] pair of bytes, not %s", pair);
            goto fail;
        }
        PyObject *raw_name = type == cpy_tuple_type() ? cpy_PyTuple_GetItem(pair, 0) : cpy_PyList_GetItem(pair, 0);
        PyObject *raw_value = type == cpy_tuple_type() ? cpy_PyTuple_GetItem(pair, 1) : cpy_PyList_GetItem(pair, 1);
        name = cpy_asgi_as_bytes(raw_name, "a header name must be bytes, not %s");
        if (name == NULL) goto fail;
        value = cpy_asgi_as_bytes(raw_value, "a header value must be bytes, not %s");
        if (value == NULL) goto fail;
        char *data;
        Py_ssize_t length;
        cpy_PyBytes_AsStringAndSize(name, &data, &length);
        int valid = length > 0;
        for (Py_ssize_t i = 0; valid && i < length; i++) valid = cpy_asgi_is_token_char((unsigned char)data[i]);
        if (!valid) {
            cpy_asgi_raise(cpy_exc_value_error(), "invalid header name %s (it must be a token: letters, digits, !#$%%&'*+-.^_`|~)", name);
            goto fail;
        }
        if (forbid_subprotocol && length == 22 && strncasecmp(data, "sec-websocket-protocol", 22) == 0) {
            cpy_PyErr_SetString(cpy_exc_value_error(), "websocket.accept must not carry sec-websocket-protocol; use its 'subprotocol' key");
            goto fail;
        }
        cpy_PyBytes_AsStringAndSize(value, &data, &length);
        for (Py_ssize_t i = 0; i < length; i++) {
            if (data[i] == '\r' || data[i] == '\n' || data[i] == '\0') {
                cpy_asgi_raise(cpy_exc_value_error(), "the value of a header holds CR, LF or NUL: %s", value);
                goto fail;
            }
        }
        item = cpy_PyTuple_New(2);
        if (item == NULL) goto fail;
        cpy_PyTuple_SetItem(item, 0, name);
        cpy_PyTuple_SetItem(item, 1, value);
        name = value = NULL;
        int appended = cpy_PyList_Append(checked, item);
        cpy_decref(item);
        cpy_decref(pair);
        if (appended < 0) {
            cpy_decref(iterator);
            cpy_decref(checked);
            return NULL;
        }
        continue;
    fail:
        cpy_xdecref(name);
        cpy_xdecref(value);
        cpy_decref(pair);
        cpy_decref(iterator);
        cpy_decref(checked);
        return NULL;
    }
    cpy_decref(iterator);
    if (cpy_PyErr_Occurred()) {
        cpy_decref(checked);
        return NULL;
    }
    return checked;
}

/// Header views into a checked list, for the host (valid while the list lives).
static cpy_asgi_header *cpy_asgi_header_views(PyObject *headers, cpy_asgi_header *stack, size_t stack_count, size_t *count) {
    *count = headers ? (size_t)cpy_PyList_Size(headers) : 0;
    cpy_asgi_header *views = *count <= stack_count ? stack : malloc(*count * sizeof *views);
    if (views == NULL) return NULL;
    for (size_t i = 0; i < *count; i++) {
        PyObject *pair = cpy_PyList_GetItem(headers, (Py_ssize_t)i);
        char *data;
        Py_ssize_t length;
        cpy_PyBytes_AsStringAndSize(cpy_PyTuple_GetItem(pair, 0), &data, &length);
        views[i].name = data;
        views[i].name_length = (size_t)length;
        cpy_PyBytes_AsStringAndSize(cpy_PyTuple_GetItem(pair, 1), &data, &length);
        views[i].value = data;
        views[i].value_length = (size_t)length;
    }
    return views;
}

static PyObject *cpy_asgi_get(PyObject *message, PyObject *key) {
    PyObject *value = cpy_PyDict_GetItemWithError(message, key);
    return value;  // borrowed; NULL if missing (check PyErr_Occurred)
}

static PyObject *cpy_asgi_client_gone(cpy_asgi_state *state) {
    cpy_PyErr_SetString(state->client_disconnected, "the client disconnected");
    return NULL;
}

/// What a send() returns once the host took the message.
static PyObject *cpy_asgi_after_send(cpy_asgi_state *state, cpy_asgi_request *request, int answer) {
    if (answer == CPY_ASGI_CLOSED) {
        request->flags |= F_DISCONNECTED;
        cpy_asgi_wake(state, request);
        return cpy_asgi_client_gone(state);
    }
    if (answer == CPY_ASGI_FULL && !(request->flags & F_DISCONNECTED)) {
        // Back-pressure: this send completes when the host posts CPY_ASGI_WRITABLE.
        PyObject *future = cpy_asgi_new_future(state);
        if (future == NULL) return NULL;
        PyObject *old = request->writer;
        request->writer = future;
        if (old != NULL) {
            cpy_asgi_resolve(state, old, NULL);
            cpy_decref(old);
        }
        return cpy_asgi_waiting(state, future, NULL);
    }
    cpy_incref(state->done);
    return state->done;
}

static int cpy_asgi_type_is(cpy_asgi_state *state, PyObject *type, int expected) {
    if (type == S(state, expected)) return 1;
    return cpy_type(type) == cpy_unicode_type() && cpy_PyUnicode_CompareWithASCIIString(type, cpy_asgi_string_values[expected]) == 0;
}

static PyObject *cpy_asgi_send_http(cpy_asgi_state *state, cpy_asgi_request *request, PyObject *message, PyObject *type) {
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    if (request->state == ST_INIT) {
        if (!cpy_asgi_type_is(state, type, V_RESPONSE_START)) {
            cpy_asgi_raise(cpy_exc_runtime_error(), "Expected ASGI message 'http.response.start', but got %s.", type);
            return NULL;
        }
        PyObject *status = cpy_asgi_get(message, S(state, K_STATUS));
        if (status == NULL || !(cpy_PyType_GetFlags(cpy_type(status)) & CPY_TPFLAGS_LONG_SUBCLASS) || cpy_type(status) == cpy_bool_type()) {
            if (!cpy_PyErr_Occurred()) cpy_asgi_raise(cpy_exc_type_error(), "http.response.start needs an int 'status', not %s", status ? status : cpy_none());
            return NULL;
        }
        long code = cpy_PyLong_AsLong(status);
        if (code < 100 || code > 999) {
            if (!cpy_PyErr_Occurred()) cpy_asgi_raise(cpy_exc_value_error(), "the response status must be a 3-digit code, not %s", status);
            return NULL;
        }
        PyObject *headers = cpy_asgi_get(message, S(state, K_HEADERS));
        if (headers == NULL && cpy_PyErr_Occurred()) return NULL;
        PyObject *checked = cpy_asgi_check_headers(headers, 0);
        if (checked == NULL) return NULL;
        // Held until the first body chunk, so head and body reach the connection together, and
        // an app that fails before any body still gets a clean 500.
        cpy_incref(status);
        request->status = status;
        request->headers = checked;
        request->state = ST_STARTED;
        cpy_incref(state->done);
        return state->done;
    }
    if (request->state == ST_COMPLETE) {
        cpy_asgi_raise(cpy_exc_runtime_error(), "Unexpected ASGI message %s sent, after response already completed.", type);
        return NULL;
    }
    if (!cpy_asgi_type_is(state, type, V_RESPONSE_BODY)) {
        cpy_asgi_raise(cpy_exc_runtime_error(), "Expected ASGI message 'http.response.body', but got %s.", type);
        return NULL;
    }
    PyObject *body = cpy_asgi_get(message, S(state, K_BODY));
    if (body == NULL && cpy_PyErr_Occurred()) return NULL;
    PyObject *more_object = cpy_asgi_get(message, S(state, K_MORE_BODY));
    if (more_object == NULL && cpy_PyErr_Occurred()) return NULL;
    int more = more_object ? cpy_PyObject_IsTrue(more_object) : 0;
    if (more < 0) return NULL;
    Py_buffer view = {0};
    int has_view = 0;
    if (body != NULL && body != cpy_none()) {
        if (cpy_type(body) == cpy_bytes_type()) {
            char *data;
            Py_ssize_t length;
            cpy_PyBytes_AsStringAndSize(body, &data, &length);
            view.buf = data;
            view.len = length;
        } else if (cpy_PyObject_GetBuffer(body, &view, 0) < 0) {
            cpy_PyErr_Clear();
            cpy_asgi_raise(cpy_exc_type_error(), "http.response.body 'body' must be bytes, not %s", (PyObject *)cpy_type(body));
            return NULL;
        } else {
            has_view = 1;
        }
    }
    cpy_asgi_header stack[32];
    cpy_asgi_header *views = NULL;
    size_t count = 0;
    cpy_asgi_message out = {CPY_ASGI_RESPONSE, 0, NULL, 0, view.buf, (size_t)view.len, more, NULL, 0, 0};
    if (request->state == ST_STARTED) {
        views = cpy_asgi_header_views(request->headers, stack, 32, &count);
        if (views == NULL) {
            if (has_view) cpy_PyBuffer_Release(&view);
            cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory");
            return NULL;
        }
        out.status = (int)cpy_PyLong_AsLong(request->status);
        out.headers = views;
        out.header_count = count;
    }
    int answer = host->send(request->exchange, &out);
    if (views != NULL && views != stack) free(views);
    if (has_view) cpy_PyBuffer_Release(&view);
    if (request->state == ST_STARTED) {
        CLEAR(request->status);
        CLEAR(request->headers);
        request->state = ST_STREAMING;
    }
    if (!more) {
        request->state = ST_COMPLETE;
        // A task waiting in receive() for the disconnect (Starlette's listen_for_disconnect)
        // ends now.
        cpy_asgi_wake(state, request);
    }
    return cpy_asgi_after_send(state, request, answer);
}

/// UTF-8 of an optional str in `message` (NULL if missing or None); -1 with an error if not a str.
static int cpy_asgi_optional_text(PyObject *message, PyObject *key, const char *what, const char **text, Py_ssize_t *length) {
    *text = NULL;
    *length = 0;
    PyObject *value = cpy_asgi_get(message, key);
    if (value == NULL) return cpy_PyErr_Occurred() ? -1 : 0;
    if (value == cpy_none()) return 0;
    if (cpy_type(value) != cpy_unicode_type() && !(cpy_PyType_GetFlags(cpy_type(value)) & CPY_TPFLAGS_UNICODE_SUBCLASS)) {
        cpy_asgi_raise(cpy_exc_type_error(), what, (PyObject *)cpy_type(value));
        return -1;
    }
    *text = cpy_PyUnicode_AsUTF8AndSize(value, length);
    return *text ? 0 : -1;
}

static PyObject *cpy_asgi_send_close(cpy_asgi_state *state, cpy_asgi_request *request, PyObject *message) {
    PyObject *code_object = cpy_asgi_get(message, S(state, K_CODE));
    if (code_object == NULL && cpy_PyErr_Occurred()) return NULL;
    long code = 1000;
    if (code_object != NULL && code_object != cpy_none()) {
        code = cpy_PyLong_AsLong(code_object);
        if (code == -1 && cpy_PyErr_Occurred()) return NULL;
    }
    const char *reason;
    Py_ssize_t reason_length;
    if (cpy_asgi_optional_text(message, S(state, K_REASON), "websocket.close 'reason' must be a str, not %s", &reason, &reason_length) < 0) return NULL;
    cpy_asgi_message out = {CPY_ASGI_CLOSE, (int)code, NULL, 0, NULL, 0, 0, reason, (size_t)reason_length, reason != NULL};
    int answer = cpy_asgi_host_functions()->send(request->exchange, &out);
    request->state = ST_COMPLETE;
    if (answer == CPY_ASGI_CLOSED) request->flags |= F_DISCONNECTED;
    cpy_incref(state->done);
    return state->done;
}

static PyObject *cpy_asgi_send_websocket(cpy_asgi_state *state, cpy_asgi_request *request, PyObject *message, PyObject *type) {
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    if (request->state == ST_COMPLETE) {
        cpy_asgi_raise(cpy_exc_runtime_error(), "Unexpected ASGI message %s sent, after sending 'websocket.close'.", type);
        return NULL;
    }
    if (cpy_asgi_type_is(state, type, V_WS_CLOSE)) return cpy_asgi_send_close(state, request, message);
    if (request->state == ST_INIT) {
        if (!cpy_asgi_type_is(state, type, V_WS_ACCEPT)) {
            cpy_asgi_raise(cpy_exc_runtime_error(), "Expected ASGI message 'websocket.accept' or 'websocket.close', but got %s.", type);
            return NULL;
        }
        const char *subprotocol;
        Py_ssize_t subprotocol_length;
        if (cpy_asgi_optional_text(message, S(state, K_SUBPROTOCOL), "websocket.accept 'subprotocol' must be a str, not %s",
                                   &subprotocol, &subprotocol_length) < 0) {
            return NULL;
        }
        PyObject *headers = cpy_asgi_get(message, S(state, K_HEADERS));
        if (headers == NULL && cpy_PyErr_Occurred()) return NULL;
        PyObject *checked = cpy_asgi_check_headers(headers, 1);
        if (checked == NULL) return NULL;
        cpy_asgi_header stack[16];
        size_t count = 0;
        cpy_asgi_header *views = cpy_asgi_header_views(checked, stack, 16, &count);
        if (views == NULL) {
            cpy_decref(checked);
            cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory");
            return NULL;
        }
        cpy_asgi_message out = {CPY_ASGI_ACCEPT, 0, views, count, NULL, 0, 0, subprotocol, (size_t)subprotocol_length, subprotocol != NULL};
        int answer = host->send(request->exchange, &out);
        if (views != stack) free(views);
        cpy_decref(checked);
        request->state = ST_STREAMING;
        return cpy_asgi_after_send(state, request, answer);
    }
    if (!cpy_asgi_type_is(state, type, V_WS_SEND)) {
        cpy_asgi_raise(cpy_exc_runtime_error(), "Expected ASGI message 'websocket.send' or 'websocket.close', but got %s.", type);
        return NULL;
    }
    PyObject *bytes = cpy_asgi_get(message, S(state, K_BYTES));
    if (bytes == NULL && cpy_PyErr_Occurred()) return NULL;
    if (bytes == cpy_none()) bytes = NULL;
    const char *text;
    Py_ssize_t text_length;
    if (cpy_asgi_optional_text(message, S(state, K_TEXT), "websocket.send 'text' must be a str, not %s", &text, &text_length) < 0) return NULL;
    if ((bytes == NULL) == (text == NULL)) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "websocket.send needs exactly one of 'bytes' and 'text'");
        return NULL;
    }
    cpy_asgi_message out = {CPY_ASGI_MESSAGE, 0, NULL, 0, text, (size_t)text_length, 1, NULL, 0, 0};
    Py_buffer view = {0};
    if (bytes != NULL) {
        if (cpy_PyObject_GetBuffer(bytes, &view, 0) < 0) {
            cpy_PyErr_Clear();
            cpy_asgi_raise(cpy_exc_type_error(), "websocket.send 'bytes' must be bytes, not %s", (PyObject *)cpy_type(bytes));
            return NULL;
        }
        out.data = view.buf;
        out.length = (size_t)view.len;
        out.more = 0;
    }
    int answer = host->send(request->exchange, &out);
    if (bytes != NULL) cpy_PyBuffer_Release(&view);
    return cpy_asgi_after_send(state, request, answer);
}

static PyObject *cpy_asgi_send(PyObject *self, PyObject *message) {
    cpy_asgi_request *request = (cpy_asgi_request *)self;
    cpy_asgi_state *state = cpy_asgi_state_of(self);
    if (cpy_type(message) != cpy_dict_type()) {
        cpy_asgi_raise(cpy_exc_type_error(), "an ASGI message is a dict, not %s", (PyObject *)cpy_type(message));
        return NULL;
    }
    PyObject *type = cpy_asgi_get(message, S(state, K_TYPE));
    if (type == NULL) {
        if (!cpy_PyErr_Occurred()) cpy_PyErr_SetString(cpy_exc_value_error(), "the ASGI message has no 'type'");
        return NULL;
    }
    if (request->flags & F_DISCONNECTED) return cpy_asgi_client_gone(state);
    return request->kind == R_HTTP ? cpy_asgi_send_http(state, request, message, type)
                                   : cpy_asgi_send_websocket(state, request, message, type);
}

// MARK: - Request: lifecycle

/// Takes the request out of the active list; returns 1 if it was in it (its reference is then
/// the caller's to drop).
static int cpy_asgi_unlink(cpy_asgi_state *state, cpy_asgi_request *request) {
    int linked = request->prev != NULL || state->active == request;
    if (request->prev != NULL) {
        request->prev->next = request->next;
    } else if (state->active == request) {
        state->active = request->next;
    }
    if (request->next != NULL) request->next->prev = request->prev;
    request->prev = request->next = NULL;
    return linked;
}

static void cpy_asgi_free_inbox(cpy_asgi_request *request) {
    while (request->inbox != NULL) {
        cpy_asgi_event *next = request->inbox->next;
        cpy_asgi_event_free(request->inbox);
        request->inbox = next;
    }
    request->inbox_tail = NULL;
}

static void cpy_asgi_tell_host(cpy_asgi_request *request, int outcome, PyObject *detail) {
    const char *text = NULL;
    Py_ssize_t length = 0;
    if (detail != NULL) {
        text = cpy_PyUnicode_AsUTF8AndSize(detail, &length);
        if (text == NULL) cpy_PyErr_Clear();
    }
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    if (host->finish) host->finish(request->exchange, outcome, text, (size_t)length);
}

static PyObject *cpy_asgi_describe(cpy_asgi_state *state, PyObject *error) {
    PyObject *arguments[1] = {error};
    PyObject *text = state->format_exception ? cpy_PyObject_Vectorcall(state->format_exception, arguments, 1, NULL) : NULL;
    if (text == NULL || cpy_type(text) != cpy_unicode_type()) {
        cpy_PyErr_Clear();
        cpy_xdecref(text);
        text = cpy_PyObject_Repr(error);
        if (text == NULL) cpy_PyErr_Clear();
    }
    return text;
}

/// The request's task ended (or never started, `error` set): tell the host how, once.
static void cpy_asgi_finish(cpy_asgi_state *state, cpy_asgi_request *request, PyObject *task, PyObject *error) {
    if (request->flags & F_FINISHED) return;
    request->flags |= F_FINISHED;
    // The list's reference is dropped at the end: the request is used until then.
    int linked = cpy_asgi_unlink(state, request);
    int outcome = CPY_ASGI_COMPLETED;
    PyObject *detail = NULL;
    PyObject *exception = NULL;
    if (error != NULL) {
        cpy_incref(error);
        exception = error;
    } else if (task != NULL) {
        PyObject *cancelled = cpy_asgi_call_method(state, M_CANCELLED, task, NULL);
        if (cancelled == cpy_true()) {
            outcome = CPY_ASGI_CANCELLED;
        } else if (cancelled != NULL) {
            exception = cpy_asgi_call_method(state, M_EXCEPTION, task, NULL);
            if (exception == NULL) {
                exception = cpy_PyErr_GetRaisedException();
            } else if (exception == cpy_none()) {
                CLEAR(exception);
            }
        } else {
            exception = cpy_PyErr_GetRaisedException();
        }
        cpy_xdecref(cancelled);
    }
    if (outcome != CPY_ASGI_CANCELLED) {
        if (exception != NULL) {
            if (state->interrupt_type != NULL && cpy_PyErr_GivenExceptionMatches(exception, state->interrupt_type)) {
                outcome = CPY_ASGI_INTERRUPTED;
                // The interrupt also flagged this thread's subinterp.Queue waits; the loop goes on.
                cpy_thread_clear_cancel(cpy_PyThread_get_thread_ident());
            } else if ((request->flags & F_DISCONNECTED) || cpy_PyErr_GivenExceptionMatches(exception, state->client_disconnected)) {
                outcome = CPY_ASGI_DISCONNECTED;
            } else {
                outcome = CPY_ASGI_FAILED;
                detail = cpy_asgi_describe(state, exception);
            }
        } else if (request->kind == R_HTTP) {
            if (request->state == ST_COMPLETE) {
                outcome = CPY_ASGI_COMPLETED;
            } else if (request->flags & F_DISCONNECTED) {
                outcome = CPY_ASGI_DISCONNECTED;
            } else {
                outcome = CPY_ASGI_INCOMPLETE;
                const char *why = request->state == ST_INIT ? "the ASGI app returned without starting a response"
                                                            : "the ASGI app returned without completing its response";
                detail = cpy_PyUnicode_FromStringAndSize(why, (Py_ssize_t)strlen(why));
            }
        } else if (request->state == ST_INIT) {
            if (request->flags & F_DISCONNECTED) {
                outcome = CPY_ASGI_DISCONNECTED;
            } else {
                outcome = CPY_ASGI_INCOMPLETE;
                const char *why = "the ASGI app returned without accepting or closing the WebSocket";
                detail = cpy_PyUnicode_FromStringAndSize(why, (Py_ssize_t)strlen(why));
            }
        }
    }
    cpy_xdecref(exception);
    cpy_PyErr_Clear();
    cpy_asgi_tell_host(request, outcome, detail);
    cpy_xdecref(detail);
    // Anything else still waiting on this request (a task the app started) hears it is over.
    cpy_asgi_free_inbox(request);
    cpy_asgi_wake(state, request);
    PyObject *writer = request->writer;
    request->writer = NULL;
    if (writer != NULL) {
        cpy_asgi_resolve(state, writer, NULL);
        cpy_decref(writer);
    }
    CLEAR(request->task);
    CLEAR(request->status);
    CLEAR(request->headers);
    CLEAR(request->receivers);
    if (linked) cpy_decref((PyObject *)request);
}

/// The task's done callback (when it did not finish as it started).
static PyObject *cpy_asgi_done_callback(PyObject *self, PyObject *task) {
    cpy_asgi_finish(cpy_asgi_state_of(self), (cpy_asgi_request *)self, task, NULL);
    return cpy_new_none();
}

static int cpy_asgi_request_traverse(PyObject *self, int (*visit)(PyObject *, void *), void *arg) {
    cpy_asgi_request *request = (cpy_asgi_request *)self;
    VISIT(cpy_type(self));
    VISIT(request->close_reason);
    VISIT(request->status);
    VISIT(request->headers);
    VISIT(request->task);
    VISIT(request->receivers);
    VISIT(request->writer);
    return 0;
}

static int cpy_asgi_request_clear(PyObject *self) {
    cpy_asgi_request *request = (cpy_asgi_request *)self;
    CLEAR(request->close_reason);
    CLEAR(request->status);
    CLEAR(request->headers);
    CLEAR(request->task);
    CLEAR(request->receivers);
    CLEAR(request->writer);
    return 0;
}

static void cpy_asgi_request_dealloc(PyObject *self) {
    cpy_asgi_request *request = (cpy_asgi_request *)self;
    cpy_PyObject_GC_UnTrack(self);
    // NULL when the interpreter is ending and has cleared the type (a request kept alive by a
    // traceback or a thread until then): the list of active requests is gone with it.
    cpy_asgi_state *state = cpy_asgi_state_of(self);
    if (!(request->flags & F_FINISHED)) {
        // Its task is gone without ending (the loop was closed under it).
        request->flags |= F_FINISHED;
        cpy_asgi_tell_host(request, CPY_ASGI_CANCELLED, NULL);
    }
    if (state != NULL) cpy_asgi_unlink(state, request);
    cpy_asgi_request_clear(self);
    cpy_asgi_free_inbox(request);
    if (request->stream != NULL) {
        request->stream->request = NULL;
        cpy_asgi_stream_release(request->stream);
    }
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    if (request->exchange != NULL && host->release) host->release(request->exchange);
    cpy_asgi_free_object(self);
}

static PyMethodDef cpy_asgi_request_methods[] = {
    {"receive", (void *)cpy_asgi_receive, CPY_METH_NOARGS, "receive(): the next ASGI event for the app."},
    {"send", (void *)cpy_asgi_send, CPY_METH_O, "send(message): an ASGI message from the app."},
    {"_done", (void *)cpy_asgi_done_callback, CPY_METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cpy_asgi_request_slots[] = {
    {CPY_TP_METHODS, cpy_asgi_request_methods},
    {CPY_TP_TRAVERSE, (void *)cpy_asgi_request_traverse},
    {CPY_TP_CLEAR, (void *)cpy_asgi_request_clear},
    {CPY_TP_DEALLOC, (void *)cpy_asgi_request_dealloc},
    {CPY_TP_DOC, "One HTTP request or WebSocket connection on this worker."},
    {0, NULL},
};

static PyType_Spec cpy_asgi_request_spec = {
    "_subinterp_asgi.Request", sizeof(cpy_asgi_request), 0,
    CPY_TPFLAGS_DEFAULT | CPY_TPFLAGS_IMMUTABLETYPE | CPY_TPFLAGS_HAVE_GC | CPY_TPFLAGS_DISALLOW_INSTANTIATION,
    cpy_asgi_request_slots,
};

// MARK: - Scopes

typedef struct {
    const unsigned char *data;
    size_t length;
    size_t offset;
    int failed;
} cpy_asgi_reader;

static const char *cpy_asgi_read(cpy_asgi_reader *reader, size_t *length) {
    uint32_t n = 0;
    if (reader->failed || reader->offset + 4 > reader->length) {
        reader->failed = 1;
        *length = 0;
        return "";
    }
    memcpy(&n, reader->data + reader->offset, 4);
    reader->offset += 4;
    if (reader->offset + n > reader->length) {
        reader->failed = 1;
        *length = 0;
        return "";
    }
    const char *text = (const char *)reader->data + reader->offset;
    reader->offset += n;
    *length = n;
    return text;
}

static int32_t cpy_asgi_read_int(cpy_asgi_reader *reader) {
    int32_t value = 0;
    if (reader->failed || reader->offset + 4 > reader->length) {
        reader->failed = 1;
        return 0;
    }
    memcpy(&value, reader->data + reader->offset, 4);
    reader->offset += 4;
    return value;
}

static int cpy_asgi_hex(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// root_path + the path with %XX decoded, as UTF-8 (invalid sequences replaced), as uvicorn does.
static PyObject *cpy_asgi_decoded_path(cpy_asgi_state *state, const char *path, size_t length) {
    Py_ssize_t root_length = 0;
    const char *root = state->root_path ? cpy_PyUnicode_AsUTF8AndSize(state->root_path, &root_length) : "";
    if (root == NULL) return NULL;
    if (root_length == 0 && memchr(path, '%', length) == NULL) return cpy_PyUnicode_DecodeUTF8(path, (Py_ssize_t)length, "replace");
    char stack[512];
    size_t capacity = (size_t)root_length + length;
    char *buffer = capacity <= sizeof stack ? stack : malloc(capacity);
    if (buffer == NULL) {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory");
        return NULL;
    }
    memcpy(buffer, root, (size_t)root_length);
    size_t out = (size_t)root_length;
    for (size_t i = 0; i < length; i++) {
        int high, low;
        if (path[i] == '%' && i + 2 < length && (high = cpy_asgi_hex((unsigned char)path[i + 1])) >= 0
            && (low = cpy_asgi_hex((unsigned char)path[i + 2])) >= 0) {
            buffer[out++] = (char)(high * 16 + low);
            i += 2;
        } else {
            buffer[out++] = path[i];
        }
    }
    PyObject *decoded = cpy_PyUnicode_DecodeUTF8(buffer, (Py_ssize_t)out, "replace");
    if (buffer != stack) free(buffer);
    return decoded;
}

static PyObject *cpy_asgi_method(cpy_asgi_state *state, const char *method, size_t length) {
    for (int i = 0; i < METHOD_COUNT; i++) {
        if (strlen(cpy_asgi_methods[i]) == length && memcmp(cpy_asgi_methods[i], method, length) == 0) {
            cpy_incref(state->methods[i]);
            return state->methods[i];
        }
    }
    return cpy_PyUnicode_DecodeUTF8(method, (Py_ssize_t)length, "replace");
}

static PyObject *cpy_asgi_address(const char *host, size_t length, int32_t port) {
    if (length == 0 && port < 0) return cpy_new_none();
    PyObject *pair = cpy_PyTuple_New(2);
    if (pair == NULL) return NULL;
    PyObject *name = cpy_PyUnicode_DecodeUTF8(host, (Py_ssize_t)length, "replace");
    PyObject *number = port < 0 ? cpy_new_none() : cpy_PyLong_FromLongLong(port);
    if (name == NULL || number == NULL) {
        cpy_xdecref(name);
        cpy_xdecref(number);
        cpy_decref(pair);
        return NULL;
    }
    cpy_PyTuple_SetItem(pair, 0, name);
    cpy_PyTuple_SetItem(pair, 1, number);
    return pair;
}

static PyObject *cpy_asgi_server(cpy_asgi_state *state, const char *host, size_t length, int32_t port) {
    if (state->server != NULL && state->server_port == port && state->server_host_length == length
        && memcmp(state->server_host, host, length) == 0) {
        cpy_incref(state->server);
        return state->server;
    }
    PyObject *server = cpy_asgi_address(host, length, port);
    char *copy = malloc(length + 1);
    if (server != NULL && copy != NULL) {
        memcpy(copy, host, length);
        free(state->server_host);
        state->server_host = copy;
        state->server_host_length = length;
        state->server_port = port;
        CLEAR(state->server);
        cpy_incref(server);
        state->server = server;
    } else {
        free(copy);
    }
    return server;
}

/// The subprotocols a WebSocket client offers: every sec-websocket-protocol value, split at
/// commas, trimmed.
static int cpy_asgi_add_subprotocols(PyObject *list, const char *value, size_t length) {
    size_t start = 0;
    while (start <= length) {
        size_t end = start;
        while (end < length && value[end] != ',') end++;
        size_t a = start, b = end;
        while (a < b && (value[a] == ' ' || value[a] == '\t')) a++;
        while (b > a && (value[b - 1] == ' ' || value[b - 1] == '\t')) b--;
        if (b > a) {
            PyObject *name = cpy_PyUnicode_DecodeUTF8(value + a, (Py_ssize_t)(b - a), "replace");
            if (name == NULL || cpy_PyList_Append(list, name) < 0) {
                cpy_xdecref(name);
                return -1;
            }
            cpy_decref(name);
        }
        start = end + 1;
    }
    return 0;
}

/// root_path's bytes, then the path as received (as uvicorn gives it).
static PyObject *cpy_asgi_raw_path(cpy_asgi_state *state, const char *path, size_t length) {
    char *root = "";
    Py_ssize_t root_length = 0;
    if (state->root_path_bytes != NULL) cpy_PyBytes_AsStringAndSize(state->root_path_bytes, &root, &root_length);
    PyObject *raw_path = cpy_PyBytes_FromStringAndSize(NULL, root_length + (Py_ssize_t)length);
    if (raw_path == NULL) return NULL;
    char *out;
    Py_ssize_t ignored;
    cpy_PyBytes_AsStringAndSize(raw_path, &out, &ignored);
    memcpy(out, root, (size_t)root_length);
    memcpy(out + root_length, path, length);
    return raw_path;
}

/// A new reference to `constant`, or else the text as a str.
static PyObject *cpy_asgi_constant_or_text(PyObject *constant, const char *text, size_t length) {
    if (constant != NULL) {
        cpy_incref(constant);
        return constant;
    }
    return cpy_PyUnicode_DecodeUTF8(text, (Py_ssize_t)length, "replace");
}

static PyObject *cpy_asgi_scope(cpy_asgi_state *state, const cpy_asgi_event *event, int kind) {
    cpy_asgi_reader reader = {event->data, event->head_length, 0, 0};
    size_t method_length, target_length, version_length, scheme_length, server_length, client_length;
    const char *method = cpy_asgi_read(&reader, &method_length);
    const char *target = cpy_asgi_read(&reader, &target_length);
    const char *version = cpy_asgi_read(&reader, &version_length);
    const char *scheme = cpy_asgi_read(&reader, &scheme_length);
    const char *server_host = cpy_asgi_read(&reader, &server_length);
    int32_t server_port = cpy_asgi_read_int(&reader);
    const char *client_host = cpy_asgi_read(&reader, &client_length);
    int32_t client_port = cpy_asgi_read_int(&reader);
    int32_t header_count = cpy_asgi_read_int(&reader);
    if (reader.failed || header_count < 0) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "malformed request event from the host");
        return NULL;
    }
    // The target: origin-form "/p?q", or absolute-form "http://host/p?q" (path from the first
    // "/" after the authority), or "*".
    const char *path = target;
    size_t path_length = target_length;
    const char *scheme_end = target_length > 3 ? memchr(target, ':', target_length) : NULL;
    if (target_length > 0 && target[0] != '/' && scheme_end != NULL && (size_t)(scheme_end - target) + 2 < target_length
        && scheme_end[1] == '/' && scheme_end[2] == '/') {
        const char *authority = scheme_end + 3;
        const char *slash = memchr(authority, '/', target_length - (size_t)(authority - target));
        path = slash ? slash : "/";
        path_length = slash ? target_length - (size_t)(slash - target) : 1;
    }
    size_t raw_length = path_length;
    const char *query = NULL;
    size_t query_length = 0;
    for (size_t i = 0; i < path_length; i++) {
        if (path[i] == '?' || path[i] == '#') {
            raw_length = i;
            if (path[i] == '?') {
                query = path + i + 1;
                query_length = path_length - i - 1;
                const char *fragment = memchr(query, '#', query_length);
                if (fragment) query_length = (size_t)(fragment - query);
            }
            break;
        }
    }
    PyObject *scope = cpy_PyDict_New();
    if (scope == NULL) return NULL;
    PyObject *asgi = cpy_PyDict_New();
    PyObject *headers = cpy_PyList_New(0);
    PyObject *subprotocols = kind == R_WEBSOCKET ? cpy_PyList_New(0) : NULL;
    if (asgi == NULL || headers == NULL || (kind == R_WEBSOCKET && subprotocols == NULL)) goto fail;
    if (cpy_PyDict_SetItem(asgi, S(state, K_VERSION), S(state, V_3_0)) < 0
        || cpy_PyDict_SetItem(asgi, S(state, K_SPEC_VERSION), S(state, V_SPEC)) < 0) {
        goto fail;
    }
    for (int32_t i = 0; i < header_count; i++) {
        size_t name_length, value_length;
        const char *name = cpy_asgi_read(&reader, &name_length);
        const char *value = cpy_asgi_read(&reader, &value_length);
        if (reader.failed) {
            cpy_PyErr_SetString(cpy_exc_value_error(), "malformed request event from the host");
            goto fail;
        }
        PyObject *lower = cpy_PyBytes_FromStringAndSize(NULL, (Py_ssize_t)name_length);
        if (lower == NULL) goto fail;
        char *bytes;
        Py_ssize_t ignored;
        cpy_PyBytes_AsStringAndSize(lower, &bytes, &ignored);
        for (size_t j = 0; j < name_length; j++) {
            char c = name[j];
            bytes[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        PyObject *pair = cpy_PyTuple_New(2);
        PyObject *value_bytes = cpy_PyBytes_FromStringAndSize(value, (Py_ssize_t)value_length);
        if (pair == NULL || value_bytes == NULL) {
            cpy_decref(lower);
            cpy_xdecref(pair);
            cpy_xdecref(value_bytes);
            goto fail;
        }
        if (subprotocols != NULL && name_length == 22 && memcmp(bytes, "sec-websocket-protocol", 22) == 0
            && cpy_asgi_add_subprotocols(subprotocols, value, value_length) < 0) {
            cpy_decref(lower);
            cpy_decref(pair);
            cpy_decref(value_bytes);
            goto fail;
        }
        cpy_PyTuple_SetItem(pair, 0, lower);
        cpy_PyTuple_SetItem(pair, 1, value_bytes);
        int appended = cpy_PyList_Append(headers, pair);
        cpy_decref(pair);
        if (appended < 0) goto fail;
    }
    PyObject *version_object = version_length == 3 && memcmp(version, "1.1", 3) == 0   ? S(state, V_1_1)
                               : version_length == 3 && memcmp(version, "1.0", 3) == 0 ? S(state, V_1_0)
                               : version_length == 1 && version[0] == '2'              ? S(state, V_2)
                                                                                       : NULL;
    PyObject *scheme_object = NULL;
    if (scheme_length == 4 && memcmp(scheme, "http", 4) == 0) scheme_object = S(state, V_HTTP);
    else if (scheme_length == 5 && memcmp(scheme, "https", 5) == 0) scheme_object = S(state, V_HTTPS);
    else if (scheme_length == 2 && memcmp(scheme, "ws", 2) == 0) scheme_object = S(state, V_WS);
    else if (scheme_length == 3 && memcmp(scheme, "wss", 3) == 0) scheme_object = S(state, V_WSS);
    if (scheme_object == NULL && scheme_length == 0) scheme_object = S(state, kind == R_HTTP ? V_HTTP : V_WS);
    if (cpy_PyDict_SetItem(scope, S(state, K_TYPE), S(state, kind == R_HTTP ? V_HTTP : V_WEBSOCKET)) < 0
        || cpy_PyDict_SetItem(scope, S(state, K_ASGI), asgi) < 0
        || cpy_asgi_set_new(scope, S(state, K_HTTP_VERSION), cpy_asgi_constant_or_text(version_object, version, version_length)) < 0
        || cpy_asgi_set_new(scope, S(state, K_SERVER), cpy_asgi_server(state, server_host, server_length, server_port)) < 0
        || cpy_asgi_set_new(scope, S(state, K_CLIENT), cpy_asgi_address(client_host, client_length, client_port)) < 0
        || cpy_asgi_set_new(scope, S(state, K_SCHEME), cpy_asgi_constant_or_text(scheme_object, scheme, scheme_length)) < 0
        || cpy_PyDict_SetItem(scope, S(state, K_ROOT_PATH), state->root_path) < 0
        || cpy_asgi_set_new(scope, S(state, K_PATH), cpy_asgi_decoded_path(state, path, raw_length)) < 0
        || cpy_asgi_set_new(scope, S(state, K_RAW_PATH), cpy_asgi_raw_path(state, path, raw_length)) < 0
        || cpy_asgi_set_new(scope, S(state, K_QUERY_STRING), cpy_PyBytes_FromStringAndSize(query ? query : "", (Py_ssize_t)query_length)) < 0
        || cpy_PyDict_SetItem(scope, S(state, K_HEADERS), headers) < 0
        || cpy_asgi_set_new(scope, S(state, K_STATE), state->lifespan_state ? cpy_PyDict_Copy(state->lifespan_state) : cpy_PyDict_New()) < 0) {
        goto fail;
    }
    if (kind == R_HTTP) {
        if (cpy_asgi_set_new(scope, S(state, K_METHOD), cpy_asgi_method(state, method, method_length)) < 0) goto fail;
    } else if (cpy_PyDict_SetItem(scope, S(state, K_SUBPROTOCOLS), subprotocols) < 0) {
        goto fail;
    }
    cpy_decref(asgi);
    cpy_decref(headers);
    cpy_xdecref(subprotocols);
    return scope;
fail:
    cpy_decref(scope);
    cpy_xdecref(asgi);
    cpy_xdecref(headers);
    cpy_xdecref(subprotocols);
    return NULL;
}

// MARK: - Dispatch

static void cpy_asgi_start(cpy_asgi_state *state, cpy_asgi_event *event) {
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    int kind = event->kind == CPY_ASGI_HTTP ? R_HTTP : R_WEBSOCKET;
    if (!state->serving || event->stream == NULL) {
        if (host->finish && event->exchange) host->finish(event->exchange, CPY_ASGI_CANCELLED, NULL, 0);
        cpy_asgi_event_free(event);
        return;
    }
    cpy_asgi_request *request = (cpy_asgi_request *)cpy_asgi_alloc(state->request_type);
    if (request == NULL) {
        cpy_PyErr_Clear();
        const char *why = "out of memory";
        if (host->finish && event->exchange) host->finish(event->exchange, CPY_ASGI_FAILED, why, strlen(why));
        cpy_asgi_event_free(event);
        return;
    }
    // The request takes over the event's stream and exchange references.
    request->stream = event->stream;
    request->exchange = event->exchange;
    event->stream = NULL;
    event->exchange = NULL;
    request->kind = kind;
    request->close_code = 1005;
    request->stream->request = (PyObject *)request;
    cpy_incref((PyObject *)request);  // the active list's reference
    request->next = state->active;
    if (state->active) state->active->prev = request;
    state->active = request;
    PyObject *scope = cpy_asgi_scope(state, event, kind);
    if (kind == R_HTTP && (event->payload_length > 0 || !(event->flags & CPY_ASGI_MORE))) {
        request->inbox = request->inbox_tail = event;  // its payload is the first body chunk
    } else {
        cpy_asgi_event_free(event);
    }
    PyObject *coroutine = NULL, *task = NULL;
    if (scope != NULL) {
        PyObject *receive = cpy_PyObject_GetAttr((PyObject *)request, S(state, M_RECEIVE));
        PyObject *send = cpy_PyObject_GetAttr((PyObject *)request, S(state, M_SEND));
        if (receive != NULL && send != NULL) {
            PyObject *arguments[3] = {scope, receive, send};
            coroutine = cpy_PyObject_Vectorcall(state->app, arguments, 3, NULL);
        }
        cpy_xdecref(receive);
        cpy_xdecref(send);
        cpy_decref(scope);
    }
    if (coroutine != NULL && cpy_type(coroutine) != cpy_coro_type()) {
        // Any other awaitable runs inside a coroutine of our own: a Task needs a coroutine.
        PyObject *arguments[1] = {coroutine};
        PyObject *wrapped = cpy_PyObject_Vectorcall(state->wrap_awaitable, arguments, 1, NULL);
        cpy_decref(coroutine);
        coroutine = wrapped;
    }
    if (coroutine != NULL) {
        // Started eagerly: it runs now, up to its first real suspension.
        PyObject *arguments[3] = {coroutine, state->loop, cpy_true()};
        task = cpy_PyObject_Vectorcall(state->task_type, arguments, 1, state->task_kwnames);
        cpy_decref(coroutine);
    }
    if (task == NULL) {
        PyObject *error = cpy_PyErr_GetRaisedException();
        cpy_asgi_finish(state, request, NULL, error);
        cpy_xdecref(error);
        cpy_decref((PyObject *)request);
        return;
    }
    PyObject *done = cpy_asgi_call_method(state, M_DONE, task, NULL);
    if (done == cpy_true()) {
        cpy_asgi_finish(state, request, task, NULL);
    } else if (!(request->flags & F_FINISHED)) {
        cpy_incref(task);
        request->task = task;
        PyObject *callback = cpy_PyObject_GetAttr((PyObject *)request, S(state, M_DONE_CALLBACK));
        PyObject *added = callback ? cpy_asgi_call_method(state, M_ADD_DONE_CALLBACK, task, callback) : NULL;
        if (added == NULL) cpy_PyErr_WriteUnraisable(task);
        cpy_xdecref(added);
        cpy_xdecref(callback);
    }
    if (done == NULL) cpy_PyErr_WriteUnraisable(task);
    cpy_xdecref(done);
    cpy_decref(task);
    cpy_decref((PyObject *)request);
}

static void cpy_asgi_dispatch_one(cpy_asgi_state *state, cpy_asgi_event *event) {
    if (event->kind == CPY_ASGI_HTTP || event->kind == CPY_ASGI_WEBSOCKET) {
        cpy_asgi_start(state, event);
        return;
    }
    if (event->kind == CPY_ASGI_SHUTDOWN) {
        if (state->on_control != NULL) {
            PyObject *kind = cpy_PyLong_FromLongLong(CPY_ASGI_SHUTDOWN);
            PyObject *arguments[1] = {kind};
            PyObject *result = kind ? cpy_PyObject_Vectorcall(state->on_control, arguments, 1, NULL) : NULL;
            if (result == NULL) cpy_PyErr_WriteUnraisable(state->on_control);
            cpy_xdecref(result);
            cpy_xdecref(kind);
        }
        cpy_asgi_event_free(event);
        return;
    }
    cpy_asgi_request *request = event->stream ? (cpy_asgi_request *)event->stream->request : NULL;
    if (request == NULL) {
        cpy_asgi_event_free(event);
        return;
    }
    cpy_incref((PyObject *)request);
    switch (event->kind) {
    case CPY_ASGI_BODY:
    case CPY_ASGI_TEXT:
    case CPY_ASGI_BINARY:
        request->flags &= ~F_DEMANDED;
        if (request->flags & F_FINISHED) {
            cpy_asgi_event_free(event);
            break;
        }
        if (request->inbox_tail) {
            request->inbox_tail->next = event;
        } else {
            request->inbox = event;
        }
        request->inbox_tail = event;
        cpy_asgi_wake(state, request);
        break;
    case CPY_ASGI_DISCONNECT:
        if (event->flags & CPY_ASGI_INPUT_ONLY) {
            // A half-closed (or closed: EOF cannot tell) connection: whoever waits in receive()
            // hears http.disconnect; a response may still go out.
            request->flags |= F_INPUT_CLOSED;
            cpy_asgi_event_free(event);
            cpy_asgi_wake(state, request);
            break;
        }
        request->flags |= F_DISCONNECTED;
        request->close_code = (int)event->number;
        CLEAR(request->close_reason);
        request->close_reason = cpy_PyUnicode_DecodeUTF8((const char *)cpy_asgi_event_payload(event), (Py_ssize_t)event->payload_length, "replace");
        if (request->close_reason == NULL) cpy_PyErr_Clear();
        cpy_asgi_event_free(event);
        cpy_asgi_wake(state, request);
        if (request->writer != NULL) {
            PyObject *writer = request->writer;
            request->writer = NULL;
            cpy_asgi_resolve(state, writer, NULL);
            cpy_decref(writer);
        }
        break;
    case CPY_ASGI_WRITABLE:
        cpy_asgi_event_free(event);
        if (request->writer != NULL) {
            PyObject *writer = request->writer;
            request->writer = NULL;
            cpy_asgi_resolve(state, writer, NULL);
            cpy_decref(writer);
        }
        break;
    case CPY_ASGI_CANCEL:
        cpy_asgi_event_free(event);
        if (request->task != NULL) {
            PyObject *result = cpy_asgi_call_method(state, M_CANCEL, request->task, NULL);
            if (result == NULL) cpy_PyErr_WriteUnraisable(request->task);
            cpy_xdecref(result);
        }
        break;
    default:
        cpy_asgi_event_free(event);
    }
    cpy_decref((PyObject *)request);
}

static void cpy_asgi_dispatch(cpy_asgi_state *state, cpy_asgi_event *events) {
    while (events != NULL) {
        cpy_asgi_event *next = events->next;
        events->next = NULL;
        cpy_asgi_dispatch_one(state, events);
        events = next;
    }
}

// MARK: - Module functions

static PyObject *cpy_asgi_module_attach(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    if (nargs != 7) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "attach(loop, app, root_path, on_control, format_exception, wrap_awaitable, interrupt_type)");
        return NULL;
    }
    PyObject *asyncio = cpy_PyImport_ImportModule("asyncio");
    if (asyncio == NULL) return NULL;
    PyObject *task_type = cpy_PyObject_GetAttrString(asyncio, "Task");
    PyObject *future_type = cpy_PyObject_GetAttrString(asyncio, "Future");
    cpy_decref(asyncio);
    if (task_type == NULL || future_type == NULL) {
        cpy_xdecref(task_type);
        cpy_xdecref(future_type);
        return NULL;
    }
    Py_ssize_t root_length = 0;
    const char *root = cpy_PyUnicode_AsUTF8AndSize(args[2], &root_length);
    if (root == NULL) {
        cpy_decref(task_type);
        cpy_decref(future_type);
        return NULL;
    }
    CLEAR(state->task_type);
    CLEAR(state->future_type);
    state->task_type = task_type;
    state->future_type = future_type;
    PyObject **fields[7] = {&state->loop, &state->app, &state->root_path, &state->on_control, &state->format_exception,
                            &state->wrap_awaitable, &state->interrupt_type};
    for (int i = 0; i < 7; i++) {
        CLEAR(*fields[i]);
        cpy_incref(args[i]);
        *fields[i] = args[i];
    }
    CLEAR(state->root_path_bytes);
    state->root_path_bytes = cpy_PyBytes_FromStringAndSize(root, root_length);
    if (state->root_path_bytes == NULL) return NULL;
    return cpy_new_none();
}

/// The mailbox's eventfd, for the loop's selector.
static PyObject *cpy_asgi_module_mailbox_fd(PyObject *module, PyObject *unused) {
    (void)unused;
    return cpy_PyLong_FromLongLong(((cpy_asgi_state *)cpy_PyModule_GetState(module))->worker->efd);
}

static PyObject *cpy_asgi_module_serve(PyObject *module, PyObject *lifespan_state) {
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    CLEAR(state->lifespan_state);
    if (lifespan_state != cpy_none()) {
        cpy_incref(lifespan_state);
        state->lifespan_state = lifespan_state;
    }
    state->serving = 1;
    return cpy_new_none();
}

static PyObject *cpy_asgi_module_before_select(PyObject *module, PyObject *unused) {
    (void)unused;
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    int nudged = 0;
    cpy_asgi_event *events = cpy_asgi_begin_wait(state->worker, &nudged);
    if (events != NULL) cpy_asgi_dispatch(state, events);
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    if (host->iteration) host->iteration(state->worker->context);
    PyObject *result = events != NULL || nudged ? cpy_true() : cpy_false();
    cpy_incref(result);
    return result;
}

/// The loop's poll when its selector holds nothing but the mailbox (no epoll, no Python
/// selector): dispatches what waits, flushes (the iteration hook), then sleeps on the mailbox's
/// condition, for up to `timeout` seconds (None: until something comes), and dispatches that.
static PyObject *cpy_asgi_module_wait(PyObject *module, PyObject *timeout_object) {
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    double timeout = -1;
    if (timeout_object != cpy_none()) {
        timeout = cpy_PyFloat_AsDouble(timeout_object);
        if (timeout == -1 && cpy_PyErr_Occurred()) return NULL;
        if (timeout < 0) timeout = 0;
    }
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    cpy_asgi_event *events = cpy_asgi_take(state->worker);
    if (events != NULL) {
        cpy_asgi_dispatch(state, events);
        timeout = 0;
    }
    if (host->iteration) host->iteration(state->worker->context);
    if (timeout == 0) {
        atomic_fetch_add_explicit(&state->worker->progress, 1, memory_order_acq_rel);
        return cpy_new_none();
    }
    PyThreadState *saved = cpy_PyEval_SaveThread();
    events = cpy_asgi_wait(state->worker, timeout);
    cpy_PyEval_RestoreThread(saved);
    if (events != NULL) cpy_asgi_dispatch(state, events);
    return cpy_new_none();
}

/// Wakes the loop from another of its interpreter's threads (its `_write_to_self`).
static PyObject *cpy_asgi_module_wake(PyObject *module, PyObject *unused) {
    (void)unused;
    cpy_asgi_nudge(((cpy_asgi_state *)cpy_PyModule_GetState(module))->worker);
    return cpy_new_none();
}

static PyObject *cpy_asgi_module_after_select(PyObject *module, PyObject *unused) {
    (void)unused;
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    cpy_asgi_event *events = cpy_asgi_end_wait(state->worker);
    if (events != NULL) cpy_asgi_dispatch(state, events);
    return cpy_new_none();
}

static PyObject *cpy_asgi_module_report(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    if (nargs != 2) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "report(kind, text)");
        return NULL;
    }
    long kind = cpy_PyLong_AsLong(args[0]);
    if (kind == -1 && cpy_PyErr_Occurred()) return NULL;
    const char *text = "";
    Py_ssize_t length = 0;
    if (args[1] != cpy_none()) {
        text = cpy_PyUnicode_AsUTF8AndSize(args[1], &length);
        if (text == NULL) return NULL;
    }
    const cpy_asgi_host *host = cpy_asgi_host_functions();
    if (host->control) host->control(state->worker->context, (int)kind, text, (size_t)length);
    return cpy_new_none();
}

static PyObject *cpy_asgi_module_interrupted(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    cpy_thread_clear_cancel(cpy_PyThread_get_thread_ident());
    return cpy_new_none();
}

/// Cancels the task of every request still running; returns those tasks.
static PyObject *cpy_asgi_module_cancel_all(PyObject *module, PyObject *unused) {
    (void)unused;
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    PyObject *tasks = cpy_PyList_New(0);
    if (tasks == NULL) return NULL;
    for (cpy_asgi_request *request = state->active; request != NULL; request = request->next) {
        if (request->task != NULL && cpy_PyList_Append(tasks, request->task) < 0) {
            cpy_decref(tasks);
            return NULL;
        }
    }
    Py_ssize_t count = cpy_PyList_Size(tasks);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *result = cpy_asgi_call_method(state, M_CANCEL, cpy_PyList_GetItem(tasks, i), NULL);
        if (result == NULL) cpy_PyErr_WriteUnraisable(NULL);
        cpy_xdecref(result);
    }
    return tasks;
}

/// Ends serving: tells the host about requests whose task never ended, and drops the loop.
static PyObject *cpy_asgi_module_detach(PyObject *module, PyObject *unused) {
    (void)unused;
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    state->serving = 0;
    while (state->active != NULL) {
        cpy_asgi_request *request = state->active;  // the list's reference, now ours
        request->flags |= F_FINISHED;
        cpy_asgi_unlink(state, request);
        cpy_asgi_tell_host(request, CPY_ASGI_CANCELLED, NULL);
        cpy_asgi_request_clear((PyObject *)request);
        cpy_asgi_free_inbox(request);
        cpy_decref((PyObject *)request);
    }
    CLEAR(state->loop);
    CLEAR(state->app);
    CLEAR(state->lifespan_state);
    return cpy_new_none();
}

static PyMethodDef cpy_asgi_module_methods[] = {
    {"attach", (void *)cpy_asgi_module_attach, CPY_METH_FASTCALL, NULL},
    {"mailbox_fd", (void *)cpy_asgi_module_mailbox_fd, CPY_METH_NOARGS, NULL},
    {"serve", (void *)cpy_asgi_module_serve, CPY_METH_O, NULL},
    {"before_select", (void *)cpy_asgi_module_before_select, CPY_METH_NOARGS, NULL},
    {"after_select", (void *)cpy_asgi_module_after_select, CPY_METH_NOARGS, NULL},
    {"wait", (void *)cpy_asgi_module_wait, CPY_METH_O, NULL},
    {"wake", (void *)cpy_asgi_module_wake, CPY_METH_NOARGS, NULL},
    {"report", (void *)cpy_asgi_module_report, CPY_METH_FASTCALL, NULL},
    {"interrupted", (void *)cpy_asgi_module_interrupted, CPY_METH_NOARGS, NULL},
    {"cancel_all", (void *)cpy_asgi_module_cancel_all, CPY_METH_NOARGS, NULL},
    {"detach", (void *)cpy_asgi_module_detach, CPY_METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

// MARK: - Module

static int cpy_asgi_exec(PyObject *module) {
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    for (int i = 0; i < STRING_COUNT; i++) {
        state->strings[i] = cpy_PyUnicode_InternFromString(cpy_asgi_string_values[i]);
        if (state->strings[i] == NULL) return -1;
    }
    for (int i = 0; i < METHOD_COUNT; i++) {
        state->methods[i] = cpy_PyUnicode_InternFromString(cpy_asgi_methods[i]);
        if (state->methods[i] == NULL) return -1;
    }
    state->task_kwnames = cpy_PyTuple_New(2);
    state->future_kwnames = cpy_PyTuple_New(1);
    if (state->task_kwnames == NULL || state->future_kwnames == NULL) return -1;
    cpy_incref(S(state, A_LOOP));
    cpy_PyTuple_SetItem(state->task_kwnames, 0, S(state, A_LOOP));
    cpy_incref(S(state, A_EAGER_START));
    cpy_PyTuple_SetItem(state->task_kwnames, 1, S(state, A_EAGER_START));
    cpy_incref(S(state, A_LOOP));
    cpy_PyTuple_SetItem(state->future_kwnames, 0, S(state, A_LOOP));
    state->request_type = (PyTypeObject *)cpy_PyType_FromModuleAndSpec(module, &cpy_asgi_request_spec, NULL);
    if (state->request_type == NULL || cpy_PyModule_AddType(module, state->request_type) < 0) return -1;
    state->awaitable_type = (PyTypeObject *)cpy_PyType_FromModuleAndSpec(module, &cpy_asgi_awaitable_spec, NULL);
    if (state->awaitable_type == NULL || cpy_PyModule_AddType(module, state->awaitable_type) < 0) return -1;
    state->client_disconnected = cpy_PyErr_NewException("_subinterp_asgi.ClientDisconnected", cpy_exc_os_error(), NULL);
    if (state->client_disconnected == NULL || cpy_PyModule_AddObjectRef(module, "ClientDisconnected", state->client_disconnected) < 0) return -1;
    state->done = cpy_asgi_alloc(state->awaitable_type);
    if (state->done == NULL) return -1;
    return 0;
}

static int cpy_asgi_traverse(PyObject *module, int (*visit)(PyObject *, void *), void *arg) {
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    if (state == NULL) return 0;
    PyObject *objects[] = {(PyObject *)state->request_type, (PyObject *)state->awaitable_type, state->client_disconnected,
                           state->done, state->loop, state->app, state->lifespan_state, state->root_path,
                           state->root_path_bytes, state->task_type, state->future_type, state->task_kwnames,
                           state->future_kwnames, state->on_control, state->format_exception, state->wrap_awaitable,
                           state->interrupt_type, state->server};
    for (size_t i = 0; i < sizeof objects / sizeof objects[0]; i++) VISIT(objects[i]);
    for (cpy_asgi_request *request = state->active; request != NULL; request = request->next) VISIT(request);
    return 0;
}

static int cpy_asgi_clear(PyObject *module) {
    cpy_asgi_state *state = cpy_PyModule_GetState(module);
    if (state == NULL) return 0;
    PyObject **objects[] = {(PyObject **)&state->request_type, (PyObject **)&state->awaitable_type, &state->client_disconnected,
                            &state->done, &state->loop, &state->app, &state->lifespan_state, &state->root_path,
                            &state->root_path_bytes, &state->task_type, &state->future_type, &state->task_kwnames,
                            &state->future_kwnames, &state->on_control, &state->format_exception, &state->wrap_awaitable,
                            &state->interrupt_type, &state->server};
    for (size_t i = 0; i < sizeof objects / sizeof objects[0]; i++) CLEAR(*objects[i]);
    // Requests still listed (the interpreter is ending): the list lets go of them.
    while (state->active != NULL) {
        cpy_asgi_request *request = state->active;
        cpy_asgi_unlink(state, request);
        cpy_decref((PyObject *)request);
    }
    for (int i = 0; i < STRING_COUNT; i++) CLEAR(state->strings[i]);
    for (int i = 0; i < METHOD_COUNT; i++) CLEAR(state->methods[i]);
    free(state->server_host);
    state->server_host = NULL;
    return 0;
}

static void cpy_asgi_free(void *module) { cpy_asgi_clear(module); }

static PyModuleDef_Slot cpy_asgi_slots[] = {
    {CPY_MOD_EXEC, (void *)cpy_asgi_exec},
    {CPY_MOD_MULTIPLE_INTERPRETERS, CPY_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};

static PyModuleDef cpy_asgi_def = {
    .m_base = {.ob_base = {.ob_refcnt = 0xFFFFFFFF, .ob_type = NULL}},
    .m_name = "_subinterp_asgi",
    .m_doc = "The ASGI worker's side of its channel to the host (subinterp serve).",
    .m_size = sizeof(cpy_asgi_state),
    .m_methods = cpy_asgi_module_methods,
    .m_slots = cpy_asgi_slots,
    .m_traverse = cpy_asgi_traverse,
    .m_clear = cpy_asgi_clear,
    .m_free = cpy_asgi_free,
};

int cpy_asgi_install(cpy_asgi_worker *worker) {
    PyObject *machinery = cpy_PyImport_ImportModule("importlib.machinery");
    if (machinery == NULL) return -1;
    PyObject *spec_type = cpy_PyObject_GetAttrString(machinery, "ModuleSpec");
    cpy_decref(machinery);
    if (spec_type == NULL) return -1;
    PyObject *name = cpy_PyUnicode_FromStringAndSize(cpy_asgi_def.m_name, (Py_ssize_t)strlen(cpy_asgi_def.m_name));
    PyObject *arguments[2] = {name, cpy_none()};
    PyObject *spec = name ? cpy_PyObject_Vectorcall(spec_type, arguments, 2, NULL) : NULL;
    cpy_decref(spec_type);
    cpy_xdecref(name);
    if (spec == NULL) return -1;
    PyObject *module = cpy_PyModule_FromDefAndSpec2(&cpy_asgi_def, spec, CPY_PYTHON_API_VERSION);
    cpy_decref(spec);
    if (module == NULL) return -1;
    if (cpy_PyModule_ExecDef(module, &cpy_asgi_def) < 0) {
        cpy_decref(module);
        return -1;
    }
    ((cpy_asgi_state *)cpy_PyModule_GetState(module))->worker = worker;
    int result = cpy_PyDict_SetItemString(cpy_PyImport_GetModuleDict(), cpy_asgi_def.m_name, module);
    cpy_decref(module);
    return result;
}
