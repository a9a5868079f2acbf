/*
 * hsload: a load generator for ngx_hookstream (and, for comparison, nchan).
 *
 * One thread, one epoll loop, non-blocking sockets. Client sockets are bound
 * to 127.0.0.(1 + i % 250) before connect so that thousands of connections
 * do not run out of ephemeral ports. Only 127.0.0.0/8 targets are accepted.
 *
 * Modes:
 *   fanout  N WebSocket subscribers on one channel and one HTTP publisher
 *           (keep-alive, pipelined) publishing as fast as the subscribers
 *           take it: the publisher stays at most W messages ahead of the
 *           slowest subscriber (-w 0: open loop). Reports delivered
 *           messages/s, publish-to-receive latency and lost messages.
 *   rate    the same at a fixed publish rate (-r).
 *   idle    N idle subscribers, held until -H seconds pass or SIGTERM.
 *   ingest  C connections to /v1/ws/source/SRC, K messages in flight each,
 *           counting acks; with -x, HTTP POSTs to /v1/ingest/SRC instead.
 *   orgs    N subscribers on N orgs, one each (hookstream: the API key of
 *           line i of -F FILE; nchan: channel oI), and one publisher
 *           sending message s to org s % N, as fast as they take it
 *           (the same window as fanout, each message having one receiver).
 *   churn   N connectors, each in a loop: connect, WebSocket handshake,
 *           wait for the first frame (hookstream's welcome; with -y, the
 *           101 alone, as for nchan), close cleanly, connect again.
 *           Every key of -F is used once before the timed part (so an
 *           authority's answers are cached), then connects/s and the
 *           time from connect() to 101 and to the first frame.
 *
 * With -B ADDR:PORT the subscribers are spread over two servers (subscriber
 * i on -a when i is even, on -B when odd); the publisher uses -a.
 *
 * Each published message carries its send time (CLOCK_MONOTONIC, ns) and a
 * sequence number in its data: {"s":SEQ,"t":NS,"pad":"xxx..."}, padded to
 * the requested size.
 *
 * The last line on stdout is "RESULT key=value ...", for scripts.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define HS_MAX_EVENTS      1024
#define HS_RBUF_SIZE       (1024 * 1024)
#define HS_MAX_CARRY       (HS_RBUF_SIZE / 2)
#define HS_SB_BITS         5
#define HS_SB              (1 << HS_SB_BITS)
#define HS_HIST_SIZE       (HS_SB + (64 - HS_SB_BITS) * HS_SB)
#define HS_WRING           (1 << 16)
#define HS_MAX_CODES       16
#define HS_NSEC            1000000000LL
#define HS_MAX_PIDS        16
#define HS_LOSS_WAIT       (2 * HS_NSEC)

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT  24
#endif


enum { MODE_FANOUT, MODE_RATE, MODE_IDLE, MODE_INGEST, MODE_ORGS,
       MODE_CHURN };
enum { KIND_HOOKSTREAM, KIND_NCHAN };
enum { ROLE_SUB, ROLE_PUB, ROLE_WSIN, ROLE_HTTPIN, ROLE_KA, ROLE_CHURN };
enum { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };


typedef struct {
    uint64_t    count;
    uint64_t    max;
    uint64_t    b[HS_HIST_SIZE];
} hist_t;


typedef struct {
    int         code;
    uint64_t    count;
} code_count_t;


typedef struct {
    char       *org;
    char       *key;
} org_key_t;


typedef struct {
    int         fd;
    uint8_t     role;
    uint8_t     state;
    uint8_t     want_out;
    uint8_t     was_open;
    uint8_t     closing;
    uint32_t    idx;

    char       *out;
    size_t      out_len;
    size_t      out_pos;
    size_t      out_cap;

    char       *in;
    size_t      in_len;
    size_t      in_cap;

    /* subscriber */
    int64_t     last_seq;
    uint64_t    recv;
    uint64_t    gaps;
    uint64_t    dups;
    uint64_t    expect;

    /* churn: when connect() was called */
    uint64_t    t_connect;

    /* requests or messages in flight, in order: send time and sequence */
    uint32_t    inflight;
    uint32_t    fifo_head;
    uint64_t   *fifo_t;
    int64_t    *fifo_s;
} conn_t;


typedef struct {
    /* options */
    int             mode;
    int             kind;
    struct in_addr  addr;
    int             port;
    char            host[64];
    struct in_addr  addr_b;
    int             port_b;
    char            host_b[64];
    const char     *key;
    const char     *org;
    const char     *src;
    const char     *channel;
    const char     *sub_path;
    const char     *pub_path;
    const char     *ready_file;
    const char     *keys_file;
    org_key_t      *keys;
    long            nkeys;
    int             upgrade_only;
    long            n;
    double          duration;
    long            max_msgs;
    double          rate;
    long            window;
    long            depth;
    long            size;
    double          hold;
    long            conc;
    int             http;
    double          drain;
    double          connect_timeout;
    int             quiet;
    int             pids[HS_MAX_PIDS];
    int             npids;

    /* state */
    int             ep;
    conn_t         *conns;
    long            next_open;
    long            pending;
    long            opened;
    long            failed;
    long            live;
    conn_t         *pub;
    char           *rbuf;
    char           *msg;
    uint32_t        rnd;

    int             publishing;
    int             running;
    int64_t         pub_seq;
    int64_t         wm;
    uint32_t       *wcnt;
    uint8_t        *wfail;
    uint64_t       *wtime;
    uint64_t        next_due;
    uint64_t        t_start;
    uint64_t        t_stop;
    uint64_t        t_last_recv;

    uint64_t        pub_ok;
    uint64_t        pub_err;
    uint64_t        pub_lost;
    uint64_t        delivered;
    uint64_t        acks;
    uint64_t        acks_in_window;
    uint64_t        ack_errors;
    uint64_t        sent;
    uint64_t        reconnects;
    uint64_t        bad_status;
    int             last_bad_status;
    code_count_t    codes[HS_MAX_CODES];
    hist_t          hist;

    /* churn: cycles begun, cycles done, connects timed, time to 101 */
    uint64_t        cycle;
    uint64_t        cycles_done;
    uint64_t        connects;
    uint64_t        churn_errors;
    hist_t          hist_upgrade;

    /* CPU seconds of the server's workers and of hsload, at the start */
    double          srv_cpu0;
    double          cli_cpu0;
    double          srv_cpu;
    double          cli_cpu;
    double          all_cpu0;
    double          all_cpu;
    double          wall0;
    double          wall;
} hsload_t;


static void usage(void);
static uint64_t now_ns(void);
static void on_signal(int sig);
static void raise_nofile(long want);
static void hist_add(hist_t *h, uint64_t v);
static uint64_t hist_pct(hist_t *h, double p);
static void note_code(int code);
static int build_data(char *buf, int64_t seq, uint64_t t);
static int out_reserve(conn_t *c, size_t more);
static void out_append(conn_t *c, const char *p, size_t len);
static void ws_frame(conn_t *c, int op, const char *p, size_t len);
static void conn_flush(conn_t *c);
static void conn_set_out(conn_t *c, int on);
static int parse_target(char *host, struct in_addr *addr, int *port);
static int on_b(conn_t *c);
static const char *conn_host(conn_t *c);
static int conn_open(conn_t *c);
static void conn_close(conn_t *c, int code);
static void conn_connected(conn_t *c);
static void conn_read(conn_t *c);
static size_t parse_handshake(conn_t *c, char *p, size_t len);
static size_t parse_frames(conn_t *c, char *p, size_t len);
static size_t parse_http(conn_t *c, char *p, size_t len);
static void on_sub_text(conn_t *c, char *p, size_t len);
static void churn_ready(conn_t *c);
static void churn_reopen(void);
static int churn_warm(void);
static int churn_idle(void);
static int sub_path(conn_t *c, char *buf, size_t size);
static void load_keys(void);
static conn_t *target_of(int64_t seq);
static void on_reply(conn_t *c, int ok);
static void on_pub_reply(conn_t *c, int ok);
static void send_ingest(conn_t *c);
static void pub_pump(void);
static void advance_wm(void);
static void open_more(void);
static int all_received(void);
static void run_loop(uint64_t until, int (*done)(void));
static int subs_settled(void);
static int pub_ready(void);
static int drained(void);
static int ingest_drained(void);
static void progress(const char *what);
static void report(void);
static double server_cpu(void);
static double self_cpu(void);
static double machine_cpu(void);
static void cpu_mark(int end);


