/*
 * loadgen: a small load generator for echo-reply servers, in C, so that the
 * load side of benchmarks/compare.py does not bound what it measures.
 *
 * One thread, one epoll set, non-blocking sockets, loopback only. Two loads,
 * the ones compare.py uses:
 *
 *   --keep-open --framing line: --connections connections, each sending
 *       --pipeline requests ("MESSAGE\n") at once and the next batch when
 *       every reply of the last one is in (closed loop);
 *   one-shot (the default), --framing raw or line: --connections exchanges
 *       at once, each on a new connection: connect, send the request, read
 *       until the server closes, close; then the next.
 *
 * Every byte of every reply is compared with the expected reply (PREFIX +
 * MESSAGE, then "\n" in line framing); a one-shot reply must be exactly
 * that, up to the server's close. Failures are counted by kind, named as
 * `python -m sockplay.bench` names them: connect, reset, early-close (the
 * server closed before the whole reply), mismatch, extra (more bytes than
 * the replies owed), timeout (no progress for --timeout seconds).
 *
 * The run stops sending after --duration seconds or --requests requests,
 * lets the replies in flight come in, and prints one JSON object on stdout,
 * with the fields compare.py reads from `python -m sockplay.bench --json`
 * (repliesPerSecond, latency_ms, cpu, ok, errors, elapsed...). It exits 0
 * if every request got its reply, 1 if any failed (one "Error: ..." line
 * on stderr), 2 for a bad option.
 *
 *   cc -O2 -o loadgen benchmarks/loadgen.c
 *   ./loadgen --port 8000 --keep-open --framing line --connections 50 \
 *       --pipeline 16 --duration 5
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Enough for any load compare.py runs; past it, a run measures the
 * generator's own bookkeeping and the descriptor limit. */
#define MAX_CONNECTIONS 1000
/* As python -m sockplay.bench: more in flight measures socket buffers. */
#define MAX_PIPELINE 1024
/* The request is held, and repeated --pipeline times, in memory. */
#define MAX_MESSAGE 4096
/* Latency histogram: one bucket per microsecond, up to one second (the
 * last bucket holds everything slower; the maximum is kept exactly). */
#define HISTOGRAM_BUCKETS 1000000
/* How often, in milliseconds, exchanges are checked for the timeout. */
#define TICK_MS 100
/* Seconds past the planned end (--duration) before the run is cut short
 * and whatever is unanswered fails; with only --requests, the whole run's
 * bound. Matches python -m sockplay.bench's deadline. */
#define DEADLINE_MARGIN 10.0
#define REQUESTS_DEADLINE 120.0

#define NS 1000000000LL

enum kind { CONNECT, RESET, EARLY_CLOSE, MISMATCH, EXTRA, TIMEOUT, KINDS };
static const char *const kindNames[KINDS] = {
    "connect", "reset", "early-close", "mismatch", "extra", "timeout",
};

enum state { FREE, CONNECTING, OPEN };

/* One connection (a slot: one-shot reuses it for the next exchange). */
struct connection {
    int fd;
    enum state state;
    size_t toWrite;     /* bytes of the current batch to send */
    size_t written;     /* of those, sent */
    size_t expected;    /* bytes of reply owed for the current batch */
    size_t received;    /* of those, received and checked */
    int64_t startedAt;  /* the exchange's start (connect, or the batch's send) */
    int64_t progressAt; /* the last progress, for the timeout */
};

/* What the command line asks for. */
static struct {
    struct sockaddr_storage address;
    socklen_t addressLength;
    int keepOpen, line;
    long connections, pipeline, maxErrors;
    long long requests; /* 0: no limit */
    double duration;    /* seconds; < 0: none */
    double timeout;
    const char *message, *prefix, *host;
    long port;
} plan;

/* The request batch (the request, --pipeline times) and the expected
 * replies to it (the reply, --pipeline times). */
static char *batch, *replies;
static size_t requestLength, replyLength;

