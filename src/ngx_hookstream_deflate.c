
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <zlib.h>
#include "ngx_hookstream.h"
#include "ngx_hookstream_deflate.h"


#define NGX_HOOKSTREAM_DEFLATE_LEVEL     6
#define NGX_HOOKSTREAM_DEFLATE_WBITS     15
#define NGX_HOOKSTREAM_DEFLATE_MEMLEVEL  8

/* payloads this short are compressed on the stack */
#define NGX_HOOKSTREAM_DEFLATE_SCRATCH   4096

/* the first size tried for an inflated message */
#define NGX_HOOKSTREAM_INFLATE_SIZE      4096

#define NGX_HOOKSTREAM_DEFLATE_HEADER    "Sec-WebSocket-Extensions"

#define NGX_HOOKSTREAM_DEFLATE_RESPONSE                                      \
    NGX_HOOKSTREAM_DEFLATE_HEADER ": permessage-deflate; "                   \
    "server_no_context_takeover; client_no_context_takeover"

#define NGX_HOOKSTREAM_DEFLATE_PARAM_SNCT  0x01
#define NGX_HOOKSTREAM_DEFLATE_PARAM_CNCT  0x02
#define NGX_HOOKSTREAM_DEFLATE_PARAM_SMWB  0x04
#define NGX_HOOKSTREAM_DEFLATE_PARAM_CMWB  0x08


/*
 * The per-process zlib state.  A worker keeps one stream each way, made
 * on first use and ended with the cycle's pool, the way ngx_regex.c keeps
 * one PCRE2 match data block per process.  Every use runs from a reset
 * to the end of one message without returning to the event loop, and
 * both directions are negotiated without context takeover, so no
 * connection ever depends on what another left in a stream.
 */

typedef struct {
    z_stream                     deflate;
    z_stream                     inflate;
    unsigned                     deflate_ready:1;
    unsigned                     inflate_ready:1;
    unsigned                     cleanup:1;
} ngx_hookstream_zlib_t;


/* one element of a Sec-WebSocket-Extensions list, as far as it is ours */

typedef struct {
    ngx_uint_t                   server_bits;  /* 0: not in the offer */
    ngx_uint_t                   seen;         /* parameters met */
    unsigned                     ours:1;       /* permessage-deflate */
    unsigned                     invalid:1;    /* to be declined */
} ngx_hookstream_deflate_offer_t;


static ngx_int_t ngx_hookstream_deflate_parse(u_char *p, u_char *last,
    ngx_hookstream_deflate_offer_t *accept);
static void ngx_hookstream_deflate_param(ngx_hookstream_deflate_offer_t *o,
    u_char *name, size_t len, ngx_uint_t has_value, u_char *value,
    size_t vlen);
static ngx_uint_t ngx_hookstream_deflate_bits(u_char *value, size_t len);
static ngx_uint_t ngx_hookstream_deflate_tchar(u_char c);
static u_char *ngx_hookstream_deflate_ows(u_char *p, u_char *last);
static ngx_int_t ngx_hookstream_inflate(u_char *data, size_t len,
    size_t limit, u_char **out, size_t *n, ngx_log_t *log);
static ngx_hookstream_buf_t *ngx_hookstream_deflate_build(u_char *payload,
    size_t len, ngx_uint_t opcode, ngx_log_t *log);
static z_stream *ngx_hookstream_deflate_stream(ngx_log_t *log);
static z_stream *ngx_hookstream_inflate_stream(ngx_log_t *log);
static ngx_int_t ngx_hookstream_zlib_cleanup_add(ngx_log_t *log);
static void ngx_hookstream_zlib_cleanup(void *data);


static ngx_hookstream_zlib_t  ngx_hookstream_zlib;

/* what a sender strips from the end of a message (RFC 7692 7.2.1) */
static const u_char  ngx_hookstream_deflate_tail[] = {
    0x00, 0x00, 0xff, 0xff
};


