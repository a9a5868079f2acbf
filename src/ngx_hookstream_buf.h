
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_BUF_H_INCLUDED_
#define _NGX_HOOKSTREAM_BUF_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * A reference-counted byte buffer on the worker's heap.  One buffer holds
 * one outgoing message and is linked, not copied, into every send queue
 * that carries it.  The first NGX_HOOKSTREAM_BUF_HEADROOM bytes are left
 * free so the WebSocket layer can write a frame header in front of the
 * payload without moving it; "start" then points at the header.
 */

#define NGX_HOOKSTREAM_BUF_HEADROOM  10


typedef struct ngx_hookstream_buf_s  ngx_hookstream_buf_t;

struct ngx_hookstream_buf_s {
    ngx_uint_t              refs;
    u_char                 *start;      /* first byte to send */
    u_char                 *last;       /* end of the bytes */
    u_char                 *end;        /* end of the allocation */
    ngx_hookstream_buf_t   *deflated;   /* compressed twin, built once */
    unsigned                framed:1;   /* start points at a frame header */
    unsigned                private:1;  /* owned by one queue: appendable */
    u_char                  data[];
};


static ngx_inline ngx_hookstream_buf_t *
ngx_hookstream_buf_alloc(size_t size, ngx_log_t *log)
{
    ngx_hookstream_buf_t  *b;

    b = ngx_alloc(sizeof(ngx_hookstream_buf_t) + NGX_HOOKSTREAM_BUF_HEADROOM
                  + size, log);
    if (b == NULL) {
        return NULL;
    }

    b->refs = 1;
    b->start = b->data + NGX_HOOKSTREAM_BUF_HEADROOM;
    b->last = b->start;
    b->end = b->start + size;
    b->deflated = NULL;
    b->framed = 0;
    b->private = 0;

    return b;
}


static ngx_inline ngx_hookstream_buf_t *
ngx_hookstream_buf_ref(ngx_hookstream_buf_t *b)
{
    b->refs++;
    return b;
}


static ngx_inline void
ngx_hookstream_buf_unref(ngx_hookstream_buf_t *b)
{
    if (--b->refs == 0) {
        if (b->deflated) {
            ngx_hookstream_buf_unref(b->deflated);
        }

        ngx_free(b);
    }
}


#endif /* _NGX_HOOKSTREAM_BUF_H_INCLUDED_ */
