
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_hookstream_ws_parse.h"


/*
 * The UTF-8 state packs the continuation bytes still expected (bits 16+)
 * with the bounds of the next byte (lowest in bits 8-15, highest in bits
 * 0-7): only the second byte of a sequence has bounds other than 80..BF,
 * which is how overlong forms, surrogates and code points past U+10FFFF
 * are refused.
 */
#define ngx_hookstream_utf8_expect(n, lo, hi)                                \
    (((uint32_t) (n) << 16) | ((uint32_t) (lo) << 8) | (uint32_t) (hi))

#define NGX_HOOKSTREAM_UTF8_REJECT   0xffffffff

#define NGX_HOOKSTREAM_WS_MAX_UINT64  ((uint64_t) -1)


typedef enum {
    ngx_hookstream_ws_st_header = 0,
    ngx_hookstream_ws_st_data,
    ngx_hookstream_ws_st_control,
    ngx_hookstream_ws_st_error
} ngx_hookstream_ws_state_e;


static ngx_int_t ngx_hookstream_ws_parse_start(ngx_hookstream_ws_parser_t *p);
static ngx_int_t ngx_hookstream_ws_parse_header(ngx_hookstream_ws_parser_t *p,
    u_char *pos, ngx_hookstream_ws_event_t *ev);
static ngx_int_t ngx_hookstream_ws_parse_data(ngx_hookstream_ws_parser_t *p,
    u_char *pos, size_t n, ngx_hookstream_ws_event_t *ev);
static ngx_int_t ngx_hookstream_ws_parse_control(
    ngx_hookstream_ws_parser_t *p, ngx_hookstream_ws_event_t *ev);
static ngx_int_t ngx_hookstream_ws_fail(ngx_hookstream_ws_parser_t *p,
    ngx_uint_t code, const char *reason);


void
ngx_hookstream_ws_parser_init(ngx_hookstream_ws_parser_t *p)
{
    ngx_memzero(p, sizeof(ngx_hookstream_ws_parser_t));

    p->state = ngx_hookstream_ws_st_header;
    p->hdr_need = 2;
}


ngx_int_t
ngx_hookstream_ws_parse(ngx_hookstream_ws_parser_t *p, u_char **pos,
    u_char *last, ngx_hookstream_ws_event_t *ev)
{
    u_char     *b;
    size_t      n;
    ngx_int_t   rc;

    b = *pos;

    for ( ;; ) {

        switch (p->state) {

        case ngx_hookstream_ws_st_header:

            while (p->hdr_len < p->hdr_need) {

                if (b == last) {
                    *pos = b;
                    return NGX_AGAIN;
                }

                p->hdr[p->hdr_len++] = *b++;

                /*
                 * the first two bytes settle everything but the length
                 * and the key, so most violations show before the rest
                 */

                if (p->hdr_len == 2
                    && ngx_hookstream_ws_parse_start(p) != NGX_OK)
                {
                    goto failed;
                }
            }

            rc = ngx_hookstream_ws_parse_header(p, b, ev);

            if (rc == NGX_ERROR) {
                goto failed;
            }

            if (rc == NGX_OK) {
                *pos = b;
                return NGX_OK;
            }

            break;

        case ngx_hookstream_ws_st_data:

            n = last - b;

            if (n == 0) {
                *pos = b;
                return NGX_AGAIN;
            }

            if ((uint64_t) n > p->remaining) {
                n = (size_t) p->remaining;
            }

            if (ngx_hookstream_ws_parse_data(p, b, n, ev) != NGX_OK) {
                goto failed;
            }

            *pos = b + n;
            return NGX_OK;

        case ngx_hookstream_ws_st_control:

            n = last - b;

            if (n == 0) {
                *pos = b;
                return NGX_AGAIN;
            }

            if ((uint64_t) n > p->remaining) {
                n = (size_t) p->remaining;
            }

            ngx_memcpy(p->ctl + p->ctl_len, b, n);
            p->mask_off = ngx_hookstream_ws_mask(p->ctl + p->ctl_len, n,
                                                 p->mask, p->mask_off);
            p->ctl_len += n;
            p->remaining -= n;
            b += n;

            if (p->remaining) {
                *pos = b;
                return NGX_AGAIN;
            }

            if (ngx_hookstream_ws_parse_control(p, ev) != NGX_OK) {
                goto failed;
            }

            *pos = b;
            return NGX_OK;

        default: /* ngx_hookstream_ws_st_error */
            return NGX_ERROR;
        }
    }

failed:

    p->state = ngx_hookstream_ws_st_error;
    *pos = b;

    return NGX_ERROR;
}