ngx_int_t
ngx_http_hookstream_deflate_negotiate(ngx_http_hookstream_ws_t *ws,
    ngx_str_t *line)
{
    u_char                          *p;
    ngx_uint_t                       i;
    ngx_list_part_t                 *part;
    ngx_table_elt_t                 *h;
    ngx_http_request_t              *r;
    ngx_hookstream_deflate_offer_t   accept;

    line->len = 0;
    line->data = NULL;

    if (!ws->conf->deflate) {
        return NGX_OK;
    }

    r = ws->request;

    ngx_memzero(&accept, sizeof(ngx_hookstream_deflate_offer_t));

    /* the offers of every header line, in order (RFC 6455 9.1) */

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof(NGX_HOOKSTREAM_DEFLATE_HEADER) - 1
            || ngx_strncasecmp(h[i].key.data,
                               (u_char *) NGX_HOOKSTREAM_DEFLATE_HEADER,
                               sizeof(NGX_HOOKSTREAM_DEFLATE_HEADER) - 1)
               != 0)
        {
            continue;
        }

        if (ngx_hookstream_deflate_parse(h[i].value.data,
                                         h[i].value.data + h[i].value.len,
                                         &accept)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                          "client sent invalid \"Sec-WebSocket-Extensions\" "
                          "header: \"%V\", permessage-deflate declined",
                          &h[i].value);
            return NGX_OK;
        }
    }

    if (!accept.ours) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                       "hookstream deflate: no acceptable offer");
        return NGX_OK;
    }

    line->data = ngx_pnalloc(r->pool,
                             sizeof(NGX_HOOKSTREAM_DEFLATE_RESPONSE) - 1
                             + sizeof("; server_max_window_bits=15") - 1
                             + sizeof(CRLF) - 1);
    if (line->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(line->data, NGX_HOOKSTREAM_DEFLATE_RESPONSE,
                   sizeof(NGX_HOOKSTREAM_DEFLATE_RESPONSE) - 1);

    /*
     * A limit on the server's window is accepted as offered: messages
     * are compressed independently, so one no longer than the window
     * never refers further back than it; longer ones go uncompressed.
     * The client's window is not limited: the inflate stream has 32K.
     */

    if (accept.server_bits) {
        p = ngx_sprintf(p, "; server_max_window_bits=%ui", accept.server_bits);
    }

    *p++ = CR; *p++ = LF;

    line->len = p - line->data;

    ws->deflate = 1;
    ws->deflate_bits = accept.server_bits ? accept.server_bits
                                          : NGX_HOOKSTREAM_DEFLATE_WBITS;
    ws->parser.deflate = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "hookstream deflate: accepted, server window bits %ui",
                   (ngx_uint_t) ws->deflate_bits);

    return NGX_OK;
}


/*
 * Parses one header value:
 *
 *     extension-list  = 1#extension
 *     extension       = extension-token *( ";" extension-param )
 *     extension-param = token [ "=" ( token / quoted-string ) ]
 *
 * The first permessage-deflate offer with nothing to decline is kept in
 * *accept unless one was kept before.  NGX_ERROR: the value is malformed.
 */

static ngx_int_t
ngx_hookstream_deflate_parse(u_char *p, u_char *last,
    ngx_hookstream_deflate_offer_t *accept)
{
    u_char                          c, *name, *pname, value[4];
    size_t                          nlen, vlen;
    ngx_uint_t                      has_value;
    ngx_hookstream_deflate_offer_t  o;

    for ( ;; ) {

        /* empty list elements are allowed (RFC 9110 5.6.1) */

        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        if (p == last) {
            return NGX_OK;
        }

        name = p;

        while (p < last && ngx_hookstream_deflate_tchar(*p)) {
            p++;
        }

        if (p == name) {
            return NGX_ERROR;
        }

        ngx_memzero(&o, sizeof(ngx_hookstream_deflate_offer_t));

        o.ours = (p - name == sizeof("permessage-deflate") - 1
                  && ngx_strncasecmp(name, (u_char *) "permessage-deflate",
                                     sizeof("permessage-deflate") - 1)
                     == 0);

        p = ngx_hookstream_deflate_ows(p, last);

        while (p < last && *p == ';') {

            p = ngx_hookstream_deflate_ows(p + 1, last);
            pname = p;

            while (p < last && ngx_hookstream_deflate_tchar(*p)) {
                p++;
            }

            nlen = p - pname;

            if (nlen == 0) {
                return NGX_ERROR;
            }

            p = ngx_hookstream_deflate_ows(p, last);

            has_value = 0;
            vlen = 0;

            if (p < last && *p == '=') {
                has_value = 1;
                p = ngx_hookstream_deflate_ows(p + 1, last);

                if (p < last && *p == '"') {
                    p++;

                    for ( ;; ) {
                        if (p == last) {
                            return NGX_ERROR;
                        }

                        c = *p++;

                        if (c == '"') {
                            break;
                        }

                        if (c == '\\') {
                            if (p == last) {
                                return NGX_ERROR;
                            }

                            c = *p++;
                        }

                        if ((c < 0x20 && c != '\t') || c == 0x7f) {
                            return NGX_ERROR;
                        }

                        if (vlen < sizeof(value)) {
                            value[vlen] = c;
                        }

                        vlen++;
                    }

                } else {

                    while (p < last && ngx_hookstream_deflate_tchar(*p)) {
                        if (vlen < sizeof(value)) {
                            value[vlen] = *p;
                        }

                        vlen++;
                        p++;
                    }

                    if (vlen == 0) {
                        return NGX_ERROR;
                    }
                }

                p = ngx_hookstream_deflate_ows(p, last);
            }

            if (o.ours) {
                ngx_hookstream_deflate_param(&o, pname, nlen, has_value,
                                             value, vlen);
            }
        }

        if (p < last && *p != ',') {
            return NGX_ERROR;
        }

        if (o.ours && !o.invalid && !accept->ours) {
            *accept = o;
        }
    }
}