static volatile sig_atomic_t  stop_flag;
static hsload_t               hs;


static void
usage(void)
{
    fprintf(stderr,
        "usage: hsload fanout|rate|idle|ingest|orgs|churn [options]\n"
        "  -a ADDR:PORT  target, 127.0.0.0/8 only (127.0.0.1:8080)\n"
        "  -B ADDR:PORT  a second server: subscribers with an odd index\n"
        "                connect to it, the others and the publisher to\n"
        "                -a\n"
        "  -K KIND       hookstream | nchan (hookstream)\n"
        "  -k KEY        API key (hookstream)\n"
        "  -o ORG        org id the publisher publishes to (hookstream)\n"
        "  -s SRC        source id (ingest)\n"
        "  -F FILE       lines \"ORG KEY\": orgs: subscriber i uses line\n"
        "                i; churn: connection i uses line i %% lines\n"
        "  -y            churn: done at the 101, no first frame awaited\n"
        "  -C CHANNEL    channel: hookstream channel or nchan channel id\n"
        "  -S PATH       subscriber path (default from -K)\n"
        "  -P PATH       publish path (default from -K)\n"
        "  -n N          subscribers, connections or churn connectors\n"
        "                (100)\n"
        "  -d SECS       publish or ingest duration (10)\n"
        "  -m N          at most N messages published (1000000)\n"
        "  -r RATE       messages per second (rate mode, 50)\n"
        "  -w W          fanout window: messages ahead of the slowest\n"
        "                subscriber (64; 0 = open loop)\n"
        "  -q DEPTH      requests in flight per publisher or HTTP ingest\n"
        "                connection, messages in flight per WebSocket\n"
        "                ingest connection (16; ingest 100)\n"
        "  -b BYTES      size of a message's data (200)\n"
        "  -H SECS       idle: hold at most SECS (60)\n"
        "  -R FILE       idle: write FILE once all are connected\n"
        "  -c N          connections being opened at once (256)\n"
        "  -x            ingest over HTTP POST instead of WebSocket;\n"
        "                idle: plain HTTP keep-alive connections after\n"
        "                one GET of -S PATH (/ka) instead of WebSockets\n"
        "  -D SECS       drain time after publishing stops (5)\n"
        "  -Q            no progress lines\n"
        "  -W PID,...    report the CPU time of these processes (the\n"
        "                server's workers) while publishing or ingesting\n");
    exit(2);
}


static uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * HS_NSEC + ts.tv_nsec;
}


static void
on_signal(int sig)
{
    (void) sig;
    stop_flag = 1;
}


static void
raise_nofile(long want)
{
    struct rlimit  rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }

    if ((long) rl.rlim_cur >= want) {
        return;
    }

    if ((long) rl.rlim_max < want) {
        /* root may raise the hard limit too */
        rl.rlim_max = want;
    }

    rl.rlim_cur = want;

    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
        fprintf(stderr, "hsload: RLIMIT_NOFILE is %ld, wanted %ld\n",
                (long) rl.rlim_cur, want);
    }
}


/*
 * A log-linear histogram: values below 32 exactly, above that 32 buckets
 * per power of two (about 3% wide).
 */

static void
hist_add(hist_t *h, uint64_t v)
{
    int       msb;
    uint64_t  i;

    if (v < HS_SB) {
        i = v;

    } else {
        msb = 63 - __builtin_clzll(v);
        i = HS_SB + (uint64_t) (msb - HS_SB_BITS) * HS_SB
            + ((v >> (msb - HS_SB_BITS)) & (HS_SB - 1));
    }

    h->b[i]++;
    h->count++;

    if (v > h->max) {
        h->max = v;
    }
}


static uint64_t
hist_pct(hist_t *h, double p)
{
    uint64_t  want, seen, i, m, sub, lo;

    if (h->count == 0) {
        return 0;
    }

    want = (uint64_t) (p * h->count + 0.999999);

    if (want == 0) {
        want = 1;
    }

    seen = 0;

    for (i = 0; i < HS_HIST_SIZE; i++) {
        seen += h->b[i];

        if (seen >= want) {
            break;
        }
    }

    if (i < HS_SB) {
        return i;
    }

    m = (i - HS_SB) / HS_SB;
    sub = (i - HS_SB) % HS_SB;
    lo = (HS_SB + sub) << m;

    /* the bucket's upper bound, but never above the largest value seen */
    lo += ((uint64_t) 1 << m) - 1;

    return lo < h->max ? lo : h->max;
}


static void
note_code(int code)
{
    int  i;

    for (i = 0; i < HS_MAX_CODES; i++) {
        if (hs.codes[i].count == 0) {
            hs.codes[i].code = code;
        }

        if (hs.codes[i].code == code) {
            hs.codes[i].count++;
            return;
        }
    }
}


/* {"s":SEQ,"t":NS,"pad":"xxx"} of exactly hs.size bytes when it fits */

static int
build_data(char *buf, int64_t seq, uint64_t t)
{
    int  n, pad;

    n = sprintf(buf, "{\"s\":%lld,\"t\":%llu,\"pad\":\"",
                (long long) seq, (unsigned long long) t);

    pad = (int) hs.size - n - 2;

    if (pad < 0) {
        pad = 0;
    }

    memset(buf + n, 'x', pad);
    n += pad;
    buf[n++] = '"';
    buf[n++] = '}';
    buf[n] = '\0';

    return n;
}


static int
out_reserve(conn_t *c, size_t more)
{
    size_t   cap;
    char    *p;

    if (c->out_pos == c->out_len) {
        c->out_pos = 0;
        c->out_len = 0;
    }

    if (c->out_len + more <= c->out_cap) {
        return 0;
    }

    if (c->out_pos > 0) {
        memmove(c->out, c->out + c->out_pos, c->out_len - c->out_pos);
        c->out_len -= c->out_pos;
        c->out_pos = 0;

        if (c->out_len + more <= c->out_cap) {
            return 0;
        }
    }

    cap = c->out_cap ? c->out_cap : 1024;

    while (cap < c->out_len + more) {
        cap *= 2;
    }

    p = realloc(c->out, cap);
    if (p == NULL) {
        fprintf(stderr, "hsload: out of memory\n");
        exit(1);
    }

    c->out = p;
    c->out_cap = cap;

    return 0;
}


static void
out_append(conn_t *c, const char *p, size_t len)
{
    out_reserve(c, len);
    memcpy(c->out + c->out_len, p, len);
    c->out_len += len;
}


/* a client frame: FIN, masked (RFC 6455 5.3) */

static void
ws_frame(conn_t *c, int op, const char *p, size_t len)
{
    size_t    i, h;
    uint8_t  *o, mask[4];

    out_reserve(c, len + 14);
    o = (uint8_t *) c->out + c->out_len;

    o[0] = 0x80 | (op & 0x0f);

    if (len < 126) {
        o[1] = 0x80 | len;
        h = 2;

    } else if (len < 65536) {
        o[1] = 0x80 | 126;
        o[2] = len >> 8;
        o[3] = len & 0xff;
        h = 4;

    } else {
        o[1] = 0x80 | 127;

        for (i = 0; i < 8; i++) {
            o[2 + i] = (uint64_t) len >> (56 - 8 * i);
        }

        h = 10;
    }

    /* xorshift32: unpredictable enough for a load tool */
    hs.rnd ^= hs.rnd << 13;
    hs.rnd ^= hs.rnd >> 17;
    hs.rnd ^= hs.rnd << 5;
    memcpy(mask, &hs.rnd, 4);
    memcpy(o + h, mask, 4);
    h += 4;

    for (i = 0; i < len; i++) {
        o[h + i] = (uint8_t) p[i] ^ mask[i & 3];
    }

    c->out_len += h + len;
}


static void
conn_set_out(conn_t *c, int on)
{
    struct epoll_event  ev;

    if (c->want_out == on) {
        return;
    }

    ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;

    if (epoll_ctl(hs.ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        c->want_out = on;
    }
}


static void
conn_flush(conn_t *c)
{
    ssize_t  n;

    if (c->state < ST_HANDSHAKE || c->state == ST_CLOSED) {
        return;
    }

    while (c->out_pos < c->out_len) {
        n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos,
                 MSG_NOSIGNAL);

        if (n > 0) {
            c->out_pos += n;
            continue;
        }

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_set_out(c, 1);
            return;
        }

        conn_close(c, -1);
        return;
    }

    c->out_pos = 0;
    c->out_len = 0;
    conn_set_out(c, 0);
}


