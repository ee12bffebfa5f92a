// The ASGI mailbox: host threads post events, the worker's loop takes them in batches. No
// Python here; see asgi.h.
#include "asgi_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static cpy_asgi_host cpy_asgi_host_table;

void cpy_asgi_set_host(const cpy_asgi_host *host) { cpy_asgi_host_table = *host; }

const cpy_asgi_host *cpy_asgi_host_functions(void) { return &cpy_asgi_host_table; }

// MARK: - Streams and events

cpy_asgi_stream *cpy_asgi_stream_create(void) {
    cpy_asgi_stream *stream = calloc(1, sizeof *stream);
    if (stream != NULL) atomic_init(&stream->refs, 1);
    return stream;
}

static void cpy_asgi_stream_retain(cpy_asgi_stream *stream) { atomic_fetch_add(&stream->refs, 1); }

void cpy_asgi_stream_release(cpy_asgi_stream *stream) {
    if (stream != NULL && atomic_fetch_sub(&stream->refs, 1) == 1) free(stream);
}

cpy_asgi_event *cpy_asgi_event_create(int kind, int flags, int64_t number, cpy_asgi_stream *stream, void *exchange,
                                      const void *head, size_t head_length, const void *payload, size_t payload_length) {
    cpy_asgi_event *event = malloc(sizeof *event + head_length + payload_length);
    if (event == NULL) return NULL;
    event->next = NULL;
    event->kind = kind;
    event->flags = flags;
    event->number = number;
    event->stream = stream;
    if (stream != NULL) cpy_asgi_stream_retain(stream);
    event->exchange = exchange;
    event->head_length = head_length;
    event->payload_length = payload_length;
    if (head_length) memcpy(event->data, head, head_length);
    if (payload_length) memcpy(event->data + head_length, payload, payload_length);
    return event;
}

void cpy_asgi_event_free(cpy_asgi_event *event) {
    if (event == NULL) return;
    if (event->exchange != NULL && cpy_asgi_host_table.release != NULL) cpy_asgi_host_table.release(event->exchange);
    cpy_asgi_stream_release(event->stream);
    free(event);
}

// MARK: - Workers