/*
 * RFC 7692 7: an offer is declined for a parameter not defined for an
 * offer, an invalid value, or a parameter given twice.  Both
 * *_no_context_takeover are accepted whether offered or not: the answer
 * sets them anyway (7.1.1.1, 7.1.1.2).
 */

static void
ngx_hookstream_deflate_param(ngx_hookstream_deflate_offer_t *o, u_char *name,
    size_t len, ngx_uint_t has_value, u_char *value, size_t vlen)
{
    ngx_uint_t  param, bits;

    if (len == sizeof("server_no_context_takeover") - 1
        && ngx_strncasecmp(name, (u_char *) "server_no_context_takeover",
                           len) == 0)
    {
        param = NGX_HOOKSTREAM_DEFLATE_PARAM_SNCT;

    } else if (len == sizeof("client_no_context_takeover") - 1
               && ngx_strncasecmp(name,
                                  (u_char *) "client_no_context_takeover",
                                  len) == 0)
    {
        param = NGX_HOOKSTREAM_DEFLATE_PARAM_CNCT;

    } else if (len == sizeof("server_max_window_bits") - 1
               && ngx_strncasecmp(name, (u_char *) "server_max_window_bits",
                                  len) == 0)
    {
        param = NGX_HOOKSTREAM_DEFLATE_PARAM_SMWB;

    } else if (len == sizeof("client_max_window_bits") - 1
               && ngx_strncasecmp(name, (u_char *) "client_max_window_bits",
                                  len) == 0)
    {
        param = NGX_HOOKSTREAM_DEFLATE_PARAM_CMWB;

    } else {
        o->invalid = 1;
        return;
    }

    if (o->seen & param) {
        o->invalid = 1;
        return;
    }

    o->seen |= param;

    switch (param) {

    case NGX_HOOKSTREAM_DEFLATE_PARAM_SMWB:
        bits = has_value ? ngx_hookstream_deflate_bits(value, vlen) : 0;

        if (bits == 0) {
            o->invalid = 1;
            return;
        }

        o->server_bits = bits;
        return;

    case NGX_HOOKSTREAM_DEFLATE_PARAM_CMWB:

        /* no value, or a hint that the client will use at most that */

        if (has_value && ngx_hookstream_deflate_bits(value, vlen) == 0) {
            o->invalid = 1;
        }

        return;

    default:

        if (has_value) {
            o->invalid = 1;
        }

        return;
    }
}


/* 8 to 15 without leading zeroes (RFC 7692 7.1.2), or 0 */

static ngx_uint_t
ngx_hookstream_deflate_bits(u_char *value, size_t len)
{
    if (len == 1 && (value[0] == '8' || value[0] == '9')) {
        return value[0] - '0';
    }

    if (len == 2 && value[0] == '1' && value[1] >= '0' && value[1] <= '5') {
        return 10 + value[1] - '0';
    }

    return 0;
}


/* RFC 9110 5.6.2 */

static ngx_uint_t
ngx_hookstream_deflate_tchar(u_char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9'))
    {
        return 1;
    }

    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'':
    case '*': case '+': case '-': case '.': case '^': case '_':
    case '`': case '|': case '~':
        return 1;
    }

    return 0;
}


static u_char *
ngx_hookstream_deflate_ows(u_char *p, u_char *last)
{
    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    return p;
}


