// Queues and shared buffers between interpreters: host-owned C structures that every
// interpreter (and Swift) reaches through handles. Nothing here holds a Python object across
// interpreters: values cross as bytes in the item format below, and each side builds its own
// objects from them.
#include "channels.h"

#include <stdio.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// MARK: - Queues

struct cpy_item {
    struct cpy_item *next;
    size_t size;
    unsigned char data[];
};

struct cpy_waiter {
    struct cpy_waiter *next;
    cpy_item *item;  // for a put: the item waiting for room
    cpy_waiter_done done;
    void *context;
};

struct cpy_queue {
    atomic_long refs;
    int64_t id;
    Py_ssize_t maxsize;
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    cpy_item *head;
    cpy_item *tail;
    Py_ssize_t count;
    atomic_long available;  // `count`, readable without the lock (for the spin before waiting)
    // Registered waits (no thread sits in them), oldest first. Getters wait only while the
    // queue is empty: a put hands its item straight to the first one. Putters wait only while
    // it is full: a get moves the first one's item in.
    cpy_waiter *getters;
    cpy_waiter *putters;
};

struct cpy_buffer {
    atomic_long refs;
    int64_t id;
    size_t size;
    void *data;
};

static atomic_llong cpy_next_id = 1;

// Handles by id, for `__reduce__` tokens. Entries do not hold a reference; an object removes
// itself when its last reference goes.
typedef struct {
    int64_t id;
    void *object;
    int kind;  // 'Q' or 'B'
} cpy_registry_entry;

static pthread_mutex_t cpy_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static cpy_registry_entry *cpy_registry = NULL;
static size_t cpy_registry_count = 0, cpy_registry_capacity = 0;

static void cpy_registry_add(int64_t id, void *object, int kind) {
    pthread_mutex_lock(&cpy_registry_lock);
    if (cpy_registry_count == cpy_registry_capacity) {
        size_t capacity = cpy_registry_capacity ? cpy_registry_capacity * 2 : 64;
        cpy_registry_entry *grown = realloc(cpy_registry, capacity * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&cpy_registry_lock);
            return;  // the object works; only its pickle token will not resolve
        }
        cpy_registry = grown;
        cpy_registry_capacity = capacity;
    }
    cpy_registry[cpy_registry_count++] = (cpy_registry_entry){id, object, kind};
    pthread_mutex_unlock(&cpy_registry_lock);
}

static void cpy_registry_remove(int64_t id) {
    pthread_mutex_lock(&cpy_registry_lock);
    for (size_t i = 0; i < cpy_registry_count; i++) {
        if (cpy_registry[i].id == id) {
            cpy_registry[i] = cpy_registry[--cpy_registry_count];
            break;
        }
    }
    pthread_mutex_unlock(&cpy_registry_lock);
}

/// A new reference to the live object with this id and kind, or NULL.
static void *cpy_registry_find(int64_t id, int kind) {
    void *found = NULL;
    pthread_mutex_lock(&cpy_registry_lock);
    for (size_t i = 0; i < cpy_registry_count; i++) {
        if (cpy_registry[i].id == id && cpy_registry[i].kind == kind) {
            atomic_long *refs = kind == 'Q' ? &((cpy_queue *)cpy_registry[i].object)->refs
                                            : &((cpy_buffer *)cpy_registry[i].object)->refs;
            // Only resurrect an object whose count has not reached zero.
            long current = atomic_load(refs);
            while (current > 0 && !atomic_compare_exchange_weak(refs, &current, current + 1)) {
            }
            if (current > 0) found = cpy_registry[i].object;
            break;
        }
    }
    pthread_mutex_unlock(&cpy_registry_lock);
    return found;
}

cpy_queue *cpy_queue_create(Py_ssize_t maxsize) {
    cpy_queue *queue = calloc(1, sizeof *queue);
    if (queue == NULL) return NULL;
    atomic_init(&queue->refs, 1);
    queue->id = atomic_fetch_add(&cpy_next_id, 1);
    queue->maxsize = maxsize > 0 ? maxsize : 0;
    pthread_mutex_init(&queue->lock, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&queue->not_empty, &attributes);
    pthread_cond_init(&queue->not_full, &attributes);
    pthread_condattr_destroy(&attributes);
    cpy_registry_add(queue->id, queue, 'Q');
    return queue;
}

void cpy_queue_retain(cpy_queue *queue) { atomic_fetch_add(&queue->refs, 1); }

