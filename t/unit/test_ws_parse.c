
/*
 * Copyright (C) hookstream
 */


/*
 * Unit tests of the frame codec.  Frames are built here by hand (not with
 * the codec's encoder) and every input is fed whole, one byte at a time,
 * cut in two at every position (short inputs) and in random pieces; each
 * piece is a separate allocation of its exact size, so that AddressSanitizer
 * sees any read past the bytes given.  Every way of feeding must give the
 * same transcript of events.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_hookstream_ws_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define FIN     0x80
#define RSV1    0x40
#define RSV2    0x20
#define RSV3    0x10

#define OP_CONT    NGX_HOOKSTREAM_WS_OP_CONT
#define OP_TEXT    NGX_HOOKSTREAM_WS_OP_TEXT
#define OP_BINARY  NGX_HOOKSTREAM_WS_OP_BINARY
#define OP_CLOSE   NGX_HOOKSTREAM_WS_OP_CLOSE
#define OP_PING    NGX_HOOKSTREAM_WS_OP_PING
#define OP_PONG    NGX_HOOKSTREAM_WS_OP_PONG

/* length encodings a test frame may be forced into */
#define LEN_MIN    0
#define LEN_16     16
#define LEN_64     64

#define UNMASKED   1

/* inputs up to this size are also cut in two at every position */
#define ALL_SPLITS_MAX  600

#define RANDOM_RUNS     24


typedef struct {
    u_char      *data;
    size_t       len;
    size_t       size;
} test_buf_t;


typedef struct {
    uint64_t     max_message;
    ngx_uint_t   deflate;
} test_conf_t;


typedef struct {
    test_buf_t   log;        /* transcript, NUL-terminated */
    test_buf_t   msg;        /* the data message being received */
    ngx_uint_t   msg_opcode;
    ngx_uint_t   msg_compressed;
    ngx_uint_t   in_message;
    char         bad[200];   /* first broken invariant, if any */
} test_run_t;


static void test_ok(int ok, const char *fmt, ...);
static void test_buf_add(test_buf_t *b, const void *data, size_t len);
static void test_buf_str(test_buf_t *b, const char *s);
static void test_buf_free(test_buf_t *b);
static void test_frame(test_buf_t *out, ngx_uint_t b0, const void *payload,
    size_t len, ngx_uint_t lenform, ngx_uint_t flags);
static void test_close_frame(test_buf_t *out, ngx_uint_t code,
    const char *reason);
static uint32_t test_rand(uint32_t *seed);
static uint32_t test_hash(const u_char *p, size_t len);
static void test_log_bytes(test_buf_t *log, const u_char *p, size_t len);
static void test_run_init(test_run_t *r);
static void test_run_free(test_run_t *r);
static void test_invariant(test_run_t *r, const char *what);
static ngx_int_t test_feed(ngx_hookstream_ws_parser_t *p, test_run_t *r,
    const u_char *data, size_t len);
static void test_finish(ngx_hookstream_ws_parser_t *p, test_run_t *r);
static void test_event(ngx_hookstream_ws_parser_t *p, test_run_t *r,
    ngx_hookstream_ws_event_t *ev, u_char *chunk, u_char *pos);
static void test_drive(const char *name, const test_conf_t *conf,
    const test_buf_t *in, const char *expect);
static void test_expect(const char *name, const test_buf_t *in,
    const char *expect);
static void test_expect_conf(const char *name, uint64_t max,
    ngx_uint_t deflate, const test_buf_t *in, const char *expect);
static int test_utf8_ref(const u_char *p, size_t len);

static void test_basic(void);
static void test_lengths(void);
static void test_big(void);
static void test_fragments(void);
static void test_utf8_messages(void);
static void test_deflate(void);
static void test_bad_frames(void);
static void test_close(void);
static void test_max_message(void);
static void test_empty(void);
static void test_slices(void);
static void test_encoder(void);
static void test_mask(void);
static void test_utf8(void);
static void test_close_codes(void);


static ngx_uint_t  test_n;
static ngx_uint_t  test_failed;
static u_char      test_key[4] = { 0x37, 0xfa, 0x21, 0x3d };


static void
test_ok(int ok, const char *fmt, ...)
{
    va_list  args;

    test_n++;

    if (!ok) {
        test_failed++;
    }

    printf("%sok %u - ", ok ? "" : "not ", (unsigned) test_n);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
}


static void
test_buf_add(test_buf_t *b, const void *data, size_t len)
{
    u_char  *p;
    size_t   size;

    if (b->len + len + 1 > b->size) {
        size = (b->len + len + 1) * 2;

        p = realloc(b->data, size);
        if (p == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }

        b->data = p;
        b->size = size;
    }

    if (len) {
        memcpy(b->data + b->len, data, len);
    }

    b->len += len;
    b->data[b->len] = '\0';
}


static void
test_buf_str(test_buf_t *b, const char *s)
{
    test_buf_add(b, s, strlen(s));
}


static void
test_buf_free(test_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->size = 0;
}


/* a client frame, masked with test_key (rotated per frame) */

static void
test_frame(test_buf_t *out, ngx_uint_t b0, const void *payload, size_t len,
    ngx_uint_t lenform, ngx_uint_t flags)
{
    u_char         h[14], key[4];
    size_t         n, i;
    uint64_t       l;
    const u_char  *src;

    static ngx_uint_t  turn;

    for (i = 0; i < 4; i++) {
        key[i] = (u_char) (test_key[(i + turn) & 3] + turn);
    }

    turn++;

    h[0] = (u_char) b0;
    n = 2;

    if (lenform == LEN_64 || (lenform == LEN_MIN && len > 0xffff)) {
        h[1] = 127;
        l = len;

        for (i = 9; i >= 2; i--) {
            h[i] = (u_char) l;
            l >>= 8;
        }

        n = 10;

    } else if (lenform == LEN_16 || (lenform == LEN_MIN && len > 125)) {
        h[1] = 126;
        h[2] = (u_char) (len >> 8);
        h[3] = (u_char) len;
        n = 4;

    } else {
        h[1] = (u_char) len;
    }

    if (!(flags & UNMASKED)) {
        h[1] |= 0x80;
        memcpy(&h[n], key, 4);
        n += 4;
    }

    test_buf_add(out, h, n);

    src = payload;

    for (i = 0; i < len; i++) {
        h[0] = (flags & UNMASKED) ? src[i] : (u_char) (src[i] ^ key[i & 3]);
        test_buf_add(out, h, 1);
    }
}


static void
test_close_frame(test_buf_t *out, ngx_uint_t code, const char *reason)
{
    u_char  pl[200];
    size_t  n;

    pl[0] = (u_char) (code >> 8);
    pl[1] = (u_char) code;
    n = strlen(reason);
    memcpy(pl + 2, reason, n);

    test_frame(out, FIN | OP_CLOSE, pl, n + 2, LEN_MIN, 0);
}


