// `subinterp._core._Pool` and the completion box: the native half of InterpreterPoolExecutor.
// See executor.h for the path a call takes.
//
// The box keeps one record per call the caller submitted. A record holds the caller's target (its
// Future, or the map's chunk record): an object of the caller's interpreter, touched only by the
// `_Pool` methods, which run with that interpreter's GIL. The host posts outcomes without any GIL;
// a post either wakes the thread waiting for that very call in `take` (the caller blocked in
// `Future.result()`), or queues the record for the executor's result thread (`wait_any`).
#include "executor.h"
#include "channels_module.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static cpy_pool_hooks cpy_hooks;
static atomic_int cpy_hooks_set = 0;

void cpy_executor_set_hooks(const cpy_pool_hooks *hooks) {
    cpy_hooks = *hooks;
    atomic_store(&cpy_hooks_set, 1);
}

// MARK: - The completion box

typedef struct cpy_record {
    uint64_t job;
    PyObject *target;  // the caller's object (a strong reference), or NULL once taken
    int status;
    cpy_item *item;
    char *message;
    atomic_int done;
    int waiting;  // a thread in `take` waits for this record; posts go to it, not to the queue
    struct cpy_record *bucket_next;
    struct cpy_record *queue_prev, *queue_next;
    int queued;
} cpy_record;

struct cpy_box {
    atomic_long refs;
    pthread_mutex_t lock;
    pthread_cond_t any;     // the result thread waits here
    pthread_cond_t direct;  // threads in `take` wait here
    cpy_record **buckets;
    size_t bucket_count;
    size_t count;
    cpy_record *queue_head, *queue_tail;
    uint64_t next_job;
    int woken;
    int closed;
    char *broken;        // why the pool could not start, once known
    int broken_pending;  // the pool-wide event is not yet handed to the result thread
};

static cpy_box *cpy_box_create(void) {
    cpy_box *box = calloc(1, sizeof *box);
    if (box == NULL) return NULL;
    box->bucket_count = 64;
    box->buckets = calloc(box->bucket_count, sizeof *box->buckets);
    if (box->buckets == NULL) {
        free(box);
        return NULL;
    }
    atomic_init(&box->refs, 1);
    pthread_mutex_init(&box->lock, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&box->any, &attributes);
    pthread_cond_init(&box->direct, &attributes);
    pthread_condattr_destroy(&attributes);
    box->next_job = 1;
    return box;
}

void cpy_box_retain(cpy_box *box) { atomic_fetch_add(&box->refs, 1); }

static void cpy_record_free(cpy_record *record) {
    // Only reached once the target was handed out or released under the caller's GIL.
    cpy_item_free(record->item);
    free(record->message);
    free(record);
}

void cpy_box_release(cpy_box *box) {
    if (atomic_fetch_sub(&box->refs, 1) != 1) return;
    for (size_t i = 0; i < box->bucket_count; i++) {
        cpy_record *record = box->buckets[i];
        while (record != NULL) {
            cpy_record *next = record->bucket_next;
            cpy_record_free(record);  // targets were released by the `_Pool` before (dealloc)
            record = next;
        }
    }
    free(box->buckets);
    free(box->broken);
    pthread_cond_destroy(&box->any);
    pthread_cond_destroy(&box->direct);
    pthread_mutex_destroy(&box->lock);
    free(box);
}

static size_t cpy_bucket(const cpy_box *box, uint64_t job) {
    return (size_t)((job * 0x9E3779B97F4A7C15ULL) >> 32) & (box->bucket_count - 1);
}

static cpy_record *cpy_find(cpy_box *box, uint64_t job) {
    cpy_record *record = box->buckets[cpy_bucket(box, job)];
    while (record != NULL && record->job != job) record = record->bucket_next;
    return record;
}

/// Adds a record; grows the table when it gets crowded. Lock held. -1 if out of memory.
static int cpy_insert(cpy_box *box, cpy_record *record) {
    if (box->count + 1 > box->bucket_count) {
        size_t count = box->bucket_count * 4;
        cpy_record **buckets = calloc(count, sizeof *buckets);
        if (buckets == NULL) return -1;
        cpy_record **old = box->buckets;
        size_t old_count = box->bucket_count;
        box->buckets = buckets;
        box->bucket_count = count;
        for (size_t i = 0; i < old_count; i++) {
            cpy_record *each = old[i];
            while (each != NULL) {
                cpy_record *next = each->bucket_next;
                size_t b = cpy_bucket(box, each->job);
                each->bucket_next = buckets[b];
                buckets[b] = each;
                each = next;
            }
        }
        free(old);
    }
    size_t b = cpy_bucket(box, record->job);
    record->bucket_next = box->buckets[b];
    box->buckets[b] = record;
    box->count++;
    return 0;
}

