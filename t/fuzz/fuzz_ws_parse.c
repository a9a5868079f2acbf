
/*
 * Copyright (C) hookstream
 */


/*
 * libFuzzer target for the frame codec.  The input is
 *
 *   byte 0      bit 0: deflate; bits 1-2: how max_message is chosen
 *   bytes 1-2   max_message material
 *   byte 3      seed of the piece sizes
 *   the rest    the client's byte stream
 *
 * The stream is parsed twice, whole and in pieces (each piece in its own
 * exactly sized allocation), checking every event for invariants; then
 * both runs must have delivered the same messages, the same control frames
 * and the same error.  The UTF-8 validator is also compared with a
 * separate decoder on the raw stream, and the encoders' output is read
 * back.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_hookstream_ws_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define fuzz_fail(what)                                                      \
    do {                                                                     \
        fprintf(stderr, "fuzz_ws_parse: %s (line %d)\n", what, __LINE__);   \
        abort();                                                             \
    } while (0)


typedef struct {
    u_char      *data;
    size_t       len;
    size_t       size;
} fuzz_buf_t;


typedef struct {
    fuzz_buf_t   log;        /* complete messages and control frames */
    fuzz_buf_t   msg;        /* the data message in progress */
    ngx_uint_t   msg_opcode;
    ngx_uint_t   msg_compressed;
    ngx_uint_t   in_message;
} fuzz_run_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_buf_add(fuzz_buf_t *b, const void *data, size_t len);
static void fuzz_log(fuzz_run_t *r, ngx_uint_t type, ngx_uint_t code,
    const u_char *data, size_t len);
static uint32_t fuzz_rand(uint32_t *seed);
static int fuzz_utf8_ref(const u_char *p, size_t len);
static void fuzz_event(ngx_hookstream_ws_parser_t *p, fuzz_run_t *r,
    ngx_hookstream_ws_event_t *ev, u_char *chunk, u_char *pos);
static ngx_int_t fuzz_feed(ngx_hookstream_ws_parser_t *p, fuzz_run_t *r,
    const u_char *data, size_t len);
static void fuzz_parse(ngx_hookstream_ws_parser_t *p, fuzz_run_t *r,
    uint64_t max, ngx_uint_t deflate, const u_char *data, size_t len,
    uint32_t seed);
static void fuzz_utf8(const u_char *data, size_t len, uint32_t seed);
static void fuzz_encode(const u_char *data, size_t len);


static void
fuzz_buf_add(fuzz_buf_t *b, const void *data, size_t len)
{
    u_char  *p;
    size_t   size;

    if (b->len + len > b->size) {
        size = (b->len + len) * 2 + 64;

        p = realloc(b->data, size);
        if (p == NULL) {
            fuzz_fail("out of memory");
        }

        b->data = p;
        b->size = size;
    }

    if (len) {
        memcpy(b->data + b->len, data, len);
    }

    b->len += len;
}


static void
fuzz_log(fuzz_run_t *r, ngx_uint_t type, ngx_uint_t code, const u_char *data,
    size_t len)
{
    u_char  h[1 + 2 + sizeof(size_t)];

    h[0] = (u_char) type;
    h[1] = (u_char) (code >> 8);
    h[2] = (u_char) code;
    memcpy(h + 3, &len, sizeof(size_t));

    fuzz_buf_add(&r->log, h, sizeof(h));
    fuzz_buf_add(&r->log, data, len);
}


static uint32_t
fuzz_rand(uint32_t *seed)
{
    uint32_t  x;

    x = *seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;

    return x;
}


/* a decoder written apart from the codec's validator */