static uint32_t
test_rand(uint32_t *seed)
{
    uint32_t  x;

    x = *seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;

    return x;
}


static uint32_t
test_hash(const u_char *p, size_t len)
{
    uint32_t  h;

    h = 2166136261u;

    while (len--) {
        h = (h ^ *p++) * 16777619u;
    }

    return h;
}


/*
 * Transcript items, space separated:
 *   T"text"  B"bin"  zT"..." (compressed)  P"ping"  O"pong"
 *   C1000"reason"  E1002 (the parser failed with that code)
 * bytes outside printable ASCII are \xHH; payloads over 64 bytes are
 * [length:fnv1a].
 */

static void
test_log_bytes(test_buf_t *log, const u_char *p, size_t len)
{
    char    tmp[32];
    size_t  i;

    if (len > 64) {
        snprintf(tmp, sizeof(tmp), "[%u:%08x]", (unsigned) len,
                 (unsigned) test_hash(p, len));
        test_buf_str(log, tmp);
        return;
    }

    test_buf_str(log, "\"");

    for (i = 0; i < len; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
            test_buf_add(log, &p[i], 1);

        } else {
            snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
            test_buf_str(log, tmp);
        }
    }

    test_buf_str(log, "\"");
}


static void
test_run_init(test_run_t *r)
{
    memset(r, 0, sizeof(test_run_t));
    test_buf_str(&r->log, "");
}


static void
test_run_free(test_run_t *r)
{
    test_buf_free(&r->log);
    test_buf_free(&r->msg);
}


static void
test_invariant(test_run_t *r, const char *what)
{
    if (r->bad[0] == '\0') {
        snprintf(r->bad, sizeof(r->bad), "%s", what);
    }
}


static void
test_event(ngx_hookstream_ws_parser_t *p, test_run_t *r,
    ngx_hookstream_ws_event_t *ev, u_char *chunk, u_char *pos)
{
    char  tmp[32];

    switch (ev->opcode) {

    case OP_TEXT:
    case OP_BINARY:

        if (ev->data < chunk || ev->data + ev->len > pos) {
            test_invariant(r, "data slice outside the consumed input");
        }

        if (r->in_message) {
            if (ev->opcode != r->msg_opcode) {
                test_invariant(r, "opcode changed inside a message");
            }

            if (ev->compressed != r->msg_compressed) {
                test_invariant(r, "compressed flag changed in a message");
            }

        } else {
            r->in_message = 1;
            r->msg_opcode = ev->opcode;
            r->msg_compressed = ev->compressed;
            r->msg.len = 0;
        }

        test_buf_add(&r->msg, ev->data, ev->len);

        if (p->max_message && r->msg.len > p->max_message) {
            test_invariant(r, "message longer than max_message");
        }

        if (!ev->fin) {
            break;
        }

        if (r->msg_opcode == OP_TEXT && !r->msg_compressed
            && !test_utf8_ref(r->msg.data, r->msg.len))
        {
            test_invariant(r, "invalid UTF-8 text message delivered");
        }

        if (r->log.len) {
            test_buf_str(&r->log, " ");
        }

        if (r->msg_compressed) {
            test_buf_str(&r->log, "z");
        }

        test_buf_str(&r->log, r->msg_opcode == OP_TEXT ? "T" : "B");
        test_log_bytes(&r->log, r->msg.data, r->msg.len);
        r->in_message = 0;
        break;

    case OP_PING:
    case OP_PONG:
    case OP_CLOSE:

        if (ev->len > 125 || !ev->fin || ev->compressed) {
            test_invariant(r, "bad control event");
        }

        if (r->log.len) {
            test_buf_str(&r->log, " ");
        }

        if (ev->opcode == OP_CLOSE) {
            snprintf(tmp, sizeof(tmp), "C%u", (unsigned) ev->close_code);
            test_buf_str(&r->log, tmp);

            if ((ev->len == 0) != (ev->close_code == 0)
                || (ev->len && ev->reason_len != ev->len - 2)
                || (ev->close_code
                    && !ngx_hookstream_ws_close_code_valid(ev->close_code)))
            {
                test_invariant(r, "bad close event");
            }

            test_log_bytes(&r->log, ev->reason, ev->reason_len);

        } else {
            test_buf_str(&r->log, ev->opcode == OP_PING ? "P" : "O");
            test_log_bytes(&r->log, ev->data, ev->len);
        }

        break;

    default:
        test_invariant(r, "unknown event opcode");
    }
}


/* feeds one piece, in its own exactly sized allocation */

static ngx_int_t
test_feed(ngx_hookstream_ws_parser_t *p, test_run_t *r, const u_char *data,
    size_t len)
{
    u_char                     *chunk, *pos, *last, *before;
    ngx_int_t                   rc;
    ngx_hookstream_ws_event_t   ev;

    chunk = malloc(len ? len : 1);
    if (chunk == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }

    memcpy(chunk, data, len);

    pos = chunk;
    last = chunk + len;

    for ( ;; ) {
        before = pos;
        memset(&ev, 0xa5, sizeof(ev));

        rc = ngx_hookstream_ws_parse(p, &pos, last, &ev);

        if (rc == NGX_OK) {
            if (pos <= before || pos > last) {
                test_invariant(r, "NGX_OK without progress");
                break;
            }

            test_event(p, r, &ev, chunk, pos);
            continue;
        }

        if (rc == NGX_AGAIN) {
            if (pos != last) {
                test_invariant(r, "NGX_AGAIN with bytes left");
            }

            break;
        }

        if (rc != NGX_ERROR) {
            test_invariant(r, "unexpected return code");
            break;
        }

        if (p->close_code != 1002 && p->close_code != 1007
            && p->close_code != 1009)
        {
            test_invariant(r, "bad close code on error");
        }

        if (p->close_reason == NULL) {
            test_invariant(r, "no close reason on error");
        }

        pos = chunk;

        if (ngx_hookstream_ws_parse(p, &pos, last, &ev) != NGX_ERROR) {
            test_invariant(r, "parser left the error state");
        }

        break;
    }

    free(chunk);

    return rc;
}


static void
test_finish(ngx_hookstream_ws_parser_t *p, test_run_t *r)
{
    char  tmp[32];

    if (p->close_code) {
        if (r->log.len) {
            test_buf_str(&r->log, " ");
        }

        snprintf(tmp, sizeof(tmp), "E%u", (unsigned) p->close_code);
        test_buf_str(&r->log, tmp);
    }
}