/* What happened. */
static struct {
    long long requests, ok, unanswered, errors[KINDS], errorCount;
    char firstMismatch[160];
    const char *stopped;
} results;

static uint32_t histogram[HISTOGRAM_BUCKETS];
static int64_t maxLatency;

static struct connection connections[MAX_CONNECTIONS];
/* One-shot: the slots whose exchange is over, for the main loop to start
 * the next one in (a stack of indexes into connections). */
static long freeSlots[MAX_CONNECTIONS];
static long freeCount;
static int epollFd;
static int stopping;   /* no new requests */
static long busy;      /* connections with an exchange under way */
static int64_t now;    /* the clock, read once per loop turn */

static int64_t clockNs(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (int64_t)t.tv_sec * NS + t.tv_nsec;
}

static void usageError(const char *text)
{
    fprintf(stderr, "Error: %s (see the comment at the top of benchmarks/loadgen.c)\n", text);
    exit(2);
}

/* Record that one more exchange, started at `started`, got its reply now:
 * `count` replies at once (a pipelined batch may finish several). */
static void answered(int64_t started, long long count)
{
    int64_t latency = now - started;
    int64_t bucket = latency / 1000;
    if (bucket >= HISTOGRAM_BUCKETS)
        bucket = HISTOGRAM_BUCKETS - 1;
    histogram[bucket] += (uint32_t)count;
    if (latency > maxLatency)
        maxLatency = latency;
    results.ok += count;
}

static void failed(enum kind kind)
{
    results.errors[kind]++;
    results.errorCount++;
}

/* One-shot: slot `c` is free for the next exchange. */
static void release(struct connection *c)
{
    if (!plan.keepOpen)
        freeSlots[freeCount++] = c - connections;
}

static void closeConnection(struct connection *c)
{
    if (c->state == FREE)
        return;
    close(c->fd); /* also takes it out of the epoll set */
    if (c->expected > 0 || c->state == CONNECTING)
        busy--;
    c->state = FREE;
    c->expected = c->received = c->toWrite = c->written = 0;
    release(c);
}

/* The exchange on `c` failed: count it, and its other requests in flight
 * as unanswered, and close the connection. */
static void fail(struct connection *c, enum kind kind)
{
    failed(kind);
    if (c->expected > c->received) {
        size_t owed = (c->expected - c->received + replyLength - 1) / replyLength;
        results.unanswered += (long long)owed - 1;
    }
    closeConnection(c);
}

/* Whether another request may be sent; if so, it is counted. */
static long takeRequests(long wanted)
{
    if (stopping)
        return 0;
    if (plan.requests) {
        long long left = plan.requests - results.requests;
        if (left < wanted)
            wanted = (long)left;
    }
    if (wanted > 0)
        results.requests += wanted;
    if (plan.requests && results.requests >= plan.requests)
        stopping = 1;
    return wanted;
}

/* Send what is left of the current batch; 0 if the connection failed. */
static int flush(struct connection *c)
{
    while (c->written < c->toWrite) {
        ssize_t n = send(c->fd, batch + c->written, c->toWrite - c->written, MSG_NOSIGNAL);
        if (n > 0) {
            c->written += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 1; /* edge-triggered EPOLLOUT says when to go on */
        } else {
            fail(c, RESET);
            return 0;
        }
    }
    return 1;
}

/* Begin a batch of `count` requests on an open connection. */
static void sendBatch(struct connection *c, long count)
{
    if (c->expected == 0)
        busy++;
    c->toWrite = (size_t)count * requestLength;
    c->written = 0;
    c->expected = (size_t)count * replyLength;
    c->received = 0;
    if (plan.keepOpen)
        c->startedAt = now;
    c->progressAt = now;
    flush(c);
}

