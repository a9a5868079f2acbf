
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/sha.h>
#include "ngx_hookstream.h"
#include "ngx_hookstream_deflate.h"


#define NGX_HOOKSTREAM_WS_GUID          "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define NGX_HOOKSTREAM_WS_READ_SIZE     16384
#define NGX_HOOKSTREAM_WS_PRIVATE_SIZE  4096
#define NGX_HOOKSTREAM_WS_IOV_MAX       64
#define NGX_HOOKSTREAM_WS_READS         16
#define NGX_HOOKSTREAM_WS_CLOSE_WAIT    5000
#define NGX_HOOKSTREAM_WS_EXIT_WAIT     1000


static ngx_uint_t ngx_http_hookstream_ws_has_token(ngx_str_t *value,
    const char *token, size_t len);
static void ngx_http_hookstream_ws_release_handler(ngx_event_t *ev);
static void ngx_http_hookstream_ws_release(ngx_http_hookstream_ws_t *ws);
static void ngx_http_hookstream_ws_free_buffers(ngx_connection_t *c,
    ngx_chain_t *cl);
static void ngx_http_hookstream_ws_read_handler(ngx_event_t *rev);
static void ngx_http_hookstream_ws_write_handler(ngx_event_t *wev);
static void ngx_http_hookstream_ws_heartbeat_handler(ngx_event_t *ev);
static void ngx_http_hookstream_ws_read(ngx_http_hookstream_ws_t *ws);
static ngx_int_t ngx_http_hookstream_ws_process(ngx_http_hookstream_ws_t *ws);
static ngx_int_t ngx_http_hookstream_ws_data(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_ws_event_t *ev);
static ngx_int_t ngx_http_hookstream_ws_control(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_ws_event_t *ev);
static ngx_int_t ngx_http_hookstream_ws_flush(ngx_http_hookstream_ws_t *ws);
static void ngx_http_hookstream_ws_done(ngx_http_hookstream_ws_t *ws);
static void ngx_http_hookstream_ws_finalize(ngx_http_hookstream_ws_t *ws);
static void ngx_http_hookstream_ws_cleanup(void *data);
static void ngx_http_hookstream_ws_linger(ngx_connection_t *c);
static void ngx_http_hookstream_ws_linger_handler(ngx_event_t *rev);
static void ngx_http_hookstream_ws_close_connection(ngx_connection_t *c);
static ngx_int_t ngx_http_hookstream_ws_push(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_buf_t *b);
static ngx_int_t ngx_http_hookstream_ws_send_frame(
    ngx_http_hookstream_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len);
static void ngx_http_hookstream_ws_drop_queue(ngx_http_hookstream_ws_t *ws);
static void ngx_http_hookstream_ws_post_write(ngx_http_hookstream_ws_t *ws);
static ngx_int_t ngx_http_hookstream_ws_alloc_input(
    ngx_http_hookstream_ws_t *ws, size_t size);
static void ngx_http_hookstream_ws_free_input(ngx_http_hookstream_ws_t *ws);


ngx_int_t
ngx_http_hookstream_ws_check(ngx_http_request_t *r, const char **message)
{
    u_char            key[32];
    ngx_str_t         src, dst;
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *v;

    if (r->method != NGX_HTTP_GET) {
        *message = "WebSocket upgrade requires GET";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (r->http_version != NGX_HTTP_VERSION_11 || r != r->main) {
        *message = "WebSocket upgrade requires HTTP/1.1";
        return NGX_HTTP_BAD_REQUEST;
    }

    h = r->headers_in.upgrade;

    if (h == NULL
        || !ngx_http_hookstream_ws_has_token(&h->value, "websocket", 9))
    {
        *message = "Missing \"Upgrade: websocket\" header";
        return NGX_HTTP_BAD_REQUEST;
    }

    /* "Connection" may come in several lines, each a list of tokens */

    found = 0;
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

        if (h[i].key.len == sizeof("Connection") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Connection",
                               sizeof("Connection") - 1) == 0
            && ngx_http_hookstream_ws_has_token(&h[i].value, "upgrade", 7))
        {
            found = 1;
            break;
        }
    }

    if (!found) {
        *message = "Missing \"Connection: Upgrade\" header";
        return NGX_HTTP_BAD_REQUEST;
    }

    h = ngx_http_hookstream_header(r, "Sec-WebSocket-Version",
                                      sizeof("Sec-WebSocket-Version") - 1);

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        v = ngx_list_push(&r->headers_out.headers);
        if (v == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        v->hash = 1;
        ngx_str_set(&v->key, "Sec-WebSocket-Version");
        ngx_str_set(&v->value, "13");

        *message = "Unsupported WebSocket version: only 13 is supported";
        return NGX_HTTP_HOOKSTREAM_UPGRADE_REQUIRED;
    }

    h = ngx_http_hookstream_header(r, "Sec-WebSocket-Key",
                                      sizeof("Sec-WebSocket-Key") - 1);

    if (h == NULL || h->value.len != 24) {
        *message = "Invalid \"Sec-WebSocket-Key\" header";
        return NGX_HTTP_BAD_REQUEST;
    }

    src = h->value;
    dst.data = key;

    if (ngx_decode_base64(&dst, &src) != NGX_OK || dst.len != 16) {
        *message = "Invalid \"Sec-WebSocket-Key\" header";
        return NGX_HTTP_BAD_REQUEST;
    }

    return NGX_OK;
}


/* the first request header of that name */

ngx_table_elt_t *
ngx_http_hookstream_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* is "token" one of the comma separated, case-insensitive tokens? */