ngx_int_t
ngx_http_hookstream_deflate_message(ngx_http_hookstream_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len)
{
    u_char            *out;
    size_t             n, limit;
    uint32_t           state;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = ws->connection;

    if (len == 0) {
        /* nothing to inflate: taken for an empty message */
        return ws->handler->message(ws, opcode, data, 0);
    }

    limit = ws->conf->max_message;

    if (limit == 0 || limit == NGX_MAX_SIZE_T_VALUE) {
        limit = NGX_MAX_SIZE_T_VALUE - 1;
    }

    rc = ngx_hookstream_inflate(data, len, limit, &out, &n, c->log);

    switch (rc) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "client sent a compressed message of more than %uz "
                      "bytes inflated", limit);

        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_WS_CLOSE_TOO_BIG,
                                     "message too big");
        ws->fail = 1;
        return NGX_OK;

    case NGX_ABORT:
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "client sent invalid compressed data");

        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_WS_CLOSE_INVALID,
                                     "invalid compressed data");
        ws->fail = 1;
        return NGX_OK;

    default: /* NGX_ERROR */
        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_INTERNAL,
                                     "out of memory");
        ws->fail = 1;
        return NGX_OK;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "hookstream deflate: inflated %uz to %uz bytes", len, n);

    if (opcode == NGX_HOOKSTREAM_WS_OP_TEXT) {
        state = 0;

        if (ngx_hookstream_utf8_validate(&state, out, n) != NGX_OK) {
            ngx_free(out);

            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "client sent invalid UTF-8 in a compressed text "
                          "message");

            ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_WS_CLOSE_INVALID,
                                         "invalid UTF-8 in text message");
            ws->fail = 1;
            return NGX_OK;
        }
    }

    rc = ws->handler->message(ws, opcode, out, n);

    ngx_free(out);

    return rc;
}


/*
 * RFC 7692 7.2.2: the message with 00 00 ff ff appended, inflated into a
 * buffer from the heap that grows up to limit + 1 bytes.  NGX_OK: *out
 * (for the caller to free) holds *n bytes; NGX_DECLINED: more than limit
 * bytes; NGX_ABORT: not valid DEFLATE data, or data that stops within a
 * block; NGX_ERROR: out of memory or a broken stream.
 */

static ngx_int_t
ngx_hookstream_inflate(u_char *data, size_t len, size_t limit, u_char **out,
    size_t *n, ngx_log_t *log)
{
    int          rc;
    u_char      *buf, *nbuf;
    size_t       size, nsize, cap;
    z_stream    *z;
    ngx_uint_t   tail;

    z = ngx_hookstream_inflate_stream(log);
    if (z == NULL) {
        return NGX_ERROR;
    }

    cap = limit + 1;

    if (len < cap / 4) {
        size = ngx_max(len * 4, NGX_HOOKSTREAM_INFLATE_SIZE);
        size = ngx_min(size, cap);

    } else {
        size = cap;
    }

    buf = ngx_alloc(size, log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    z->next_in = data;
    z->avail_in = len;
    z->next_out = buf;
    z->avail_out = size;

    tail = 0;

    for ( ;; ) {

        if (z->avail_in == 0 && !tail) {
            z->next_in = (u_char *) ngx_hookstream_deflate_tail;
            z->avail_in = sizeof(ngx_hookstream_deflate_tail);
            tail = 1;
        }

        if (z->avail_out == 0) {

            if (size == cap) {
                /* limit + 1 bytes are out: a bomb or just too big */
                ngx_free(buf);
                return NGX_DECLINED;
            }

            nsize = (size < cap / 2) ? size * 2 : cap;

            nbuf = ngx_alloc(nsize, log);
            if (nbuf == NULL) {
                ngx_free(buf);
                return NGX_ERROR;
            }

            ngx_memcpy(nbuf, buf, size);
            ngx_free(buf);

            buf = nbuf;
            z->next_out = buf + size;
            z->avail_out = nsize - size;
            size = nsize;
        }

        rc = inflate(z, Z_SYNC_FLUSH);

        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, log, 0,
                       "inflate out: ni:%p no:%p ai:%ud ao:%ud rc:%d",
                       z->next_in, z->next_out, z->avail_in, z->avail_out,
                       rc);

        if (rc == Z_STREAM_END) {

            /*
             * a final block (BFINAL set, RFC 7692 7.2.3.3) ends the
             * message; what follows it is the empty block that step 2 of
             * 7.2.1 appends, or the four bytes of ours
             */

            break;
        }

        if (rc == Z_MEM_ERROR) {
            ngx_free(buf);
            return NGX_ERROR;
        }

        if (rc == Z_STREAM_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, log, 0, "inflate() failed: %d", rc);
            ngx_free(buf);
            return NGX_ERROR;
        }

        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            goto invalid;
        }

        if (tail && z->avail_in == 0 && z->avail_out != 0) {

            /* all is in and out: the data must end between blocks */

            if (!(z->data_type & 128)) {
                goto invalid;
            }

            break;
        }
    }

    if (size - z->avail_out > limit) {
        ngx_free(buf);
        return NGX_DECLINED;
    }

    *out = buf;
    *n = size - z->avail_out;

    return NGX_OK;

