// The serve suite's WebSocket echo client: the same client for every server.
//
//     ws_echo HOST PORT PATH CONNECTIONS WARMUP_S DURATION_S MESSAGE_BYTES
//
// Opens CONNECTIONS WebSocket connections (RFC 6455 handshake), then on each one, in a loop:
// sends a masked text message of MESSAGE_BYTES and waits for the server to echo it back whole
// (one message in flight per connection, as wrk keeps one request in flight per connection).
// After WARMUP_S, it counts round trips for DURATION_S and prints one JSON object:
//     {"messages": N, "seconds": S, "msg_per_s": R, "p50_ms": A, "p99_ms": B, "errors": E}
// where the percentiles are of round-trip times (send to the echo's last byte) and errors
// counts connections that failed or closed during the run. One thread, epoll, no library.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int alive;
    double sent_at;
    size_t expect;       // bytes of the echo frame still to come (0: waiting for a header)
    unsigned char header[14];
    size_t header_have;
    size_t sent;         // bytes of the outgoing frame written so far
} conn;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static unsigned char *frame;
static size_t frame_length;
static unsigned char *sink_buffer;

// The latency histogram: microseconds, linear up to 100 ms, then one bucket for the rest.
#define BUCKETS 100001
static uint64_t histogram[BUCKETS];
static uint64_t counted;

static void record(double seconds) {
    long us = (long)(seconds * 1e6);
    if (us < 0) us = 0;
    if (us >= BUCKETS) us = BUCKETS - 1;
    histogram[us]++;
    counted++;
}

static double percentile(double p) {
    uint64_t target = (uint64_t)(p * counted);
    uint64_t seen = 0;
    for (long i = 0; i < BUCKETS; i++) {
        seen += histogram[i];
        if (seen > target) return i / 1000.0;
    }
    return (BUCKETS - 1) / 1000.0;
}

static int handshake(const char *host, int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &address.sin_addr);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char request[512];
    int length = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                          path, host, port);
    if (write(fd, request, (size_t)length) != length) {
        close(fd);
        return -1;
    }
    // Read the response head byte by byte, so nothing after it is taken from the socket.
    char head[4096];
    size_t have = 0;
    while (have < sizeof head - 1) {
        ssize_t n = read(fd, head + have, 1);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        have++;
        if (have >= 4 && memcmp(head + have - 4, "\r\n\r\n", 4) == 0) break;
    }
    head[have] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/// Writes the whole message; it is small and the socket has nothing else queued, so a full
/// buffer is rare and waited out.
static int send_frame(conn *c) {
    while (c->sent < frame_length) {
        ssize_t n = write(c->fd, frame + c->sent, frame_length - c->sent);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return -1;
        }
        c->sent += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: ws_echo HOST PORT PATH CONNECTIONS WARMUP_S DURATION_S MESSAGE_BYTES\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *path = argv[3];
    int connections = atoi(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    size_t size = (size_t)atol(argv[7]);
    if (connections < 1 || size > 65535) {
        fprintf(stderr, "ws_echo: 1 or more connections, messages of at most 65535 bytes\n");
        return 2;
    }
    // The one message every connection sends: a masked text frame of `size` bytes of 'x'.
    unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t header = size < 126 ? 2 : 4;
    frame_length = header + 4 + size;
    frame = malloc(frame_length);
    sink_buffer = malloc(1 << 16);
    frame[0] = 0x81;
    if (size < 126) {
        frame[1] = 0x80 | (unsigned char)size;
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = (unsigned char)(size >> 8);
        frame[3] = (unsigned char)(size & 0xff);
    }
    memcpy(frame + header, mask, 4);
    for (size_t i = 0; i < size; i++) frame[header + 4 + i] = 'x' ^ mask[i % 4];

    conn *conns = calloc((size_t)connections, sizeof *conns);
    int epoll = epoll_create1(0);
    int errors = 0;
    for (int i = 0; i < connections; i++) {
        conns[i].fd = handshake(host, port, path);
        if (conns[i].fd < 0) {
            errors++;
            continue;
        }
        conns[i].alive = 1;
        fcntl(conns[i].fd, F_SETFL, fcntl(conns[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(epoll, EPOLL_CTL_ADD, conns[i].fd, &event);
    }
    if (errors == connections) {
        fprintf(stderr, "ws_echo: no connection completed its handshake\n");
        return 1;
    }
    double start = now(), counting_from = start + warmup, end = counting_from + duration;
    uint64_t messages = 0;
    for (int i = 0; i < connections; i++) {
        if (!conns[i].alive) continue;
        conns[i].sent_at = now();
        if (send_frame(&conns[i]) < 0) {
            conns[i].alive = 0;
            errors++;
        }
    }
    struct epoll_event events[256];
    while (1) {
        double t = now();
        if (t >= end) break;
        int ready = epoll_wait(epoll, events, 256, (int)((end - t) * 1000) + 1);
        for (int e = 0; e < ready; e++) {
            conn *c = &conns[events[e].data.u32];
            if (!c->alive) continue;
            while (1) {
                // Header first (2 bytes, then the extended length if any), then the payload.
                if (c->expect == 0) {
                    size_t want = 2;
                    if (c->header_have >= 2) {
                        unsigned char len = c->header[1] & 0x7f;
                        want = len == 126 ? 4 : len == 127 ? 10 : 2;
                    }
                    if (c->header_have < want) {
                        ssize_t n = read(c->fd, c->header + c->header_have, want - c->header_have);
                        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                            c->alive = 0;
                            if (now() < end) errors++;
                            break;
                        }
                        if (n < 0) break;
                        c->header_have += (size_t)n;
                        continue;
                    }
                    unsigned char len = c->header[1] & 0x7f;
                    uint64_t payload = len;
                    if (len == 126) payload = (uint64_t)c->header[2] << 8 | c->header[3];
                    if (len == 127) {
                        payload = 0;
                        for (int b = 2; b < 10; b++) payload = payload << 8 | c->header[b];
                    }
                    if ((c->header[0] & 0x0f) == 8) {  // the server closed
                        c->alive = 0;
                        errors++;
                        break;
                    }
                    c->expect = (size_t)payload + 1;  // +1: "header done", even for an empty payload
                }
                if (c->expect > 1) {
                    size_t want = c->expect - 1 < (1 << 16) ? c->expect - 1 : (1 << 16);
                    ssize_t n = read(c->fd, sink_buffer, want);
                    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                        c->alive = 0;
                        if (now() < end) errors++;
                        break;
                    }
                    if (n < 0) break;
                    c->expect -= (size_t)n;
                }
                if (c->expect == 1) {
                    // The whole echo is here (ping/pong frames would not come unasked).
                    double done = now();
                    if (done >= counting_from && done < end) {
                        record(done - c->sent_at);
                        messages++;
                    }
                    c->expect = 0;
                    c->header_have = 0;
                    c->sent = 0;
                    c->sent_at = done;
                    if (send_frame(c) < 0) {
                        c->alive = 0;
                        errors++;
                        break;
                    }
                }
            }
        }
    }
    printf("{\"messages\": %llu, \"seconds\": %.3f, \"msg_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"errors\": %d}\n",
           (unsigned long long)messages, duration, messages / duration, percentile(0.50), percentile(0.99), errors);
    for (int i = 0; i < connections; i++) {
        if (conns[i].fd >= 0) close(conns[i].fd);
    }
    return 0;
}