static ngx_int_t
ngx_hookstream_ws_parse_start(ngx_hookstream_ws_parser_t *p)
{
    ngx_uint_t  opcode, fin, rsv, len;

    fin = p->hdr[0] & 0x80;
    rsv = p->hdr[0] & 0x70;
    opcode = p->hdr[0] & 0x0f;
    len = p->hdr[1] & 0x7f;

    switch (opcode) {

    case NGX_HOOKSTREAM_WS_OP_CONT:
    case NGX_HOOKSTREAM_WS_OP_TEXT:
    case NGX_HOOKSTREAM_WS_OP_BINARY:
    case NGX_HOOKSTREAM_WS_OP_CLOSE:
    case NGX_HOOKSTREAM_WS_OP_PING:
    case NGX_HOOKSTREAM_WS_OP_PONG:
        break;

    default:
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                      "unknown opcode");
    }

    if (rsv & 0x30) {
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                      "reserved bits set");
    }

    /* RFC 7692: RSV1 marks a compressed message, on its first frame only */

    if ((rsv & 0x40)
        && (!p->deflate
            || opcode == NGX_HOOKSTREAM_WS_OP_CONT
            || (opcode & 0x8)))
    {
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                      "unexpected RSV1 bit");
    }

    if (opcode & 0x8) {

        if (!fin) {
            return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                          "fragmented control frame");
        }

        if (len > NGX_HOOKSTREAM_WS_MAX_CONTROL) {
            return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                          "control frame too long");
        }

        if (opcode == NGX_HOOKSTREAM_WS_OP_CLOSE && len == 1) {
            return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                          "invalid close payload");
        }

    } else if (opcode == NGX_HOOKSTREAM_WS_OP_CONT) {

        if (!p->in_message) {
            return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                          "unexpected continuation frame");
        }

    } else if (p->in_message) {
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                      "data frame inside fragmented message");
    }

    if (!(p->hdr[1] & 0x80)) {
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                      "unmasked frame");
    }

    p->hdr_need = 2 + 4;

    if (len == 126) {
        p->hdr_need += 2;

    } else if (len == 127) {
        p->hdr_need += 8;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_ws_parse_header(ngx_hookstream_ws_parser_t *p, u_char *pos,
    ngx_hookstream_ws_event_t *ev)
{
    u_char      *h;
    uint64_t     len;
    ngx_uint_t   i, opcode;

    h = p->hdr;
    len = h[1] & 0x7f;
    i = 2;

    if (len == 126) {
        len = ((uint64_t) h[2] << 8) | h[3];
        i = 4;

    } else if (len == 127) {

        if (h[2] & 0x80) {
            return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                          "invalid frame length");
        }

        len = 0;

        for (i = 2; i < 10; i++) {
            len = (len << 8) | h[i];
        }
    }

    ngx_memcpy(p->mask, &h[i], 4);
    p->mask_off = 0;

    opcode = h[0] & 0x0f;

    p->opcode = opcode;
    p->fin = (h[0] & 0x80) ? 1 : 0;
    p->remaining = len;
    p->hdr_len = 0;
    p->hdr_need = 2;

    if (opcode & 0x8) {
        p->ctl_len = 0;

        if (len) {
            p->state = ngx_hookstream_ws_st_control;
            return NGX_AGAIN;
        }

        p->state = ngx_hookstream_ws_st_header;

        return ngx_hookstream_ws_parse_control(p, ev);
    }

    if (opcode != NGX_HOOKSTREAM_WS_OP_CONT) {
        p->in_message = 1;
        p->msg_opcode = opcode;
        p->msg_size = 0;
        p->msg_compressed = (h[0] & 0x40) ? 1 : 0;
        p->msg_utf8 = (opcode == NGX_HOOKSTREAM_WS_OP_TEXT
                       && !p->msg_compressed);
        p->utf8 = 0;
    }

    /* the limit is checked against the declared lengths, before payload */

    if (p->max_message && len > p->max_message - p->msg_size) {
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_TOO_BIG,
                                      "message too big");
    }

    if (len > NGX_HOOKSTREAM_WS_MAX_UINT64 - p->msg_size) {
        p->msg_size = NGX_HOOKSTREAM_WS_MAX_UINT64;

    } else {
        p->msg_size += len;
    }

    if (len) {
        p->state = ngx_hookstream_ws_st_data;
        return NGX_AGAIN;
    }

    p->state = ngx_hookstream_ws_st_header;

    if (!p->fin) {
        /* an empty fragment that does not end the message tells nothing */
        return NGX_AGAIN;
    }

    return ngx_hookstream_ws_parse_data(p, pos, 0, ev);
}