static ngx_uint_t
ngx_http_hookstream_ws_has_token(ngx_str_t *value, const char *token,
    size_t len)
{
    u_char  *p, *last, *start, *end;

    p = value->data;
    last = p + value->len;

    while (p < last) {

        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < last && *p != ',') {
            p++;
        }

        end = p;

        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }

        if ((size_t) (end - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


ngx_http_hookstream_ws_t *
ngx_http_hookstream_ws_upgrade(ngx_http_request_t *r,
    ngx_http_hookstream_ws_handler_t *handler, size_t size)
{
    u_char                           *p;
    size_t                            len, pipelined;
    ngx_str_t                         digest, accept, ext;
    ngx_table_elt_t                  *key;
    ngx_connection_t                 *c;
    ngx_http_cleanup_t               *cln;
    ngx_hookstream_buf_t             *b;
    ngx_http_hookstream_ws_t         *ws;
    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_hookstream_main_conf_t  *hmcf;
    u_char                            md[SHA_DIGEST_LENGTH];
    u_char                            encoded[32];
    u_char                            concat[24
                                             + sizeof(NGX_HOOKSTREAM_WS_GUID)];

    c = r->connection;

    key = ngx_http_hookstream_header(r, "Sec-WebSocket-Key",
                                        sizeof("Sec-WebSocket-Key") - 1);
    if (key == NULL) {
        return NULL;
    }

    /* the connection's pool: the request goes away after the handshake */

    ws = ngx_pcalloc(c->pool, ngx_align(sizeof(ngx_http_hookstream_ws_t),
                                        NGX_ALIGNMENT)
                              + size);
    if (ws == NULL) {
        return NULL;
    }

    /* until then, the request's end is ours too */

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_hookstream_ws_cleanup;
    cln->data = ws;

    ws->request = r;
    ws->request_cleanup = cln;
    ws->connection = c;
    ws->conf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);
    ws->main_conf = hmcf;
    ws->shctx = hmcf->shm_zone ? hmcf->shm_zone->data : NULL;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    ws->send_timeout = clcf->send_timeout;
    ws->lingering_timeout = clcf->lingering_timeout;
    ws->lingering_time = clcf->lingering_time;
    ws->reset_timedout = clcf->reset_timedout_connection;
    ws->handler = handler;
    ws->data = (u_char *) ws + ngx_align(sizeof(ngx_http_hookstream_ws_t),
                                         NGX_ALIGNMENT);

    ngx_hookstream_ws_parser_init(&ws->parser);
    ws->parser.max_message = ws->conf->max_message;

    /* permessage-deflate: an offer we cannot take is declined, not failed */

    if (ngx_http_hookstream_deflate_negotiate(ws, &ext) != NGX_OK) {
        return NULL;
    }

    /* the key was checked to be 24 characters of base64 */

    p = ngx_cpymem(concat, key->value.data, key->value.len);
    p = ngx_cpymem(p, NGX_HOOKSTREAM_WS_GUID,
                   sizeof(NGX_HOOKSTREAM_WS_GUID) - 1);

    SHA1(concat, p - concat, md);

    digest.data = md;
    digest.len = SHA_DIGEST_LENGTH;
    accept.data = encoded;
    ngx_encode_base64(&accept, &digest);

    len = sizeof("HTTP/1.1 101 Switching Protocols" CRLF
                 "Upgrade: websocket" CRLF
                 "Connection: Upgrade" CRLF
                 "Sec-WebSocket-Accept: " CRLF CRLF) - 1
          + accept.len + ext.len;

    b = ngx_hookstream_buf_alloc(len, c->log);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_cpymem(b->last, "HTTP/1.1 101 Switching Protocols" CRLF
                   "Upgrade: websocket" CRLF
                   "Connection: Upgrade" CRLF
                   "Sec-WebSocket-Accept: ",
                   sizeof("HTTP/1.1 101 Switching Protocols" CRLF
                          "Upgrade: websocket" CRLF
                          "Connection: Upgrade" CRLF
                          "Sec-WebSocket-Accept: ") - 1);
    p = ngx_cpymem(p, accept.data, accept.len);
    *p++ = CR; *p++ = LF;

    if (ext.len) {
        p = ngx_cpymem(p, ext.data, ext.len);
    }

    *p++ = CR; *p++ = LF;
    b->last = p;
    b->framed = 1;

    if (ngx_http_hookstream_ws_push(ws, b) != NGX_OK) {
        ngx_hookstream_buf_unref(b);
        return NULL;
    }

    /* the client may already have sent frames behind the handshake */

    pipelined = r->header_in->last - r->header_in->pos;

    if (pipelined) {
        if (ngx_http_hookstream_ws_alloc_input(ws,
                       ngx_max(pipelined, NGX_HOOKSTREAM_WS_READ_SIZE))
            != NGX_OK)
        {
            return NULL;
        }

        ws->in->last = ngx_cpymem(ws->in->last, r->header_in->pos,
                                  pipelined);
        r->header_in->pos = r->header_in->last;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "hookstream ws upgrade, %uz pipelined bytes, ep:%ui",
                   pipelined, ws->conf->endpoint);

    ngx_http_set_ctx(r, ws, ngx_hookstream_module);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->header_sent = 1;
    r->keepalive = 0;
    r->lingering_close = 0;
    r->main->count++;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    /* the first event after the content phase releases the request */

    c->read->handler = ngx_http_hookstream_ws_release_handler;
    c->write->handler = ngx_http_hookstream_ws_release_handler;

    ngx_http_hookstream_auth_attach(r, ws);

    /* small frames go out at once, as on nginx's keepalive connections */

    if (clcf->tcp_nodelay) {
        /* a failure is logged by nginx and costs only latency */
        (void) ngx_tcp_nodelay(c);
    }

    /* lets a graceful shutdown reach us through c->close */
    c->idle = 1;

    ngx_hookstream_stats_connection(ws->shctx, ws->conf->endpoint, 1);
    ws->counted = 1;

    ws->heartbeat.handler = ngx_http_hookstream_ws_heartbeat_handler;
    ws->heartbeat.data = ws;
    ws->heartbeat.log = c->log;

    return ws;
}


void
ngx_http_hookstream_ws_start(ngx_http_hookstream_ws_t *ws)
{
    ngx_connection_t  *c;

    c = ws->connection;

    ngx_add_timer(&ws->heartbeat, ws->conf->heartbeat_interval);

    if (ngx_exiting || ngx_terminate) {
        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_GOING_AWAY,
                                     "server shutting down");
        return;
    }

    /*
     * The 101 (with a welcome) goes out in this turn of the event loop,
     * not the next one: nothing else is queued behind a handshake.
     */

    if (!c->write->posted) {
        ws->write_posted = 1;
        ngx_post_event(c->write, &ngx_posted_events);
    }

    ngx_post_event(c->read, &ngx_posted_events);
}