/// Unlinks a record from the table and, if there, from the queue. Lock held.
static void cpy_remove(cpy_box *box, cpy_record *record) {
    cpy_record **link = &box->buckets[cpy_bucket(box, record->job)];
    while (*link != NULL && *link != record) link = &(*link)->bucket_next;
    if (*link == record) {
        *link = record->bucket_next;
        box->count--;
    }
    if (record->queued) {
        if (record->queue_prev) record->queue_prev->queue_next = record->queue_next;
        else box->queue_head = record->queue_next;
        if (record->queue_next) record->queue_next->queue_prev = record->queue_prev;
        else box->queue_tail = record->queue_prev;
        record->queued = 0;
    }
}

/// Queues a finished record for the result thread and wakes it. Lock held.
static void cpy_enqueue(cpy_box *box, cpy_record *record) {
    record->queued = 1;
    record->queue_prev = box->queue_tail;
    record->queue_next = NULL;
    if (box->queue_tail) box->queue_tail->queue_next = record;
    else box->queue_head = record;
    box->queue_tail = record;
    pthread_cond_signal(&box->any);
}

void cpy_box_post(cpy_box *box, uint64_t job, int status, cpy_item *item, const char *message) {
    pthread_mutex_lock(&box->lock);
    if (job == 0) {
        if (box->broken == NULL) {
            box->broken = strdup(message ? message : "the pool could not start");
            box->broken_pending = 1;
            pthread_cond_broadcast(&box->any);
        }
        pthread_mutex_unlock(&box->lock);
        cpy_item_free(item);
        return;
    }
    cpy_record *record = cpy_find(box, job);
    if (record == NULL || atomic_load(&record->done)) {
        // Unknown (its caller went away) or already reported (a cancel won the race).
        pthread_mutex_unlock(&box->lock);
        cpy_item_free(item);
        return;
    }
    record->status = status;
    record->item = item;
    record->message = message ? strdup(message) : NULL;
    atomic_store_explicit(&record->done, 1, memory_order_release);
    if (record->waiting) {
        pthread_cond_broadcast(&box->direct);
    } else {
        cpy_enqueue(box, record);
    }
    pthread_mutex_unlock(&box->lock);
}

static void cpy_deadline_after(struct timespec *deadline, double seconds) {
    clock_gettime(CLOCK_MONOTONIC, deadline);
    time_t whole = (time_t)seconds;
    deadline->tv_sec += whole;
    deadline->tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec += 1;
        deadline->tv_nsec -= 1000000000L;
    }
}

static int cpy_passed(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec || (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

// MARK: - The `_Pool` type

typedef struct {
    cpy_object_head head;
    cpy_box *box;
    void *pool;
    int closed;
} cpy_pool_object;

static cpy_module_state *cpy_pool_state(PyObject *self) { return cpy_PyType_GetModuleState(cpy_type(self)); }
static PyObject *cpy_pool_module(PyObject *self) { return cpy_PyType_GetModule(cpy_type(self)); }

static PyObject *cpy_pool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)kwargs;
    if (!atomic_load(&cpy_hooks_set)) {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "subinterp._core was loaded without its host; import subinterp instead");
        return NULL;
    }
    if (args == NULL || cpy_PyTuple_Size(args) != 3) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "_Pool(workers, setup, max_tasks)");
        return NULL;
    }
    long workers = cpy_PyLong_AsLong(cpy_PyTuple_GetItem(args, 0));
    if (workers == -1 && cpy_PyErr_Occurred()) return NULL;
    PyObject *setup_object = cpy_PyTuple_GetItem(args, 1);
    const char *setup = NULL;
    if (setup_object != cpy_none()) {
        Py_ssize_t length;
        setup = cpy_PyUnicode_AsUTF8AndSize(setup_object, &length);
        if (setup == NULL) return NULL;
    }
    long max_tasks = cpy_PyLong_AsLong(cpy_PyTuple_GetItem(args, 2));
    if (max_tasks == -1 && cpy_PyErr_Occurred()) return NULL;
    if (workers < 1) {
        cpy_PyErr_SetString(cpy_exc_value_error(), "max_workers must be greater than 0");
        return NULL;
    }
    PyObject *(*alloc)(PyTypeObject *, Py_ssize_t) = cpy_PyType_GetSlot(type, 47 /* Py_tp_alloc */);
    cpy_pool_object *self = (cpy_pool_object *)alloc(type, 0);
    if (self == NULL) return NULL;
    self->box = cpy_box_create();
    if (self->box == NULL) {
        cpy_decref((PyObject *)self);
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory creating a pool");
        return NULL;
    }
    cpy_pool_config config = {workers, setup, max_tasks > 0 ? max_tasks : 0};
    self->pool = cpy_hooks.create(&config, self->box);
    if (self->pool == NULL) {
        cpy_decref((PyObject *)self);
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "could not start a pool");
        return NULL;
    }
    return (PyObject *)self;
}