/* Start a connection in slot `c`, its exchange counted from now. */
static void connectSlot(struct connection *c)
{
    int fd = socket(plan.address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        failed(CONNECT);
        release(c);
        return;
    }
    if (plan.keepOpen) {
        /* Replies are awaited one batch at a time: never hold one back. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    c->state = CONNECTING;
    c->startedAt = c->progressAt = now;
    c->expected = c->received = 0;
    busy++;
    /* Edge-triggered, both ways, for the connection's life: no epoll_ctl
     * calls after this one. */
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET};
    event.data.u32 = (uint32_t)(c - connections);
    if (epoll_ctl(epollFd, EPOLL_CTL_ADD, fd, &event) < 0) {
        fail(c, CONNECT);
        return;
    }
    if (connect(fd, (struct sockaddr *)&plan.address, plan.addressLength) < 0
        && errno != EINPROGRESS)
        fail(c, CONNECT);
    /* Connected or not, EPOLLOUT reports it. */
}

/* Start the next exchange on slot `c` (open, keep-open; free, one-shot),
 * if the run goes on. */
static void nextExchange(struct connection *c)
{
    long count = takeRequests(plan.keepOpen ? plan.pipeline : 1);
    if (count == 0)
        return;
    if (plan.keepOpen)
        sendBatch(c, count);
    else
        connectSlot(c);
}

/* The connection in `c` is made (or refused). */
static void connected(struct connection *c)
{
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0 || error) {
        fail(c, CONNECT);
        return;
    }
    c->state = OPEN;
    busy--; /* sendBatch counts it again */
    if (plan.keepOpen)
        nextExchange(c);
    else
        sendBatch(c, 1); /* counted, and timed, from the connect */
}

/* Keep the first byte that differs from what was expected: `got` differs
 * somewhere from the expected replies at `offset`. */
static void noteMismatch(const char *got, size_t offset)
{
    if (results.firstMismatch[0])
        return;
    size_t i = 0;
    while (got[i] == replies[offset + i])
        i++;
    snprintf(results.firstMismatch, sizeof results.firstMismatch,
             "byte %zu of a reply: expected 0x%02x, received 0x%02x",
             (offset + i) % replyLength, (unsigned char)replies[offset + i],
             (unsigned char)got[i]);
}

/* Check `length` bytes that arrived on `c`; 0 if they failed it. */
static int check(struct connection *c, const char *got, size_t length)
{
    size_t owed = c->expected - c->received;
    size_t compared = length < owed ? length : owed;
    if (memcmp(got, replies + c->received, compared) != 0) {
        noteMismatch(got, c->received);
        fail(c, MISMATCH);
        return 0;
    }
    if (length > owed) {
        if (!results.firstMismatch[0])
            snprintf(results.firstMismatch, sizeof results.firstMismatch,
                     "%zu bytes past the end of the replies owed", length - owed);
        fail(c, EXTRA);
        return 0;
    }
    size_t before = c->received / replyLength;
    c->received += length;
    c->progressAt = now;
    if (plan.keepOpen) {
        long long done = (long long)(c->received / replyLength - before);
        if (done)
            answered(c->startedAt, done);
        if (c->received == c->expected) {
            c->expected = 0;
            busy--;
            nextExchange(c);
        }
    }
    return 1;
}

/* Read everything `c` has (edge-triggered: until EAGAIN or the end). */
static void readAll(struct connection *c)
{
    static char buffer[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buffer, sizeof buffer, 0);
        if (n > 0) {
            if (!check(c, buffer, (size_t)n) || c->state == FREE)
                return;
        } else if (n == 0) {
            /* The server closed its side. */
            if (!plan.keepOpen && c->expected && c->received == c->expected) {
                answered(c->startedAt, 1);
                closeConnection(c);
            } else if (c->expected || !stopping) {
                fail(c, EARLY_CLOSE);
            } else {
                closeConnection(c);
            }
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            fail(c, errno == ECONNREFUSED ? CONNECT : RESET);
            return;
        }
    }
}