static int
fuzz_utf8_ref(const u_char *p, size_t len)
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
fuzz_event(ngx_hookstream_ws_parser_t *p, fuzz_run_t *r,
    ngx_hookstream_ws_event_t *ev, u_char *chunk, u_char *pos)
{
    uint32_t  state;

    switch (ev->opcode) {

    case NGX_HOOKSTREAM_WS_OP_TEXT:
    case NGX_HOOKSTREAM_WS_OP_BINARY:

        if (ev->data < chunk || ev->data + ev->len > pos) {
            fuzz_fail("data slice outside the consumed input");
        }

        if (ev->compressed && !p->deflate) {
            fuzz_fail("compressed message without deflate");
        }

        if (r->in_message) {
            if (ev->opcode != r->msg_opcode
                || ev->compressed != r->msg_compressed)
            {
                fuzz_fail("message opcode or compression changed");
            }

        } else {
            r->in_message = 1;
            r->msg_opcode = ev->opcode;
            r->msg_compressed = ev->compressed;
            r->msg.len = 0;
        }

        fuzz_buf_add(&r->msg, ev->data, ev->len);

        if (p->max_message && r->msg.len > p->max_message) {
            fuzz_fail("message longer than max_message");
        }

        if (!ev->fin) {
            break;
        }

        if (r->msg_opcode == NGX_HOOKSTREAM_WS_OP_TEXT
            && !r->msg_compressed
            && !fuzz_utf8_ref(r->msg.data, r->msg.len))
        {
            fuzz_fail("invalid UTF-8 text message delivered");
        }

        fuzz_log(r, r->msg_opcode | (r->msg_compressed ? 0x40 : 0), 0,
                 r->msg.data, r->msg.len);
        r->in_message = 0;
        break;

    case NGX_HOOKSTREAM_WS_OP_PING:
    case NGX_HOOKSTREAM_WS_OP_PONG:
    case NGX_HOOKSTREAM_WS_OP_CLOSE:

        if (ev->len > NGX_HOOKSTREAM_WS_MAX_CONTROL || !ev->fin
            || ev->compressed || ev->data != p->ctl)
        {
            fuzz_fail("bad control event");
        }

        if (ev->opcode == NGX_HOOKSTREAM_WS_OP_CLOSE) {

            if (ev->len == 0) {
                if (ev->close_code != 0 || ev->reason_len != 0) {
                    fuzz_fail("empty close with a code");
                }

            } else {
                state = 0;

                if (!ngx_hookstream_ws_close_code_valid(ev->close_code)
                    || ev->close_code != (ngx_uint_t) ((ev->data[0] << 8)
                                                       | ev->data[1])
                    || ev->reason != ev->data + 2
                    || ev->reason_len != ev->len - 2
                    || !fuzz_utf8_ref(ev->reason, ev->reason_len)
                    || ngx_hookstream_utf8_validate(&state, ev->reason,
                                                    ev->reason_len)
                       != NGX_OK)
                {
                    fuzz_fail("bad close event");
                }
            }
        }

        fuzz_log(r, ev->opcode, ev->close_code, ev->data, ev->len);
        break;

    default:
        fuzz_fail("unknown event opcode");
    }
}


static ngx_int_t
fuzz_feed(ngx_hookstream_ws_parser_t *p, fuzz_run_t *r, const u_char *data,
    size_t len)
{
    u_char                     *chunk, *pos, *last, *before;
    ngx_int_t                   rc;
    ngx_uint_t                  code;
    const char                 *reason;
    ngx_hookstream_ws_event_t   ev;

    chunk = malloc(len ? len : 1);
    if (chunk == NULL) {
        fuzz_fail("out of memory");
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
                fuzz_fail("NGX_OK without progress");
            }

            fuzz_event(p, r, &ev, chunk, pos);
            continue;
        }

        if (rc == NGX_AGAIN) {
            if (pos != last) {
                fuzz_fail("NGX_AGAIN with bytes left");
            }

            break;
        }

        if (rc != NGX_ERROR) {
            fuzz_fail("unexpected return code");
        }

        if ((p->close_code != NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL
             && p->close_code != NGX_HOOKSTREAM_WS_CLOSE_INVALID
             && p->close_code != NGX_HOOKSTREAM_WS_CLOSE_TOO_BIG)
            || p->close_reason == NULL
            || strlen(p->close_reason) > 123)
        {
            fuzz_fail("bad close code or reason on error");
        }

        if (p->close_code == NGX_HOOKSTREAM_WS_CLOSE_TOO_BIG
            && p->max_message == 0)
        {
            fuzz_fail("1009 without max_message");
        }

        code = p->close_code;
        reason = p->close_reason;
        pos = chunk;

        if (ngx_hookstream_ws_parse(p, &pos, last, &ev) != NGX_ERROR
            || p->close_code != code || p->close_reason != reason)
        {
            fuzz_fail("parser left the error state");
        }

        break;
    }

    free(chunk);

    return rc;
}