static void cpy_pool_dealloc(PyObject *self_object) {
    cpy_pool_object *self = (cpy_pool_object *)self_object;
    if (self->pool != NULL) {
        cpy_hooks.close(self->pool, 0);
        cpy_hooks.release(self->pool);
        self->pool = NULL;
    }
    if (self->box != NULL) {
        // Release the targets of calls nobody collected, here where this interpreter's GIL is held;
        // the records stay until the pool lets go of the box, so late posts find them done.
        cpy_box *box = self->box;
        pthread_mutex_lock(&box->lock);
        for (size_t i = 0; i < box->bucket_count; i++) {
            for (cpy_record *record = box->buckets[i]; record != NULL; record = record->bucket_next) {
                if (record->target != NULL) {
                    cpy_decref(record->target);
                    record->target = NULL;
                }
                atomic_store(&record->done, 1);
            }
        }
        box->closed = 1;
        pthread_mutex_unlock(&box->lock);
        cpy_box_release(box);
        self->box = NULL;
    }
    PyTypeObject *type = cpy_type(self_object);
    void (*free_slot)(void *) = cpy_PyType_GetSlot(type, 74 /* Py_tp_free */);
    free_slot(self_object);
    cpy_decref((PyObject *)type);
}

/// `(status, value)` for a taken record (it is already out of the table): the decoded item, the
/// message as str, or the exception that decoding raised (status -1). Frees the record.
static PyObject *cpy_outcome(PyObject *self, cpy_record *record, int with_target) {
    PyObject *value;
    int status = record->status;
    cpy_item *item = record->item;
    record->item = NULL;
    if (item != NULL) {
        value = cpy_decode(cpy_pool_state(self), cpy_pool_module(self), item);
        if (value == NULL) {
            // Unpickling the outcome failed here, in the caller: that is the call's error.
            value = cpy_PyErr_GetRaisedException();
            status = -1;
        }
    } else if (record->message != NULL) {
        value = cpy_PyUnicode_DecodeUTF8(record->message, (Py_ssize_t)strlen(record->message), "replace");
    } else {
        value = cpy_new_none();
    }
    PyObject *target = record->target;
    record->target = NULL;
    cpy_record_free(record);
    if (value == NULL) {
        cpy_xdecref(target);
        return NULL;
    }
    PyObject *result = cpy_PyTuple_New(with_target ? 3 : 2);
    PyObject *code = cpy_PyLong_FromLongLong(status);
    if (result == NULL || code == NULL) {
        cpy_xdecref(result);
        cpy_xdecref(code);
        cpy_decref(value);
        cpy_xdecref(target);
        return NULL;
    }
    Py_ssize_t i = 0;
    if (with_target) cpy_PyTuple_SetItem(result, i++, target ? target : cpy_new_none());
    else cpy_xdecref(target);
    cpy_PyTuple_SetItem(result, i++, code);
    cpy_PyTuple_SetItem(result, i, value);
    return result;
}