/* "A.B.C.D:PORT" of 127.0.0.0/8 into addr and port; -1 if it is not */

static int
parse_target(char *host, struct in_addr *addr, int *port)
{
    char  *colon;
    int    rc;

    colon = strchr(host, ':');
    if (colon == NULL) {
        return -1;
    }

    *colon = '\0';
    rc = inet_pton(AF_INET, host, addr);
    *colon = ':';

    if (rc != 1 || (ntohl(addr->s_addr) >> 24) != 127) {
        return -1;
    }

    *port = atoi(colon + 1);

    if (*port <= 0 || *port > 65535) {
        return -1;
    }

    return 0;
}


/* with -B, subscribers with an odd index go to the second server */

static int
on_b(conn_t *c)
{
    return hs.port_b != 0 && c->role == ROLE_SUB && (c->idx & 1);
}


static const char *
conn_host(conn_t *c)
{
    return on_b(c) ? hs.host_b : hs.host;
}


static int
conn_open(conn_t *c)
{
    int                 fd, one;
    struct sockaddr_in  sa, src;
    struct epoll_event  ev;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "hsload: socket: %s\n", strerror(errno));
        return -1;
    }

    one = 1;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                      sizeof(one));

    memset(&src, 0, sizeof(src));
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000001 + c->idx % 250);

    if (bind(fd, (struct sockaddr *) &src, sizeof(src)) != 0) {
        fprintf(stderr, "hsload: bind: %s\n", strerror(errno));
        close(fd);
        return -1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr = on_b(c) ? hs.addr_b : hs.addr;
    sa.sin_port = htons(on_b(c) ? hs.port_b : hs.port);

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        && errno != EINPROGRESS)
    {
        fprintf(stderr, "hsload: connect: %s\n", strerror(errno));
        close(fd);
        return -1;
    }

    c->fd = fd;
    c->state = ST_CONNECTING;
    c->want_out = 1;
    c->closing = 0;
    c->t_connect = now_ns();
    c->out_pos = 0;
    c->out_len = 0;
    c->in_len = 0;
    c->inflight = 0;
    c->fifo_head = 0;

    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = c;

    if (epoll_ctl(hs.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        fprintf(stderr, "hsload: epoll_ctl: %s\n", strerror(errno));
        close(fd);
        c->state = ST_CLOSED;
        return -1;
    }

    if (c->role != ROLE_PUB) {
        hs.pending++;
    }

    return 0;
}


/* code: a WebSocket close code, an HTTP status (>= 100 < 600), or -1 */

static void
conn_close(conn_t *c, int code)
{
    if (c->state == ST_CLOSED || c->state == ST_FREE) {
        return;
    }

    if (c->role != ROLE_PUB) {
        if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
            hs.pending--;
            hs.failed++;
        }

        if (c->state == ST_OPEN) {
            hs.live--;
        }
    }

    if (c->role == ROLE_CHURN && !c->closing) {
        hs.churn_errors++;
    }

    if (code != 0 && !(c->role == ROLE_CHURN && c->closing)) {
        note_code(code);
    }

    close(c->fd);
    c->fd = -1;
    c->state = ST_CLOSED;

    if (c->role == ROLE_PUB) {
        /* requests in flight are lost; the publisher reconnects */
        hs.pub_lost += c->inflight;
        hs.pub_err += c->inflight;

        while (c->inflight) {
            if (hs.window) {
                hs.wfail[c->fifo_s[c->fifo_head] % HS_WRING] = 1;
            }

            c->fifo_head = (c->fifo_head + 1) % hs.depth;
            c->inflight--;
        }
    }

    if ((c->role == ROLE_WSIN || c->role == ROLE_HTTPIN) && c->was_open) {
        hs.ack_errors += c->inflight;
    }
}


static void
conn_connected(conn_t *c)
{
    int        err;
    socklen_t  len;
    char       req[1024];
    int        n;

    len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0
        || err != 0)
    {
        conn_close(c, -1);
        return;
    }

    if (c->role == ROLE_PUB) {
        c->state = ST_OPEN;
        conn_set_out(c, 0);
        return;
    }

    if (c->role == ROLE_HTTPIN) {
        hs.pending--;
        c->state = ST_OPEN;
        c->was_open = 1;
        hs.opened++;
        hs.live++;
        conn_set_out(c, 0);

        if (c->role == ROLE_HTTPIN && hs.running) {
            send_ingest(c);
        }

        return;
    }

    if (c->role == ROLE_KA) {
        /* one request, then the connection idles in nginx's keepalive */
        n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n"
                     "\r\n", hs.sub_path ? hs.sub_path : "/ka", hs.host);
        c->state = ST_HANDSHAKE;
        out_append(c, req, n);
        conn_flush(c);
        return;
    }

    if (c->role == ROLE_SUB || c->role == ROLE_CHURN) {
        n = snprintf(req, sizeof(req), "GET ");
        n += sub_path(c, req + n, sizeof(req) - n);
        n += snprintf(req + n, sizeof(req) - n, " HTTP/1.1\r\n");

    } else {
        n = snprintf(req, sizeof(req), "GET /v1/ws/source/%s?token=%s"
                     " HTTP/1.1\r\n", hs.src, hs.key);
    }

    n += snprintf(req + n, sizeof(req) - n,
                  "Host: %s\r\n"
                  "Upgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n"
                  "\r\n", conn_host(c));

    c->state = ST_HANDSHAKE;
    out_append(c, req, n);
    conn_flush(c);
}


static void
conn_read(conn_t *c)
{
    ssize_t  n;
    size_t   len, used;
    char    *p;

    if (c->in_len) {
        memcpy(hs.rbuf, c->in, c->in_len);
    }

    for ( ;; ) {
        n = recv(c->fd, hs.rbuf + c->in_len, HS_RBUF_SIZE - c->in_len, 0);

        if (n < 0 && errno == EINTR) {
            continue;
        }

        break;
    }

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
    }

    if (n <= 0) {
        conn_close(c, c->role == ROLE_SUB || c->role == ROLE_CHURN ? 1006
                                                                   : -1);
        return;
    }

    p = hs.rbuf;
    len = c->in_len + n;

    if (c->state == ST_HANDSHAKE) {
        used = parse_handshake(c, p, len);

        if (c->state == ST_CLOSED) {
            return;
        }

        if (c->state != ST_OPEN) {
            goto carry;
        }

        p += used;
        len -= used;
    }

    if (c->role == ROLE_KA) {
        used = len;

    } else if (c->role == ROLE_PUB || c->role == ROLE_HTTPIN) {
        used = parse_http(c, p, len);

    } else {
        used = parse_frames(c, p, len);
    }

    if (c->state == ST_CLOSED) {
        return;
    }

    p += used;
    len -= used;

carry:

    if (len > HS_MAX_CARRY) {
        fprintf(stderr, "hsload: a message too large\n");
        conn_close(c, -1);
        return;
    }

    if (len > c->in_cap) {
        c->in = realloc(c->in, len);
        if (c->in == NULL) {
            fprintf(stderr, "hsload: out of memory\n");
            exit(1);
        }

        c->in_cap = len;
    }

    if (len) {
        memmove(c->in, p, len);
    }

    c->in_len = len;
}


static size_t
parse_handshake(conn_t *c, char *p, size_t len)
{
    char  *end;
    int    status;

    end = memmem(p, len, "\r\n\r\n", 4);
    if (end == NULL) {
        return 0;
    }

    status = 0;

    if (len > 12 && memcmp(p, "HTTP/1.1 ", 9) == 0) {
        status = atoi(p + 9);
    }

    if (c->role == ROLE_KA ? status < 200 || status > 299 : status != 101) {
        hs.bad_status++;
        hs.last_bad_status = status;
        conn_close(c, status ? status : -1);
        return 0;
    }

    hs.pending--;
    hs.opened++;
    hs.live++;
    c->state = ST_OPEN;
    c->was_open = 1;

    if (c->role == ROLE_WSIN && hs.running) {
        send_ingest(c);
    }

    if (c->role == ROLE_CHURN) {
        hist_add(&hs.hist_upgrade, now_ns() - c->t_connect);

        if (hs.upgrade_only) {
            churn_ready(c);
        }
    }

    return end + 4 - p;
}


