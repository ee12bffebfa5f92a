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

/// How a loop with nothing to do waits for the host (`cpy_asgi_worker.sleeping`).
#define CPY_ASGI_AWAKE 0
/// In its selector's `select`, with the eventfd registered: a post writes the eventfd.
#define CPY_ASGI_SLEEPING_IN_SELECT 1
/// On `wake`, because the mailbox is all its selector has: a post signals the condition.
#define CPY_ASGI_SLEEPING_ON_CONDITION 2

struct cpy_asgi_worker {
    pthread_mutex_t lock;
    /// Signalled by a post while the loop sleeps on it (CPY_ASGI_SLEEPING_ON_CONDITION).
    pthread_cond_t wake;
    cpy_asgi_event *head;
    cpy_asgi_event *tail;
    int closed;
    /// How the loop sleeps, with nothing waiting (CPY_ASGI_AWAKE if it does not): how a post
    /// must wake it.
    int sleeping;
    /// The eventfd was written and not read yet.
    int signalled;
    /// `cpy_asgi_nudge` woke the loop with no event (its own call_soon_threadsafe).
    int nudged;
    int efd;
    atomic_ullong progress;
    atomic_int idle;
    /// Events are posted and not taken yet (readable without the lock, for the watchdog).
    atomic_int waiting;
    void *context;
};

const cpy_asgi_host *cpy_asgi_host_functions(void);

/// Before the loop polls: returns the waiting events (oldest first; the caller owns them), or
/// NULL after marking the loop as about to sleep, unless it was nudged (then `*nudged` is 1 and
/// it must not sleep).
cpy_asgi_event *cpy_asgi_begin_wait(cpy_asgi_worker *worker, int *nudged);
/// The waiting events, if any, without waiting or counting an iteration.
cpy_asgi_event *cpy_asgi_take(cpy_asgi_worker *worker);
/// After the loop polled: marks it awake, resets the eventfd, counts an iteration, and returns
/// the events that arrived meanwhile (or NULL).
cpy_asgi_event *cpy_asgi_end_wait(cpy_asgi_worker *worker);
/// For a loop whose selector holds nothing but the mailbox: waits on the mailbox's condition,
/// up to `timeout` seconds (forever if negative), unless events wait already; counts an
/// iteration and returns the events (or NULL). Call without the GIL.
cpy_asgi_event *cpy_asgi_wait(cpy_asgi_worker *worker, double timeout);
/// Wakes the loop, however it sleeps, without an event: for work its own threads queued on it
/// (asyncio's call_soon_threadsafe). Any thread.
void cpy_asgi_nudge(cpy_asgi_worker *worker);

static inline const unsigned char *cpy_asgi_event_payload(const cpy_asgi_event *event) {
    return event->data + event->head_length;
}

#endif