/// submit(payload, target, timeout) -> job: encodes the payload and queues it.
static PyObject *cpy_pool_submit(PyObject *self_object, PyObject *const *args, Py_ssize_t nargs) {
    cpy_pool_object *self = (cpy_pool_object *)self_object;
    if (nargs != 3) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "submit(payload, target, timeout)");
        return NULL;
    }
    double timeout = -1;
    if (args[2] != cpy_none()) {
        timeout = cpy_PyFloat_AsDouble(args[2]);
        if (timeout == -1.0 && cpy_PyErr_Occurred()) return NULL;
    }
    if (self->closed || self->pool == NULL) {
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "cannot schedule new futures after shutdown");
        return NULL;
    }
    cpy_item *item = cpy_encode(cpy_pool_state(self_object), cpy_pool_module(self_object), args[0]);
    if (item == NULL) return NULL;
    cpy_record *record = calloc(1, sizeof *record);
    if (record == NULL) {
        cpy_item_free(item);
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory submitting a call");
        return NULL;
    }
    cpy_box *box = self->box;
    pthread_mutex_lock(&box->lock);
    record->job = box->next_job++;
    atomic_init(&record->done, 0);
    int inserted = cpy_insert(box, record);
    pthread_mutex_unlock(&box->lock);
    if (inserted < 0) {
        free(record);
        cpy_item_free(item);
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory submitting a call");
        return NULL;
    }
    cpy_incref(args[1]);
    record->target = args[1];  // set before the job exists: only this interpreter reads it
    uint64_t job = record->job;
    if (cpy_hooks.submit(self->pool, job, item, timeout) != 0) {
        pthread_mutex_lock(&box->lock);
        cpy_remove(box, record);
        pthread_mutex_unlock(&box->lock);
        cpy_decref(record->target);
        record->target = NULL;
        cpy_record_free(record);
        cpy_PyErr_SetString(cpy_exc_runtime_error(), "cannot schedule new futures after shutdown");
        return NULL;
    }
    return cpy_PyLong_FromUnsignedLongLong(job);
}

static int cpy_read_timeout(PyObject *value, double *timeout) {
    *timeout = -1;
    if (value == NULL || value == cpy_none()) return 0;
    *timeout = cpy_PyFloat_AsDouble(value);
    if (*timeout == -1.0 && cpy_PyErr_Occurred()) return -1;
    if (*timeout < 0) *timeout = 0;
    return 0;
}

/// Watches `flag` for up to about 50 µs before a wait blocks: a call that takes a few
/// microseconds is caught without a futex sleep and wake-up on both sides. It yields the CPU
/// between checks, so that a worker waiting for this core (all cores busy) runs meanwhile.
static int cpy_spin_for(atomic_int *flag) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        for (int i = 0; i < 256; i++) {
            if (atomic_load_explicit(flag, memory_order_acquire)) return 1;
        }
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) > 50000) return 0;
    }
}