static void onEvent(struct connection *c, uint32_t events)
{
    if (c->state == CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        connected(c);
        if (c->state != OPEN)
            return;
    } else if (c->state == OPEN && (events & EPOLLOUT) && c->written < c->toWrite) {
        if (!flush(c))
            return;
    }
    if (c->state == OPEN && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        readAll(c);
}

/* Fail the exchanges that made no progress for the timeout. */
static void timeOut(void)
{
    int64_t limit = (int64_t)(plan.timeout * NS);
    for (long i = 0; i < plan.connections; i++) {
        struct connection *c = &connections[i];
        if (c->state != FREE && (c->expected || c->state == CONNECTING)
            && now - c->progressAt > limit)
            fail(c, TIMEOUT);
    }
}

/* The latency below which `share` of the replies came, in milliseconds. */
static double percentile(double share)
{
    long long total = results.ok, seen = 0;
    long long rank = (long long)(share * (double)total + 0.999999);
    if (rank < 1)
        rank = 1;
    for (long i = 0; i < HISTOGRAM_BUCKETS; i++) {
        seen += histogram[i];
        if (seen >= rank)
            return i == HISTOGRAM_BUCKETS - 1 ? (double)maxLatency / 1e6 : (i + 0.5) / 1000.0;
    }
    return 0.0;
}

static double number(const char *option, const char *text, double low, double high)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || value < low || value > high) {
        char message[200];
        snprintf(message, sizeof message, "%s must be a number from %g to %g, not '%s'",
                 option, low, high, text);
        usageError(message);
    }
    return value;
}

static void parse(int argc, char **argv)
{
    plan.host = "127.0.0.1";
    plan.port = -1;
    plan.connections = 50;
    plan.pipeline = 1;
    plan.maxErrors = 1000;
    plan.duration = -1;
    plan.timeout = 2.0;
    plan.message = "Hello Server !";
    plan.prefix = "Message received: ";
    const char *framing = "raw";
    for (int i = 1; i < argc; i++) {
        const char *option = argv[i];
        if (!strcmp(option, "--keep-open") || !strcmp(option, "-k")) {
            plan.keepOpen = 1;
            continue;
        }
        if (i + 1 >= argc) {
            char message[200];
            snprintf(message, sizeof message, "unknown option, or no value after it: %s",
                     option);
            usageError(message);
        }
        const char *value = argv[++i];
        if (!strcmp(option, "--host"))
            plan.host = value;
        else if (!strcmp(option, "--port"))
            plan.port = (long)number(option, value, 1, 65535);
        else if (!strcmp(option, "--framing"))
            framing = value;
        else if (!strcmp(option, "--connections"))
            plan.connections = (long)number(option, value, 1, MAX_CONNECTIONS);
        else if (!strcmp(option, "--pipeline"))
            plan.pipeline = (long)number(option, value, 1, MAX_PIPELINE);
        else if (!strcmp(option, "--duration"))
            plan.duration = number(option, value, 0.001, 3600);
        else if (!strcmp(option, "--requests"))
            plan.requests = (long long)number(option, value, 1, 1e12);
        else if (!strcmp(option, "--timeout"))
            plan.timeout = number(option, value, 0.001, 3600);
        else if (!strcmp(option, "--max-errors"))
            plan.maxErrors = (long)number(option, value, 1, 1e9);
        else if (!strcmp(option, "--message"))
            plan.message = value;
        else if (!strcmp(option, "--prefix"))
            plan.prefix = value;
        else {
            char message[200];
            snprintf(message, sizeof message, "unknown option %s", option);
            usageError(message);
        }
    }
    if (plan.port < 0)
        usageError("--port is required");
    if (!strcmp(framing, "line"))
        plan.line = 1;
    else if (strcmp(framing, "raw"))
        usageError("--framing must be raw or line");
    if (plan.keepOpen && !plan.line)
        usageError("--keep-open needs --framing line");
    if (plan.pipeline > 1 && !plan.keepOpen)
        usageError("--pipeline needs --keep-open");
    size_t length = strlen(plan.message);
    if (length == 0 || length > MAX_MESSAGE)
        usageError("--message must be 1 to 4096 bytes");
    if (plan.line && strchr(plan.message, '\n'))
        usageError("in line framing, --message cannot hold a newline");
    if (strlen(plan.prefix) > MAX_MESSAGE)
        usageError("--prefix must be at most 4096 bytes");
    if (plan.duration < 0 && !plan.requests)
        plan.duration = 5.0;

    /* Loopback only: this is a load generator for one's own machine. */
    struct sockaddr_in *v4 = (struct sockaddr_in *)&plan.address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&plan.address;
    memset(&plan.address, 0, sizeof plan.address);
    if (inet_pton(AF_INET, plan.host, &v4->sin_addr) == 1
        && (ntohl(v4->sin_addr.s_addr) >> 24) == 127) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)plan.port);
        plan.addressLength = sizeof *v4;
    } else if (inet_pton(AF_INET6, plan.host, &v6->sin6_addr) == 1
               && IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)plan.port);
        plan.addressLength = sizeof *v6;
    } else {
        usageError("--host must be a loopback address (127.0.0.0/8 or ::1)");
    }
}