static void
test_drive(const char *name, const test_conf_t *conf, const test_buf_t *in,
    const char *expect)
{
    size_t                       i, off, n;
    uint32_t                     seed;
    ngx_uint_t                   mode, run, runs, good;
    test_run_t                   r;
    ngx_hookstream_ws_parser_t   p;
    static const char           *modes[] = {
                                     "whole", "byte by byte",
                                     "every split in two", "random splits"
                                 };

    for (mode = 0; mode < 4; mode++) {

        if (mode == 2 && in->len > ALL_SPLITS_MAX) {
            runs = 0;

        } else if (mode == 2) {
            runs = in->len + 1;

        } else if (mode == 3) {
            runs = RANDOM_RUNS;

        } else {
            runs = 1;
        }

        good = 1;

        for (run = 0; run < runs && good; run++) {
            test_run_init(&r);
            ngx_hookstream_ws_parser_init(&p);
            p.max_message = conf->max_message;
            p.deflate = conf->deflate;

            switch (mode) {

            case 0:
                test_feed(&p, &r, in->data, in->len);
                break;

            case 1:
                for (i = 0; i < in->len; i++) {
                    if (test_feed(&p, &r, in->data + i, 1) == NGX_ERROR) {
                        break;
                    }
                }

                break;

            case 2:
                if (test_feed(&p, &r, in->data, run) != NGX_ERROR) {
                    test_feed(&p, &r, in->data + run, in->len - run);
                }

                break;

            default:
                seed = 0x9e3779b9u * (uint32_t) (run + 1);
                off = 0;

                while (off < in->len) {
                    /* mostly small pieces, now and then a large one */
                    n = (test_rand(&seed) & 3) ? 1 + test_rand(&seed) % 20
                                               : 1 + test_rand(&seed) % 5000;

                    if (n > in->len - off) {
                        n = in->len - off;
                    }

                    if (test_feed(&p, &r, in->data + off, n) == NGX_ERROR) {
                        break;
                    }

                    off += n;
                }

                /* an empty piece at the end must be harmless */
                test_feed(&p, &r, in->data, 0);
            }

            test_finish(&p, &r);

            if (r.bad[0] || strcmp((char *) r.log.data, expect) != 0) {
                good = 0;

                if (runs > 1) {
                    printf("# run %u\n", (unsigned) run);
                }

                printf("# expected: %s\n#      got: %s\n", expect,
                       (char *) r.log.data);

                if (r.bad[0]) {
                    printf("# invariant: %s\n", r.bad);
                }
            }

            test_run_free(&r);
        }

        if (runs) {
            test_ok(good, "%s (%s)", name, modes[mode]);
        }
    }
}


static void
test_expect(const char *name, const test_buf_t *in, const char *expect)
{
    test_conf_t  conf = { 0, 0 };

    test_drive(name, &conf, in, expect);
}


static void
test_expect_conf(const char *name, uint64_t max, ngx_uint_t deflate,
    const test_buf_t *in, const char *expect)
{
    test_conf_t  conf;

    conf.max_message = max;
    conf.deflate = deflate;

    test_drive(name, &conf, in, expect);
}


/* a decoder written apart from the codec's validator, as a reference */

static int
test_utf8_ref(const u_char *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp, min;

    for (i = 0; i < len; i += n) {

        if (p[i] < 0x80) {
            n = 1;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            n = 2;
            cp = p[i] & 0x1f;
            min = 0x80;

        } else if ((p[i] & 0xf0) == 0xe0) {
            n = 3;
            cp = p[i] & 0x0f;
            min = 0x800;

        } else if ((p[i] & 0xf8) == 0xf0) {
            n = 4;
            cp = p[i] & 0x07;
            min = 0x10000;

        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


static void
test_basic(void)
{
    test_buf_t   in;
    static u_char  rfc_hello[] = {
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
    };
    static u_char  rfc_unmasked[] = {
        0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f
    };

    memset(&in, 0, sizeof(in));
    test_buf_add(&in, rfc_hello, sizeof(rfc_hello));
    test_expect("RFC 6455 5.7 masked Hello", &in, "T\"Hello\"");
    test_buf_free(&in);

    test_buf_add(&in, rfc_unmasked, sizeof(rfc_unmasked));
    test_expect("unmasked frame", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "Hello", 5, LEN_MIN, UNMASKED);
    test_expect("unmasked frame (built)", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_PING, "x", 1, LEN_MIN, UNMASKED);
    test_expect("unmasked ping", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "a", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_BINARY, "\x00\xff\x80", 3, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "pi", 2, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PONG, "po", 2, LEN_MIN, 0);
    test_frame(&in, FIN | OP_TEXT, "second", 6, LEN_MIN, 0);
    test_close_frame(&in, 1000, "bye");
    test_expect("several frames in a row", &in,
                "T\"a\" B\"\\x00\\xff\\x80\" P\"pi\" O\"po\" T\"second\" "
                "C1000\"bye\"");
    test_buf_free(&in);

    /* the error stops the run: nothing after it is reported */

    test_frame(&in, FIN | OP_TEXT, "ok", 2, LEN_MIN, 0);
    test_frame(&in, FIN | OP_TEXT, "no", 2, LEN_MIN, UNMASKED);
    test_frame(&in, FIN | OP_TEXT, "never", 5, LEN_MIN, 0);
    test_expect("error stays error", &in, "T\"ok\" E1002");
    test_buf_free(&in);
}


static void
test_lengths(void)
{
    u_char      *pl;
    size_t       i;
    char         expect[64];
    test_buf_t   in;

    memset(&in, 0, sizeof(in));

    pl = malloc(70000);
    if (pl == NULL) {
        exit(2);
    }

    for (i = 0; i < 70000; i++) {
        pl[i] = (u_char) (i * 7 + (i >> 8));
    }

    /* RFC 6455 5.7: 256 bytes with a 16-bit length */

    test_frame(&in, FIN | OP_BINARY, pl, 256, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "B[256:%08x]",
             (unsigned) test_hash(pl, 256));
    test_expect("16-bit length, 256 bytes", &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_BINARY, pl, 125, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "B[125:%08x]",
             (unsigned) test_hash(pl, 125));
    test_expect("7-bit length, 125 bytes", &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_BINARY, pl, 126, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "B[126:%08x]",
             (unsigned) test_hash(pl, 126));
    test_expect("16-bit length, 126 bytes", &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_BINARY, pl, 65535, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "B[65535:%08x]",
             (unsigned) test_hash(pl, 65535));
    test_expect("16-bit length, 65535 bytes", &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_BINARY, pl, 65536, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "B[65536:%08x]",
             (unsigned) test_hash(pl, 65536));
    test_expect("64-bit length, 65536 bytes", &in, expect);
    test_buf_free(&in);

    /* lengths longer than needed are accepted */

    test_frame(&in, FIN | OP_TEXT, "abc", 3, LEN_16, 0);
    test_frame(&in, FIN | OP_TEXT, "defg", 4, LEN_64, 0);
    test_expect("short payloads in long length forms", &in,
                "T\"abc\" T\"defg\"");
    test_buf_free(&in);

    /* most significant bit of a 64-bit length */

    test_buf_add(&in, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x05"
                      "\x01\x02\x03\x04", 14);
    test_expect("64-bit length with the top bit set", &in, "E1002");
    test_buf_free(&in);

    test_buf_add(&in, "\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff"
                      "\x01\x02\x03\x04\x05", 15);
    test_expect("largest 64-bit length accepted without a limit", &in, "");
    test_buf_free(&in);

    free(pl);
}


static void
test_big(void)
{
    u_char      *pl;
    size_t       i, n;
    char         expect[64];
    uint32_t     seed;
    test_buf_t   in;

    memset(&in, 0, sizeof(in));

    pl = malloc(70000);
    if (pl == NULL) {
        exit(2);
    }

    seed = 12345;

    for (i = 0; i < 70000; i++) {
        pl[i] = (u_char) test_rand(&seed);
    }

    test_frame(&in, FIN | OP_BINARY, pl, 70000, LEN_64, 0);
    snprintf(expect, sizeof(expect), "B[70000:%08x]",
             (unsigned) test_hash(pl, 70000));
    test_expect("70 KB binary message, 64-bit length", &in, expect);
    test_buf_free(&in);

    /* a text of 1-, 2-, 3- and 4-byte characters */

    for (n = 0; n < 70000 - 4; ) {
        switch (test_rand(&seed) & 3) {
        case 0:
            pl[n++] = 'a' + test_rand(&seed) % 26;
            break;
        case 1:
            memcpy(pl + n, "\xc3\xa9", 2);
            n += 2;
            break;
        case 2:
            memcpy(pl + n, "\xe2\x82\xac", 3);
            n += 3;
            break;
        default:
            memcpy(pl + n, "\xf0\x9f\x98\x80", 4);
            n += 4;
        }
    }

    test_frame(&in, FIN | OP_TEXT, pl, n, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "T[%u:%08x]", (unsigned) n,
             (unsigned) test_hash(pl, n));
    test_expect("70 KB UTF-8 text, 64-bit length", &in, expect);
    test_buf_free(&in);

    /* the same text in four fragments cut inside characters */

    test_frame(&in, OP_TEXT, pl, 1001, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "mid", 3, LEN_MIN, 0);
    test_frame(&in, OP_CONT, pl + 1001, 30002, LEN_MIN, 0);
    test_frame(&in, OP_CONT, pl + 31003, 3, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, pl + 31006, n - 31006, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "P\"mid\" T[%u:%08x]", (unsigned) n,
             (unsigned) test_hash(pl, n));
    test_expect("70 KB text in fragments", &in, expect);
    test_buf_free(&in);

    free(pl);
}


static void
test_fragments(void)
{
    test_buf_t  in;

    memset(&in, 0, sizeof(in));

    test_frame(&in, OP_TEXT, "Hel", 3, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "lo", 2, LEN_MIN, 0);
    test_expect("RFC 6455 5.7 fragmented Hello", &in, "T\"Hello\"");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "Hel", 3, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "x", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "lo", 2, LEN_MIN, 0);
    test_expect("ping between fragments", &in, "P\"x\" T\"Hello\"");
    test_buf_free(&in);

    test_frame(&in, OP_BINARY, "a", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "", 0, LEN_MIN, 0);
    test_frame(&in, OP_CONT, "b", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PONG, "q", 1, LEN_MIN, 0);
    test_frame(&in, OP_CONT, "", 0, LEN_MIN, 0);
    test_close_frame(&in, 1001, "away");
    test_frame(&in, FIN | OP_CONT, "c", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_TEXT, "next", 4, LEN_MIN, 0);
    test_expect("controls and empty fragments between fragments", &in,
                "P\"\" O\"q\" C1001\"away\" B\"abc\" T\"next\"");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_CONT, "x", 1, LEN_MIN, 0);
    test_expect("continuation without a message", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "done", 4, LEN_MIN, 0);
    test_frame(&in, OP_CONT, "x", 1, LEN_MIN, 0);
    test_expect("continuation after a finished message", &in,
                "T\"done\" E1002");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "a", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_TEXT, "b", 1, LEN_MIN, 0);
    test_expect("text frame inside a fragmented message", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "a", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "", 0, LEN_MIN, 0);
    test_frame(&in, OP_BINARY, "b", 1, LEN_MIN, 0);
    test_expect("binary frame inside a fragmented message", &in,
                "P\"\" E1002");
    test_buf_free(&in);
}