/// take(job, timeout=None) -> (status, value) | None | False
/// Waits for one call's outcome and takes it: None when another thread has it (the result
/// thread delivers it to the Future), False when `timeout` passed first.
static PyObject *cpy_pool_take(PyObject *self_object, PyObject *const *args, Py_ssize_t nargs) {
    cpy_pool_object *self = (cpy_pool_object *)self_object;
    if (nargs < 1 || nargs > 2) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "take(job, timeout=None)");
        return NULL;
    }
    uint64_t job = cpy_PyLong_AsUnsignedLongLong(args[0]);
    if (cpy_PyErr_Occurred()) return NULL;
    double timeout;
    if (cpy_read_timeout(nargs > 1 ? args[1] : NULL, &timeout) < 0) return NULL;
    cpy_box *box = self->box;
    pthread_mutex_lock(&box->lock);
    cpy_record *record = cpy_find(box, job);
    if (record == NULL || record->waiting || record->target == NULL) {
        pthread_mutex_unlock(&box->lock);
        return cpy_new_none();
    }
    if (atomic_load(&record->done)) {
        cpy_remove(box, record);
        pthread_mutex_unlock(&box->lock);
        return cpy_outcome(self_object, record, 0);
    }
    if (timeout == 0) {
        pthread_mutex_unlock(&box->lock);
        return cpy_PyBool_FromLong(0);
    }
    record->waiting = 1;
    pthread_mutex_unlock(&box->lock);

    struct timespec deadline;
    if (timeout > 0) cpy_deadline_after(&deadline, timeout);
    // In the main interpreter the wait wakes now and then to run signal handlers (Ctrl-C), as
    // Python's own lock waits can be interrupted; elsewhere no handler can run, so it just sleeps
    // until the outcome is posted or the timeout passes.
    int main_thread = cpy_PyInterpreterState_Get() == cpy_PyInterpreterState_Main();
    int got = 0, interrupted = 0;
    PyThreadState *saved = cpy_PyEval_SaveThread();
    cpy_spin_for(&record->done);
    pthread_mutex_lock(&box->lock);
    for (;;) {
        if (atomic_load(&record->done)) {
            got = 1;
            break;
        }
        if (timeout > 0 && cpy_passed(&deadline)) break;
        if (main_thread) {
            struct timespec slice;
            cpy_deadline_after(&slice, 0.05);
            if (timeout > 0 && (deadline.tv_sec < slice.tv_sec || (deadline.tv_sec == slice.tv_sec && deadline.tv_nsec < slice.tv_nsec))) {
                slice = deadline;
            }
            pthread_cond_timedwait(&box->direct, &box->lock, &slice);
            if (!atomic_load(&record->done)) {
                pthread_mutex_unlock(&box->lock);
                cpy_PyEval_RestoreThread(saved);
                interrupted = cpy_PyErr_CheckSignals() < 0;
                saved = cpy_PyEval_SaveThread();
                pthread_mutex_lock(&box->lock);
                if (interrupted) break;
            }
        } else if (timeout > 0) {
            pthread_cond_timedwait(&box->direct, &box->lock, &deadline);
        } else {
            pthread_cond_wait(&box->direct, &box->lock);
        }
    }
    if (interrupted) {
        // A signal handler raised (Ctrl-C): that exception propagates, and the outcome, now or
        // when it comes, goes to the result thread, which completes the Future.
        record->waiting = 0;
        if (atomic_load(&record->done)) cpy_enqueue(box, record);
        pthread_mutex_unlock(&box->lock);
        cpy_PyEval_RestoreThread(saved);
        return NULL;
    }
    if (got || atomic_load(&record->done)) {
        got = 1;
        cpy_remove(box, record);
    } else {
        record->waiting = 0;  // a later post queues it for the result thread
    }
    pthread_mutex_unlock(&box->lock);
    cpy_PyEval_RestoreThread(saved);
    if (got) return cpy_outcome(self_object, record, 0);
    return cpy_PyBool_FromLong(0);
}

/// wait_any(timeout=None) -> [(target, status, value), ...] | None
/// The result thread's wait: every queued outcome, or [] when woken or timed out, or None once the
/// pool is closed and nothing is left. A pool that could not start yields (None, BROKEN, message)
/// once.
static PyObject *cpy_pool_wait_any(PyObject *self_object, PyObject *const *args, Py_ssize_t nargs) {
    cpy_pool_object *self = (cpy_pool_object *)self_object;
    double timeout;
    if (cpy_read_timeout(nargs > 0 ? args[0] : NULL, &timeout) < 0) return NULL;
    cpy_box *box = self->box;
    struct timespec deadline;
    if (timeout > 0) cpy_deadline_after(&deadline, timeout);
    PyThreadState *saved = cpy_PyEval_SaveThread();
    pthread_mutex_lock(&box->lock);
    while (box->queue_head == NULL && !box->broken_pending && !box->woken && !box->closed) {
        if (timeout == 0) break;
        if (timeout > 0) {
            if (pthread_cond_timedwait(&box->any, &box->lock, &deadline) == ETIMEDOUT) break;
        } else {
            pthread_cond_wait(&box->any, &box->lock);
        }
    }
    cpy_record *taken = box->queue_head;
    size_t count = 0;
    for (cpy_record *each = taken; each != NULL; each = each->queue_next) count++;
    // Unlink them all from the table; keep them chained through queue_next.
    for (cpy_record *each = taken; each != NULL; each = each->queue_next) {
        cpy_record **link = &box->buckets[cpy_bucket(box, each->job)];
        while (*link != NULL && *link != each) link = &(*link)->bucket_next;
        if (*link == each) {
            *link = each->bucket_next;
            box->count--;
        }
        each->queued = 0;
    }
    box->queue_head = box->queue_tail = NULL;
    char *broken = NULL;
    if (box->broken_pending) {
        box->broken_pending = 0;
        broken = strdup(box->broken);
    }
    int finished = box->closed && taken == NULL && broken == NULL;
    box->woken = 0;
    pthread_mutex_unlock(&box->lock);
    cpy_PyEval_RestoreThread(saved);

    if (finished) return cpy_new_none();
    PyObject *list = cpy_PyList_New(0);
    if (broken != NULL) {
        cpy_record *event = calloc(1, sizeof *event);
        PyObject *outcome = NULL;
        if (event != NULL) {
            event->status = CPY_DONE_BROKEN;
            event->message = broken;
            broken = NULL;
            outcome = cpy_outcome(self_object, event, 1);
        }
        if (outcome == NULL || list == NULL || cpy_PyList_Append(list, outcome) < 0) cpy_PyErr_Clear();
        cpy_xdecref(outcome);
        free(broken);
    }
    while (taken != NULL) {
        cpy_record *next = taken->queue_next;
        PyObject *outcome = cpy_outcome(self_object, taken, 1);
        // Only out of memory fails here; that call's Future is then lost, nothing better to do.
        if (outcome == NULL || list == NULL || cpy_PyList_Append(list, outcome) < 0) cpy_PyErr_Clear();
        cpy_xdecref(outcome);
        taken = next;
    }
    if (list == NULL) cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory");
    return list;
}