/*
 * The connection's first event after the upgrade.  By then nginx's HTTP
 * code has returned from the content phase, so the request can go the
 * way of a request on a keepalive connection: logged with its 101, its
 * pool destroyed, its header buffers freed.  From here on c->data is the
 * WebSocket.
 */

static void
ngx_http_hookstream_ws_release_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_hookstream_ws_t  *ws;

    c = ev->data;
    r = c->data;
    ws = ngx_http_get_module_ctx(r, ngx_hookstream_module);

    ngx_http_hookstream_ws_release(ws);

    if (ev->write) {
        ngx_http_hookstream_ws_write_handler(ev);

    } else {
        ngx_http_hookstream_ws_read_handler(ev);
    }
}


static void
ngx_http_hookstream_ws_release(ngx_http_hookstream_ws_t *ws)
{
    ngx_buf_t              *b;
    ngx_connection_t       *c;
    ngx_http_request_t     *r;
    ngx_http_connection_t  *hc;

    r = ws->request;
    c = ws->connection;
    hc = r->http_connection;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "hookstream ws: releasing the request");

    ws->request_cleanup->handler = NULL;
    ws->request_cleanup = NULL;
    ws->request = NULL;

    ngx_http_free_request(r, 0);

    c->data = ws;
    c->destroyed = 0;
    c->log->action = "serving a WebSocket";

    c->read->handler = ngx_http_hookstream_ws_read_handler;
    c->write->handler = ngx_http_hookstream_ws_write_handler;

    /* what nginx would free on a keepalive connection (pipelined bytes
     * were moved to the WebSocket's own input by the upgrade) */

    b = c->buffer;

    if (b && ngx_pfree(c->pool, b->start) == NGX_OK) {
        b->pos = NULL;
        b->start = NULL;
        b->last = NULL;
        b->end = NULL;
    }

    ngx_http_hookstream_ws_free_buffers(c, hc->free);
    hc->free = NULL;

    ngx_http_hookstream_ws_free_buffers(c, hc->busy);
    hc->busy = NULL;
    hc->nbusy = 0;
}


/* large client header buffers, given back to the connection's pool */

static void
ngx_http_hookstream_ws_free_buffers(ngx_connection_t *c, ngx_chain_t *cl)
{
    ngx_chain_t  *ln;

    while (cl) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }
}


static void
ngx_http_hookstream_ws_read_handler(ngx_event_t *rev)
{
    ngx_connection_t          *c;
    ngx_http_hookstream_ws_t  *ws;

    c = rev->data;
    ws = c->data;

    if (c->close) {
        /* a graceful shutdown or reload of nginx */
        c->close = 0;
        c->idle = 0;

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "hookstream ws: worker shutting down");

        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_GOING_AWAY,
                                     "server shutting down");
        ngx_http_hookstream_ws_done(ws);
        return;
    }

    ngx_http_hookstream_ws_read(ws);
    ngx_http_hookstream_ws_done(ws);
}


static void
ngx_http_hookstream_ws_read(ngx_http_hookstream_ws_t *ws)
{
    ssize_t            n;
    ngx_uint_t         reads;
    ngx_buf_t         *in;
    ngx_connection_t  *c;

    c = ws->connection;

    for (reads = 0; /* void */; reads++) {

        if (ws->fail || (ws->close_received && ws->close_sent)) {
            return;
        }

        if (ws->hold) {
            return;
        }

        if (ws->qbytes > ws->conf->send_queue) {
            /* the client does not read its replies: stop reading too */
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "hookstream ws: reading paused, %uz queued",
                           ws->qbytes);
            ws->read_paused = 1;
            return;
        }

        if (reads == NGX_HOOKSTREAM_WS_READS) {
            /* be fair to the other connections of this worker */
            ngx_post_event(c->read, &ngx_posted_events);
            return;
        }

        in = ws->in;

        if (in && in->pos < in->last) {
            /* bytes pipelined behind the handshake */
            n = 0;
            goto process;
        }

        if (in == NULL) {
            if (ngx_http_hookstream_ws_alloc_input(ws,
                                                  NGX_HOOKSTREAM_WS_READ_SIZE)
                != NGX_OK)
            {
                ws->fail = 1;
                return;
            }

            in = ws->in;
        }

        n = c->recv(c, in->last, in->end - in->last);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "hookstream ws recv: %z", n);

        if (n == NGX_AGAIN) {
            ngx_http_hookstream_ws_free_input(ws);

            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ws->fail = 1;
            }

            return;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "hookstream ws: client closed the connection");
            c->read->eof = 1;
            ws->fail = 1;
            ngx_http_hookstream_ws_drop_queue(ws);
            return;
        }

        in->last += n;

    process:

        if (ngx_http_hookstream_ws_process(ws) != NGX_OK) {
            return;
        }
    }
}