static void
test_utf8_messages(void)
{
    test_buf_t  in;

    memset(&in, 0, sizeof(in));

    /* U+20AC split 2/1 across fragments, a ping in between */

    test_frame(&in, OP_TEXT, "a\xe2\x82", 3, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "p", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "\xac" "b", 2, LEN_MIN, 0);
    test_expect("3-byte character split across fragments", &in,
                "P\"p\" T\"a\\xe2\\x82\\xacb\"");
    test_buf_free(&in);

    /* U+1F600 split 1/1/2 */

    test_frame(&in, OP_TEXT, "\xf0", 1, LEN_MIN, 0);
    test_frame(&in, OP_CONT, "\x9f", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "\x98\x80", 2, LEN_MIN, 0);
    test_expect("4-byte character split across three fragments", &in,
                "T\"\\xf0\\x9f\\x98\\x80\"");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT,
               "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
               "\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 25, LEN_MIN, 0);
    test_expect("boundary code points", &in,
                "T\"\\x7f\\xc2\\x80\\xdf\\xbf\\xe0\\xa0\\x80\\xed\\x9f\\xbf"
                "\\xee\\x80\\x80\\xef\\xbf\\xbf\\xf0\\x90\\x80\\x80"
                "\\xf4\\x8f\\xbf\\xbf\"");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "ok \xc0\x80", 5, LEN_MIN, 0);
    test_expect("overlong 2-byte NUL", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xe0\x80\xaf", 3, LEN_MIN, 0);
    test_expect("overlong 3-byte", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xf0\x8f\xbf\xbf", 4, LEN_MIN, 0);
    test_expect("overlong 4-byte", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xed\xa0\x80", 3, LEN_MIN, 0);
    test_expect("surrogate U+D800", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xed\xbf\xbf", 3, LEN_MIN, 0);
    test_expect("surrogate U+DFFF", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xf4\x90\x80\x80", 4, LEN_MIN, 0);
    test_expect("U+110000", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xf5\x80\x80\x80", 4, LEN_MIN, 0);
    test_expect("lead byte F5", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "a\x80" "b", 3, LEN_MIN, 0);
    test_expect("lone continuation byte", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xfe\xff", 2, LEN_MIN, 0);
    test_expect("bytes FE FF", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "\xe2\x28\xa1", 3, LEN_MIN, 0);
    test_expect("ASCII where a continuation belongs", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "ab\xe2\x82", 4, LEN_MIN, 0);
    test_expect("text message ending mid-character", &in, "E1007");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "ab\xe2\x82", 4, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "", 0, LEN_MIN, 0);
    test_expect("mid-character then an empty final fragment", &in,
                "E1007");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "ab\xe2", 3, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "c", 1, LEN_MIN, 0);
    test_expect("character broken across fragments", &in, "E1007");
    test_buf_free(&in);

    /* the bad byte is found before the rest of the frame has arrived */

    test_buf_add(&in, "\x81\xfe\x10\x00\x00\x00\x00\x00" "abc\xff", 12);
    test_expect("invalid UTF-8 seen before the frame is complete", &in,
                "E1007");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_BINARY, "\xc0\x80\xff", 3, LEN_MIN, 0);
    test_expect("binary messages are not UTF-8 checked", &in,
                "B\"\\xc0\\x80\\xff\"");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_PING, "\xff", 1, LEN_MIN, 0);
    test_expect("ping payloads are not UTF-8 checked", &in, "P\"\\xff\"");
    test_buf_free(&in);
}


static void
test_deflate(void)
{
    test_buf_t  in;

    memset(&in, 0, sizeof(in));

    test_frame(&in, FIN | RSV1 | OP_TEXT, "\xff\x00", 2, LEN_MIN, 0);
    test_expect("RSV1 without permessage-deflate", &in, "E1002");
    test_expect_conf("RSV1 with permessage-deflate", 0, 1, &in,
                     "zT\"\\xff\\x00\"");
    test_buf_free(&in);

    test_frame(&in, RSV1 | OP_TEXT, "\xff", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "", 0, LEN_MIN, 0);
    test_frame(&in, OP_CONT, "\xfe", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "\xfd", 1, LEN_MIN, 0);
    test_frame(&in, FIN | OP_TEXT, "plain", 5, LEN_MIN, 0);
    test_frame(&in, FIN | RSV1 | OP_BINARY, "z", 1, LEN_MIN, 0);
    test_expect_conf("compressed flag on every slice, then reset", 0, 1,
                     &in, "P\"\" zT\"\\xff\\xfe\\xfd\" T\"plain\" zB\"z\"");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "a", 1, LEN_MIN, 0);
    test_frame(&in, FIN | RSV1 | OP_CONT, "b", 1, LEN_MIN, 0);
    test_expect_conf("RSV1 on a continuation frame", 0, 1, &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | RSV1 | OP_PING, "a", 1, LEN_MIN, 0);
    test_expect_conf("RSV1 on a control frame", 0, 1, &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | RSV2 | OP_TEXT, "a", 1, LEN_MIN, 0);
    test_expect_conf("RSV2 with permessage-deflate", 0, 1, &in, "E1002");
    test_expect("RSV2", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | RSV3 | OP_BINARY, "a", 1, LEN_MIN, 0);
    test_expect_conf("RSV3 with permessage-deflate", 0, 1, &in, "E1002");
    test_expect("RSV3", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | RSV1 | RSV2 | RSV3 | OP_CLOSE, "", 0, LEN_MIN, 0);
    test_expect("all reserved bits on a close", &in, "E1002");
    test_buf_free(&in);
}


static void
test_bad_frames(void)
{
    char        name[64], expect[64];
    ngx_uint_t  op;
    test_buf_t  in;
    u_char      pl[126];

    memset(&in, 0, sizeof(in));
    memset(pl, 'x', sizeof(pl));

    for (op = 0x3; op <= 0xf; op++) {
        if (op >= 0x8 && op <= 0xa) {
            continue;
        }

        test_frame(&in, FIN | op, "a", 1, LEN_MIN, 0);
        snprintf(name, sizeof(name), "unknown opcode 0x%x", (unsigned) op);
        test_expect(name, &in, "E1002");
        test_buf_free(&in);
    }

    test_frame(&in, FIN | OP_PING, pl, 125, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PONG, pl, 125, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "P[125:%08x] O[125:%08x]",
             (unsigned) test_hash(pl, 125), (unsigned) test_hash(pl, 125));
    test_expect("125-byte ping and pong", &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_PING, pl, 126, LEN_MIN, 0);
    test_expect("126-byte ping", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_PONG, pl, 5, LEN_16, 0);
    test_expect("pong with a 16-bit length", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_CLOSE, pl, 5, LEN_64, 0);
    test_expect("close with a 64-bit length", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, OP_PING, "a", 1, LEN_MIN, 0);
    test_expect("fragmented ping", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, OP_CLOSE, "", 0, LEN_MIN, 0);
    test_expect("fragmented close", &in, "E1002");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "a", 1, LEN_MIN, 0);
    test_frame(&in, OP_PONG, "a", 1, LEN_MIN, 0);
    test_expect("fragmented pong inside a message", &in, "E1002");
    test_buf_free(&in);
}