/* The request batch and the replies expected to it. */
static void prepare(void)
{
    const char *end = plan.line ? "\n" : "";
    size_t message = strlen(plan.message), prefix = strlen(plan.prefix);
    requestLength = message + strlen(end);
    replyLength = prefix + requestLength;
    long copies = plan.keepOpen ? plan.pipeline : 1;
    batch = malloc(requestLength * (size_t)copies);
    replies = malloc(replyLength * (size_t)copies);
    if (!batch || !replies) {
        fprintf(stderr, "Error: out of memory\n");
        exit(1);
    }
    for (long i = 0; i < copies; i++) {
        char *request = batch + (size_t)i * requestLength;
        char *reply = replies + (size_t)i * replyLength;
        memcpy(request, plan.message, message);
        memcpy(request + message, end, strlen(end));
        memcpy(reply, plan.prefix, prefix);
        memcpy(reply + prefix, request, requestLength);
    }
    /* Room for every connection, the epoll set and the standard streams. */
    struct rlimit limit;
    rlim_t wanted = (rlim_t)plan.connections + 16;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < wanted
        && (limit.rlim_max == RLIM_INFINITY || limit.rlim_max >= wanted)) {
        limit.rlim_cur = wanted;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

static void report(double elapsed, double cpu)
{
    printf("{\"generator\": \"loadgen.c\", \"target\": \"%s:%ld\", \"framing\": \"%s\", "
           "\"mode\": \"%s\", \"connections\": %ld, \"pipeline\": %ld, \"messageSize\": %zu, ",
           plan.host, plan.port, plan.line ? "line" : "raw",
           plan.keepOpen ? "keep-open" : "one-shot", plan.connections, plan.pipeline,
           strlen(plan.message));
    printf("\"elapsed\": %.6f, \"requests\": %lld, \"ok\": %lld, \"errors\": {", elapsed,
           results.requests, results.ok);
    for (int k = 0; k < KINDS; k++)
        printf("%s\"%s\": %lld", k ? ", " : "", kindNames[k], results.errors[k]);
    printf("}, \"errorCount\": %lld, \"unanswered\": %lld, \"repliesPerSecond\": %.1f, ",
           results.errorCount, results.unanswered,
           elapsed > 0 ? (double)results.ok / elapsed : 0.0);
    if (results.ok)
        printf("\"latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
               "\"max\": %.3f}, ",
               percentile(0.50), percentile(0.90), percentile(0.99), (double)maxLatency / 1e6);
    else
        printf("\"latency_ms\": {\"p50\": 0, \"p90\": 0, \"p99\": 0, \"max\": 0}, ");
    printf("\"cpu\": {\"seconds\": %.3f, \"percentOfOneCore\": %.1f, \"processes\": 1}, ",
           cpu, elapsed > 0 ? 100.0 * cpu / elapsed : 0.0);
    /* firstMismatch is built from fixed text and numbers: no escaping. */
    if (results.firstMismatch[0])
        printf("\"firstMismatch\": \"%s\", ", results.firstMismatch);
    else
        printf("\"firstMismatch\": null, ");
    if (results.stopped)
        printf("\"stopped\": \"%s\"}\n", results.stopped);
    else
        printf("\"stopped\": null}\n");
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    prepare();
    epollFd = epoll_create1(EPOLL_CLOEXEC);
    if (epollFd < 0) {
        perror("Error: epoll_create1");
        return 1;
    }
    int64_t cpuBefore = clockNs(CLOCK_PROCESS_CPUTIME_ID);
    int64_t start = now = clockNs(CLOCK_MONOTONIC);
    int64_t stopAt = plan.duration > 0 ? start + (int64_t)(plan.duration * NS) : INT64_MAX;
    int64_t deadline = plan.duration > 0 ? stopAt + (int64_t)(DEADLINE_MARGIN * NS)
                                         : start + (int64_t)(REQUESTS_DEADLINE * NS);
    int64_t nextTick = start + TICK_MS * 1000000LL;

    for (long i = 0; i < plan.connections; i++) {
        if (plan.keepOpen)
            connectSlot(&connections[i]);
        else
            release(&connections[i]);
    }

    struct epoll_event events[256];
    for (;;) {
        now = clockNs(CLOCK_MONOTONIC);
        if (!stopping && (now >= stopAt || (plan.requests && results.requests >= plan.requests)))
            stopping = 1;
        if (results.errorCount >= plan.maxErrors) {
            results.stopped = "max-errors";
            break;
        }
        /* One-shot: the next exchange in every free slot (only those free
         * now: one that fails at once waits for the next turn). */
        for (long n = freeCount; n > 0 && !stopping; n--)
            nextExchange(&connections[freeSlots[--freeCount]]);
        if (busy == 0)
            break; /* nothing under way, and (stopping, or every connection failed) */
        if (now >= deadline) {
            results.stopped = "deadline";
            break;
        }
        if (now >= nextTick) {
            nextTick = now + TICK_MS * 1000000LL;
            timeOut();
            continue;
        }
        int64_t wake = !stopping && stopAt < nextTick ? stopAt : nextTick;
        int wait = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
        int ready = epoll_wait(epollFd, events, 256, wait);
        if (ready < 0 && errno != EINTR) {
            perror("Error: epoll_wait");
            return 1;
        }
        now = clockNs(CLOCK_MONOTONIC);
        for (int i = 0; i < ready; i++) {
            struct connection *c = &connections[events[i].data.u32];
            if (c->state != FREE)
                onEvent(c, events[i].events);
        }
    }
    int64_t end = clockNs(CLOCK_MONOTONIC);
    double cpu = (double)(clockNs(CLOCK_PROCESS_CPUTIME_ID) - cpuBefore) / NS;

    /* Stopped early: whatever was in flight has no reply. */
    for (long i = 0; i < plan.connections; i++) {
        struct connection *c = &connections[i];
        if (c->state != FREE && c->expected > c->received)
            results.unanswered += (long long)((c->expected - c->received + replyLength - 1)
                                              / replyLength);
        else if (c->state == CONNECTING && !plan.keepOpen)
            results.unanswered++;
        closeConnection(c);
    }
    report((double)(end - start) / NS, cpu);

    if (results.errorCount || results.unanswered) {
        fprintf(stderr, "Error:");
        const char *separator = " ";
        for (int k = 0; k < KINDS; k++) {
            if (results.errors[k]) {
                fprintf(stderr, "%s%lld %s", separator, results.errors[k], kindNames[k]);
                separator = ", ";
            }
        }
        if (results.unanswered)
            fprintf(stderr, "%s%lld unanswered", separator, results.unanswered);
        fprintf(stderr, " (of %lld requests, %lld answered)\n", results.requests, results.ok);
        return 1;
    }
    return 0;
}