/// cancel(job, queued_only) -> 0 (finished or unknown), 1 (was queued), 2 (was running)
static PyObject *cpy_pool_cancel(PyObject *self_object, PyObject *const *args, Py_ssize_t nargs) {
    cpy_pool_object *self = (cpy_pool_object *)self_object;
    if (nargs != 2) {
        cpy_PyErr_SetString(cpy_exc_type_error(), "cancel(job, queued_only)");
        return NULL;
    }
    uint64_t job = cpy_PyLong_AsUnsignedLongLong(args[0]);
    if (cpy_PyErr_Occurred()) return NULL;
    int queued_only = cpy_PyObject_IsTrue(args[1]);
    if (queued_only < 0) return NULL;
    if (self->pool == NULL) return cpy_PyLong_FromLongLong(0);
    PyThreadState *saved = cpy_PyEval_SaveThread();
    int result = cpy_hooks.cancel(self->pool, job, queued_only);
    cpy_PyEval_RestoreThread(saved);
    return cpy_PyLong_FromLongLong(result);
}

/// state(job) -> 0 queued, 1 running, 2 finished or unknown
static PyObject *cpy_pool_job_state(PyObject *self_object, PyObject *arg) {
    cpy_pool_object *self = (cpy_pool_object *)self_object;
    uint64_t job = cpy_PyLong_AsUnsignedLongLong(arg);
    if (cpy_PyErr_Occurred()) return NULL;
    return cpy_PyLong_FromLongLong(self->pool ? cpy_hooks.state(self->pool, job) : 2);
}

/// pending() -> [(job, target), ...]: the calls whose outcome has not arrived yet.
static PyObject *cpy_pool_pending(PyObject *self_object, PyObject *unused) {
    (void)unused;
    cpy_box *box = ((cpy_pool_object *)self_object)->box;
    PyObject *list = cpy_PyList_New(0);
    if (list == NULL) return NULL;
    // Collect under the lock (targets stay alive: only this interpreter releases them, and it
    // holds its GIL here), build the tuples after.
    pthread_mutex_lock(&box->lock);
    size_t capacity = box->count, count = 0;
    uint64_t *jobs = capacity ? malloc(capacity * sizeof *jobs) : NULL;
    PyObject **targets = capacity ? malloc(capacity * sizeof *targets) : NULL;
    if (capacity == 0 || (jobs != NULL && targets != NULL)) {
        for (size_t i = 0; i < box->bucket_count; i++) {
            for (cpy_record *record = box->buckets[i]; record != NULL; record = record->bucket_next) {
                if (!atomic_load(&record->done) && record->target != NULL && count < capacity) {
                    jobs[count] = record->job;
                    targets[count] = record->target;
                    cpy_incref(record->target);
                    count++;
                }
            }
        }
    }
    pthread_mutex_unlock(&box->lock);
    int failed = capacity != 0 && (jobs == NULL || targets == NULL);
    for (size_t i = 0; i < count; i++) {
        PyObject *pair = failed ? NULL : cpy_PyTuple_New(2);
        PyObject *job = pair ? cpy_PyLong_FromUnsignedLongLong(jobs[i]) : NULL;
        if (pair == NULL || job == NULL) {
            failed = 1;
            cpy_xdecref(pair);
            cpy_decref(targets[i]);
            continue;
        }
        cpy_PyTuple_SetItem(pair, 0, job);
        cpy_PyTuple_SetItem(pair, 1, targets[i]);
        if (cpy_PyList_Append(list, pair) < 0) failed = 1;
        cpy_decref(pair);
    }
    free(jobs);
    free(targets);
    if (failed) {
        cpy_decref(list);
        if (!cpy_PyErr_Occurred()) cpy_PyErr_SetString(cpy_exc_runtime_error(), "out of memory");
        return NULL;
    }
    return list;
}