static void
test_close(void)
{
    char        name[64], expect[64];
    u_char      pl[125];
    ngx_uint_t  i;
    test_buf_t  in;

    static ngx_uint_t  bad[] = {
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        65535
    };
    static ngx_uint_t  good[] = {
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
        1014, 3000, 3999, 4000, 4999
    };

    memset(&in, 0, sizeof(in));

    test_frame(&in, FIN | OP_CLOSE, "", 0, LEN_MIN, 0);
    test_expect("close without payload", &in, "C0\"\"");
    test_buf_free(&in);

    test_close_frame(&in, 1000, "");
    test_expect("close with a code only", &in, "C1000\"\"");
    test_buf_free(&in);

    test_close_frame(&in, 1000, "bye \xe2\x82\xac");
    test_expect("close with a UTF-8 reason", &in,
                "C1000\"bye \\xe2\\x82\\xac\"");
    test_buf_free(&in);

    pl[0] = 0x03;
    pl[1] = 0xe8;
    memset(pl + 2, 'r', 123);
    test_frame(&in, FIN | OP_CLOSE, pl, 125, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "C1000[123:%08x]",
             (unsigned) test_hash(pl + 2, 123));
    test_expect("close with a 123-byte reason", &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_CLOSE, "\x03", 1, LEN_MIN, 0);
    test_expect("close with a 1-byte payload", &in, "E1002");
    test_buf_free(&in);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        test_close_frame(&in, bad[i], "");
        snprintf(name, sizeof(name), "close code %u refused",
                 (unsigned) bad[i]);
        test_expect(name, &in, "E1002");
        test_buf_free(&in);
    }

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        test_close_frame(&in, good[i], "x");
        snprintf(name, sizeof(name), "close code %u accepted",
                 (unsigned) good[i]);
        snprintf(expect, sizeof(expect), "C%u\"x\"", (unsigned) good[i]);
        test_expect(name, &in, expect);
        test_buf_free(&in);
    }

    test_close_frame(&in, 1000, "bad \xff");
    test_expect("close reason with invalid UTF-8", &in, "E1007");
    test_buf_free(&in);

    test_close_frame(&in, 1000, "cut \xe2\x82");
    test_expect("close reason ending mid-character", &in, "E1007");
    test_buf_free(&in);

    test_close_frame(&in, 1000, "\xed\xa0\x80");
    test_expect("close reason with a surrogate", &in, "E1007");
    test_buf_free(&in);

    test_close_frame(&in, 1004, "\xff");
    test_expect("bad code and bad reason: the code is reported", &in,
                "E1002");
    test_buf_free(&in);
}