static ngx_int_t
ngx_hookstream_ws_parse_data(ngx_hookstream_ws_parser_t *p, u_char *pos,
    size_t n, ngx_hookstream_ws_event_t *ev)
{
    ngx_int_t   rc;
    ngx_uint_t  fin;

    p->mask_off = ngx_hookstream_ws_mask(pos, n, p->mask, p->mask_off);
    p->remaining -= n;

    fin = (p->fin && p->remaining == 0);

    if (p->msg_utf8) {
        rc = ngx_hookstream_utf8_validate(&p->utf8, pos, n);

        if (rc == NGX_ERROR || (fin && rc != NGX_OK)) {
            return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_INVALID,
                                          "invalid UTF-8 in text message");
        }
    }

    ev->opcode = p->msg_opcode;
    ev->data = pos;
    ev->len = n;
    ev->fin = fin;
    ev->compressed = p->msg_compressed;
    ev->close_code = 0;
    ev->reason = NULL;
    ev->reason_len = 0;

    if (p->remaining == 0) {
        p->state = ngx_hookstream_ws_st_header;

        if (fin) {
            p->in_message = 0;
            p->msg_opcode = NGX_HOOKSTREAM_WS_OP_CONT;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_ws_parse_control(ngx_hookstream_ws_parser_t *p,
    ngx_hookstream_ws_event_t *ev)
{
    uint32_t    state;
    ngx_uint_t  code;

    p->state = ngx_hookstream_ws_st_header;

    ev->opcode = p->opcode;
    ev->data = p->ctl;
    ev->len = p->ctl_len;
    ev->fin = 1;
    ev->compressed = 0;
    ev->close_code = 0;
    ev->reason = p->ctl;
    ev->reason_len = 0;

    if (p->opcode != NGX_HOOKSTREAM_WS_OP_CLOSE || p->ctl_len == 0) {
        return NGX_OK;
    }

    /* a one-byte close payload was refused with the header */

    code = ((ngx_uint_t) p->ctl[0] << 8) | p->ctl[1];

    if (!ngx_hookstream_ws_close_code_valid(code)) {
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL,
                                      "invalid close code");
    }

    state = 0;

    if (ngx_hookstream_utf8_validate(&state, p->ctl + 2, p->ctl_len - 2)
        != NGX_OK)
    {
        return ngx_hookstream_ws_fail(p, NGX_HOOKSTREAM_WS_CLOSE_INVALID,
                                      "invalid UTF-8 in close reason");
    }

    ev->close_code = code;
    ev->reason = p->ctl + 2;
    ev->reason_len = p->ctl_len - 2;

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_ws_fail(ngx_hookstream_ws_parser_t *p, ngx_uint_t code,
    const char *reason)
{
    p->state = ngx_hookstream_ws_st_error;
    p->close_code = code;
    p->close_reason = reason;

    return NGX_ERROR;
}


size_t
ngx_hookstream_ws_frame_header(u_char *buf, ngx_uint_t opcode,
    ngx_uint_t fin, ngx_uint_t rsv1, uint64_t len)
{
    ngx_uint_t  i;

    buf[0] = (u_char) ((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0)
                       | (opcode & 0x0f));

    if (len < 126) {
        buf[1] = (u_char) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (u_char) (len >> 8);
        buf[3] = (u_char) len;
        return 4;
    }

    buf[1] = 127;

    for (i = 0; i < 8; i++) {
        buf[9 - i] = (u_char) len;
        len >>= 8;
    }

    return 10;
}


size_t
ngx_hookstream_ws_close_frame(u_char *buf, ngx_uint_t code,
    const u_char *reason, size_t reason_len)
{
    u_char  *p;

    if (code == 0) {
        return ngx_hookstream_ws_frame_header(buf,
                                              NGX_HOOKSTREAM_WS_OP_CLOSE,
                                              1, 0, 0);
    }

    if (reason_len > NGX_HOOKSTREAM_WS_MAX_CONTROL - 2) {
        reason_len = NGX_HOOKSTREAM_WS_MAX_CONTROL - 2;

        /* do not leave a character cut in two */

        while (reason_len && (reason[reason_len] & 0xc0) == 0x80) {
            reason_len--;
        }
    }

    p = buf + ngx_hookstream_ws_frame_header(buf, NGX_HOOKSTREAM_WS_OP_CLOSE,
                                             1, 0, 2 + reason_len);

    *p++ = (u_char) (code >> 8);
    *p++ = (u_char) code;

    if (reason_len) {
        p = ngx_cpymem(p, reason, reason_len);
    }

    return p - buf;
}


ngx_uint_t
ngx_hookstream_ws_mask(u_char *data, size_t len, const u_char *key,
    ngx_uint_t offset)
{
    u_char      *last;
    u_char       k[8];
    uint64_t     w, m;
    ngx_uint_t   i;

    last = data + len;

    if (len >= 32) {

        while ((uintptr_t) data & 7) {
            *data++ ^= key[offset++ & 3];
        }

        /* eight bytes are two whole turns of the key: offset stays */

        for (i = 0; i < 8; i++) {
            k[i] = key[(offset + i) & 3];
        }

        ngx_memcpy(&m, k, 8);

        while (last - data >= 8) {
            ngx_memcpy(&w, data, 8);
            w ^= m;
            ngx_memcpy(data, &w, 8);
            data += 8;
        }
    }

    while (data < last) {
        *data++ ^= key[offset++ & 3];
    }

    return offset & 3;
}


ngx_int_t
ngx_hookstream_utf8_validate(uint32_t *state, const u_char *p, size_t n)
{
    u_char         c;
    uint32_t       s, need;
    uint64_t       w;
    const u_char  *last;

    s = *state;

    if (s == NGX_HOOKSTREAM_UTF8_REJECT) {
        return NGX_ERROR;
    }

    last = p + n;

    while (p < last) {

        if (s == 0) {

            /* ASCII runs, eight bytes at a time */

            while (last - p >= 8) {
                ngx_memcpy(&w, p, 8);

                if (w & 0x8080808080808080ULL) {
                    break;
                }

                p += 8;
            }

            if (p == last) {
                break;
            }

            c = *p++;

            if (c < 0x80) {
                continue;
            }

            if (c < 0xc2) {
                /* a continuation byte, or an overlong two-byte form */
                goto invalid;
            }

            if (c < 0xe0) {
                s = ngx_hookstream_utf8_expect(1, 0x80, 0xbf);

            } else if (c < 0xf0) {

                if (c == 0xe0) {
                    /* overlong below U+0800 */
                    s = ngx_hookstream_utf8_expect(2, 0xa0, 0xbf);

                } else if (c == 0xed) {
                    /* surrogates U+D800..U+DFFF */
                    s = ngx_hookstream_utf8_expect(2, 0x80, 0x9f);

                } else {
                    s = ngx_hookstream_utf8_expect(2, 0x80, 0xbf);
                }

            } else if (c < 0xf5) {

                if (c == 0xf0) {
                    /* overlong below U+10000 */
                    s = ngx_hookstream_utf8_expect(3, 0x90, 0xbf);

                } else if (c == 0xf4) {
                    /* past U+10FFFF */
                    s = ngx_hookstream_utf8_expect(3, 0x80, 0x8f);

                } else {
                    s = ngx_hookstream_utf8_expect(3, 0x80, 0xbf);
                }

            } else {
                goto invalid;
            }

            continue;
        }

        c = *p++;

        if (c < ((s >> 8) & 0xff) || c > (s & 0xff)) {
            goto invalid;
        }

        need = (s >> 16) - 1;
        s = need ? ngx_hookstream_utf8_expect(need, 0x80, 0xbf) : 0;
    }

    *state = s;

    return s ? NGX_AGAIN : NGX_OK;

invalid:

    *state = NGX_HOOKSTREAM_UTF8_REJECT;

    return NGX_ERROR;
}


ngx_uint_t
ngx_hookstream_ws_close_code_valid(ngx_uint_t code)
{
    if (code >= 1000 && code <= 1003) {
        return 1;
    }

    /* 1004 is reserved, 1005 and 1006 must never be sent */

    if (code >= 1007 && code <= 1014) {
        return 1;
    }

    /* 1015 must never be sent, 1016-2999 are unassigned */

    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    return 0;
}