static size_t
parse_frames(conn_t *c, char *p, size_t len)
{
    uint8_t   *u;
    size_t     pos, h, i;
    uint64_t   plen;
    int        op, code;
    char      *pl;

    pos = 0;

    while (len - pos >= 2) {
        u = (uint8_t *) p + pos;
        op = u[0] & 0x0f;
        plen = u[1] & 0x7f;
        h = 2;

        if (plen == 126) {
            if (len - pos < 4) {
                break;
            }

            plen = ((uint64_t) u[2] << 8) | u[3];
            h = 4;

        } else if (plen == 127) {
            if (len - pos < 10) {
                break;
            }

            plen = 0;

            for (i = 0; i < 8; i++) {
                plen = (plen << 8) | u[2 + i];
            }

            h = 10;
        }

        if (u[1] & 0x80) {
            /* a server must not mask; skip the key rather than fail */
            h += 4;
        }

        if (plen > HS_MAX_CARRY) {
            fprintf(stderr, "hsload: a frame of %llu bytes\n",
                    (unsigned long long) plen);
            conn_close(c, -1);
            return pos;
        }

        if (len - pos < h + plen) {
            break;
        }

        pl = p + pos + h;
        pos += h + plen;

        switch (op) {

        case 0x1:
        case 0x0:
            if (c->role == ROLE_SUB) {
                on_sub_text(c, pl, plen);

            } else if (c->role == ROLE_CHURN) {
                if (memmem(pl, plen, "\"type\":\"welcome\"", 16)) {
                    churn_ready(c);
                }

            } else {
                if (plen >= 13 && memmem(pl, plen, "\"type\":\"ack\"", 12)) {
                    on_reply(c, 1);

                } else if (memmem(pl, plen, "\"type\":\"error\"", 14)) {
                    on_reply(c, 0);
                }
            }

            break;

        case 0x8:
            code = plen >= 2 ? ((uint8_t) pl[0] << 8 | (uint8_t) pl[1])
                             : 1005;

            if (c->role == ROLE_CHURN && c->closing) {
                /* the server closes the TCP connection first */
                break;
            }

            conn_close(c, code);
            return pos;

        case 0x9:
            ws_frame(c, 0xa, pl, plen);
            conn_flush(c);

            if (c->state == ST_CLOSED) {
                return pos;
            }

            break;

        default:
            break;
        }

        if (c->state == ST_CLOSED) {
            return pos;
        }
    }

    return pos;
}


static void
on_sub_text(conn_t *c, char *p, size_t len)
{
    char      *s, *e;
    int64_t    seq, step;
    uint64_t   t, now;

    s = memmem(p, len, "{\"s\":", 5);

    if (s == NULL) {
        if (len < 128 && memmem(p, len, "\"type\":\"ping\"", 13)) {
            ws_frame(c, 0x1, "{\"type\":\"pong\"}", 15);
            conn_flush(c);
        }

        return;
    }

    e = p + len;
    s += 5;
    seq = 0;

    while (s < e && *s >= '0' && *s <= '9') {
        seq = seq * 10 + (*s++ - '0');
    }

    if (e - s < 6 || memcmp(s, ",\"t\":", 5) != 0) {
        return;
    }

    s += 5;
    t = 0;

    while (s < e && *s >= '0' && *s <= '9') {
        t = t * 10 + (*s++ - '0');
    }

    now = now_ns();
    hs.t_last_recv = now;
    hist_add(&hs.hist, now > t ? now - t : 0);
    hs.delivered++;

    /* orgs: a subscriber receives every n-th message */
    step = hs.mode == MODE_ORGS ? hs.n : 1;

    if (seq <= c->last_seq) {
        c->dups++;
        return;
    }

    if (seq != c->last_seq + step) {
        c->gaps++;
    }

    if (hs.window) {
        /* every message up to seq has passed this subscriber */
        while (c->last_seq < seq) {
            c->last_seq += step;
            hs.wcnt[c->last_seq % HS_WRING]++;
        }

    } else {
        c->last_seq = seq;
    }

    c->recv++;
}


/*
 * A churn connection is through its handshake: the time since connect()
 * is recorded, and the connection is closed cleanly (a close frame; the
 * server answers it and closes the TCP connection, so the TIME_WAIT
 * state stays on its side).
 */

static void
churn_ready(conn_t *c)
{
    uint64_t  now;

    if (c->closing) {
        return;
    }

    now = now_ns();
    hist_add(&hs.hist, now - c->t_connect);
    hs.cycles_done++;

    if (hs.running && now <= hs.t_stop) {
        hs.connects++;
    }

    c->closing = 1;
    ws_frame(c, 0x8, "\x03\xe8", 2);
    conn_flush(c);
}


/* each connector whose connection is over opens the next one */

static void
churn_reopen(void)
{
    long     i;
    conn_t  *c;

    for (i = 0; i < hs.n && !stop_flag; i++) {
        c = &hs.conns[i];

        if (c->state != ST_FREE && c->state != ST_CLOSED) {
            continue;
        }

        /* the next key and the next source address */
        c->idx = hs.cycle++;

        if (conn_open(c) != 0) {
            c->state = ST_CLOSED;
            hs.churn_errors++;
        }
    }
}


static int
churn_warm(void)
{
    return hs.cycles_done >= (uint64_t) (hs.nkeys > hs.n ? hs.nkeys : hs.n);
}


static int
churn_idle(void)
{
    long  i;

    for (i = 0; i < hs.n; i++) {
        if (hs.conns[i].state != ST_FREE && hs.conns[i].state != ST_CLOSED)
        {
            return 0;
        }
    }

    return 1;
}


/* the subscriber's request target: its org's key or its channel */

static int
sub_path(conn_t *c, char *buf, size_t size)
{
    const char  *key;

    if (hs.mode != MODE_ORGS && hs.mode != MODE_CHURN) {
        return snprintf(buf, size, "%s", hs.sub_path);
    }

    if (hs.kind == KIND_NCHAN) {
        if (hs.mode == MODE_ORGS) {
            return snprintf(buf, size, "/sub/o%u", c->idx);
        }

        return snprintf(buf, size, "%s", hs.sub_path);
    }

    key = hs.nkeys ? hs.keys[c->idx % hs.nkeys].key : hs.key;

    return snprintf(buf, size, "/v1/ws?token=%s", key);
}


/* the subscriber a message of the orgs mode goes to */

static conn_t *
target_of(int64_t seq)
{
    return &hs.conns[seq % hs.n];
}


/* -F FILE: one "ORG KEY" a line */

static void
load_keys(void)
{
    FILE       *f;
    char        line[512], org[128], key[256];
    long        cap;
    org_key_t  *k;

    f = fopen(hs.keys_file, "r");
    if (f == NULL) {
        fprintf(stderr, "hsload: %s: %s\n", hs.keys_file, strerror(errno));
        exit(2);
    }

    cap = 0;

    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "%127s %255s", org, key) != 2) {
            continue;
        }

        if (hs.nkeys == cap) {
            cap = cap ? cap * 2 : 1024;
            k = realloc(hs.keys, cap * sizeof(org_key_t));
            if (k == NULL) {
                fprintf(stderr, "hsload: out of memory\n");
                exit(1);
            }

            hs.keys = k;
        }

        hs.keys[hs.nkeys].org = strdup(org);
        hs.keys[hs.nkeys].key = strdup(key);

        if (hs.keys[hs.nkeys].org == NULL || hs.keys[hs.nkeys].key == NULL) {
            fprintf(stderr, "hsload: out of memory\n");
            exit(1);
        }

        hs.nkeys++;
    }

    fclose(f);

    if (hs.nkeys == 0) {
        fprintf(stderr, "hsload: no \"ORG KEY\" line in %s\n",
                hs.keys_file);
        exit(2);
    }
}


/* HTTP/1.1 responses on a keep-alive connection, pipelined */