static void
test_max_message(void)
{
    char        expect[128], m100[32], m125[32], m101[32];
    u_char      pl[200];
    test_buf_t  in;

    memset(&in, 0, sizeof(in));
    memset(pl, 'm', sizeof(pl));

    snprintf(m100, sizeof(m100), "[100:%08x]", (unsigned) test_hash(pl, 100));
    snprintf(m101, sizeof(m101), "[101:%08x]", (unsigned) test_hash(pl, 101));
    snprintf(m125, sizeof(m125), "[125:%08x]", (unsigned) test_hash(pl, 125));

    test_frame(&in, FIN | OP_TEXT, pl, 100, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "T%s", m100);
    test_expect_conf("message of exactly max_message", 100, 0, &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, pl, 101, LEN_MIN, 0);
    test_expect_conf("message one byte over max_message", 100, 0, &in,
                     "E1009");
    test_buf_free(&in);

    /* the header alone is enough to refuse */

    test_buf_add(&in, "\x82\xff\x00\x00\x00\x01\x00\x00\x00\x00"
                      "\x01\x02\x03\x04", 14);
    test_expect_conf("4 GB declared, refused from the header", 100, 0, &in,
                     "E1009");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, pl, 40, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, pl, 125, LEN_MIN, 0);
    test_frame(&in, OP_CONT, pl, 50, LEN_MIN, 0);
    test_frame(&in, OP_CONT, pl, 0, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, pl, 10, LEN_MIN, 0);
    test_frame(&in, FIN | OP_BINARY, pl, 100, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "P%s T%s B%s", m125, m100, m100);
    test_expect_conf("fragments adding up to exactly max_message", 100, 0,
                     &in, expect);
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, pl, 40, LEN_MIN, 0);
    test_frame(&in, FIN | OP_PING, "", 0, LEN_MIN, 0);
    test_frame(&in, OP_CONT, pl, 50, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, pl, 11, LEN_MIN, 0);
    test_expect_conf("fragments one byte over max_message", 100, 0, &in,
                     "P\"\" E1009");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_PING, pl, 125, LEN_MIN, 0);
    test_close_frame(&in, 1000, "a reason longer than the limit");
    snprintf(expect, sizeof(expect),
             "P%s C1000\"a reason longer than the limit\"", m125);
    test_expect_conf("control frames are not bound by max_message", 10, 0,
                     &in, expect);
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, pl, 101, LEN_MIN, 0);
    snprintf(expect, sizeof(expect), "T%s", m101);
    test_expect_conf("max_message 0 means no limit", 0, 0, &in, expect);
    test_buf_free(&in);
}


static void
test_empty(void)
{
    test_buf_t  in;

    memset(&in, 0, sizeof(in));

    test_frame(&in, FIN | OP_TEXT, "", 0, LEN_MIN, 0);
    test_frame(&in, FIN | OP_BINARY, "", 0, LEN_MIN, 0);
    test_frame(&in, FIN | OP_TEXT, "", 0, LEN_16, 0);
    test_frame(&in, FIN | OP_BINARY, "", 0, LEN_64, 0);
    test_expect("empty messages", &in, "T\"\" B\"\" T\"\" B\"\"");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "", 0, LEN_MIN, 0);
    test_frame(&in, OP_CONT, "", 0, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "", 0, LEN_MIN, 0);
    test_expect("empty message in three empty fragments", &in, "T\"\"");
    test_buf_free(&in);

    test_frame(&in, OP_BINARY, "ab", 2, LEN_MIN, 0);
    test_frame(&in, FIN | OP_CONT, "", 0, LEN_MIN, 0);
    test_expect("empty final fragment", &in, "B\"ab\"");
    test_buf_free(&in);

    test_frame(&in, FIN | RSV1 | OP_TEXT, "", 0, LEN_MIN, 0);
    test_expect_conf("empty compressed message", 0, 1, &in, "zT\"\"");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "", 0, LEN_MIN, 0);
    test_expect_conf("empty message with max_message 1", 1, 0, &in, "T\"\"");
    test_buf_free(&in);
}


/* event details the transcript does not show */

static void
test_slices(void)
{
    u_char                      *pos;
    u_char                       buf[64];
    test_buf_t                   in;
    ngx_int_t                    rc, rc2;
    ngx_hookstream_ws_event_t    ev;
    ngx_hookstream_ws_parser_t   p;

    memset(&in, 0, sizeof(in));

    test_frame(&in, FIN | OP_TEXT, "Hello", 5, LEN_MIN, 0);
    memcpy(buf, in.data, in.len);

    ngx_hookstream_ws_parser_init(&p);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 6 + 3, &ev);
    test_ok(rc == NGX_OK && ev.opcode == OP_TEXT && ev.len == 3 && !ev.fin
            && ev.data == buf + 6 && memcmp(ev.data, "Hel", 3) == 0
            && pos == buf + 9,
            "slice emitted before the frame is complete");

    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 9, &ev);
    test_ok(rc == NGX_AGAIN && pos == buf + 9, "then NGX_AGAIN");

    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 11, &ev);
    test_ok(rc == NGX_OK && ev.len == 2 && ev.fin && ev.data == buf + 9
            && memcmp(ev.data, "lo", 2) == 0 && pos == buf + 11,
            "last slice has fin");
    test_buf_free(&in);

    /* errors that show after two bytes, before length and key */

    ngx_hookstream_ws_parser_init(&p);
    memcpy(buf, "\x81\x05", 2);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 2, &ev);
    test_ok(rc == NGX_ERROR && p.close_code == 1002
            && strcmp(p.close_reason, "unmasked frame") == 0,
            "unmasked frame refused after two bytes");

    pos = buf;
    memcpy(buf, "\x81\x85", 2);
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 2, &ev);
    rc2 = ngx_hookstream_ws_parse(&p, &pos, buf + 2, &ev);
    test_ok(rc == NGX_ERROR && rc2 == NGX_ERROR && p.close_code == 1002,
            "valid bytes after an error still fail");

    ngx_hookstream_ws_parser_init(&p);
    memcpy(buf, "\x83\x81", 2);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 2, &ev);
    test_ok(rc == NGX_ERROR && p.close_code == 1002,
            "bad opcode refused after two bytes");

    ngx_hookstream_ws_parser_init(&p);
    p.max_message = 1000;
    memcpy(buf, "\x82\xfe\x03\xe9", 4);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 4, &ev);
    rc2 = ngx_hookstream_ws_parse(&p, &pos, pos, &ev);
    test_ok(rc == NGX_AGAIN && rc2 == NGX_AGAIN,
            "length is not judged before the key arrives");
    memcpy(buf, "\x01\x02\x03\x04", 4);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 4, &ev);
    test_ok(rc == NGX_ERROR && p.close_code == 1009
            && strcmp(p.close_reason, "message too big") == 0,
            "1001 bytes declared with max 1000: 1009 from the header");

    /* a control frame's payload comes from the parser's buffer */

    test_frame(&in, FIN | OP_PING, "ping!", 5, LEN_MIN, 0);
    memcpy(buf, in.data, in.len);
    ngx_hookstream_ws_parser_init(&p);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + 8, &ev);
    rc2 = ngx_hookstream_ws_parse(&p, &pos, buf + in.len, &ev);
    test_ok(rc == NGX_AGAIN && rc2 == NGX_OK && ev.opcode == OP_PING
            && ev.len == 5 && ev.fin && memcmp(ev.data, "ping!", 5) == 0
            && ev.data == p.ctl && pos == buf + in.len,
            "split ping delivered whole");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_TEXT, "", 0, LEN_MIN, 0);
    memcpy(buf, in.data, in.len);
    ngx_hookstream_ws_parser_init(&p);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + in.len, &ev);
    test_ok(rc == NGX_OK && ev.opcode == OP_TEXT && ev.len == 0 && ev.fin
            && !ev.compressed && pos == buf + in.len,
            "empty message event");
    test_buf_free(&in);

    test_frame(&in, OP_TEXT, "", 0, LEN_MIN, 0);
    memcpy(buf, in.data, in.len);
    ngx_hookstream_ws_parser_init(&p);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + in.len, &ev);
    test_ok(rc == NGX_AGAIN && pos == buf + in.len,
            "empty non-final fragment gives no event");
    test_buf_free(&in);

    test_frame(&in, FIN | OP_CLOSE, "", 0, LEN_MIN, 0);
    memcpy(buf, in.data, in.len);
    ngx_hookstream_ws_parser_init(&p);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf + in.len, &ev);
    test_ok(rc == NGX_OK && ev.opcode == OP_CLOSE && ev.close_code == 0
            && ev.len == 0 && ev.reason_len == 0,
            "empty close has close_code 0");
    test_buf_free(&in);

    ngx_hookstream_ws_parser_init(&p);
    pos = buf;
    rc = ngx_hookstream_ws_parse(&p, &pos, buf, &ev);
    test_ok(rc == NGX_AGAIN && pos == buf, "empty input");
}