static ngx_int_t
ngx_http_hookstream_ws_alloc_input(ngx_http_hookstream_ws_t *ws, size_t size)
{
    ngx_buf_t  *b;

    /* the buffer's header and its memory in one allocation */

    b = ngx_alloc(sizeof(ngx_buf_t) + size, ws->connection->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(b, sizeof(ngx_buf_t));

    b->start = (u_char *) (b + 1);
    b->pos = b->start;
    b->last = b->start;
    b->end = b->start + size;
    b->temporary = 1;

    ws->in = b;

    return NGX_OK;
}


static void
ngx_http_hookstream_ws_free_input(ngx_http_hookstream_ws_t *ws)
{
#if (NGX_HTTP_SSL)
    ngx_connection_t  *c;

    c = ws->connection;
#endif

    /* an idle connection holds no read buffer */

    if (ws->in && ws->in->pos == ws->in->last) {
        ngx_free(ws->in);
        ws->in = NULL;
    }

    /* nor a reassembly buffer, once no message is half-read */

    if (ws->msg && ws->msg_opcode == 0) {
        ngx_free(ws->msg);
        ws->msg = NULL;
        ws->msg_size = 0;
    }

#if (NGX_HTTP_SSL)
    if (c->ssl && ws->qcount == 0 && !(c->buffered & NGX_SSL_BUFFERED)) {
        ngx_ssl_free_buffer(c);
    }
#endif
}


static ngx_int_t
ngx_http_hookstream_ws_process(ngx_http_hookstream_ws_t *ws)
{
    u_char                     *pos;
    ngx_int_t                   rc;
    ngx_buf_t                  *in;
    ngx_hookstream_ws_event_t   ev;

    in = ws->in;
    pos = in->pos;

    for ( ;; ) {
        rc = ngx_hookstream_ws_parse(&ws->parser, &pos, in->last, &ev);

        if (rc == NGX_AGAIN) {
            break;
        }

        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                          "client sent an invalid WebSocket frame: %s",
                          ws->parser.close_reason);

            ngx_hookstream_stat_add(ws->shctx, closes_protocol, 1);

            ngx_http_hookstream_ws_close(ws, ws->parser.close_code,
                                         ws->parser.close_reason);
            ws->fail = 1;
            in->pos = in->last;
            return NGX_DONE;
        }

        if (ev.opcode & 0x8) {
            rc = ngx_http_hookstream_ws_control(ws, &ev);

        } else {
            rc = ngx_http_hookstream_ws_data(ws, &ev);
        }

        if (rc != NGX_OK) {
            in->pos = in->last;
            return NGX_DONE;
        }
    }

    /* every byte is consumed: slices were unmasked and used in place */

    in->pos = in->start;
    in->last = in->start;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hookstream_ws_data(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_ws_event_t *ev)
{
    u_char     *data;
    size_t      size, len;
    ngx_int_t   rc;
    ngx_uint_t  opcode;

    if (ws->close_sent) {
        /* after our close frame only the client's close matters */
        return NGX_OK;
    }

    if (ws->msg_opcode == 0 && ev->fin) {
        /* the usual case: a whole message in one read, no copy */
        data = ev->data;
        len = ev->len;
        opcode = ev->opcode;
        goto deliver;
    }

    if (ws->msg_opcode == 0) {
        ws->msg_opcode = ev->opcode;
        ws->msg_len = 0;
    }

    if (ws->msg_len + ev->len > ws->msg_size) {
        size = ngx_max(ws->msg_size * 2, ws->msg_len + ev->len);
        size = ngx_max(size, 4096);

        data = ngx_alloc(size, ws->connection->log);
        if (data == NULL) {
            ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_INTERNAL,
                                         "out of memory");
            ws->fail = 1;
            return NGX_ERROR;
        }

        if (ws->msg) {
            ngx_memcpy(data, ws->msg, ws->msg_len);
            ngx_free(ws->msg);
        }

        ws->msg = data;
        ws->msg_size = size;
    }

    if (ev->len) {
        ngx_memcpy(ws->msg + ws->msg_len, ev->data, ev->len);
        ws->msg_len += ev->len;
    }

    if (!ev->fin) {
        return NGX_OK;
    }

    data = ws->msg;
    len = ws->msg_len;
    opcode = ws->msg_opcode;

    ws->msg_opcode = 0;
    ws->msg_len = 0;

deliver:

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "hookstream ws message: opcode:%ui len:%uz",
                   opcode, len);

    ngx_hookstream_stat_add(ws->shctx, messages_in, 1);

    if (ngx_http_hookstream_client_rate(ws) != NGX_OK) {
        /* over hookstream_client_rate: dropped, the client was told */
        return NGX_OK;
    }

    if (ev->compressed) {
        rc = ngx_http_hookstream_deflate_message(ws, opcode, data, len);

    } else {
        rc = ws->handler->message(ws, opcode, data, len);
    }

    /* a large reassembly buffer is not kept for the next message */

    if (ws->msg && ws->msg_size > 65536 && ws->msg_opcode == 0) {
        ngx_free(ws->msg);
        ws->msg = NULL;
        ws->msg_size = 0;
    }

    if (rc == NGX_ERROR) {
        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_INTERNAL,
                                     "internal error");
        ws->fail = 1;
        return NGX_ERROR;
    }

    return ws->fail ? NGX_DONE : NGX_OK;
}