invalid:

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "inflate failed: %d \"%s\"", rc,
                   z->msg ? z->msg : "truncated");

    ngx_free(buf);

    return NGX_ABORT;
}


ngx_hookstream_buf_t *
ngx_hookstream_deflate_buf(ngx_hookstream_buf_t *b, ngx_uint_t bits,
    ngx_log_t *log)
{
    u_char                *h, *payload;
    size_t                 len;
    ngx_uint_t             opcode;
    ngx_hookstream_buf_t  *d;

    if (b->private) {
        /* a connection's own frames, not one message */
        return b;
    }

    if (b->framed) {
        h = b->start;

        opcode = (b->last - h < 2) ? 0 : (h[0] & 0x0f);

        if ((opcode != NGX_HOOKSTREAM_WS_OP_TEXT
             && opcode != NGX_HOOKSTREAM_WS_OP_BINARY)
            || (h[0] & 0xf0) != 0x80)
        {
            /* not a whole data message, or compressed already */
            return b;
        }

        switch (h[1] & 0x7f) {
        case 126:
            payload = h + 4;
            break;
        case 127:
            payload = h + 10;
            break;
        default:
            payload = h + 2;
        }

        if (payload > b->last) {
            return b;
        }

    } else {
        opcode = NGX_HOOKSTREAM_WS_OP_TEXT;
        payload = b->start;
    }

    len = b->last - payload;

    if (len < NGX_HOOKSTREAM_DEFLATE_MIN_SIZE) {
        return b;
    }

    if (bits < NGX_HOOKSTREAM_DEFLATE_WBITS && len > ((size_t) 1 << bits)) {
        /* a reference could reach past the client's smaller window */
        return b;
    }

    d = b->deflated;

    if (d == NULL) {
        d = ngx_hookstream_deflate_build(payload, len, opcode, log);
        if (d == NULL) {
            return b;
        }

        b->deflated = d;
    }

    if (d->last == d->start) {
        /* an empty twin: compression does not pay for this message */
        return b;
    }

    return d;
}


/*
 * RFC 7692 7.2.1: the payload compressed with a sync flush, the trailing
 * 00 00 ff ff removed, framed with RSV1 set.  Output that would not be
 * shorter than the payload gives an empty twin, so that the next
 * connection does not try again.  NULL on failure: the message then goes
 * out uncompressed.
 */