static void
test_encoder(void)
{
    u_char                      *pos;
    u_char                       buf[300], r[130], frame[400], pl[260];
    u_char                       key[4] = { 1, 2, 3, 4 };
    size_t                       n, i, h, len;
    ngx_int_t                    rc;
    ngx_hookstream_ws_event_t    ev;
    ngx_hookstream_ws_parser_t   p;

    n = ngx_hookstream_ws_frame_header(buf, OP_TEXT, 1, 0, 0);
    test_ok(n == 2 && buf[0] == 0x81 && buf[1] == 0, "header for 0 bytes");

    n = ngx_hookstream_ws_frame_header(buf, OP_BINARY, 1, 0, 125);
    test_ok(n == 2 && buf[0] == 0x82 && buf[1] == 125,
            "header for 125 bytes");

    n = ngx_hookstream_ws_frame_header(buf, OP_TEXT, 0, 0, 126);
    test_ok(n == 4 && buf[0] == 0x01 && buf[1] == 126 && buf[2] == 0
            && buf[3] == 126, "header for 126 bytes");

    n = ngx_hookstream_ws_frame_header(buf, OP_TEXT, 1, 1, 65535);
    test_ok(n == 4 && buf[0] == 0xc1 && buf[1] == 126 && buf[2] == 0xff
            && buf[3] == 0xff, "header for 65535 bytes, RSV1");

    n = ngx_hookstream_ws_frame_header(buf, OP_CONT, 1, 0, 65536);
    test_ok(n == 10 && buf[0] == 0x80 && buf[1] == 127
            && memcmp(buf + 2, "\0\0\0\0\0\x01\0\0", 8) == 0,
            "header for 65536 bytes");

    n = ngx_hookstream_ws_frame_header(buf, OP_BINARY, 1, 0,
                                       0x0102030405060708ULL);
    test_ok(n == 10 && buf[1] == 127
            && memcmp(buf + 2, "\x01\x02\x03\x04\x05\x06\x07\x08", 8) == 0,
            "header for a 64-bit length");

    n = ngx_hookstream_ws_frame_header(buf, OP_PONG, 1, 0, 3);
    test_ok(n == 2 && buf[0] == 0x8a && buf[1] == 3, "pong header");

    n = ngx_hookstream_ws_close_frame(buf, 1000, (u_char *) "bye", 3);
    test_ok(n == 7 && memcmp(buf, "\x88\x05\x03\xe8" "bye", 7) == 0,
            "close frame");

    n = ngx_hookstream_ws_close_frame(buf, 0, NULL, 0);
    test_ok(n == 2 && buf[0] == 0x88 && buf[1] == 0, "empty close frame");

    memset(r, 'a', sizeof(r));
    n = ngx_hookstream_ws_close_frame(buf, 1009, r, sizeof(r));
    test_ok(n == 127 && buf[1] == 125, "long close reason is cut");

    memcpy(r + 121, "\xe2\x82\xac", 3);
    n = ngx_hookstream_ws_close_frame(buf, 1009, r, sizeof(r));
    test_ok(n == 125 && buf[1] == 123,
            "long close reason is cut on a character boundary");

    /* encode, add a mask, and parse it back */

    for (i = 0; i < 2; i++) {
        len = i ? 260 : 100;
        memset(pl, 'e', len);

        h = ngx_hookstream_ws_frame_header(frame, OP_TEXT, 1, 0, len);
        frame[1] |= 0x80;
        memcpy(frame + h, key, 4);
        memcpy(frame + h + 4, pl, len);
        ngx_hookstream_ws_mask(frame + h + 4, len, key, 0);

        ngx_hookstream_ws_parser_init(&p);
        pos = frame;
        rc = ngx_hookstream_ws_parse(&p, &pos, frame + h + 4 + len, &ev);
        test_ok(rc == NGX_OK && ev.fin && ev.len == len
                && memcmp(ev.data, pl, len) == 0,
                "encoder output parses back (%u bytes)", (unsigned) len);
    }
}


static void
test_mask(void)
{
    u_char      *a, *b;
    size_t       len, start, i;
    ngx_uint_t   off, r, good;
    u_char       key[4] = { 0xde, 0xad, 0xbe, 0xef };

    a = malloc(300);
    b = malloc(300);
    if (a == NULL || b == NULL) {
        exit(2);
    }

    good = 1;

    for (start = 0; start < 8; start++) {
        for (len = 0; len < 100; len++) {
            for (off = 0; off < 4; off++) {
                for (i = 0; i < 300; i++) {
                    a[i] = b[i] = (u_char) (i * 31);
                }

                r = ngx_hookstream_ws_mask(a + start, len, key, off);

                for (i = 0; i < len; i++) {
                    b[start + i] ^= key[(off + i) & 3];
                }

                if (memcmp(a, b, 300) != 0 || r != ((off + len) & 3)) {
                    good = 0;
                }
            }
        }
    }

    test_ok(good, "mask matches a byte-wise mask at every alignment");

    free(a);
    free(b);
}