static void
fuzz_parse(ngx_hookstream_ws_parser_t *p, fuzz_run_t *r, uint64_t max,
    ngx_uint_t deflate, const u_char *data, size_t len, uint32_t seed)
{
    size_t  off, n;

    ngx_hookstream_ws_parser_init(p);
    p->max_message = max;
    p->deflate = deflate;

    if (seed == 0) {
        fuzz_feed(p, r, data, len);
        return;
    }

    off = 0;

    while (off < len) {
        switch (fuzz_rand(&seed) & 3) {
        case 0:
            n = 1;
            break;
        case 1:
            n = 1 + fuzz_rand(&seed) % 8;
            break;
        case 2:
            n = 1 + fuzz_rand(&seed) % 64;
            break;
        default:
            n = 1 + fuzz_rand(&seed) % 1024;
        }

        if (n > len - off) {
            n = len - off;
        }

        if (fuzz_feed(p, r, data + off, n) == NGX_ERROR) {
            return;
        }

        off += n;
    }

    fuzz_feed(p, r, data, 0);
}


static void
fuzz_utf8(const u_char *data, size_t len, uint32_t seed)
{
    size_t     cut;
    uint32_t   s;
    ngx_int_t  rc, rc2;

    s = 0;
    rc = ngx_hookstream_utf8_validate(&s, data, len);

    if ((rc == NGX_OK) != fuzz_utf8_ref(data, len)) {
        fuzz_fail("UTF-8 validator disagrees with the reference");
    }

    cut = len ? fuzz_rand(&seed) % (len + 1) : 0;

    s = 0;
    rc2 = ngx_hookstream_utf8_validate(&s, data, cut);

    if (rc2 != NGX_ERROR) {
        rc2 = ngx_hookstream_utf8_validate(&s, data + cut, len - cut);
    }

    if (rc2 != rc) {
        fuzz_fail("UTF-8 validator depends on where the input is cut");
    }
}