static ngx_int_t
ngx_http_hookstream_ws_control(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_ws_event_t *ev)
{
    u_char  code[2];

    switch (ev->opcode) {

    case NGX_HOOKSTREAM_WS_OP_PING:
        if (ws->close_sent) {
            return NGX_OK;
        }

        return ngx_http_hookstream_ws_send_frame(ws, NGX_HOOKSTREAM_WS_OP_PONG,
                                                 ev->data, ev->len);

    case NGX_HOOKSTREAM_WS_OP_PONG:
        ngx_http_hookstream_ws_alive(ws);
        return NGX_OK;

    default: /* NGX_HOOKSTREAM_WS_OP_CLOSE */

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                       "hookstream ws: client sent close %ui",
                       ev->close_code);

        ws->close_received = 1;
        ws->closing = 1;

        if (!ws->close_sent) {
            ws->close_sent = 1;

            if (ev->close_code) {
                code[0] = (u_char) (ev->close_code >> 8);
                code[1] = (u_char) (ev->close_code & 0xff);

                (void) ngx_http_hookstream_ws_send_frame(ws,
                                          NGX_HOOKSTREAM_WS_OP_CLOSE, code, 2);

            } else {
                (void) ngx_http_hookstream_ws_send_frame(ws,
                                          NGX_HOOKSTREAM_WS_OP_CLOSE, NULL, 0);
            }
        }

        return NGX_DONE;
    }
}


void
ngx_http_hookstream_ws_pause(ngx_http_hookstream_ws_t *ws)
{
    ws->hold = 1;
}


void
ngx_http_hookstream_ws_resume(ngx_http_hookstream_ws_t *ws)
{
    if (!ws->hold) {
        return;
    }

    ws->hold = 0;

    if (!ws->finalized) {
        ngx_post_event(ws->connection->read, &ngx_posted_events);
    }
}


void
ngx_http_hookstream_ws_alive(ngx_http_hookstream_ws_t *ws)
{
    ws->awaiting_pong = 0;
}


static void
ngx_http_hookstream_ws_heartbeat_handler(ngx_event_t *ev)
{
    ngx_msec_t                 elapsed;
    ngx_connection_t          *c;
    ngx_http_hookstream_ws_t  *ws;

    ws = ev->data;
    c = ws->connection;

    if (ws->close_sent) {
        /* the client did not finish the close handshake in time */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "hookstream ws: close handshake timed out");
        ws->fail = 1;
        ws->abort = 1;
        ngx_http_hookstream_ws_finalize(ws);
        return;
    }

    elapsed = ngx_current_msec - ws->ping_sent;

    if (ws->awaiting_pong) {

        if (elapsed >= ws->conf->heartbeat_timeout) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "client missed its heartbeat for %Mms, closing",
                          elapsed);

            ngx_hookstream_stat_add(ws->shctx, closes_heartbeat, 1);

            ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_HEARTBEAT,
                                         "heartbeat timeout");
            ngx_http_hookstream_ws_done(ws);
            return;
        }

        ngx_add_timer(&ws->heartbeat,
                      ws->conf->heartbeat_timeout - elapsed);
        return;
    }

    if (ws->ping_sent && elapsed < ws->conf->heartbeat_interval) {
        ngx_add_timer(&ws->heartbeat,
                      ws->conf->heartbeat_interval - elapsed);
        return;
    }

    if (ws->handler->ping) {
        if (ws->handler->ping(ws) != NGX_OK) {
            ws->fail = 1;
        }

    } else if (ngx_http_hookstream_ws_send_frame(ws,
                                   NGX_HOOKSTREAM_WS_OP_PING, NULL, 0)
               != NGX_OK)
    {
        ws->fail = 1;
    }

    ws->awaiting_pong = 1;
    ws->ping_sent = ngx_current_msec;

    ngx_add_timer(&ws->heartbeat,
                  ngx_min(ws->conf->heartbeat_timeout,
                          ws->conf->heartbeat_interval));

    ngx_http_hookstream_ws_done(ws);
}


void
ngx_http_hookstream_ws_close(ngx_http_hookstream_ws_t *ws, ngx_uint_t code,
    const char *reason)
{
    u_char  *p, payload[125];
    size_t   len;

    if (ws->close_sent) {
        return;
    }

    ws->close_sent = 1;
    ws->closing = 1;
    ws->close_code = code;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ws->connection->log, 0,
                   "hookstream ws close: %ui \"%s\"", code, reason);

    if (code == NGX_HOOKSTREAM_CLOSE_SLOW
        || code == NGX_HOOKSTREAM_CLOSE_HEARTBEAT)
    {
        /* what is queued will not be read: do not wait for it */
        ngx_http_hookstream_ws_drop_queue(ws);
    }

    payload[0] = (u_char) (code >> 8);
    payload[1] = (u_char) (code & 0xff);

    len = ngx_min(ngx_strlen(reason), sizeof(payload) - 2);
    p = ngx_cpymem(payload + 2, reason, len);

    if (ngx_http_hookstream_ws_send_frame(ws, NGX_HOOKSTREAM_WS_OP_CLOSE,
                                          payload, p - payload)
        != NGX_OK)
    {
        ws->fail = 1;
    }

    /* bound the wait for the client's close frame */

    if (ws->heartbeat.timer_set) {
        ngx_del_timer(&ws->heartbeat);
    }

    /* a worker that is shutting down does not wait long */

    ngx_add_timer(&ws->heartbeat, (ngx_exiting || ngx_terminate)
                                  ? NGX_HOOKSTREAM_WS_EXIT_WAIT
                                  : NGX_HOOKSTREAM_WS_CLOSE_WAIT);
}


