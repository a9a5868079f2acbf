
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_WS_H_INCLUDED_
#define _NGX_HOOKSTREAM_WS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream_buf.h"
#include "ngx_hookstream_ws_parse.h"


/* close codes of our own (RFC 6455 7.4.2: 4000-4999 are private) */
#define NGX_HOOKSTREAM_CLOSE_NORMAL         1000
#define NGX_HOOKSTREAM_CLOSE_GOING_AWAY     1001
#define NGX_HOOKSTREAM_CLOSE_INTERNAL       1011
#define NGX_HOOKSTREAM_CLOSE_HEARTBEAT      4000
#define NGX_HOOKSTREAM_CLOSE_REVOKED        4001
#define NGX_HOOKSTREAM_CLOSE_SLOW           4008


/* what an endpoint plugs into a live connection */
typedef struct {
    /* a complete message (text or binary); NGX_ERROR closes with 1011 */
    ngx_int_t   (*message)(ngx_http_hookstream_ws_t *ws, ngx_uint_t opcode,
                           u_char *data, size_t len);
    /* sends the endpoint's heartbeat; NULL: an RFC 6455 ping frame */
    ngx_int_t   (*ping)(ngx_http_hookstream_ws_t *ws);
    /* the connection is going away: release what the endpoint holds */
    void        (*cleanup)(ngx_http_hookstream_ws_t *ws);
} ngx_http_hookstream_ws_handler_t;


/*
 * A WebSocket connection.  It lives in the connection's pool: the request
 * that was upgraded is freed (and logged) as soon as the handshake is
 * over, so an idle connection holds this, its endpoint's state and
 * nginx's connection pool, and no request, header or read buffers.
 */
struct ngx_http_hookstream_ws_s {
    ngx_http_request_t                *request;    /* NULL once released */
    ngx_http_cleanup_t                *request_cleanup;
    ngx_connection_t                  *connection;
    ngx_http_hookstream_loc_conf_t    *conf;
    ngx_http_hookstream_main_conf_t   *main_conf;
    ngx_http_hookstream_ws_handler_t  *handler;
    void                              *data;       /* the endpoint's */
    ngx_hookstream_shctx_t            *shctx;      /* for the counters */

    /* from the location's ngx_http_core_module settings */
    ngx_msec_t                         send_timeout;
    ngx_msec_t                         lingering_timeout;
    ngx_msec_t                         lingering_time;
    time_t                             lingering_end;

    /* the credential, listed by it for revocations (auth attach) */
    ngx_queue_t                        live;
    u_char                             credential[NGX_HOOKSTREAM_SHA256_LEN];

    ngx_hookstream_ws_parser_t         parser;

    ngx_buf_t                         *in;         /* NULL while idle */
    u_char                            *msg;        /* a fragmented message */
    size_t                             msg_len;
    size_t                             msg_size;
    ngx_uint_t                         msg_opcode;

    ngx_hookstream_buf_t             **queue;      /* a ring of buffers */
    ngx_uint_t                         qhead;
    ngx_uint_t                         qcount;
    ngx_uint_t                         qsize;
    size_t                             qsent;      /* of the head buffer */
    size_t                             qbytes;     /* queued, not sent */

    ngx_event_t                        heartbeat;
    ngx_msec_t                         ping_sent;

    ngx_uint_t                         close_code;

    /* hookstream_client_rate: messages in the current second */
    ngx_msec_t                         rate_start;
    ngx_uint_t                         rate_count;
    ngx_uint_t                         rate_strikes;

    unsigned                           awaiting_pong:1;
    unsigned                           close_sent:1;
    unsigned                           close_received:1;
    unsigned                           closing:1;   /* no more input */
    unsigned                           fail:1;      /* drop after flush */
    unsigned                           write_posted:1;
    unsigned                           read_paused:1;
    unsigned                           hold:1;      /* endpoint's pause */
    unsigned                           finalized:1;
    unsigned                           abort:1;     /* no lingering close */
    unsigned                           counted:1;   /* in the counters */
    unsigned                           listed:1;    /* in the live queue */
    unsigned                           reset_timedout:1;

    /* RFC 7692, set by ngx_http_hookstream_deflate_negotiate() */
    unsigned                           deflate:1;
    unsigned                           deflate_bits:4;  /* server window */
};


/*
 * Checks the upgrade request (RFC 6455 4.2.1).  NGX_OK, or the HTTP status
 * to answer: NGX_HTTP_BAD_REQUEST, or 426 with Sec-WebSocket-Version: 13
 * added to the response headers.
 */
ngx_int_t ngx_http_hookstream_ws_check(ngx_http_request_t *r,
    const char **message);

/*
 * Answers 101 and takes the connection over; the caller returns NGX_DONE
 * from its content handler.  ws->data is the endpoint's state: "size"
 * zeroed bytes allocated with the WebSocket (one allocation a
 * connection), to be filled in before ngx_http_hookstream_ws_start().
 */
ngx_http_hookstream_ws_t *ngx_http_hookstream_ws_upgrade(
    ngx_http_request_t *r, ngx_http_hookstream_ws_handler_t *handler,
    size_t size);

/*
 * Starts reading: call once the endpoint has set up its state.  The
 * request is released in the first event after this, when nginx's HTTP
 * code no longer uses it: endpoints keep nothing in its pool.
 */
void ngx_http_hookstream_ws_start(ngx_http_hookstream_ws_t *ws);

/* queues a ready text frame built from bytes (copied) */
ngx_int_t ngx_http_hookstream_ws_send_text(ngx_http_hookstream_ws_t *ws,
    u_char *data, size_t len);

/*
 * Queues a shared buffer (an envelope with headroom, from the broker):
 * the frame header is written into its headroom once, and the buffer is
 * linked, not copied.  NGX_DECLINED when the send queue limit was passed:
 * the connection is then being closed with 4008.
 */
ngx_int_t ngx_http_hookstream_ws_send_buf(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_buf_t *b);

/* starts the close handshake with a code and a reason */
void ngx_http_hookstream_ws_close(ngx_http_hookstream_ws_t *ws,
    ngx_uint_t code, const char *reason);

/* stops and restarts reading, for an endpoint with too much in flight */
void ngx_http_hookstream_ws_pause(ngx_http_hookstream_ws_t *ws);
void ngx_http_hookstream_ws_resume(ngx_http_hookstream_ws_t *ws);

/* marks the connection alive (a pong, JSON or RFC 6455) */
void ngx_http_hookstream_ws_alive(ngx_http_hookstream_ws_t *ws);

/* wraps a payload into a text frame in place (uses the headroom) */
void ngx_http_hookstream_ws_frame(ngx_hookstream_buf_t *b);


#endif /* _NGX_HOOKSTREAM_WS_H_INCLUDED_ */
