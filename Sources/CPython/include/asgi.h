// The channel between the host and an ASGI worker: an interpreter whose thread runs one asyncio
// event loop serving many requests at once.
//
// Host → worker: a mailbox (mutex + list of events, plain C, no Python objects) that any thread
// may post to. The loop takes every waiting event at once at the start and end of each of its
// iterations; an eventfd in its selector wakes it only when it is asleep in `select`, so a busy
// loop costs the poster no wake-up at all.
//
// Worker → host: `cpy_asgi_host`, C functions the host registers once. The worker calls them on
// its own thread, with its GIL held, straight from the app's `send()`; they must not block.
//
// Event data (`cpy_asgi_event_create`): a head, then a payload. The head of a new request
// (CPY_ASGI_HTTP, CPY_ASGI_WEBSOCKET) is, in native byte order:
//   u32 n + method, u32 n + request target (as received), u32 n + HTTP version ("1.1"),
//   u32 n + scheme, u32 n + server host, i32 server port, u32 n + client host, i32 client port,
//   u32 header count, then per header: u32 n + name, u32 n + value.
// A port of -1 with an empty host means "unknown" (the scope says None). The payload is the
// first request body bytes (HTTP), a message (CPY_ASGI_TEXT, CPY_ASGI_BINARY), or the close
// reason (CPY_ASGI_DISCONNECT of a WebSocket, whose code is `number`).
#ifndef SUBINTERP_ASGI_H
#define SUBINTERP_ASGI_H

#include "cpython.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cpy_asgi_worker cpy_asgi_worker;
typedef struct cpy_asgi_event cpy_asgi_event;
/// What events of one request or connection find its worker-side object by. Reference counted:
/// the host's handle, the worker's object and each event in flight hold one.
typedef struct cpy_asgi_stream cpy_asgi_stream;

// Event kinds, host → worker.
#define CPY_ASGI_HTTP 1        // a new HTTP request: head, then the first body bytes
#define CPY_ASGI_WEBSOCKET 2   // a new WebSocket connection: the handshake's head
#define CPY_ASGI_BODY 3        // more request body bytes
#define CPY_ASGI_TEXT 4        // a WebSocket text message (UTF-8)
#define CPY_ASGI_BINARY 5      // a WebSocket binary message
#define CPY_ASGI_DISCONNECT 6  // the client went away (WebSocket: `number` is the close code)
#define CPY_ASGI_WRITABLE 7    // the connection has room again after a send was told to wait
#define CPY_ASGI_CANCEL 8      // cancel the request's task (its deadline passed)
#define CPY_ASGI_SHUTDOWN 9    // stop serving: lifespan shutdown, then the loop ends

// Event flags.
#define CPY_ASGI_MORE 1        // more body follows (CPY_ASGI_HTTP, CPY_ASGI_BODY)
#define CPY_ASGI_INPUT_ONLY 2  // CPY_ASGI_DISCONNECT of a request: the client stopped sending (EOF);
                               // receive() gives http.disconnect, but the app may still answer

// Messages, worker → host (`cpy_asgi_message.kind`).
#define CPY_ASGI_RESPONSE 1    // response bytes: the head (status != 0) and/or body bytes
#define CPY_ASGI_ACCEPT 2      // websocket.accept: `text` is the subprotocol (if has_text)
#define CPY_ASGI_MESSAGE 3     // websocket.send: `data`, `more` is 1 for text, 0 for bytes
#define CPY_ASGI_CLOSE 4       // websocket.close: `status` is the code, `text` the reason

// What the host answers a message with.
#define CPY_ASGI_READY 0       // taken; the connection has room for more
#define CPY_ASGI_FULL 1        // taken; the next send waits for CPY_ASGI_WRITABLE
#define CPY_ASGI_CLOSED 2      // the client is gone; nothing was sent

// How a request ended on the worker (`finish`).
#define CPY_ASGI_COMPLETED 0     // the response went out whole (WebSocket: accepted, or closed)
#define CPY_ASGI_FAILED 1        // the app raised; `detail` is the traceback
#define CPY_ASGI_INCOMPLETE 2    // the app returned without a complete response; `detail` says how
#define CPY_ASGI_CANCELLED 3     // its task was cancelled (deadline, shutdown)
#define CPY_ASGI_INTERRUPTED 4   // its code was interrupted because it held the loop
#define CPY_ASGI_DISCONNECTED 5  // the client left first; nothing more to send