/* drops queued buffers that have not started to go out */

static void
ngx_http_hookstream_ws_drop_queue(ngx_http_hookstream_ws_t *ws)
{
    ngx_uint_t             keep, i;
    ngx_hookstream_buf_t  *b;

    keep = (ws->qcount && ws->qsent) ? 1 : 0;

    for (i = keep; i < ws->qcount; i++) {
        b = ws->queue[(ws->qhead + i) % ws->qsize];
        ngx_hookstream_buf_unref(b);
    }

    ws->qcount = keep;

    if (keep) {
        b = ws->queue[ws->qhead];
        ws->qbytes = b->last - b->start - ws->qsent;

        /* nothing more may be appended behind a half-sent buffer */
        b->private = 0;

    } else {
        ws->qbytes = 0;
    }
}


static ngx_int_t
ngx_http_hookstream_ws_push(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_buf_t *b)
{
    ngx_uint_t              i, size;
    ngx_hookstream_buf_t  **q;

    if (ws->qcount == ws->qsize) {
        size = ws->qsize ? ws->qsize * 2 : 8;

        q = ngx_alloc(size * sizeof(ngx_hookstream_buf_t *),
                      ws->connection->log);
        if (q == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < ws->qcount; i++) {
            q[i] = ws->queue[(ws->qhead + i) % ws->qsize];
        }

        if (ws->queue) {
            ngx_free(ws->queue);
        }

        ws->queue = q;
        ws->qsize = size;
        ws->qhead = 0;
    }

    ws->queue[(ws->qhead + ws->qcount) % ws->qsize] = b;
    ws->qcount++;
    ws->qbytes += b->last - b->start;

    ngx_http_hookstream_ws_post_write(ws);

    return NGX_OK;
}


/*
 * Frames of this connection's own (acks, replies, pongs, close) are
 * appended to a private buffer at the tail of the queue, so a burst of
 * replies costs one allocation and goes out in one write.
 */

static ngx_int_t
ngx_http_hookstream_ws_send_frame(ngx_http_hookstream_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len)
{
    size_t                 need;
    ngx_hookstream_buf_t  *b;

    need = len + NGX_HOOKSTREAM_BUF_HEADROOM;
    b = ws->qcount ? ws->queue[(ws->qhead + ws->qcount - 1) % ws->qsize]
                   : NULL;

    if (b == NULL || !b->private || (size_t) (b->end - b->last) < need) {

        b = ngx_hookstream_buf_alloc(ngx_max(need,
                                             NGX_HOOKSTREAM_WS_PRIVATE_SIZE),
                                     ws->connection->log);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->private = 1;
        b->framed = 1;

        if (ngx_http_hookstream_ws_push(ws, b) != NGX_OK) {
            ngx_hookstream_buf_unref(b);
            return NGX_ERROR;
        }
    }

    need = ngx_hookstream_ws_frame_header(b->last, opcode, 1, 0, len);

    if (len) {
        ngx_memcpy(b->last + need, data, len);
    }

    b->last += need + len;
    ws->qbytes += need + len;

    ngx_http_hookstream_ws_post_write(ws);

    return NGX_OK;
}


ngx_int_t
ngx_http_hookstream_ws_send_text(ngx_http_hookstream_ws_t *ws, u_char *data,
    size_t len)
{
    if (ws->close_sent) {
        return NGX_OK;
    }

    return ngx_http_hookstream_ws_send_frame(ws, NGX_HOOKSTREAM_WS_OP_TEXT,
                                             data, len);
}


void
ngx_http_hookstream_ws_frame(ngx_hookstream_buf_t *b)
{
    size_t  n;
    u_char  header[NGX_HOOKSTREAM_BUF_HEADROOM];

    if (b->framed) {
        return;
    }

    n = ngx_hookstream_ws_frame_header(header, NGX_HOOKSTREAM_WS_OP_TEXT, 1, 0,
                                       b->last - b->start);

    b->start -= n;
    ngx_memcpy(b->start, header, n);
    b->framed = 1;
}