static size_t
parse_http(conn_t *c, char *p, size_t len)
{
    size_t   pos, hlen, total, clen, csz;
    char    *end, *q, *e, *v;
    int      status, chunked, ok;

    pos = 0;

    while (pos < len) {
        end = memmem(p + pos, len - pos, "\r\n\r\n", 4);
        if (end == NULL) {
            break;
        }

        hlen = end + 4 - (p + pos);
        status = 0;

        if (memcmp(p + pos, "HTTP/1.", 7) == 0 && hlen > 12) {
            status = atoi(p + pos + 9);
        }

        clen = 0;
        chunked = 0;

        for (q = p + pos; q < end; q = e + 2) {
            e = memmem(q, end + 2 - q, "\r\n", 2);
            if (e == NULL) {
                break;
            }

            if (e - q > 15 && strncasecmp(q, "Content-Length:", 15) == 0) {
                clen = strtoul(q + 15, NULL, 10);

            } else if (e - q > 18
                       && strncasecmp(q, "Transfer-Encoding:", 18) == 0)
            {
                v = memmem(q, e - q, "chunked", 7);
                chunked = v != NULL;
            }
        }

        total = hlen;

        if (chunked) {
            for ( ;; ) {
                q = p + pos + total;
                e = memmem(q, p + len - q, "\r\n", 2);
                if (e == NULL) {
                    return pos;
                }

                csz = strtoul(q, NULL, 16);
                total += e + 2 - q + csz + 2;

                if (pos + total > len) {
                    return pos;
                }

                if (csz == 0) {
                    break;
                }
            }

        } else {
            total += clen;
        }

        if (pos + total > len) {
            break;
        }

        ok = status >= 200 && status < 300;

        if (ok && c->role == ROLE_PUB && hs.kind == KIND_HOOKSTREAM
            && memmem(p + pos + hlen, total - hlen, "\"published\":0", 13))
        {
            ok = 0;
        }

        if (!ok) {
            hs.bad_status++;
            hs.last_bad_status = status;
        }

        pos += total;

        if (c->role == ROLE_PUB) {
            on_pub_reply(c, ok);

        } else {
            on_reply(c, ok);
        }

        if (c->state == ST_CLOSED) {
            break;
        }
    }

    return pos;
}


static void
on_pub_reply(conn_t *c, int ok)
{
    int64_t  seq;

    if (c->inflight == 0) {
        return;
    }

    seq = c->fifo_s[c->fifo_head];
    c->fifo_head = (c->fifo_head + 1) % hs.depth;
    c->inflight--;

    if (ok) {
        hs.pub_ok++;

        if (hs.mode == MODE_ORGS) {
            target_of(seq)->expect++;
        }

    } else {
        hs.pub_err++;

        if (hs.window) {
            hs.wfail[seq % HS_WRING] = 1;
        }
    }
}


/* an ack (or error) for the oldest message in flight on c */

static void
on_reply(conn_t *c, int ok)
{
    uint64_t  now, t;

    if (c->inflight == 0) {
        return;
    }

    now = now_ns();
    t = c->fifo_t[c->fifo_head];
    c->fifo_head = (c->fifo_head + 1) % hs.depth;
    c->inflight--;

    if (ok) {
        hs.acks++;
        hist_add(&hs.hist, now - t);

        if (now <= hs.t_stop) {
            hs.acks_in_window++;
        }

    } else {
        hs.ack_errors++;
    }

    if (hs.running) {
        send_ingest(c);
    }
}


static void
send_ingest(conn_t *c)
{
    char      head[512];
    int       n, dn;
    uint64_t  t;
    uint32_t  slot;

    while (c->inflight < hs.depth && hs.running) {
        t = now_ns();
        n = sprintf(hs.msg, "{\"type\":\"bench.event\",\"data\":");
        dn = build_data(hs.msg + n, hs.sent, t);
        n += dn;
        hs.msg[n++] = '}';

        if (c->role == ROLE_WSIN) {
            ws_frame(c, 0x1, hs.msg, n);

        } else {
            dn = snprintf(head, sizeof(head),
                          "POST /v1/ingest/%s HTTP/1.1\r\n"
                          "Host: %s\r\n"
                          "Content-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n", hs.src, hs.host, n);
            out_append(c, head, dn);
            out_append(c, hs.msg, n);
        }

        slot = (c->fifo_head + c->inflight) % hs.depth;
        c->fifo_t[slot] = t;
        c->fifo_s[slot] = hs.sent;
        c->inflight++;
        hs.sent++;
    }

    conn_flush(c);
}


static void
advance_wm(void)
{
    uint32_t  slot, need;
    uint64_t  now;

    now = now_ns();

    while (hs.wm < hs.pub_seq) {
        slot = hs.wm % HS_WRING;

        if (hs.mode == MODE_ORGS) {
            /* one receiver, if it is still there */
            need = target_of(hs.wm)->state == ST_OPEN;

        } else {
            need = hs.live;
        }

        /*
         * a message some subscriber has not received HS_LOSS_WAIT after
         * it was sent is lost (the report counts it): the window moves
         * past it rather than stopping the publisher for the whole run
         */
        if (hs.wcnt[slot] < need && !hs.wfail[slot]
            && now - hs.wtime[slot] < HS_LOSS_WAIT)
        {
            break;
        }

        hs.wcnt[slot] = 0;
        hs.wfail[slot] = 0;
        hs.wm++;
    }
}


static void
pub_pump(void)
{
    long         k;
    conn_t      *c;
    char         head[512], opath[64];
    int          n, hn;
    uint64_t     t;
    uint32_t     slot;
    const char  *org, *path;

    c = hs.pub;

    if (c == NULL) {
        return;
    }

    if (c->state == ST_CLOSED && hs.publishing) {
        hs.reconnects++;

        if (conn_open(c) != 0) {
            hs.publishing = 0;
        }

        return;
    }

    if (c->state != ST_OPEN) {
        return;
    }

    if (hs.window) {
        advance_wm();
    }

    while (hs.publishing && c->inflight < hs.depth) {
        t = now_ns();

        if (hs.mode == MODE_RATE && t < hs.next_due) {
            break;
        }

        if (hs.pub_seq >= hs.max_msgs) {
            hs.publishing = 0;
            break;
        }

        if (hs.window && hs.pub_seq >= hs.wm + hs.window) {
            break;
        }

        org = hs.org;
        path = hs.pub_path;

        if (hs.mode == MODE_ORGS) {
            /* round robin over the orgs (nchan: the channels) */
            k = hs.pub_seq % hs.n;

            if (hs.kind == KIND_HOOKSTREAM) {
                org = hs.keys[k].org;

            } else {
                snprintf(opath, sizeof(opath), "/pub/o%ld", k);
                path = opath;
            }
        }

        if (hs.kind == KIND_HOOKSTREAM) {
            n = sprintf(hs.msg, "{\"org_id\":\"%s\",\"type\":\"delivery\","
                        "\"channel\":\"%s\",\"data\":", org, hs.channel);
            n += build_data(hs.msg + n, hs.pub_seq, t);
            hs.msg[n++] = '}';

        } else {
            n = build_data(hs.msg, hs.pub_seq, t);
        }

        hn = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\n"
                      "Host: %s\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n", path, hs.host, n);
        out_append(c, head, hn);
        out_append(c, hs.msg, n);

        slot = (c->fifo_head + c->inflight) % hs.depth;
        c->fifo_t[slot] = t;
        c->fifo_s[slot] = hs.pub_seq;
        c->inflight++;
        hs.wtime[hs.pub_seq % HS_WRING] = t;
        hs.pub_seq++;

        if (hs.mode == MODE_RATE) {
            hs.next_due += (uint64_t) (HS_NSEC / hs.rate);
        }
    }

    conn_flush(c);
}


static void
open_more(void)
{
    conn_t  *c;

    if (hs.mode == MODE_CHURN) {
        return;
    }

    while (hs.next_open < hs.n && hs.pending < hs.conc && !stop_flag) {
        c = &hs.conns[hs.next_open++];

        if (conn_open(c) != 0) {
            c->state = ST_CLOSED;
            hs.failed++;
        }
    }
}


static int
all_received(void)
{
    long  i;

    for (i = 0; i < hs.n; i++) {
        if (hs.conns[i].state != ST_OPEN) {
            continue;
        }

        if (hs.mode == MODE_ORGS
            ? hs.conns[i].recv < hs.conns[i].expect
            : hs.conns[i].last_seq < hs.pub_seq - 1)
        {
            return 0;
        }
    }

    return 1;
}


static int
subs_settled(void)
{
    return hs.next_open == hs.n && hs.pending == 0;
}