// Control reports, worker → host (`control`).
#define CPY_ASGI_STARTED 1           // lifespan startup done (or not used): serving
#define CPY_ASGI_STARTUP_FAILED 2    // `text`: why; the worker will not serve
#define CPY_ASGI_STOPPED 3           // lifespan shutdown done (or not used)
#define CPY_ASGI_SHUTDOWN_FAILED 4   // `text`: why
#define CPY_ASGI_LOG_INFO 5
#define CPY_ASGI_LOG_WARNING 6
#define CPY_ASGI_LOG_ERROR 7

typedef struct {
    const char *name;
    size_t name_length;
    const char *value;
    size_t value_length;
} cpy_asgi_header;

/// One message from the app. Every pointer is valid only during the call it is passed to.
typedef struct {
    int kind;
    /// The response status (0: this message carries no head) or the WebSocket close code.
    int status;
    const cpy_asgi_header *headers;
    size_t header_count;
    /// Body bytes, or a WebSocket message.
    const char *data;
    size_t length;
    /// More body follows (CPY_ASGI_RESPONSE), or the message is text (CPY_ASGI_MESSAGE).
    int more;
    /// The subprotocol (CPY_ASGI_ACCEPT) or close reason (CPY_ASGI_CLOSE), UTF-8.
    const char *text;
    size_t text_length;
    int has_text;
} cpy_asgi_message;

/// The host's side. `exchange` is the pointer given with the request's first event; `context`
/// the one given to `cpy_asgi_worker_create`.
typedef struct {
    /// A message from the app. Returns CPY_ASGI_READY, CPY_ASGI_FULL or CPY_ASGI_CLOSED.
    int (*send)(void *exchange, const cpy_asgi_message *message);
    /// The app awaits the next body chunk or WebSocket message and none is waiting: post it
    /// when it arrives. Called once per chunk asked for.
    void (*demand)(void *exchange);
    /// The request or connection ended on the worker (once, with a CPY_ASGI_COMPLETED… outcome).
    void (*finish)(void *exchange, int outcome, const char *detail, size_t length);
    /// The worker no longer refers to `exchange` (ownership given with the first event ends).
    void (*release)(void *exchange);
    /// A control report (CPY_ASGI_STARTED…).
    void (*control)(void *context, int kind, const char *text, size_t length);
    /// The loop finished an iteration and is about to poll or sleep: a point to flush writes.
    void (*iteration)(void *context);
} cpy_asgi_host;

/// Registers the host's functions; call once, before any worker starts.
void cpy_asgi_set_host(const cpy_asgi_host *host);

/// A worker's mailbox, with its eventfd. NULL if out of memory or out of file descriptors.
cpy_asgi_worker *cpy_asgi_worker_create(void *context);
/// Frees the mailbox and the events left in it. Call after the worker's loop has ended.
void cpy_asgi_worker_destroy(cpy_asgi_worker *worker);
/// Refuses further events (cpy_asgi_post then returns -1). Events already posted stay.
void cpy_asgi_worker_close(cpy_asgi_worker *worker);
/// Loop iterations started so far: a loop that stops counting while busy is stuck.
uint64_t cpy_asgi_worker_progress(const cpy_asgi_worker *worker);
/// Whether the loop is waiting in `select` (idle) rather than running Python code.
int cpy_asgi_worker_idle(const cpy_asgi_worker *worker);
/// Whether events wait in the mailbox for the loop to take them.
int cpy_asgi_worker_waiting(const cpy_asgi_worker *worker);

cpy_asgi_stream *cpy_asgi_stream_create(void);
void cpy_asgi_stream_release(cpy_asgi_stream *stream);

/// An event for `stream` (retained by the event), with `head` then `payload` copied in.
/// `exchange` (CPY_ASGI_HTTP, CPY_ASGI_WEBSOCKET only) is a host reference the worker takes
/// over; `release` gets it back. NULL if out of memory.
cpy_asgi_event *cpy_asgi_event_create(int kind, int flags, int64_t number, cpy_asgi_stream *stream, void *exchange,
                                      const void *head, size_t head_length, const void *payload, size_t payload_length);
/// Frees an event that was not posted (releasing its stream and exchange).
void cpy_asgi_event_free(cpy_asgi_event *event);
/// Hands `event` to the worker. 0, or -1 if the worker no longer takes events (the caller
/// still owns `event`).
int cpy_asgi_post(cpy_asgi_worker *worker, cpy_asgi_event *event);

/// On the worker's thread, with its interpreter's thread state attached: creates the module
/// `_subinterp_asgi` for `worker` and puts it in `sys.modules`. -1 with a Python exception set
/// on failure.
int cpy_asgi_install(cpy_asgi_worker *worker);

#endif