void cpy_queue_release(cpy_queue *queue) {
    if (atomic_fetch_sub(&queue->refs, 1) != 1) return;
    cpy_registry_remove(queue->id);
    cpy_item *item = queue->head;
    while (item != NULL) {
        cpy_item *next = item->next;
        cpy_item_free(item);
        item = next;
    }
    pthread_cond_destroy(&queue->not_empty);
    pthread_cond_destroy(&queue->not_full);
    pthread_mutex_destroy(&queue->lock);
    free(queue);
}

int64_t cpy_queue_id(const cpy_queue *queue) { return queue->id; }
Py_ssize_t cpy_queue_maxsize(const cpy_queue *queue) { return queue->maxsize; }

Py_ssize_t cpy_queue_count(cpy_queue *queue) {
    pthread_mutex_lock(&queue->lock);
    Py_ssize_t count = queue->count;
    pthread_mutex_unlock(&queue->lock);
    return count;
}

static void cpy_deadline(struct timespec *deadline, double timeout) {
    clock_gettime(CLOCK_MONOTONIC, deadline);
    double whole = (double)(time_t)timeout;
    deadline->tv_sec += (time_t)timeout;
    deadline->tv_nsec += (long)((timeout - whole) * 1e9);
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec += 1;
        deadline->tv_nsec -= 1000000000L;
    }
}

// MARK: - Interrupting waits

// Per OS thread: whether a wait should end early, and on which queue it waits. The pool's
// controller marks a thread cancelled; closing an interpreter marks its thread closing. A
// waiter reads the flags while holding its queue's lock; a waker sets a flag, then broadcasts
// under that lock, so the wake-up cannot be missed. States are never freed (a few bytes per
// thread that ever waited), so a waiter can keep a pointer to its own without a lock.
//
// `waiting_on` is read and written under the state's `lock`, and a waker takes a reference to
// the queue before it lets go of that lock. Without both, a waker could read the pointer, the
// waiter return and drop the last reference (`subinterp.Queue().get()` holds its queue only
// for the call), and the waker lock a freed queue.
typedef struct cpy_wait_state {
    unsigned long thread;
    atomic_int cancel;
    atomic_int closing;
    pthread_mutex_t lock;
    cpy_queue *waiting_on;  // guarded by `lock`; set only while the waiter holds a reference
    struct cpy_wait_state *next;
} cpy_wait_state;

static pthread_mutex_t cpy_wait_lock = PTHREAD_MUTEX_INITIALIZER;
static cpy_wait_state *cpy_wait_states = NULL;

static cpy_wait_state *cpy_wait_state_for(unsigned long thread) {
    pthread_mutex_lock(&cpy_wait_lock);
    cpy_wait_state *state = cpy_wait_states;
    while (state != NULL && state->thread != thread) state = state->next;
    if (state == NULL && (state = calloc(1, sizeof *state)) != NULL) {
        state->thread = thread;
        pthread_mutex_init(&state->lock, NULL);
        state->next = cpy_wait_states;
        cpy_wait_states = state;
    }
    pthread_mutex_unlock(&cpy_wait_lock);
    return state;
}

static void cpy_set_waiting_on(cpy_wait_state *state, cpy_queue *queue) {
    if (state == NULL) return;
    pthread_mutex_lock(&state->lock);
    state->waiting_on = queue;
    pthread_mutex_unlock(&state->lock);
}

static void cpy_queue_wake_all(cpy_queue *queue);

static void cpy_wake(cpy_wait_state *state) {
    pthread_mutex_lock(&state->lock);
    cpy_queue *queue = state->waiting_on;
    if (queue != NULL) cpy_queue_retain(queue);
    pthread_mutex_unlock(&state->lock);
    if (queue == NULL) return;
    cpy_queue_wake_all(queue);
    cpy_queue_release(queue);
}

void cpy_thread_cancel_wait(unsigned long thread) {
    cpy_wait_state *state = cpy_wait_state_for(thread);
    if (state == NULL) return;
    atomic_store(&state->cancel, 1);
    cpy_wake(state);
}

void cpy_thread_clear_cancel(unsigned long thread) {
    cpy_wait_state *state = cpy_wait_state_for(thread);
    if (state != NULL) atomic_store(&state->cancel, 0);
}

void cpy_thread_closing(unsigned long thread, int closing) {
    cpy_wait_state *state = cpy_wait_state_for(thread);
    if (state == NULL) return;
    atomic_store(&state->closing, closing);
    if (closing) cpy_wake(state);
}