/// wake(): makes a `wait_any` in progress return (with what is queued, or []).
static PyObject *cpy_pool_wake(PyObject *self_object, PyObject *unused) {
    (void)unused;
    cpy_box *box = ((cpy_pool_object *)self_object)->box;
    pthread_mutex_lock(&box->lock);
    box->woken = 1;
    pthread_cond_broadcast(&box->any);
    pthread_mutex_unlock(&box->lock);
    return cpy_new_none();
}

/// close(wait): no more submissions; the pool finishes what it has, then ends its workers (with
/// `wait`, before this returns). `wait_any` returns None once nothing is left.
static PyObject *cpy_pool_close(PyObject *self_object, PyObject *arg) {
    cpy_pool_object *self = (cpy_pool_object *)self_object;
    int wait = cpy_PyObject_IsTrue(arg);
    if (wait < 0) return NULL;
    self->closed = 1;
    cpy_box *box = self->box;
    pthread_mutex_lock(&box->lock);
    box->closed = 1;
    pthread_cond_broadcast(&box->any);
    pthread_mutex_unlock(&box->lock);
    if (self->pool != NULL) {
        PyThreadState *saved = cpy_PyEval_SaveThread();
        cpy_hooks.close(self->pool, wait);
        cpy_PyEval_RestoreThread(saved);
    }
    return cpy_new_none();
}

static PyObject *cpy_pool_broken_get(PyObject *self_object, void *unused) {
    (void)unused;
    cpy_box *box = ((cpy_pool_object *)self_object)->box;
    pthread_mutex_lock(&box->lock);
    char *copy = box->broken ? strdup(box->broken) : NULL;
    pthread_mutex_unlock(&box->lock);
    if (copy == NULL) return cpy_new_none();
    PyObject *text = cpy_PyUnicode_DecodeUTF8(copy, (Py_ssize_t)strlen(copy), "replace");
    free(copy);
    return text;
}

