// Queues and shared buffers that live in the host, outside every interpreter. Swift and the
// `subinterp` module both use them; values travel as items in the encoding that ENCODING.md
// (next to channels.c) specifies: tags, layouts, and the rules every codec follows.
#ifndef SUBINTERP_CHANNELS_H
#define SUBINTERP_CHANNELS_H

#include "cpython.h"

#include <pthread.h>

typedef struct cpy_queue cpy_queue;
typedef struct cpy_buffer cpy_buffer;
typedef struct cpy_item cpy_item;
/// A wait registered with a queue that no thread sits in: Swift's `PythonQueue` waits this way.
typedef struct cpy_waiter cpy_waiter;

#define CPY_WAIT_TIMEOUT 1
#define CPY_WAIT_CANCELLED 2
#define CPY_WAIT_CLOSING 3
#define CPY_WAIT_PENDING 4

/// A queue with one reference, or NULL if out of memory. `maxsize` <= 0 means unbounded.
cpy_queue *cpy_queue_create(Py_ssize_t maxsize);
/// The process-wide queue with this name, created on first use (new reference).
cpy_queue *cpy_queue_named(const char *name, Py_ssize_t maxsize);
/// A new reference to the live queue with this id, or NULL.
cpy_queue *cpy_queue_find(int64_t id);
void cpy_queue_retain(cpy_queue *queue);
/// Drops a reference; the last one frees the queue and any items left in it.
void cpy_queue_release(cpy_queue *queue);
int64_t cpy_queue_id(const cpy_queue *queue);
Py_ssize_t cpy_queue_maxsize(const cpy_queue *queue);
Py_ssize_t cpy_queue_count(cpy_queue *queue);

/// Appends `item` (taking it over) unless the queue is full. With `block`, waits up to
/// `timeout` seconds (forever if negative). `thread` (0 for none) lets the wait be cancelled
/// or ended by closing through the functions below. Returns 0, or CPY_WAIT_TIMEOUT (full),
/// CPY_WAIT_CANCELLED, CPY_WAIT_CLOSING; then the caller still owns `item`. The caller holds a
/// reference to `queue` throughout. Never call with a GIL held.
int cpy_queue_put(cpy_queue *queue, cpy_item *item, int block, double timeout, unsigned long thread);
/// Takes the oldest item (the caller owns it) with the same waiting rules as `cpy_queue_put`;
/// CPY_WAIT_TIMEOUT means empty.
int cpy_queue_get(cpy_queue *queue, cpy_item **item, int block, double timeout, unsigned long thread);

/// Called once when a registered wait completes, on the thread that completes it and outside
/// every lock: for a get, with the item (the callee owns it); for a put, with NULL once the
/// item is queued. It must not block.
typedef void (*cpy_waiter_done)(void *context, cpy_item *item);
/// A waiter for one wait at a time; the caller frees it, after its wait completed or was withdrawn.
cpy_waiter *cpy_waiter_create(cpy_waiter_done done, void *context);
void cpy_waiter_free(cpy_waiter *waiter);
/// Takes the oldest item into `*item` and returns 0; or, if the queue is empty, registers
/// `waiter` and returns CPY_WAIT_PENDING: the next item put goes to `done`. No thread waits.
int cpy_queue_get_async(cpy_queue *queue, cpy_item **item, cpy_waiter *waiter);
/// Appends `item` (taking it over) and returns 0; or, if the queue is full, registers `waiter`,
/// which holds the item until there is room, and returns CPY_WAIT_PENDING.
int cpy_queue_put_async(cpy_queue *queue, cpy_item *item, cpy_waiter *waiter);
/// Withdraws a registered wait (cancelled, or timed out). Returns 1 if it was still waiting:
/// `done` will not be called, and for a put `*item` gets the item back. Returns 0 if the wait
/// completed: `done` has been or is being called.
int cpy_queue_withdraw(cpy_queue *queue, cpy_waiter *waiter, cpy_item **item);
/// How many registered waits the queue holds now.
Py_ssize_t cpy_queue_registered_waits(cpy_queue *queue);

/// Ends the current (or next) wait of `thread` with CPY_WAIT_CANCELLED.
void cpy_thread_cancel_wait(unsigned long thread);
/// Forgets a cancellation that no wait consumed.
void cpy_thread_clear_cancel(unsigned long thread);
/// While set, every blocking wait of `thread` ends with CPY_WAIT_CLOSING.
void cpy_thread_closing(unsigned long thread, int closing);

/// A zero-filled buffer of `size` bytes with one reference, or NULL.
cpy_buffer *cpy_buffer_create(size_t size);
cpy_buffer *cpy_buffer_find(int64_t id);
void cpy_buffer_retain(cpy_buffer *buffer);
void cpy_buffer_release(cpy_buffer *buffer);
void *cpy_buffer_data(cpy_buffer *buffer);
size_t cpy_buffer_size(const cpy_buffer *buffer);
int64_t cpy_buffer_id(const cpy_buffer *buffer);

/// An item holding a copy of `data`; handles inside it become the item's.
cpy_item *cpy_item_create(const unsigned char *data, size_t size);
const unsigned char *cpy_item_data(const cpy_item *item);
size_t cpy_item_size(const cpy_item *item);
/// Frees an item, releasing the references to the queues and buffers it names (decoding takes
/// references of its own).
void cpy_item_free(cpy_item *item);

/// For Swift, in the current interpreter (its thread state attached): a `subinterp.Queue` /
/// `SharedBuffer` object for a handle (taking a new reference), or the handle of such an object
/// (a new reference) or NULL if it is not one.
PyObject *cpy_host_wrap_queue(cpy_queue *queue);
PyObject *cpy_host_wrap_buffer(cpy_buffer *buffer);
cpy_queue *cpy_host_queue_of(PyObject *object);
cpy_buffer *cpy_host_buffer_of(PyObject *object);

#endif