static ngx_hookstream_buf_t *
ngx_hookstream_deflate_build(u_char *payload, size_t len, ngx_uint_t opcode,
    ngx_log_t *log)
{
    int                    rc;
    u_char                *out;
    size_t                 size, n, hlen;
    z_stream              *z;
    ngx_hookstream_buf_t  *d;
    u_char                 header[NGX_HOOKSTREAM_WS_MAX_HEADER];
    u_char                 scratch[NGX_HOOKSTREAM_DEFLATE_SCRATCH];

    z = ngx_hookstream_deflate_stream(log);
    if (z == NULL) {
        return NULL;
    }

    /* room for what is worth sending and the four bytes of the flush */

    size = len + sizeof(ngx_hookstream_deflate_tail);

    if (size <= sizeof(scratch)) {
        out = scratch;

    } else {
        out = ngx_alloc(size, log);
        if (out == NULL) {
            return NULL;
        }
    }

    z->next_in = payload;
    z->avail_in = len;
    z->next_out = out;
    z->avail_out = size;

    rc = deflate(z, Z_SYNC_FLUSH);

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, log, 0,
                   "deflate out: ni:%p no:%p ai:%ud ao:%ud rc:%d",
                   z->next_in, z->next_out, z->avail_in, z->avail_out, rc);

    if (rc != Z_OK && rc != Z_BUF_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "deflate() failed: %d", rc);
        d = NULL;
        goto done;
    }

    n = 0;

    if (z->avail_in == 0 && z->avail_out != 0) {
        n = size - z->avail_out;

        if (n < sizeof(ngx_hookstream_deflate_tail)
            || ngx_memcmp(out + n - sizeof(ngx_hookstream_deflate_tail),
                          ngx_hookstream_deflate_tail,
                          sizeof(ngx_hookstream_deflate_tail))
               != 0)
        {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "deflate() output does not end with a sync flush");
            d = NULL;
            goto done;
        }

        n -= sizeof(ngx_hookstream_deflate_tail);

        if (n >= len) {
            n = 0;
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "hookstream deflate: %uz bytes to %uz", len, n);

    d = ngx_hookstream_buf_alloc(n, log);
    if (d == NULL) {
        goto done;
    }

    if (n) {
        d->last = ngx_cpymem(d->start, out, n);

        hlen = ngx_hookstream_ws_frame_header(header, opcode, 1, 1, n);

        d->start -= hlen;
        ngx_memcpy(d->start, header, hlen);
        d->framed = 1;
    }

done:

    if (out != scratch) {
        ngx_free(out);
    }

    return d;
}


static z_stream *
ngx_hookstream_deflate_stream(ngx_log_t *log)
{
    int        rc;
    z_stream  *z;

    z = &ngx_hookstream_zlib.deflate;

    if (ngx_hookstream_zlib.deflate_ready) {
        rc = deflateReset(z);

        if (rc != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "deflateReset() failed: %d", rc);
            return NULL;
        }

        return z;
    }

    if (ngx_hookstream_zlib_cleanup_add(log) != NGX_OK) {
        return NULL;
    }

    ngx_memzero(z, sizeof(z_stream));

    /* a negative window: raw DEFLATE, no zlib header or trailer */

    rc = deflateInit2(z, NGX_HOOKSTREAM_DEFLATE_LEVEL, Z_DEFLATED,
                      -NGX_HOOKSTREAM_DEFLATE_WBITS,
                      NGX_HOOKSTREAM_DEFLATE_MEMLEVEL, Z_DEFAULT_STRATEGY);

    if (rc != Z_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "deflateInit2() failed: %d", rc);
        return NULL;
    }

    ngx_hookstream_zlib.deflate_ready = 1;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                   "hookstream deflate: worker deflate stream created");

    return z;
}


static z_stream *
ngx_hookstream_inflate_stream(ngx_log_t *log)
{
    int        rc;
    z_stream  *z;

    z = &ngx_hookstream_zlib.inflate;

    if (ngx_hookstream_zlib.inflate_ready) {
        rc = inflateReset(z);

        if (rc != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "inflateReset() failed: %d", rc);
            return NULL;
        }

        return z;
    }

    if (ngx_hookstream_zlib_cleanup_add(log) != NGX_OK) {
        return NULL;
    }

    ngx_memzero(z, sizeof(z_stream));

    /* the largest window, whatever the client's offer said */

    rc = inflateInit2(z, -NGX_HOOKSTREAM_DEFLATE_WBITS);

    if (rc != Z_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "inflateInit2() failed: %d", rc);
        return NULL;
    }

    ngx_hookstream_zlib.inflate_ready = 1;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                   "hookstream deflate: worker inflate stream created");

    return z;
}


static ngx_int_t
ngx_hookstream_zlib_cleanup_add(ngx_log_t *log)
{
    ngx_pool_cleanup_t  *cln;

    if (ngx_hookstream_zlib.cleanup) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(ngx_cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_hookstream_zlib_cleanup;
    cln->data = &ngx_hookstream_zlib;

    ngx_hookstream_zlib.cleanup = 1;

    return NGX_OK;
}


static void
ngx_hookstream_zlib_cleanup(void *data)
{
    ngx_hookstream_zlib_t  *zl = data;

    if (zl->deflate_ready) {
        (void) deflateEnd(&zl->deflate);
    }

    if (zl->inflate_ready) {
        (void) inflateEnd(&zl->inflate);
    }

    zl->deflate_ready = 0;
    zl->inflate_ready = 0;
    zl->cleanup = 0;
}
