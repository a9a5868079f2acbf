
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_DEFLATE_H_INCLUDED_
#define _NGX_HOOKSTREAM_DEFLATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"


/*
 * RFC 7692 permessage-deflate, always without context takeover in either
 * direction, so that no connection owns a zlib stream: each worker keeps
 * one deflate and one inflate stream, reset for every message.
 */

/* messages shorter than this go out uncompressed (RSV1 clear) */
#define NGX_HOOKSTREAM_DEFLATE_MIN_SIZE  64


/*
 * Reads the client's Sec-WebSocket-Extensions offers when the location
 * has "hookstream_deflate on" and accepts the first acceptable
 * permessage-deflate offer: ws->deflate, ws->deflate_bits and
 * ws->parser.deflate are set, and *line gets the whole response header
 * line ("Sec-WebSocket-Extensions: ...\r\n", from the request pool) to
 * put into the 101.  No acceptable offer, or a malformed header: line->len
 * is 0 and the upgrade goes on without the extension.  NGX_ERROR only
 * when out of memory.
 */
ngx_int_t ngx_http_hookstream_deflate_negotiate(ngx_http_hookstream_ws_t *ws,
    ngx_str_t *line);

/*
 * Inflates a whole compressed message, checks the UTF-8 of a text message
 * and hands the result to the endpoint's message handler, returning what
 * the handler returns.  Invalid compressed data or UTF-8 (1007) and an
 * inflated size over hookstream_max_message (1009) start the close
 * handshake, set ws->fail and return NGX_OK.
 */
ngx_int_t ngx_http_hookstream_deflate_message(ngx_http_hookstream_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len);

/*
 * The buffer to queue on a connection that negotiated permessage-deflate
 * with server window bits "bits": b's compressed twin (a framed message
 * with RSV1 set, built on first use and kept in b->deflated for every
 * other such connection of this worker), or b itself when the message is
 * small, does not shrink, or is longer than the client's window allows.
 * b may be framed already (ngx_http_hookstream_ws_frame()) or not.
 */
ngx_hookstream_buf_t *ngx_hookstream_deflate_buf(ngx_hookstream_buf_t *b,
    ngx_uint_t bits, ngx_log_t *log);


#endif /* _NGX_HOOKSTREAM_DEFLATE_H_INCLUDED_ */