ngx_int_t
ngx_http_hookstream_ws_send_buf(ngx_http_hookstream_ws_t *ws,
    ngx_hookstream_buf_t *b)
{
    if (ws->close_sent) {
        ngx_hookstream_stat_add(ws->shctx, messages_dropped, 1);
        return NGX_OK;
    }

    ngx_http_hookstream_ws_frame(b);

    if (ws->deflate) {
        /* the compressed twin, built once for the worker */
        b = ngx_hookstream_deflate_buf(b, ws->deflate_bits,
                                       ws->connection->log);
    }

    if (ws->qbytes + (b->last - b->start) > ws->conf->send_queue) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "client is too slow: %uz bytes queued, closing",
                      ws->qbytes);

        ngx_hookstream_stat_add(ws->shctx, closes_slow, 1);
        ngx_hookstream_stat_add(ws->shctx, messages_dropped, 1);

        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_SLOW,
                                     "slow consumer");
        return NGX_DECLINED;
    }

    if (ngx_http_hookstream_ws_push(ws, ngx_hookstream_buf_ref(b))
        != NGX_OK)
    {
        ngx_hookstream_buf_unref(b);
        ws->fail = 1;
        ngx_http_hookstream_ws_post_write(ws);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_hookstream_ws_post_write(ngx_http_hookstream_ws_t *ws)
{
    ngx_event_t  *wev;

    wev = ws->connection->write;

    if (ws->write_posted || wev->posted) {
        return;
    }

    /*
     * A write that waits for the socket is resumed by the event itself.
     * Otherwise the write runs in the next turn of the event loop, after
     * nginx has polled for events again without waiting: everything
     * queued by then (a burst of publishes, every pipelined request of a
     * publisher, several wakeups) goes out in one writev per connection.
     */

    if (wev->ready || ws->fail || ws->closing) {
        ws->write_posted = 1;
        ngx_post_event(wev, &ngx_posted_next_events);
    }
}


static void
ngx_http_hookstream_ws_write_handler(ngx_event_t *wev)
{
    ngx_connection_t          *c;
    ngx_http_hookstream_ws_t  *ws;

    c = wev->data;
    ws = c->data;

    ws->write_posted = 0;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out");
        c->timedout = 1;
        ws->fail = 1;
        ngx_http_hookstream_ws_drop_queue(ws);
        ngx_http_hookstream_ws_finalize(ws);
        return;
    }

    ngx_http_hookstream_ws_done(ws);
}


static ngx_int_t
ngx_http_hookstream_ws_flush(ngx_http_hookstream_ws_t *ws)
{
    size_t                     sent, size;
    ngx_uint_t                 i, n;
    ngx_buf_t                  bufs[NGX_HOOKSTREAM_WS_IOV_MAX];
    ngx_chain_t                chain[NGX_HOOKSTREAM_WS_IOV_MAX], *cl;
    ngx_connection_t          *c;
    ngx_hookstream_buf_t      *b;

    c = ws->connection;

    while (ws->qcount || c->buffered) {

        if (c->error) {
            return NGX_ERROR;
        }

        n = ngx_min(ws->qcount, NGX_HOOKSTREAM_WS_IOV_MAX);

        for (i = 0; i < n; i++) {
            b = ws->queue[(ws->qhead + i) % ws->qsize];

            ngx_memzero(&bufs[i], sizeof(ngx_buf_t));
            bufs[i].pos = b->start + (i == 0 ? ws->qsent : 0);
            bufs[i].last = b->last;
            bufs[i].start = bufs[i].pos;
            bufs[i].end = bufs[i].last;
            bufs[i].memory = 1;

            chain[i].buf = &bufs[i];
            chain[i].next = (i + 1 < n) ? &chain[i + 1] : NULL;
        }

        if (n) {
            bufs[n - 1].flush = 1;
        }

        cl = c->send_chain(c, n ? chain : NULL, 0);

        if (cl == NGX_CHAIN_ERROR) {
            c->error = 1;
            return NGX_ERROR;
        }

        /* what went out: by how far each buffer's pos moved */

        sent = 0;

        for (i = 0; i < n; i++) {
            b = ws->queue[ws->qhead];
            size = bufs[i].pos - bufs[i].start;
            sent += size;

            if (bufs[i].pos < bufs[i].last) {
                ws->qsent += size;
                break;
            }

            ngx_hookstream_buf_unref(b);
            ws->qhead = (ws->qhead + 1) % ws->qsize;
            ws->qcount--;
            ws->qsent = 0;
        }

        ws->qbytes -= sent;

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "hookstream ws sent:%uz queued:%uz bufs:%ui",
                       sent, ws->qbytes, ws->qcount);

        if (cl || (sent == 0 && n) || (n == 0 && c->buffered)) {

            ngx_add_timer(c->write, ws->send_timeout);

            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                return NGX_ERROR;
            }

            return NGX_AGAIN;
        }
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (ws->queue) {
        /* a drained queue keeps no ring: idle connections are most */
        ngx_free(ws->queue);
        ws->queue = NULL;
        ws->qsize = 0;
        ws->qhead = 0;
    }

    return NGX_OK;
}


/*
 * The end of every event: send what is queued, resume reading when the
 * queue has drained, and close when the connection is finished.
 */

static void
ngx_http_hookstream_ws_done(ngx_http_hookstream_ws_t *ws)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    c = ws->connection;

    if (ws->fail && c->read->eof) {
        ngx_http_hookstream_ws_finalize(ws);
        return;
    }

    rc = ngx_http_hookstream_ws_flush(ws);

    if (rc == NGX_ERROR) {
        ws->fail = 1;
        ngx_http_hookstream_ws_finalize(ws);
        return;
    }

    if (rc == NGX_AGAIN) {
        return;
    }

    if (ws->fail || (ws->close_sent && ws->close_received)) {
        ngx_http_hookstream_ws_finalize(ws);
        return;
    }

    if (ws->read_paused && ws->qbytes <= ws->conf->send_queue / 2) {
        ws->read_paused = 0;
        ngx_post_event(c->read, &ngx_posted_events);
    }

    if (ws->qcount == 0 && ws->in == NULL) {
        ngx_http_hookstream_ws_free_input(ws);
    }
}


