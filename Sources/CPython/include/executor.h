// The native half of `subinterp.InterpreterPoolExecutor`: the C side of the bridge between Python
// callers and the Swift `InterpreterPool` that runs their calls.
//
// A caller's interpreter holds a `subinterp._core._Pool`. Each call travels as an item (the channel
// encoding, channels.h) to the pool, which the host implements behind `cpy_pool_hooks`. A worker
// runs it through `cpy_executor_run`, and the host posts the outcome to the caller's completion
// box (`cpy_box_post`), where either the thread blocked in `Future.result()` for that call or the
// executor's result thread picks it up. Nothing here waits with a GIL held.
#ifndef SUBINTERP_EXECUTOR_H
#define SUBINTERP_EXECUTOR_H

#include "channels.h"
#include "cpython.h"

#include <stdint.h>

/// How a call ended, as posted to a completion box.
#define CPY_DONE_OK 0         // the worker ran it; the item holds what `_worker._run` returned
#define CPY_DONE_CANCELLED 1  // cancelled before or while it ran
#define CPY_DONE_TIMEOUT 2    // interrupted at its deadline; the message says so
#define CPY_DONE_BROKEN 3     // the pool could not start (job 0: the pool-wide event)
#define CPY_DONE_ERROR 4      // the host could not run it; the message says why

/// Where a pool posts the outcomes of one caller's calls. Reference counted: the caller's
/// `_Pool` object holds one reference and the host's pool another.
typedef struct cpy_box cpy_box;

void cpy_box_retain(cpy_box *box);
void cpy_box_release(cpy_box *box);

/// Posts the outcome of `job` (job 0: a pool-wide `CPY_DONE_BROKEN` event). Takes `item` (may be
/// NULL); copies `message` (may be NULL). Any thread, no GIL needed.
void cpy_box_post(cpy_box *box, uint64_t job, int status, cpy_item *item, const char *message);

/// What a pool is asked to be.
typedef struct {
    long workers;
    /// Python statements each worker runs in `__main__` as it starts (NULL: none). If they raise,
    /// the pool does not start and posts `CPY_DONE_BROKEN` with the message.
    const char *setup;
    /// Replace a worker after this many calls (0: never).
    long max_tasks;
} cpy_pool_config;

/// The host's pools. All may be called from any thread, without a GIL.
typedef struct {
    /// Starts creating a pool and returns its handle at once; calls submitted meanwhile wait.
    void *(*create)(const cpy_pool_config *config, cpy_box *box);
    /// Queues `job` with `payload` (taken over). `timeout` < 0: none; else seconds from the
    /// moment a worker starts it. Returns 0, or -1 if the pool is closed (the caller keeps
    /// nothing: the payload is freed).
    int (*submit)(void *pool, uint64_t job, cpy_item *payload, double timeout);
    /// Cancels `job`: 1 if it was still queued (it will never run), 2 if it was running and is
    /// being interrupted (only when `queued_only` is 0), 0 if it already finished or is unknown.
    /// A cancelled job posts `CPY_DONE_CANCELLED` before this returns.
    int (*cancel)(void *pool, uint64_t job, int queued_only);
    /// 0 while `job` is queued, 1 while it runs, 2 once it finished or if it is unknown.
    int (*state)(void *pool, uint64_t job);
    /// Takes no more calls, lets the queued ones finish, then ends the workers. With `wait`,
    /// returns once every worker has ended. Idempotent.
    void (*close)(void *pool, int wait);
    /// Drops the caller's handle (after `close`).
    void (*release)(void *pool);
} cpy_pool_hooks;

/// Installs the host's pools; until then `_Pool()` raises. Called once by the host as it starts.
void cpy_executor_set_hooks(const cpy_pool_hooks *hooks);

/// On a worker's thread, with its interpreter's GIL held: runs the call in `payload` (taken over)
/// through `subinterp._worker._run` and encodes its outcome into `*result`. Returns 0, or -1 with
/// a reason in `error` when even the failure could not be encoded.
int cpy_executor_run(cpy_item *payload, cpy_item **result, char *error, size_t error_size);

/// Adds the `_Pool` type to `subinterp._core` (its exec slot). -1 with an exception on failure.
int cpy_executor_exec(PyObject *module);

#endif
