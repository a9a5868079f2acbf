
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/rand.h>
#include "ngx_hookstream.h"


static ngx_str_t  ngx_http_hookstream_json_type =
    ngx_string("application/json");


/*
 * An HTTP error with hookstream's JSON body:
 *     {"error":"Source not found","status":404,"request_id":"req_<hex>"}
 */

ngx_int_t
ngx_http_hookstream_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *message)
{
    u_char     *p;
    size_t      len, mlen;
    ngx_str_t   body;

    mlen = ngx_strlen(message);

    len = sizeof("{\"error\":\"\",\"status\":,\"request_id\":\"req_\"}") - 1
          + ngx_hookstream_json_escape_len((u_char *) message, mlen)
          + NGX_INT_T_LEN + NGX_HOOKSTREAM_HEX_ID_LEN;

    body.data = ngx_pnalloc(r->pool, len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body.data, "{\"error\":\"", sizeof("{\"error\":\"") - 1);
    p = ngx_hookstream_json_escape(p, (u_char *) message, mlen);
    p = ngx_sprintf(p, "\",\"status\":%ui,\"request_id\":\"req_", status);
    p = ngx_hookstream_random_hex(p, NGX_HOOKSTREAM_HEX_ID_LEN / 2);
    *p++ = '"';
    *p++ = '}';

    body.len = p - body.data;

    if (status == NGX_HTTP_TOO_MANY_REQUESTS
        || status == NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        r->keepalive = 0;
    }

    return ngx_http_hookstream_send_json(r, status, &body);
}


ngx_int_t
ngx_http_hookstream_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    if (r->header_sent) {
        return NGX_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_type = ngx_http_hookstream_json_type;
    r->headers_out.content_type_len = ngx_http_hookstream_json_type.len;
    r->headers_out.content_length_n = body->len + 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ngx_pnalloc(r->pool, body->len + 1);
    if (b->pos == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->pos, body->data, body->len);
    *b->last++ = LF;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* JSON string escaping of bytes that are valid UTF-8 already */

size_t
ngx_hookstream_json_escape_len(u_char *src, size_t size)
{
    size_t  n;

    n = size;

    while (size--) {
        if (*src == '"' || *src == '\\') {
            n++;

        } else if (*src < 0x20) {
            n += 5;
        }

        src++;
    }

    return n;
}


u_char *
ngx_hookstream_json_escape(u_char *dst, u_char *src, size_t size)
{
    u_char         ch;
    static u_char  hex[] = "0123456789abcdef";

    while (size--) {
        ch = *src++;

        if (ch == '"' || ch == '\\') {
            *dst++ = '\\';
            *dst++ = ch;
            continue;
        }

        if (ch >= 0x20) {
            *dst++ = ch;
            continue;
        }

        switch (ch) {
        case '\n':
            *dst++ = '\\'; *dst++ = 'n';
            break;
        case '\r':
            *dst++ = '\\'; *dst++ = 'r';
            break;
        case '\t':
            *dst++ = '\\'; *dst++ = 't';
            break;
        default:
            *dst++ = '\\'; *dst++ = 'u'; *dst++ = '0'; *dst++ = '0';
            *dst++ = hex[ch >> 4];
            *dst++ = hex[ch & 0xf];
            break;
        }
    }

    return dst;
}


/* "2026-03-01T14:30:00.123Z" */

u_char *
ngx_hookstream_time_rfc3339(u_char *buf, ngx_msec_t ms)
{
    ngx_tm_t  tm;

    ngx_gmtime((time_t) (ms / 1000), &tm);

    return ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02d.%03uiZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (ngx_uint_t) (ms % 1000));
}


void
ngx_hookstream_random_bytes(u_char *dst, size_t n)
{
    if (RAND_bytes(dst, (int) n) != 1) {
        /* OpenSSL's generator failing is not survivable for ids */
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "RAND_bytes() failed");
        ngx_memzero(dst, n);
    }
}


/* "bytes" random bytes as 2 * bytes lowercase hex digits */

u_char *
ngx_hookstream_random_hex(u_char *dst, size_t bytes)
{
    u_char  buf[64];

    if (bytes > sizeof(buf)) {
        bytes = sizeof(buf);
    }

    ngx_hookstream_random_bytes(buf, bytes);

    return ngx_hex_dump(dst, buf, bytes);
}


/*
 * Finds a member of a JSON object by name and returns its value's text,
 * exactly as it is written (a string keeps its quotes and escapes).  The
 * text must have been validated by a real parser already: this only walks
 * it.  NGX_DECLINED when the object has no such member.
 */

ngx_int_t
ngx_hookstream_json_member(ngx_str_t *json, const char *name,
    ngx_str_t *value)
{
    u_char  *p, *last, *key, *start;
    size_t   len, klen;

    p = json->data;
    last = p + json->len;
    len = ngx_strlen(name);

    p = ngx_hookstream_json_skip_space(p, last);

    if (p == last || *p != '{') {
        return NGX_DECLINED;
    }

    p++;

    for ( ;; ) {
        p = ngx_hookstream_json_skip_space(p, last);

        if (p == last || *p != '"') {
            return NGX_DECLINED;
        }

        key = p + 1;
        p = ngx_hookstream_json_skip_value(p, last);

        if (p == NULL) {
            return NGX_DECLINED;
        }

        klen = p - key - 1;

        p = ngx_hookstream_json_skip_space(p, last);

        if (p == last || *p != ':') {
            return NGX_DECLINED;
        }

        p = ngx_hookstream_json_skip_space(p + 1, last);
        start = p;

        p = ngx_hookstream_json_skip_value(p, last);

        if (p == NULL) {
            return NGX_DECLINED;
        }

        if (klen == len && ngx_strncmp(key, name, len) == 0) {
            value->data = start;
            value->len = p - start;
            return NGX_OK;
        }

        p = ngx_hookstream_json_skip_space(p, last);

        if (p == last || *p != ',') {
            return NGX_DECLINED;
        }

        p++;
    }
}


u_char *
ngx_hookstream_json_skip_space(u_char *p, u_char *last)
{
    while (p < last
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


/* the end of the value at p, or NULL; nesting is counted, not recursed */

u_char *
ngx_hookstream_json_skip_value(u_char *p, u_char *last)
{
    ngx_uint_t  depth;

    depth = 0;

    while (p < last) {

        switch (*p) {

        case '"':
            for (p++; p < last && *p != '"'; p++) {
                if (*p == '\\') {
                    p++;
                }
            }

            if (p >= last) {
                return NULL;
            }

            p++;
            break;

        case '{':
        case '[':
            depth++;
            p++;
            continue;

        case '}':
        case ']':
            if (depth == 0) {
                return NULL;
            }

            depth--;
            p++;
            break;

        default:
            if (depth == 0) {
                /* a number or a literal */
                while (p < last && *p != ',' && *p != '}' && *p != ']'
                       && *p != ' ' && *p != '\t' && *p != '\n'
                       && *p != '\r')
                {
                    p++;
                }

                return p;
            }

            p++;
            continue;
        }

        if (depth == 0) {
            return p;
        }
    }

    return NULL;
}