static int
pub_ready(void)
{
    return hs.pub->state == ST_OPEN;
}


static int
drained(void)
{
    if (hs.pub && hs.pub->state == ST_OPEN && hs.pub->inflight) {
        return 0;
    }

    return all_received();
}


static int
ingest_drained(void)
{
    long  i;

    for (i = 0; i < hs.n; i++) {
        if (hs.conns[i].state == ST_OPEN && hs.conns[i].inflight) {
            return 0;
        }
    }

    return 1;
}


/* runs events until the deadline, a signal, or done() says so */

static void
run_loop(uint64_t until, int (*done)(void))
{
    struct epoll_event   evs[HS_MAX_EVENTS];
    int                  n, i, timeout;
    uint64_t             now, next_print;
    conn_t              *c;
    long                 k;

    next_print = now_ns() + HS_NSEC;

    for ( ;; ) {
        now = now_ns();

        if (now >= until || stop_flag) {
            return;
        }

        if (done != NULL && done()) {
            return;
        }

        if (now >= next_print) {
            progress("");
            next_print = now + HS_NSEC;
        }

        timeout = 100;

        if (hs.publishing && hs.mode == MODE_RATE && hs.next_due > now) {
            timeout = (hs.next_due - now) / 1000000;

            if (timeout > 100) {
                timeout = 100;
            }

        } else if (hs.publishing && hs.mode == MODE_RATE) {
            timeout = 0;
        }

        if ((uint64_t) timeout * 1000000 > until - now) {
            timeout = (until - now) / 1000000 + 1;
        }

        n = epoll_wait(hs.ep, evs, HS_MAX_EVENTS, timeout);

        if (n < 0 && errno != EINTR) {
            perror("hsload: epoll_wait");
            exit(1);
        }

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;

            if (c->state == ST_CLOSED) {
                continue;
            }

            if (c->state == ST_CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    conn_connected(c);
                }

                continue;
            }

            if (evs[i].events & EPOLLOUT) {
                conn_flush(c);
            }

            if (c->state != ST_CLOSED
                && evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            {
                conn_read(c);
            }
        }

        open_more();

        if (hs.publishing || (hs.pub && hs.pub->state != ST_OPEN)) {
            pub_pump();
        }

        if (hs.running && hs.mode == MODE_CHURN) {
            churn_reopen();
        }

        if (hs.running && hs.mode == MODE_INGEST && hs.http) {
            /* HTTP ingest connections closed by the server reconnect */
            for (k = 0; k < hs.n; k++) {
                c = &hs.conns[k];

                if (c->state == ST_CLOSED && c->was_open) {
                    hs.reconnects++;
                    c->was_open = 0;
                    (void) conn_open(c);
                }
            }
        }
    }
}


static void
progress(const char *what)
{
    static const char  *names[] = { "fanout", "rate", "idle", "ingest",
                                    "orgs", "churn" };
    double              el;

    if (hs.quiet) {
        return;
    }

    el = hs.t_start ? (now_ns() - hs.t_start) / 1e9 : 0;

    if (hs.mode == MODE_CHURN) {
        fprintf(stderr, "hsload %s%s: %5.1fs %s connects %llu (%.0f/s) "
                "errors %llu p99 %.2fms\n", names[hs.mode], what, el,
                hs.t_start ? "timed" : "warming",
                (unsigned long long) (hs.t_start ? hs.connects
                                                 : hs.cycles_done),
                el > 0 ? hs.connects / el : 0.0,
                (unsigned long long) hs.churn_errors,
                hist_pct(&hs.hist, 0.99) / 1e6);

    } else if (hs.mode == MODE_INGEST) {
        fprintf(stderr, "hsload %s%s: %5.1fs conns %ld/%ld acks %llu "
                "(%.0f/s) errors %llu\n", names[hs.mode], what, el,
                hs.live, hs.n, (unsigned long long) hs.acks,
                el > 0 ? hs.acks / el : 0.0,
                (unsigned long long) hs.ack_errors);

    } else {
        fprintf(stderr, "hsload %s%s: %5.1fs subs %ld/%ld published %llu "
                "delivered %llu (%.0f/s) p99 %.2fms\n", names[hs.mode],
                what, el, hs.live, hs.n, (unsigned long long) hs.pub_ok,
                (unsigned long long) hs.delivered,
                el > 0 ? hs.delivered / el : 0.0,
                hist_pct(&hs.hist, 0.99) / 1e6);
    }
}


/* utime + stime of the given processes (nginx workers), in seconds */

static double
server_cpu(void)
{
    int                 i, fd;
    char                path[64], buf[1024], *p;
    ssize_t             n;
    unsigned long long  ut, st, total;

    total = 0;

    for (i = 0; i < hs.npids; i++) {
        snprintf(path, sizeof(path), "/proc/%d/stat", hs.pids[i]);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }

        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);

        if (n <= 0) {
            continue;
        }

        buf[n] = '\0';

        /* the command may hold spaces: fields count from the last ')' */
        p = strrchr(buf, ')');
        if (p == NULL) {
            continue;
        }

        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u"
                   " %llu %llu", &ut, &st) == 2)
        {
            total += ut + st;
        }
    }

    return (double) total / sysconf(_SC_CLK_TCK);
}


static double
self_cpu(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);

    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
           + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}


/* busy CPU seconds of the whole machine, from the "cpu" line of /proc/stat */

static double
machine_cpu(void)
{
    FILE                *f;
    unsigned long long   v[8];
    int                  n;

    f = fopen("/proc/stat", "r");
    if (f == NULL) {
        return 0;
    }

    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
               &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);

    if (n != 8) {
        return 0;
    }

    /* user nice system (idle iowait) irq softirq steal */
    return (double) (v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
           / sysconf(_SC_CLK_TCK);
}


static void
cpu_mark(int end)
{
    if (end) {
        hs.srv_cpu = server_cpu() - hs.srv_cpu0;
        hs.cli_cpu = self_cpu() - hs.cli_cpu0;
        hs.all_cpu = machine_cpu() - hs.all_cpu0;
        hs.wall = now_ns() / 1e9 - hs.wall0;

    } else {
        hs.srv_cpu0 = server_cpu();
        hs.cli_cpu0 = self_cpu();
        hs.all_cpu0 = machine_cpu();
        hs.wall0 = now_ns() / 1e9;
    }
}