static void
test_utf8(void)
{
    size_t       i, k, len;
    uint32_t     s, s2;
    ngx_int_t    rc, rc2, want;
    ngx_uint_t   good;

    static struct {
        const char  *bytes;
        ngx_int_t    rc;
    } cases[] = {
        { "", NGX_OK },
        { "plain ascii text, long enough for the fast path", NGX_OK },
        { "\xc2\xa9", NGX_OK },
        { "\xc2", NGX_AGAIN },
        { "\xe2\x82", NGX_AGAIN },
        { "\xf0\x9f\x98", NGX_AGAIN },
        { "\xf4\x8f\xbf\xbf", NGX_OK },
        { "\xef\xbf\xbf", NGX_OK },
        { "\xed\x9f\xbf", NGX_OK },
        { "\xee\x80\x80", NGX_OK },
        { "\xc0\xaf", NGX_ERROR },
        { "\xc1\xbf", NGX_ERROR },
        { "\xe0\x9f\xbf", NGX_ERROR },
        { "\xf0\x8f\xbf\xbf", NGX_ERROR },
        { "\xed\xa0\x80", NGX_ERROR },
        { "\xed\xbf\xbf", NGX_ERROR },
        { "\xf4\x90\x80\x80", NGX_ERROR },
        { "\xf5\x80\x80\x80", NGX_ERROR },
        { "\xf8\x88\x80\x80\x80", NGX_ERROR },
        { "\x80", NGX_ERROR },
        { "\xbf", NGX_ERROR },
        { "\xfe", NGX_ERROR },
        { "\xff", NGX_ERROR },
        { "\xc2\x41", NGX_ERROR },
        { "\xe2\x82\x41", NGX_ERROR },
        { "abcdefgh\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", NGX_OK },
        { "abcdefghijklmnop\xff" "abcdefghijklmnop", NGX_ERROR },
        { "abcdefgh\xe2\x82\xac" "abcdefgh\xe2\x82", NGX_AGAIN },
    };

    good = 1;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = strlen(cases[i].bytes);
        want = cases[i].rc;

        s = 0;
        rc = ngx_hookstream_utf8_validate(&s,
                                          (u_char *) cases[i].bytes, len);

        if (rc != want) {
            printf("# utf8 case %u: got %d\n", (unsigned) i, (int) rc);
            good = 0;
        }

        /* cut in two at every position: the same answer */

        for (k = 0; k <= len; k++) {
            s2 = 0;
            rc2 = ngx_hookstream_utf8_validate(&s2,
                                               (u_char *) cases[i].bytes, k);
            if (rc2 != NGX_ERROR) {
                rc2 = ngx_hookstream_utf8_validate(&s2,
                                           (u_char *) cases[i].bytes + k,
                                           len - k);
            }

            if (rc2 != want) {
                printf("# utf8 case %u split at %u: got %d\n", (unsigned) i,
                       (unsigned) k, (int) rc2);
                good = 0;
            }
        }
    }

    test_ok(good, "UTF-8 validator cases, whole and split");

    s = 0;
    rc = ngx_hookstream_utf8_validate(&s, (u_char *) "\xff", 1);
    rc2 = ngx_hookstream_utf8_validate(&s, (u_char *) "a", 1);
    test_ok(rc == NGX_ERROR && rc2 == NGX_ERROR,
            "UTF-8 validator stays failed");

    /* every code point, encoded by hand, against the validator */

    good = 1;

    for (s = 0; s <= 0x10ffff; s++) {
        u_char  e[4];

        if (s < 0x80) {
            e[0] = (u_char) s;
            len = 1;

        } else if (s < 0x800) {
            e[0] = (u_char) (0xc0 | (s >> 6));
            e[1] = (u_char) (0x80 | (s & 0x3f));
            len = 2;

        } else if (s < 0x10000) {
            e[0] = (u_char) (0xe0 | (s >> 12));
            e[1] = (u_char) (0x80 | ((s >> 6) & 0x3f));
            e[2] = (u_char) (0x80 | (s & 0x3f));
            len = 3;

        } else {
            e[0] = (u_char) (0xf0 | (s >> 18));
            e[1] = (u_char) (0x80 | ((s >> 12) & 0x3f));
            e[2] = (u_char) (0x80 | ((s >> 6) & 0x3f));
            e[3] = (u_char) (0x80 | (s & 0x3f));
            len = 4;
        }

        s2 = 0;
        rc = ngx_hookstream_utf8_validate(&s2, e, len);
        want = (s >= 0xd800 && s <= 0xdfff) ? NGX_ERROR : NGX_OK;

        if (rc != want) {
            good = 0;
        }
    }

    test_ok(good, "every code point: surrogates refused, others accepted");

    /* every two-byte sequence against the reference decoder */

    good = 1;

    for (s = 0; s < 0x10000; s++) {
        u_char  e[2];

        e[0] = (u_char) (s >> 8);
        e[1] = (u_char) s;

        s2 = 0;
        rc = ngx_hookstream_utf8_validate(&s2, e, 2);

        if ((rc == NGX_OK) != test_utf8_ref(e, 2)) {
            good = 0;
        }
    }

    test_ok(good, "every two-byte input agrees with a reference decoder");
}


static void
test_close_codes(void)
{
    ngx_uint_t  code, n, good;

    good = 1;
    n = 0;

    for (code = 0; code < 70000; code++) {
        if (ngx_hookstream_ws_close_code_valid(code)) {
            n++;

            if (!((code >= 1000 && code <= 1003)
                  || (code >= 1007 && code <= 1014)
                  || (code >= 3000 && code <= 4999)))
            {
                good = 0;
            }
        }
    }

    test_ok(good && n == 4 + 8 + 2000, "close codes accepted: %u",
            (unsigned) n);

    test_ok(!ngx_hookstream_ws_close_code_valid(0)
            && !ngx_hookstream_ws_close_code_valid(999)
            && !ngx_hookstream_ws_close_code_valid(1004)
            && !ngx_hookstream_ws_close_code_valid(1005)
            && !ngx_hookstream_ws_close_code_valid(1006)
            && !ngx_hookstream_ws_close_code_valid(1015)
            && !ngx_hookstream_ws_close_code_valid(1016)
            && !ngx_hookstream_ws_close_code_valid(2999)
            && !ngx_hookstream_ws_close_code_valid(5000),
            "close codes refused: each class");
}


int
main(void)
{
    test_basic();
    test_lengths();
    test_big();
    test_fragments();
    test_utf8_messages();
    test_deflate();
    test_bad_frames();
    test_close();
    test_max_message();
    test_empty();
    test_slices();
    test_encoder();
    test_mask();
    test_utf8();
    test_close_codes();

    printf("%u passed, %u failed\n", (unsigned) (test_n - test_failed),
           (unsigned) test_failed);

    return test_failed ? 1 : 0;
}
