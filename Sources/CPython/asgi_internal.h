// Internal to the CPython target: the ASGI mailbox (asgi.c) as the worker's module
// (asgi_module.c) sees it.
#ifndef SUBINTERP_ASGI_INTERNAL_H
#define SUBINTERP_ASGI_INTERNAL_H

#include "asgi.h"

#include <pthread.h>
#include <stdatomic.h>

struct cpy_asgi_stream {
    atomic_long refs;
    /// The worker-side object of this request (borrowed); read and written only on the worker's
    /// thread, with its GIL held.
    PyObject *request;
};

struct cpy_asgi_event {
    cpy_asgi_event *next;
    int kind;
    int flags;
    int64_t number;
    cpy_asgi_stream *stream;
    void *exchange;
    size_t head_length;
    size_t payload_length;
    unsigned char data[];
};

struct cpy_asgi_worker {
    pthread_mutex_t lock;
    cpy_asgi_event *head;
    cpy_asgi_event *tail;
    int closed;
    /// The loop is in (or about to enter) `select` with nothing waiting: a post must wake it.
    int sleeping;
    /// The eventfd was written and not read yet.
    int signalled;
    int efd;
    atomic_ullong progress;
    atomic_int idle;
    /// Events are posted and not taken yet (readable without the lock, for the watchdog).
    atomic_int waiting;
    void *context;
};

const cpy_asgi_host *cpy_asgi_host_functions(void);

/// Before the loop polls: returns the waiting events (oldest first; the caller owns them), or
/// NULL after marking the loop as about to sleep.
cpy_asgi_event *cpy_asgi_begin_wait(cpy_asgi_worker *worker);
/// After the loop polled: marks it awake, resets the eventfd, counts an iteration, and returns
/// the events that arrived meanwhile (or NULL).
cpy_asgi_event *cpy_asgi_end_wait(cpy_asgi_worker *worker);

static inline const unsigned char *cpy_asgi_event_payload(const cpy_asgi_event *event) {
    return event->data + event->head_length;
}

#endif