static void
report(void)
{
    static const char  *names[] = { "fanout", "rate", "idle", "ingest",
                                    "orgs", "churn" };
    long                i, closed, open;
    uint64_t            expect, recv, lost, gaps, dups;
    double              el;
    char                codes[512];
    int                 n;

    closed = 0;
    open = 0;
    lost = 0;
    gaps = 0;
    dups = 0;
    recv = 0;

    for (i = 0; i < hs.n; i++) {
        if (!hs.conns[i].was_open) {
            continue;
        }

        if (hs.conns[i].state == ST_OPEN) {
            open++;

        } else {
            closed++;
        }

        if (hs.mode == MODE_FANOUT || hs.mode == MODE_RATE
            || hs.mode == MODE_ORGS)
        {
            expect = hs.mode == MODE_ORGS ? hs.conns[i].expect : hs.pub_ok;
            recv = hs.conns[i].recv;
            lost += expect > recv ? expect - recv : 0;
            gaps += hs.conns[i].gaps;
            dups += hs.conns[i].dups;
        }
    }

    n = 0;
    codes[0] = '\0';

    for (i = 0; i < HS_MAX_CODES && hs.codes[i].count; i++) {
        n += snprintf(codes + n, sizeof(codes) - n, "%s%d:%llu",
                      n ? "," : "", hs.codes[i].code,
                      (unsigned long long) hs.codes[i].count);
    }

    printf("RESULT mode=%s kind=%s n=%ld opened=%ld failed=%ld open=%ld"
           " closed=%ld", names[hs.mode],
           hs.kind == KIND_HOOKSTREAM ? "hookstream" : "nchan",
           hs.n, hs.opened, hs.failed, open, closed);

    if (hs.mode == MODE_FANOUT || hs.mode == MODE_RATE
        || hs.mode == MODE_ORGS)
    {
        el = (hs.t_last_recv > hs.t_start ? hs.t_last_recv - hs.t_start
                                          : 1) / 1e9;
        printf(" published=%llu pub_errors=%llu delivered=%llu"
               " seconds=%.3f msgs_per_s=%.0f lost=%llu gaps=%llu"
               " dups=%llu",
               (unsigned long long) hs.pub_ok,
               (unsigned long long) hs.pub_err,
               (unsigned long long) hs.delivered, el,
               hs.delivered / el, (unsigned long long) lost,
               (unsigned long long) gaps, (unsigned long long) dups);

    } else if (hs.mode == MODE_CHURN) {
        el = (hs.t_stop - hs.t_start) / 1e9;
        printf(" connects=%llu seconds=%.3f connects_per_s=%.0f"
               " errors=%llu cycles=%llu keys=%ld upgrade_p50_us=%.1f"
               " upgrade_p99_us=%.1f",
               (unsigned long long) hs.connects, el,
               el > 0 ? hs.connects / el : 0.0,
               (unsigned long long) hs.churn_errors,
               (unsigned long long) hs.cycles_done, hs.nkeys,
               hist_pct(&hs.hist_upgrade, 0.50) / 1e3,
               hist_pct(&hs.hist_upgrade, 0.99) / 1e3);

    } else if (hs.mode == MODE_INGEST) {
        el = (hs.t_stop - hs.t_start) / 1e9;
        printf(" transport=%s acks=%llu acks_in_window=%llu seconds=%.3f"
               " acks_per_s=%.0f errors=%llu",
               hs.http ? "http" : "ws", (unsigned long long) hs.acks,
               (unsigned long long) hs.acks_in_window, el,
               hs.acks_in_window / el, (unsigned long long) hs.ack_errors);
    }

    if (hs.mode != MODE_IDLE) {
        printf(" p50_us=%.1f p99_us=%.1f max_us=%.1f",
               hist_pct(&hs.hist, 0.50) / 1e3,
               hist_pct(&hs.hist, 0.99) / 1e3, hs.hist.max / 1e3);

        /*
         * other_cpu_s: what the rest of the machine used meanwhile (other
         * jobs; softirq time not charged to either side lands here too)
         */
        printf(" wall_s=%.2f client_cpu_s=%.2f machine_cpu_s=%.2f",
               hs.wall, hs.cli_cpu, hs.all_cpu);

        if (hs.npids) {
            recv = hs.mode == MODE_INGEST ? hs.acks
                   : hs.mode == MODE_CHURN ? hs.connects : hs.delivered;
            printf(" server_cpu_s=%.2f server_ns_per_msg=%.0f"
                   " other_cpu_s=%.2f", hs.srv_cpu,
                   recv ? hs.srv_cpu * 1e9 / recv : 0.0,
                   hs.all_cpu - hs.srv_cpu - hs.cli_cpu);
        }
    }

    printf(" reconnects=%llu bad_status=%llu last_bad_status=%d"
           " close_codes=%s\n",
           (unsigned long long) hs.reconnects,
           (unsigned long long) hs.bad_status, hs.last_bad_status,
           codes[0] ? codes : "-");

    fflush(stdout);
}