cpy_asgi_worker *cpy_asgi_worker_create(void *context) {
    cpy_asgi_worker *worker = calloc(1, sizeof *worker);
    if (worker == NULL) return NULL;
    worker->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (worker->efd < 0) {
        free(worker);
        return NULL;
    }
    pthread_mutex_init(&worker->lock, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&worker->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    atomic_init(&worker->progress, 0);
    atomic_init(&worker->idle, 0);
    atomic_init(&worker->waiting, 0);
    worker->context = context;
    return worker;
}

void cpy_asgi_worker_close(cpy_asgi_worker *worker) {
    pthread_mutex_lock(&worker->lock);
    worker->closed = 1;
    pthread_mutex_unlock(&worker->lock);
}

void cpy_asgi_worker_destroy(cpy_asgi_worker *worker) {
    if (worker == NULL) return;
    cpy_asgi_event *event = worker->head;
    while (event != NULL) {
        cpy_asgi_event *next = event->next;
        cpy_asgi_event_free(event);
        event = next;
    }
    close(worker->efd);
    pthread_cond_destroy(&worker->wake);
    pthread_mutex_destroy(&worker->lock);
    free(worker);
}

uint64_t cpy_asgi_worker_progress(const cpy_asgi_worker *worker) {
    return atomic_load_explicit(&((cpy_asgi_worker *)worker)->progress, memory_order_acquire);
}

int cpy_asgi_worker_idle(const cpy_asgi_worker *worker) {
    return atomic_load_explicit(&((cpy_asgi_worker *)worker)->idle, memory_order_acquire);
}

int cpy_asgi_worker_waiting(const cpy_asgi_worker *worker) {
    return atomic_load_explicit(&((cpy_asgi_worker *)worker)->waiting, memory_order_acquire);
}

/// Wakes a sleeping loop (under the lock): the condition it waits on, or its eventfd.
static void cpy_asgi_wake_locked(cpy_asgi_worker *worker) {
    if (worker->sleeping == CPY_ASGI_SLEEPING_ON_CONDITION) {
        pthread_cond_signal(&worker->wake);
    } else if (worker->sleeping == CPY_ASGI_SLEEPING_IN_SELECT && !worker->signalled) {
        // Written under the lock, so `signalled` always means "written".
        worker->signalled = 1;
        uint64_t one = 1;
        ssize_t written;
        do {
            written = write(worker->efd, &one, sizeof one);
        } while (written < 0 && errno == EINTR);
    }
}

void cpy_asgi_nudge(cpy_asgi_worker *worker) {
    pthread_mutex_lock(&worker->lock);
    worker->nudged = 1;
    cpy_asgi_wake_locked(worker);
    pthread_mutex_unlock(&worker->lock);
}

int cpy_asgi_post(cpy_asgi_worker *worker, cpy_asgi_event *event) {
    event->next = NULL;
    pthread_mutex_lock(&worker->lock);
    if (worker->closed) {
        pthread_mutex_unlock(&worker->lock);
        return -1;
    }
    if (worker->tail != NULL) {
        worker->tail->next = event;
    } else {
        worker->head = event;
    }
    worker->tail = event;
    atomic_store_explicit(&worker->waiting, 1, memory_order_release);
    // Only a sleeping loop needs waking; a busy one takes the event when its iteration ends.
    cpy_asgi_wake_locked(worker);
    pthread_mutex_unlock(&worker->lock);
    return 0;
}

static cpy_asgi_event *cpy_asgi_take_locked(cpy_asgi_worker *worker) {
    cpy_asgi_event *events = worker->head;
    worker->head = NULL;
    worker->tail = NULL;
    atomic_store_explicit(&worker->waiting, 0, memory_order_release);
    return events;
}

cpy_asgi_event *cpy_asgi_begin_wait(cpy_asgi_worker *worker, int *nudged) {
    pthread_mutex_lock(&worker->lock);
    cpy_asgi_event *events = cpy_asgi_take_locked(worker);
    *nudged = worker->nudged;
    int sleeps = events == NULL && !worker->nudged;
    if (sleeps) worker->sleeping = CPY_ASGI_SLEEPING_IN_SELECT;
    pthread_mutex_unlock(&worker->lock);
    // Events taken now run app code before the poll: the loop is busy, not idle.
    if (sleeps) atomic_store_explicit(&worker->idle, 1, memory_order_release);
    return events;
}

cpy_asgi_event *cpy_asgi_take(cpy_asgi_worker *worker) {
    pthread_mutex_lock(&worker->lock);
    cpy_asgi_event *events = cpy_asgi_take_locked(worker);
    pthread_mutex_unlock(&worker->lock);
    return events;
}

cpy_asgi_event *cpy_asgi_end_wait(cpy_asgi_worker *worker) {
    atomic_store_explicit(&worker->idle, 0, memory_order_release);
    atomic_fetch_add_explicit(&worker->progress, 1, memory_order_acq_rel);
    pthread_mutex_lock(&worker->lock);
    worker->sleeping = CPY_ASGI_AWAKE;
    worker->nudged = 0;
    if (worker->signalled) {
        uint64_t count;
        ssize_t got;
        do {
            got = read(worker->efd, &count, sizeof count);
        } while (got < 0 && errno == EINTR);
        worker->signalled = 0;
    }
    cpy_asgi_event *events = cpy_asgi_take_locked(worker);
    pthread_mutex_unlock(&worker->lock);
    return events;
}

cpy_asgi_event *cpy_asgi_wait(cpy_asgi_worker *worker, double timeout) {
    struct timespec deadline;
    if (timeout > 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        double whole = (double)(long long)timeout;
        deadline.tv_sec += (time_t)whole;
        deadline.tv_nsec += (long)((timeout - whole) * 1e9);
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec += 1;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&worker->lock);
    if (worker->head == NULL && !worker->nudged && timeout != 0) {
        worker->sleeping = CPY_ASGI_SLEEPING_ON_CONDITION;
        atomic_store_explicit(&worker->idle, 1, memory_order_release);
        while (worker->head == NULL && !worker->nudged) {
            if (timeout < 0) {
                pthread_cond_wait(&worker->wake, &worker->lock);
            } else if (pthread_cond_timedwait(&worker->wake, &worker->lock, &deadline) == ETIMEDOUT) {
                break;
            }
        }
        worker->sleeping = CPY_ASGI_AWAKE;
        atomic_store_explicit(&worker->idle, 0, memory_order_release);
    }
    worker->nudged = 0;
    cpy_asgi_event *events = cpy_asgi_take_locked(worker);
    pthread_mutex_unlock(&worker->lock);
    atomic_fetch_add_explicit(&worker->progress, 1, memory_order_acq_rel);
    return events;
}