static void
ngx_http_hookstream_ws_finalize(ngx_http_hookstream_ws_t *ws)
{
    ngx_connection_t  *c;

    if (ws->finalized) {
        return;
    }

    ws->finalized = 1;
    c = ws->connection;
    c->idle = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "hookstream ws finalize, close code %ui", ws->close_code);

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (ws->heartbeat.timer_set) {
        ngx_del_timer(&ws->heartbeat);
    }

    if (ws->request) {
        /* closed before the request was released */

        if (ws->fail && !c->read->eof && !ws->abort) {
            /* the peer gets FIN after our close frame, not a reset */
            ws->request->lingering_close = 1;
        }

        ngx_http_finalize_request(ws->request, NGX_DONE);
        return;
    }

    ngx_http_hookstream_ws_cleanup(ws);

    if (c->timedout && ws->reset_timedout) {
        /* as nginx does for a request: RST, no FIN_WAIT for the peer */
        ngx_http_hookstream_ws_close_connection(c);
        return;
    }

    if (ws->fail && !c->read->eof && !ws->abort) {
        /* the peer gets FIN after our close frame, not a reset */
        ws->lingering_end = ngx_time()
                            + (time_t) (ws->lingering_time / 1000);
        ngx_http_hookstream_ws_linger(c);
        return;
    }

    ngx_http_hookstream_ws_close_connection(c);
}


/*
 * The lingering close of a released connection, as nginx does it for a
 * request: shut the write side down (TLS: close_notify first), then read
 * and discard what the client still sends, until it closes or the
 * lingering timeouts pass, so that our close frame is not lost to a reset.
 */

static void
ngx_http_hookstream_ws_linger(ngx_connection_t *c)
{
    ngx_event_t               *rev, *wev;
    ngx_http_hookstream_ws_t  *ws;

    ws = c->data;

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        ngx_int_t  rc;

        c->ssl->shutdown_without_free = 1;

        rc = ngx_ssl_shutdown(c);

        if (rc == NGX_ERROR) {
            ngx_http_hookstream_ws_close_connection(c);
            return;
        }

        if (rc == NGX_AGAIN) {
            c->ssl->handler = ngx_http_hookstream_ws_linger;
            return;
        }
    }
#endif

    rev = c->read;
    rev->handler = ngx_http_hookstream_ws_linger_handler;

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_hookstream_ws_close_connection(c);
        return;
    }

    wev = c->write;
    wev->handler = ngx_http_empty_handler;

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (wev->active && (ngx_event_flags & NGX_USE_LEVEL_EVENT)) {
        if (ngx_del_event(wev, NGX_WRITE_EVENT, 0) != NGX_OK) {
            ngx_http_hookstream_ws_close_connection(c);
            return;
        }
    }

    if (ngx_shutdown_socket(c->fd, NGX_WRITE_SHUTDOWN) == -1) {
        ngx_connection_error(c, ngx_socket_errno,
                             ngx_shutdown_socket_n " failed");
        ngx_http_hookstream_ws_close_connection(c);
        return;
    }

    c->close = 0;
    ngx_reusable_connection(c, 1);

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    ngx_add_timer(rev, ws->lingering_timeout);

    if (rev->ready) {
        ngx_http_hookstream_ws_linger_handler(rev);
    }
}


static void
ngx_http_hookstream_ws_linger_handler(ngx_event_t *rev)
{
    ssize_t                    n;
    ngx_msec_t                 timer;
    ngx_connection_t          *c;
    ngx_http_hookstream_ws_t  *ws;
    u_char                     buffer[512];

    c = rev->data;
    ws = c->data;

    if (rev->timedout || c->close) {
        ngx_http_hookstream_ws_close_connection(c);
        return;
    }

    timer = (ngx_msec_t) ws->lingering_end - (ngx_msec_t) ngx_time();

    if ((ngx_msec_int_t) timer <= 0) {
        ngx_http_hookstream_ws_close_connection(c);
        return;
    }

    do {
        n = c->recv(c, buffer, sizeof(buffer));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_hookstream_ws_close_connection(c);
            return;
        }

    } while (rev->ready);

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_hookstream_ws_close_connection(c);
        return;
    }

    ngx_add_timer(rev, ngx_min(timer * 1000, ws->lingering_timeout));
}


static void
ngx_http_hookstream_ws_close_connection(ngx_connection_t *c)
{
    struct linger  linger;

    if (c->timedout && ((ngx_http_hookstream_ws_t *) c->data)->reset_timedout)
    {
        linger.l_onoff = 1;
        linger.l_linger = 0;

        if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER,
                       (const void *) &linger, sizeof(struct linger)) == -1)
        {
            ngx_log_error(NGX_LOG_ALERT, c->log, ngx_socket_errno,
                          "setsockopt(SO_LINGER) failed");
        }
    }

    ngx_http_close_connection(c);
}


static void
ngx_http_hookstream_ws_cleanup(void *data)
{
    ngx_http_hookstream_ws_t  *ws = data;

    ngx_uint_t  i;

    if (ws->handler && ws->handler->cleanup) {
        ws->handler->cleanup(ws);
        ws->handler = NULL;
    }

    ngx_http_hookstream_auth_detach(ws);

    if (ws->counted) {
        ngx_hookstream_stats_connection(ws->shctx, ws->conf->endpoint, -1);
        ws->counted = 0;
    }

    if (ws->heartbeat.timer_set) {
        ngx_del_timer(&ws->heartbeat);
    }

    for (i = 0; i < ws->qcount; i++) {
        ngx_hookstream_buf_unref(ws->queue[(ws->qhead + i) % ws->qsize]);
    }

    ws->qcount = 0;

    if (ws->queue) {
        ngx_free(ws->queue);
        ws->queue = NULL;
    }

    if (ws->msg) {
        ngx_free(ws->msg);
        ws->msg = NULL;
    }

    if (ws->in) {
        ngx_free(ws->in);
        ws->in = NULL;
    }

    ws->finalized = 1;
}