int
main(int argc, char **argv)
{
    int                 ch;
    long                i;
    char               *colon, path[1024];
    uint64_t            now;
    FILE               *f;
    struct sigaction    sa;

    if (argc < 2) {
        usage();
    }

    if (strcmp(argv[1], "fanout") == 0) {
        hs.mode = MODE_FANOUT;

    } else if (strcmp(argv[1], "rate") == 0) {
        hs.mode = MODE_RATE;

    } else if (strcmp(argv[1], "idle") == 0) {
        hs.mode = MODE_IDLE;

    } else if (strcmp(argv[1], "ingest") == 0) {
        hs.mode = MODE_INGEST;

    } else if (strcmp(argv[1], "orgs") == 0) {
        hs.mode = MODE_ORGS;

    } else if (strcmp(argv[1], "churn") == 0) {
        hs.mode = MODE_CHURN;

    } else {
        usage();
    }

    strcpy(hs.host, "127.0.0.1:8080");
    hs.kind = KIND_HOOKSTREAM;
    hs.channel = NULL;
    hs.n = 100;
    hs.duration = 10;
    hs.max_msgs = 1000000;
    hs.rate = 50;
    hs.window = 64;
    hs.depth = -1;
    hs.size = 200;
    hs.hold = 60;
    hs.conc = 256;
    hs.drain = 5;
    hs.connect_timeout = 120;

    optind = 2;

    while ((ch = getopt(argc, argv,
                        "a:B:K:k:o:s:F:yC:S:P:n:d:m:r:w:q:b:H:R:c:xD:QW:"))
           != -1)
    {
        switch (ch) {
        case 'a':
            if (strlen(optarg) >= sizeof(hs.host)) {
                usage();
            }

            strcpy(hs.host, optarg);
            break;
        case 'B':
            if (strlen(optarg) >= sizeof(hs.host_b)) {
                usage();
            }

            strcpy(hs.host_b, optarg);
            break;
        case 'K':
            if (strcmp(optarg, "nchan") == 0) {
                hs.kind = KIND_NCHAN;

            } else if (strcmp(optarg, "hookstream") == 0) {
                hs.kind = KIND_HOOKSTREAM;

            } else {
                usage();
            }

            break;
        case 'k': hs.key = optarg; break;
        case 'o': hs.org = optarg; break;
        case 's': hs.src = optarg; break;
        case 'F': hs.keys_file = optarg; break;
        case 'y': hs.upgrade_only = 1; break;
        case 'C': hs.channel = optarg; break;
        case 'S': hs.sub_path = optarg; break;
        case 'P': hs.pub_path = optarg; break;
        case 'n': hs.n = atol(optarg); break;
        case 'd': hs.duration = atof(optarg); break;
        case 'm': hs.max_msgs = atol(optarg); break;
        case 'r': hs.rate = atof(optarg); break;
        case 'w': hs.window = atol(optarg); break;
        case 'q': hs.depth = atol(optarg); break;
        case 'b': hs.size = atol(optarg); break;
        case 'H': hs.hold = atof(optarg); break;
        case 'R': hs.ready_file = optarg; break;
        case 'c': hs.conc = atol(optarg); break;
        case 'x': hs.http = 1; break;
        case 'D': hs.drain = atof(optarg); break;
        case 'Q': hs.quiet = 1; break;
        case 'W':
            for (colon = strtok(optarg, ","); colon != NULL;
                 colon = strtok(NULL, ","))
            {
                if (hs.npids < HS_MAX_PIDS) {
                    hs.pids[hs.npids++] = atoi(colon);
                }
            }

            break;
        default: usage();
        }
    }

    /* targets: 127.0.0.0/8 only */
    if (parse_target(hs.host, &hs.addr, &hs.port) != 0) {
        fprintf(stderr, "hsload: only 127.0.0.0/8 targets, ADDR:PORT: %s\n",
                hs.host);
        return 2;
    }

    if (hs.host_b[0]
        && parse_target(hs.host_b, &hs.addr_b, &hs.port_b) != 0)
    {
        fprintf(stderr, "hsload: only 127.0.0.0/8 targets, ADDR:PORT: %s\n",
                hs.host_b);
        return 2;
    }

    if (hs.depth < 0) {
        hs.depth = hs.mode == MODE_INGEST && !hs.http ? 100 : 16;
    }

    if (hs.mode == MODE_INGEST && hs.http && hs.depth > 16) {
        hs.depth = 16;
    }

    if (hs.n < 1 || hs.n > 1000000 || hs.depth < 1 || hs.depth > 100000
        || hs.size < 40 || hs.size > 60000 || hs.conc < 1
        || hs.duration <= 0 || hs.duration > 3600 || hs.hold > 3600
        || hs.window < 0 || hs.window >= HS_WRING / 2 || hs.rate <= 0
        || hs.rate > 1e6 || hs.max_msgs < 1)
    {
        fprintf(stderr, "hsload: an option out of range\n");
        return 2;
    }

    if (hs.mode == MODE_RATE) {
        hs.window = 0;
    }

    if (hs.channel == NULL) {
        hs.channel = hs.kind == KIND_HOOKSTREAM ? "deliveries" : "bench";
    }

    if (hs.sub_path == NULL && hs.mode != MODE_INGEST
        && !(hs.mode == MODE_IDLE && hs.http))
    {
        if (hs.kind == KIND_HOOKSTREAM) {
            if (hs.key == NULL && hs.mode != MODE_ORGS
                && hs.mode != MODE_CHURN)
            {
                fprintf(stderr, "hsload: -k KEY is needed\n");
                return 2;
            }

            snprintf(path, sizeof(path), "/v1/ws?token=%s", hs.key);

        } else {
            snprintf(path, sizeof(path), "/sub/%s", hs.channel);
        }

        hs.sub_path = strdup(path);
    }

    if (hs.pub_path == NULL) {
        if (hs.kind == KIND_HOOKSTREAM) {
            hs.pub_path = "/internal/publish";

        } else {
            snprintf(path, sizeof(path), "/pub/%s", hs.channel);
            hs.pub_path = strdup(path);
        }
    }

    if (hs.keys_file) {
        load_keys();
    }

    if (hs.mode == MODE_ORGS && hs.kind == KIND_HOOKSTREAM
        && hs.nkeys < hs.n)
    {
        fprintf(stderr, "hsload: orgs needs -F FILE with at least -n N"
                " lines\n");
        return 2;
    }

    if (hs.mode == MODE_CHURN && hs.kind == KIND_HOOKSTREAM
        && hs.key == NULL && hs.nkeys == 0)
    {
        fprintf(stderr, "hsload: churn needs -k KEY or -F FILE\n");
        return 2;
    }

    if ((hs.mode == MODE_FANOUT || hs.mode == MODE_RATE)
        && hs.kind == KIND_HOOKSTREAM && hs.org == NULL)
    {
        fprintf(stderr, "hsload: -o ORG is needed\n");
        return 2;
    }

    if (hs.mode == MODE_INGEST
        && (hs.src == NULL || (!hs.http && hs.key == NULL)))
    {
        fprintf(stderr, "hsload: ingest needs -s SRC (and -k KEY)\n");
        return 2;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    raise_nofile(hs.n + 64);

    hs.ep = epoll_create1(EPOLL_CLOEXEC);
    hs.conns = calloc(hs.n + 1, sizeof(conn_t));
    hs.rbuf = malloc(HS_RBUF_SIZE);
    hs.msg = malloc(hs.size + 1024);
    hs.wcnt = calloc(HS_WRING, sizeof(uint32_t));
    hs.wfail = calloc(HS_WRING, 1);
    hs.wtime = calloc(HS_WRING, sizeof(uint64_t));

    if (hs.ep < 0 || hs.conns == NULL || hs.rbuf == NULL || hs.msg == NULL
        || hs.wcnt == NULL || hs.wfail == NULL || hs.wtime == NULL)
    {
        fprintf(stderr, "hsload: out of memory\n");
        return 1;
    }

    hs.rnd = (uint32_t) now_ns() | 1;

    for (i = 0; i <= hs.n; i++) {
        hs.conns[i].fd = -1;
        hs.conns[i].idx = i;
        hs.conns[i].last_seq = hs.mode == MODE_ORGS ? i - hs.n : -1;

        if (hs.mode == MODE_INGEST) {
            hs.conns[i].role = hs.http ? ROLE_HTTPIN : ROLE_WSIN;

        } else if (hs.mode == MODE_CHURN) {
            hs.conns[i].role = ROLE_CHURN;

        } else if (hs.mode == MODE_IDLE && hs.http) {
            hs.conns[i].role = ROLE_KA;

        } else {
            hs.conns[i].role = ROLE_SUB;
        }

        if (hs.mode == MODE_INGEST || i == hs.n) {
            hs.conns[i].fifo_t = calloc(hs.depth, sizeof(uint64_t));
            hs.conns[i].fifo_s = calloc(hs.depth, sizeof(int64_t));

            if (hs.conns[i].fifo_t == NULL || hs.conns[i].fifo_s == NULL) {
                fprintf(stderr, "hsload: out of memory\n");
                return 1;
            }
        }
    }

    if (hs.mode == MODE_CHURN) {
        /* every key once, so that the authority's answers are cached */
        now = now_ns();
        hs.running = 1;
        run_loop(now + (uint64_t) (hs.connect_timeout * HS_NSEC),
                 churn_warm);
        hs.running = 0;
        run_loop(now_ns() + 5 * HS_NSEC, churn_idle);

        if (!hs.quiet) {
            fprintf(stderr, "hsload: warm: %llu connects in %.2fs, %llu"
                    " errors\n", (unsigned long long) hs.cycles_done,
                    (now_ns() - now) / 1e9,
                    (unsigned long long) hs.churn_errors);
        }

        if (stop_flag || !churn_warm()) {
            report();
            return 1;
        }

        memset(&hs.hist, 0, sizeof(hist_t));
        memset(&hs.hist_upgrade, 0, sizeof(hist_t));
        memset(hs.codes, 0, sizeof(hs.codes));
        hs.churn_errors = 0;
        hs.cycles_done = 0;
        hs.failed = 0;
        hs.bad_status = 0;

        hs.t_start = now_ns();
        hs.t_stop = hs.t_start + (uint64_t) (hs.duration * HS_NSEC);
        hs.running = 1;
        cpu_mark(0);
        run_loop(hs.t_stop, NULL);
        hs.running = 0;
        run_loop(now_ns() + (uint64_t) (hs.drain * HS_NSEC), churn_idle);
        cpu_mark(1);

        progress(" (end)");
        report();

        return 0;
    }

    /* connect everything, a bounded number at a time */
    now = now_ns();

    open_more();
    run_loop(now + (uint64_t) (hs.connect_timeout * HS_NSEC), subs_settled);

    if (!hs.quiet) {
        fprintf(stderr, "hsload: %ld/%ld connected in %.2fs (%ld failed%s)"
                "\n", hs.live, hs.n, (now_ns() - now) / 1e9, hs.failed,
                hs.bad_status ? ", an HTTP status other than 101" : "");
    }

    if (stop_flag) {
        report();
        return 1;
    }

    if (hs.live == 0) {
        fprintf(stderr, "hsload: no connection could be opened%s\n",
                hs.bad_status ? " (see last_bad_status)" : "");
        report();
        return 1;
    }

    switch (hs.mode) {

    case MODE_IDLE:
        if (hs.ready_file) {
            f = fopen(hs.ready_file, "w");
            if (f != NULL) {
                fprintf(f, "%ld\n", hs.live);
                fclose(f);
            }
        }

        printf("READY %ld\n", hs.live);
        fflush(stdout);
        hs.t_start = now_ns();
        run_loop(hs.t_start + (uint64_t) (hs.hold * HS_NSEC), NULL);
        break;

    case MODE_INGEST:
        hs.t_start = now_ns();
        hs.t_stop = hs.t_start + (uint64_t) (hs.duration * HS_NSEC);
        hs.running = 1;
        cpu_mark(0);

        for (i = 0; i < hs.n; i++) {
            if (hs.conns[i].state == ST_OPEN) {
                send_ingest(&hs.conns[i]);
            }
        }

        run_loop(hs.t_stop, NULL);
        hs.t_stop = now_ns();
        hs.running = 0;
        run_loop(hs.t_stop + (uint64_t) (hs.drain * HS_NSEC),
                 ingest_drained);
        cpu_mark(1);
        break;

    default:
        /* fanout, rate, orgs */

        /*
         * let the server finish registering the subscribers: a 101 does
         * not say the subscriber is on its channel yet, and an early
         * message can miss it (seen with nchan and 5,000 channels on a
         * busy machine, with half a second)
         */
        run_loop(now_ns() + (hs.mode == MODE_ORGS ? 2 : 0.5) * HS_NSEC,
                 NULL);

        hs.pub = &hs.conns[hs.n];
        hs.pub->role = ROLE_PUB;

        if (conn_open(hs.pub) != 0) {
            return 1;
        }

        run_loop(now_ns() + 5 * HS_NSEC, pub_ready);

        if (hs.pub->state != ST_OPEN) {
            fprintf(stderr, "hsload: the publisher could not connect\n");
            report();
            return 1;
        }

        hs.publishing = 1;
        hs.t_start = now_ns();
        hs.next_due = hs.t_start;
        hs.t_stop = hs.t_start + (uint64_t) (hs.duration * HS_NSEC);
        cpu_mark(0);
        pub_pump();
        run_loop(hs.t_stop, NULL);

        hs.publishing = 0;
        run_loop(now_ns() + (uint64_t) (hs.drain * HS_NSEC), drained);
        cpu_mark(1);
        break;
    }

    progress(" (end)");
    report();

    return 0;
}