static PyMethodDef cpy_pool_methods[] = {
    {"submit", (void *)cpy_pool_submit, CPY_METH_FASTCALL, NULL},
    {"take", (void *)cpy_pool_take, CPY_METH_FASTCALL, NULL},
    {"wait_any", (void *)cpy_pool_wait_any, CPY_METH_FASTCALL, NULL},
    {"cancel", (void *)cpy_pool_cancel, CPY_METH_FASTCALL, NULL},
    {"state", (void *)cpy_pool_job_state, CPY_METH_O, NULL},
    {"wake", (void *)cpy_pool_wake, CPY_METH_NOARGS, NULL},
    {"pending", (void *)cpy_pool_pending, CPY_METH_NOARGS, NULL},
    {"close", (void *)cpy_pool_close, CPY_METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cpy_pool_getset[] = {
    {"broken", cpy_pool_broken_get, NULL, "Why the pool could not start, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot cpy_pool_slots[] = {
    {CPY_TP_NEW, (void *)cpy_pool_new},
    {CPY_TP_DEALLOC, (void *)cpy_pool_dealloc},
    {CPY_TP_METHODS, cpy_pool_methods},
    {CPY_TP_GETSET, cpy_pool_getset},
    {CPY_TP_DOC, "_Pool(workers, setup, max_tasks): a pool of worker interpreters, for InterpreterPoolExecutor."},
    {0, NULL},
};

static PyType_Spec cpy_pool_spec = {
    "subinterp._core._Pool", sizeof(cpy_pool_object), 0, CPY_TPFLAGS_DEFAULT | CPY_TPFLAGS_IMMUTABLETYPE, cpy_pool_slots,
};

int cpy_executor_exec(PyObject *module) {
    PyTypeObject *type = (PyTypeObject *)cpy_PyType_FromModuleAndSpec(module, &cpy_pool_spec, NULL);
    if (type == NULL) return -1;
    int result = cpy_PyModule_AddType(module, type);
    cpy_decref((PyObject *)type);  // the module's dict holds it
    return result;
}

// MARK: - The worker side

/// `subinterp._core.<name>`, set by `subinterp._worker` when it is imported (new reference).
static PyObject *cpy_worker_helper(PyObject *core, const char *name) {
    PyObject *helper = cpy_PyObject_GetAttrString(core, name);
    if (helper != NULL) return helper;
    cpy_PyErr_Clear();
    PyObject *worker = cpy_PyImport_ImportModule("subinterp._worker");
    if (worker == NULL) return NULL;
    cpy_decref(worker);
    return cpy_PyObject_GetAttrString(core, name);
}

/// `_worker._failure(error, stage)`: the outcome that reports `error` (a raised exception).
static PyObject *cpy_worker_failure(PyObject *core, PyObject *error, const char *stage) {
    PyObject *failure = cpy_worker_helper(core, "_executor_failure");
    PyObject *where = cpy_PyUnicode_FromStringAndSize(stage, (Py_ssize_t)strlen(stage));
    PyObject *outcome = NULL;
    if (failure != NULL && where != NULL) {
        PyObject *arguments[2] = {error, where};
        outcome = cpy_PyObject_Vectorcall(failure, arguments, 2, NULL);
    }
    cpy_xdecref(failure);
    cpy_xdecref(where);
    return outcome;
}

static void cpy_describe_error(char *error, size_t error_size, const char *what) {
    PyObject *exception = cpy_PyErr_GetRaisedException();
    PyObject *text = exception ? cpy_PyObject_Str(exception) : NULL;
    Py_ssize_t length = 0;
    const char *utf8 = text ? cpy_PyUnicode_AsUTF8AndSize(text, &length) : NULL;
    snprintf(error, error_size, "%s: %s", what, utf8 ? utf8 : "unknown error");
    cpy_PyErr_Clear();
    cpy_xdecref(text);
    cpy_xdecref(exception);
}

int cpy_executor_run(cpy_item *payload, cpy_item **result, char *error, size_t error_size) {
    *result = NULL;
    PyObject *core = cpy_PyDict_GetItemString(cpy_PyImport_GetModuleDict(), "subinterp._core");  // borrowed
    if (core == NULL) {
        cpy_item_free(payload);
        snprintf(error, error_size, "the worker has no subinterp._core");
        return -1;
    }
    cpy_incref(core);
    cpy_module_state *state = cpy_PyModule_GetState(core);
    PyObject *outcome = NULL;
    PyObject *call = cpy_decode(state, core, payload);
    if (call == NULL) {
        PyObject *exception = cpy_PyErr_GetRaisedException();
        outcome = cpy_worker_failure(core, exception, "receiving the call in the worker");
        cpy_xdecref(exception);
    } else {
        PyObject *run = cpy_worker_helper(core, "_executor_run");
        if (run != NULL) {
            PyObject *arguments[1] = {call};
            outcome = cpy_PyObject_Vectorcall(run, arguments, 1, NULL);
            cpy_decref(run);
        }
        cpy_decref(call);
        if (outcome == NULL) {
            PyObject *exception = cpy_PyErr_GetRaisedException();
            outcome = cpy_worker_failure(core, exception, "running the call");
            cpy_xdecref(exception);
        }
    }
    if (outcome != NULL) {
        *result = cpy_encode(state, core, outcome);
        cpy_decref(outcome);
        if (*result == NULL) {
            // The value (or the exception) could not be sent: report that instead.
            PyObject *exception = cpy_PyErr_GetRaisedException();
            PyObject *failure = cpy_worker_failure(core, exception, "sending the result back");
            cpy_xdecref(exception);
            if (failure != NULL) {
                *result = cpy_encode(state, core, failure);
                cpy_decref(failure);
            }
        }
    }
    if (*result == NULL) cpy_describe_error(error, error_size, "the worker could not report the call's outcome");
    cpy_decref(core);
    return *result != NULL ? 0 : -1;
}