/// Why a wait must end: 0 (it need not), CPY_WAIT_CANCELLED (consumed) or CPY_WAIT_CLOSING.
static int cpy_wait_check(cpy_wait_state *state) {
    if (state == NULL) return 0;
    if (atomic_load(&state->closing)) return CPY_WAIT_CLOSING;
    if (atomic_exchange(&state->cancel, 0)) return CPY_WAIT_CANCELLED;
    return 0;
}

// MARK: - Put and get (no GIL involved: Python callers release it around these)

/// Watches `counter` for up to about 50 µs before a wait blocks. A partner that answers at once
/// (ping-pong, a busy pipeline) usually does so within microseconds; catching it here saves the
/// futex sleep and wake-up on both sides, which cost tens of microseconds on a virtual machine.
static void cpy_spin_until(atomic_long *counter, long at_least) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        for (int i = 0; i < 256; i++) {
            if (atomic_load_explicit(counter, memory_order_acquire) >= at_least) return;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) > 50000) return;
    }
}

/// Appends an item; the queue is locked. Hands it to the first registered getter instead, if
/// there is one: then returns that getter, to be completed once the lock is released.
static cpy_waiter *cpy_append_locked(cpy_queue *queue, cpy_item *item) {
    item->next = NULL;
    cpy_waiter *getter = queue->getters;
    if (getter != NULL) {
        queue->getters = getter->next;
        getter->next = NULL;
        getter->item = item;
        return getter;
    }
    if (queue->tail) queue->tail->next = item;
    else queue->head = item;
    queue->tail = item;
    queue->count++;
    atomic_store(&queue->available, queue->count);
    pthread_cond_signal(&queue->not_empty);
    return NULL;
}

/// Takes the oldest item; the queue is locked and not empty. Moves a registered putter's item
/// into the room this makes, if there is one: then returns that putter, to be completed once
/// the lock is released.
static cpy_item *cpy_take_locked(cpy_queue *queue, cpy_waiter **completed) {
    cpy_item *item = queue->head;
    queue->head = item->next;
    if (queue->head == NULL) queue->tail = NULL;
    item->next = NULL;
    queue->count--;
    *completed = NULL;
    cpy_waiter *putter = queue->putters;
    if (putter != NULL) {
        queue->putters = putter->next;
        putter->next = NULL;
        cpy_item *moved = putter->item;
        putter->item = NULL;
        moved->next = NULL;
        if (queue->tail) queue->tail->next = moved;
        else queue->head = moved;
        queue->tail = moved;
        queue->count++;
        *completed = putter;
    } else if (queue->maxsize > 0) {
        pthread_cond_signal(&queue->not_full);
    }
    atomic_store(&queue->available, queue->count);
    return item;
}

/// Calls a completed waiter's callback. The waiter's fields are read before the call: once
/// `done` runs, its owner may free it.
static void cpy_complete(cpy_waiter *waiter) {
    if (waiter == NULL) return;
    cpy_waiter_done done = waiter->done;
    void *context = waiter->context;
    cpy_item *item = waiter->item;
    waiter->item = NULL;
    done(context, item);
}

int cpy_queue_put(cpy_queue *queue, cpy_item *item, int block, double timeout, unsigned long thread) {
    int result = 0;
    cpy_wait_state *state = block && thread != 0 ? cpy_wait_state_for(thread) : NULL;
    cpy_set_waiting_on(state, queue);
    struct timespec deadline;
    if (timeout >= 0) cpy_deadline(&deadline, timeout);
    pthread_mutex_lock(&queue->lock);
    while (queue->maxsize > 0 && queue->count >= queue->maxsize) {
        if (!block) {
            result = CPY_WAIT_TIMEOUT;
            break;
        }
        if ((result = cpy_wait_check(state)) != 0) break;
        int waited = timeout >= 0 ? pthread_cond_timedwait(&queue->not_full, &queue->lock, &deadline)
                                  : pthread_cond_wait(&queue->not_full, &queue->lock);
        if (waited == ETIMEDOUT && queue->count >= queue->maxsize) {
            result = CPY_WAIT_TIMEOUT;
            break;
        }
    }
    cpy_waiter *getter = result == 0 ? cpy_append_locked(queue, item) : NULL;
    pthread_mutex_unlock(&queue->lock);
    cpy_set_waiting_on(state, NULL);
    cpy_complete(getter);
    return result;
}

