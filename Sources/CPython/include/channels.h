// Queues and shared buffers that live in the host, outside every interpreter. Swift and the
// `subinterp` module both use them; values travel as items in this encoding (little-endian):
//   'N' None   'T' True   'F' False   'i' int64   'f' double   'I' u64 n + hex text of a big int
//   's' u64 n + UTF-8 str   'b' u64 n + bytes   'p' u64 n + pickle of any other object
//   'l' list / 't' tuple: u64 count + values   'd' dict: u64 count + key, value pairs
//   'Q' queue / 'B' shared buffer: a pointer whose reference the item owns
#ifndef SUBINTERP_CHANNELS_H
#define SUBINTERP_CHANNELS_H

#include "cpython.h"

#include <pthread.h>

typedef struct cpy_queue cpy_queue;
typedef struct cpy_buffer cpy_buffer;
typedef struct cpy_item cpy_item;
/// A flag that ends a Swift-side wait when set.
typedef struct cpy_cancel cpy_cancel;

cpy_cancel *cpy_cancel_create(void);
void cpy_cancel_set(cpy_cancel *cancel);
void cpy_cancel_free(cpy_cancel *cancel);

#define CPY_WAIT_TIMEOUT 1
#define CPY_WAIT_CANCELLED 2
#define CPY_WAIT_CLOSING 3

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
/// or ended by closing through the functions below; `cancel` (may be NULL) ends it when set.
/// Returns 0, or CPY_WAIT_TIMEOUT (full), CPY_WAIT_CANCELLED, CPY_WAIT_CLOSING; then the
/// caller still owns `item`. Never call with a GIL held.
int cpy_queue_put(cpy_queue *queue, cpy_item *item, int block, double timeout, unsigned long thread,
                  const cpy_cancel *cancel);
/// Takes the oldest item (the caller owns it) with the same waiting rules as `cpy_queue_put`;
/// CPY_WAIT_TIMEOUT means empty.
int cpy_queue_get(cpy_queue *queue, cpy_item **item, int block, double timeout, unsigned long thread,
                  const cpy_cancel *cancel);
/// Wakes every waiter of the queue so it re-checks its cancel flags.
void cpy_queue_wake_all(cpy_queue *queue);

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
/// Frees an item, releasing the handles it still owns.
void cpy_item_free(cpy_item *item);
/// Frees an item whose handles were handed to decoded objects.
void cpy_item_free_decoded(cpy_item *item);

/// For Swift, in the current interpreter (its thread state attached): a `subinterp.Queue` /
/// `SharedBuffer` object for a handle (taking a new reference), or the handle of such an object
/// (a new reference) or NULL if it is not one.
PyObject *cpy_host_wrap_queue(cpy_queue *queue);
PyObject *cpy_host_wrap_buffer(cpy_buffer *buffer);
cpy_queue *cpy_host_queue_of(PyObject *object);
cpy_buffer *cpy_host_buffer_of(PyObject *object);

#endif