static void
fuzz_encode(const u_char *data, size_t len)
{
    u_char                      *pos;
    u_char                       buf[NGX_HOOKSTREAM_WS_CLOSE_FRAME_MAX];
    u_char                       frame[4 + NGX_HOOKSTREAM_WS_CLOSE_FRAME_MAX];
    size_t                       n, i, reason_len;
    uint64_t                     flen, got;
    ngx_uint_t                   code;
    ngx_hookstream_ws_event_t    ev;
    ngx_hookstream_ws_parser_t   p;

    /* a frame header for a length made of the first bytes */

    flen = 0;

    for (i = 0; i < 8 && i < len; i++) {
        flen = (flen << 8) | data[i];
    }

    flen >>= (len ? data[0] % 64 : 0);

    n = ngx_hookstream_ws_frame_header(buf, len ? data[0] & 0x0f : 0,
                                       len > 1 ? data[1] & 1 : 1,
                                       len > 1 ? data[1] & 2 : 0, flen);

    got = buf[1];

    if (n == 4) {
        got = ((uint64_t) buf[2] << 8) | buf[3];

    } else if (n == 10) {
        got = 0;

        for (i = 2; i < 10; i++) {
            got = (got << 8) | buf[i];
        }
    }

    if (got != flen
        || n != (size_t) (flen < 126 ? 2 : (flen <= 0xffff ? 4 : 10))
        || (n == 2 && buf[1] != flen) || (n == 4 && buf[1] != 126)
        || (n == 10 && buf[1] != 127))
    {
        fuzz_fail("frame header does not read back");
    }

    /* a close frame with the input as its reason, parsed back */

    if (len < 2) {
        return;
    }

    code = ((ngx_uint_t) data[0] << 8) | data[1];

    if (!ngx_hookstream_ws_close_code_valid(code)) {
        code = NGX_HOOKSTREAM_WS_CLOSE_NORMAL;
    }

    reason_len = len - 2;

    if (!fuzz_utf8_ref(data + 2, reason_len)) {
        return;
    }

    n = ngx_hookstream_ws_close_frame(buf, code, data + 2, reason_len);

    if (n > NGX_HOOKSTREAM_WS_CLOSE_FRAME_MAX || n != (size_t) buf[1] + 2) {
        fuzz_fail("close frame too long");
    }

    frame[0] = buf[0];
    frame[1] = buf[1] | 0x80;
    memcpy(frame + 2, "\x5a\xa5\x0f\xf0", 4);
    memcpy(frame + 6, buf + 2, n - 2);
    ngx_hookstream_ws_mask(frame + 6, n - 2, frame + 2, 0);

    ngx_hookstream_ws_parser_init(&p);
    pos = frame;

    if (ngx_hookstream_ws_parse(&p, &pos, frame + n + 4, &ev) != NGX_OK
        || pos != frame + n + 4
        || ev.opcode != NGX_HOOKSTREAM_WS_OP_CLOSE
        || ev.close_code != code
        || ev.reason_len > reason_len
        || (reason_len <= 123 && ev.reason_len != reason_len)
        || (reason_len > 123 && ev.reason_len + 3 < 123)
        || memcmp(ev.reason, data + 2, ev.reason_len) != 0)
    {
        fuzz_fail("close frame does not read back");
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t                     seed;
    uint64_t                     max;
    ngx_uint_t                   deflate, whole_code, split_code;
    const char                  *whole_reason, *split_reason;
    fuzz_run_t                   whole, split;
    ngx_hookstream_ws_parser_t   p;

    if (size < 4) {
        return 0;
    }

    deflate = data[0] & 1;

    switch ((data[0] >> 1) & 3) {
    case 0:
        max = 0;
        break;
    case 1:
        max = data[1];
        break;
    case 2:
        max = data[1] | (data[2] << 8);
        break;
    default:
        max = ((uint64_t) data[1] << 16) | ((uint64_t) data[2] << 32);
    }

    seed = 0x9e3779b9u ^ ((uint32_t) data[3] << 8) ^ (uint32_t) size;

    data += 4;
    size -= 4;

    memset(&whole, 0, sizeof(fuzz_run_t));
    memset(&split, 0, sizeof(fuzz_run_t));

    fuzz_parse(&p, &whole, max, deflate, data, size, 0);
    whole_code = p.close_code;
    whole_reason = p.close_reason;

    fuzz_parse(&p, &split, max, deflate, data, size, seed);
    split_code = p.close_code;
    split_reason = p.close_reason;

    /* however the bytes are cut, the same outcome */

    if (whole_code != split_code || whole_reason != split_reason) {
        fuzz_fail("error differs between whole and split input");
    }

    if (whole.log.len != split.log.len
        || (whole.log.len
            && memcmp(whole.log.data, split.log.data, whole.log.len) != 0))
    {
        fuzz_fail("events differ between whole and split input");
    }

    /* without an error, the unfinished message has the same bytes too */

    if (whole_code == 0
        && (whole.in_message != split.in_message
            || (whole.in_message
                && (whole.msg.len != split.msg.len
                    || (whole.msg.len
                        && memcmp(whole.msg.data, split.msg.data,
                                  whole.msg.len) != 0)))))
    {
        fuzz_fail("unfinished message differs between whole and split");
    }

    free(whole.log.data);
    free(whole.msg.data);
    free(split.log.data);
    free(split.msg.data);

    fuzz_utf8(data, size, seed);
    fuzz_encode(data, size);

    return 0;
}