int cpy_queue_get(cpy_queue *queue, cpy_item **item, int block, double timeout, unsigned long thread) {
    *item = NULL;
    int result = 0;
    cpy_wait_state *state = block && thread != 0 ? cpy_wait_state_for(thread) : NULL;
    cpy_set_waiting_on(state, queue);
    struct timespec deadline;
    if (timeout >= 0) cpy_deadline(&deadline, timeout);
    if (block) cpy_spin_until(&queue->available, 1);
    pthread_mutex_lock(&queue->lock);
    while (queue->head == NULL) {
        if (!block) {
            result = CPY_WAIT_TIMEOUT;
            break;
        }
        if ((result = cpy_wait_check(state)) != 0) break;
        int waited = timeout >= 0 ? pthread_cond_timedwait(&queue->not_empty, &queue->lock, &deadline)
                                  : pthread_cond_wait(&queue->not_empty, &queue->lock);
        if (waited == ETIMEDOUT && queue->head == NULL) {
            result = CPY_WAIT_TIMEOUT;
            break;
        }
    }
    cpy_waiter *putter = NULL;
    if (result == 0) *item = cpy_take_locked(queue, &putter);
    pthread_mutex_unlock(&queue->lock);
    cpy_set_waiting_on(state, NULL);
    cpy_complete(putter);
    return result;
}

static void cpy_queue_wake_all(cpy_queue *queue) {
    pthread_mutex_lock(&queue->lock);
    pthread_cond_broadcast(&queue->not_empty);
    pthread_cond_broadcast(&queue->not_full);
    pthread_mutex_unlock(&queue->lock);
}

// MARK: - Registered waits (no thread waits)

cpy_waiter *cpy_waiter_create(cpy_waiter_done done, void *context) {
    cpy_waiter *waiter = calloc(1, sizeof *waiter);
    if (waiter == NULL) return NULL;
    waiter->done = done;
    waiter->context = context;
    return waiter;
}

void cpy_waiter_free(cpy_waiter *waiter) { free(waiter); }

static void cpy_enlist(cpy_waiter **list, cpy_waiter *waiter) {
    waiter->next = NULL;
    while (*list != NULL) list = &(*list)->next;
    *list = waiter;
}

int cpy_queue_get_async(cpy_queue *queue, cpy_item **item, cpy_waiter *waiter) {
    *item = NULL;
    cpy_waiter *putter = NULL;
    pthread_mutex_lock(&queue->lock);
    if (queue->head != NULL) {
        *item = cpy_take_locked(queue, &putter);
    } else {
        cpy_enlist(&queue->getters, waiter);
    }
    pthread_mutex_unlock(&queue->lock);
    cpy_complete(putter);
    return *item != NULL ? 0 : CPY_WAIT_PENDING;
}

int cpy_queue_put_async(cpy_queue *queue, cpy_item *item, cpy_waiter *waiter) {
    int result = 0;
    cpy_waiter *getter = NULL;
    pthread_mutex_lock(&queue->lock);
    if (queue->maxsize > 0 && queue->count >= queue->maxsize) {
        waiter->item = item;
        cpy_enlist(&queue->putters, waiter);
        result = CPY_WAIT_PENDING;
    } else {
        getter = cpy_append_locked(queue, item);
    }
    pthread_mutex_unlock(&queue->lock);
    cpy_complete(getter);
    return result;
}

Py_ssize_t cpy_queue_registered_waits(cpy_queue *queue) {
    Py_ssize_t count = 0;
    pthread_mutex_lock(&queue->lock);
    for (cpy_waiter *waiter = queue->getters; waiter != NULL; waiter = waiter->next) count++;
    for (cpy_waiter *waiter = queue->putters; waiter != NULL; waiter = waiter->next) count++;
    pthread_mutex_unlock(&queue->lock);
    return count;
}

int cpy_queue_withdraw(cpy_queue *queue, cpy_waiter *waiter, cpy_item **item) {
    if (item != NULL) *item = NULL;
    int found = 0;
    pthread_mutex_lock(&queue->lock);
    cpy_waiter **lists[2] = {&queue->getters, &queue->putters};
    for (int i = 0; i < 2 && !found; i++) {
        for (cpy_waiter **link = lists[i]; *link != NULL; link = &(*link)->next) {
            if (*link == waiter) {
                *link = waiter->next;
                waiter->next = NULL;
                found = 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&queue->lock);
    if (found && item != NULL) {
        *item = waiter->item;
        waiter->item = NULL;
    }
    return found;
}

// MARK: - Named queues

typedef struct cpy_named {
    char *name;
    cpy_queue *queue;
    struct cpy_named *next;
} cpy_named;

static pthread_mutex_t cpy_named_lock = PTHREAD_MUTEX_INITIALIZER;
static cpy_named *cpy_named_queues = NULL;

cpy_queue *cpy_queue_named(const char *name, Py_ssize_t maxsize) {
    pthread_mutex_lock(&cpy_named_lock);
    for (cpy_named *entry = cpy_named_queues; entry != NULL; entry = entry->next) {
        if (strcmp(entry->name, name) == 0) {
            cpy_queue_retain(entry->queue);
            pthread_mutex_unlock(&cpy_named_lock);
            return entry->queue;
        }
    }
    cpy_named *entry = calloc(1, sizeof *entry);
    cpy_queue *queue = cpy_queue_create(maxsize);
    if (entry == NULL || queue == NULL || (entry->name = strdup(name)) == NULL) {
        free(entry);
        if (queue) cpy_queue_release(queue);
        pthread_mutex_unlock(&cpy_named_lock);
        return NULL;
    }
    entry->queue = queue;  // the registry's reference: named queues live as long as the process
    entry->next = cpy_named_queues;
    cpy_named_queues = entry;
    cpy_queue_retain(queue);
    pthread_mutex_unlock(&cpy_named_lock);
    return queue;
}

// MARK: - Shared buffers

cpy_buffer *cpy_buffer_create(size_t size) {
    cpy_buffer *buffer = calloc(1, sizeof *buffer);
    if (buffer == NULL) return NULL;
    buffer->data = calloc(size > 0 ? size : 1, 1);
    if (buffer->data == NULL) {
        free(buffer);
        return NULL;
    }
    atomic_init(&buffer->refs, 1);
    buffer->id = atomic_fetch_add(&cpy_next_id, 1);
    buffer->size = size;
    cpy_registry_add(buffer->id, buffer, 'B');
    return buffer;
}

void cpy_buffer_retain(cpy_buffer *buffer) { atomic_fetch_add(&buffer->refs, 1); }

void cpy_buffer_release(cpy_buffer *buffer) {
    if (atomic_fetch_sub(&buffer->refs, 1) != 1) return;
    cpy_registry_remove(buffer->id);
    free(buffer->data);
    free(buffer);
}

void *cpy_buffer_data(cpy_buffer *buffer) { return buffer->data; }
size_t cpy_buffer_size(const cpy_buffer *buffer) { return buffer->size; }
int64_t cpy_buffer_id(const cpy_buffer *buffer) { return buffer->id; }

cpy_queue *cpy_queue_find(int64_t id) { return cpy_registry_find(id, 'Q'); }
cpy_buffer *cpy_buffer_find(int64_t id) { return cpy_registry_find(id, 'B'); }

// MARK: - Items

cpy_item *cpy_item_create(const unsigned char *data, size_t size) {
    cpy_item *item = malloc(sizeof *item + size);
    if (item == NULL) return NULL;
    item->next = NULL;
    item->size = size;
    memcpy(item->data, data, size);
    return item;
}

const unsigned char *cpy_item_data(const cpy_item *item) { return item->data; }
size_t cpy_item_size(const cpy_item *item) { return item->size; }

/// Walks one encoded value, releasing the handles it holds. Returns the bytes consumed, or 0.
static size_t cpy_item_release_value(const unsigned char *data, size_t size) {
    if (size < 1) return 0;
    unsigned char tag = data[0];
    size_t offset = 1;
    uint64_t length;
    switch (tag) {
    case 'N': case 'T': case 'F':
        return 1;
    case 'i': case 'f':
        return size < 9 ? 0 : 9;
    case 's': case 'b': case 'p': case 'I':
        if (size < 9) return 0;
        memcpy(&length, data + 1, 8);
        return length > size - 9 ? 0 : 9 + length;
    case 'Q': case 'B': {
        if (size < 1 + sizeof(void *)) return 0;
        void *pointer;
        memcpy(&pointer, data + 1, sizeof pointer);
        if (tag == 'Q') cpy_queue_release(pointer);
        else cpy_buffer_release(pointer);
        return 1 + sizeof pointer;
    }
    case 'l': case 't': case 'd': {
        if (size < 9) return 0;
        memcpy(&length, data + 1, 8);
        offset = 9;
        uint64_t items = tag == 'd' ? length * 2 : length;
        for (uint64_t i = 0; i < items; i++) {
            size_t used = cpy_item_release_value(data + offset, size - offset);
            if (used == 0) return 0;
            offset += used;
        }
        return offset;
    }
    default:
        return 0;
    }
}

void cpy_item_free(cpy_item *item) {
    if (item == NULL) return;
    // Every value in the item, not just the first: a corrupt item with bytes after its value
    // still releases the handles in them.
    for (size_t offset = 0, used; offset < item->size; offset += used) {
        if ((used = cpy_item_release_value(item->data + offset, item->size - offset)) == 0) break;
    }
    free(item);
}
