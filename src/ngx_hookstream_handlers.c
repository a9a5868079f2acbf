
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/crypto.h>
#include "ngx_hookstream.h"


#define NGX_HOOKSTREAM_MAX_INFLIGHT       4096
#define NGX_HOOKSTREAM_MAX_SUBSCRIPTIONS  64
#define NGX_HOOKSTREAM_MAX_CHANNEL        128
#define NGX_HOOKSTREAM_REPLY_SIZE         160


typedef struct ngx_http_hookstream_reply_s  ngx_http_hookstream_reply_t;


/* an inbound source connection */
typedef struct {
    ngx_http_hookstream_ws_t          *ws;
    ngx_str_t                          org_id;
    ngx_str_t                          source_id;
    ngx_http_hookstream_reply_t       *head;
    ngx_http_hookstream_reply_t       *tail;
    ngx_uint_t                         inflight;
    u_char                             org_data[NGX_HOOKSTREAM_MAX_ID_LEN];
    u_char                             source_data[NGX_HOOKSTREAM_MAX_ID_LEN];
} ngx_http_hookstream_source_ctx_t;


/* a reply waiting for the ones before it, so replies keep their order */
struct ngx_http_hookstream_reply_s {
    ngx_http_hookstream_reply_t       *next;
    ngx_http_hookstream_source_ctx_t  *ctx;    /* NULL: connection gone */
    size_t                             len;
    unsigned                           ready:1;
    u_char                             text[NGX_HOOKSTREAM_REPLY_SIZE];
};


/* a dashboard or test stream connection */
typedef struct {
    ngx_http_hookstream_ws_t          *ws;
    ngx_str_t                          topic;
    u_char                             topic_data[NGX_HOOKSTREAM_MAX_ID_LEN];
    ngx_hookstream_sub_t               sub;
    ngx_str_t                         *channels;
    ngx_uint_t                         nchannels;
    ngx_str_t                         *replay;     /* during a replay */
    unsigned                           explicit:1;
    unsigned                           subscribed:1;
    unsigned                           counted:1;
    unsigned                           test:1;
    unsigned                           replaying:1;
} ngx_http_hookstream_stream_ctx_t;


static ngx_uint_t ngx_hookstream_valid_id(ngx_str_t *id, const char *prefix);

static ngx_int_t ngx_http_hookstream_source_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_hookstream_source_message(
    ngx_http_hookstream_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len);
static void ngx_http_hookstream_source_stored(ngx_hookstream_event_t *ev);
static void ngx_http_hookstream_source_cleanup(ngx_http_hookstream_ws_t *ws);
static ngx_int_t ngx_http_hookstream_source_reply(
    ngx_http_hookstream_source_ctx_t *ctx, u_char *text, size_t len);
static void ngx_http_hookstream_source_flush(
    ngx_http_hookstream_source_ctx_t *ctx);
static size_t ngx_http_hookstream_ack(u_char *buf, ngx_hookstream_event_t *ev);
static size_t ngx_http_hookstream_error_text(u_char *buf, const char *code,
    const char *message);

static ngx_int_t ngx_http_hookstream_ingest_handler(ngx_http_request_t *r);
static void ngx_http_hookstream_ingest_body(ngx_http_request_t *r);
static void ngx_http_hookstream_ingest_stored(ngx_hookstream_event_t *ev);
static ngx_int_t ngx_http_hookstream_ingest_answer(ngx_http_request_t *r,
    ngx_hookstream_event_t *ev);
static ngx_int_t ngx_http_hookstream_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
static u_char *ngx_http_hookstream_json_string(u_char *p, ngx_str_t *s);
static ngx_int_t ngx_http_hookstream_headers_json(ngx_http_request_t *r,
    ngx_str_t *out);

/*
 * The answer of a publish, sent once Redis has the messages.  It lives on
 * the heap: a request that nginx ends meanwhile (worker_shutdown_timeout)
 * leaves it with no request, and the answer is dropped.
 */
typedef struct {
    ngx_http_request_t          *request;
    ngx_http_cleanup_t          *cleanup;
    ngx_uint_t                   status;
    ngx_str_t                    body;
} ngx_http_hookstream_publish_answer_t;


static ngx_int_t ngx_http_hookstream_publish_handler(ngx_http_request_t *r);
static void ngx_http_hookstream_publish_body(ngx_http_request_t *r);
static void ngx_http_hookstream_publish_synced(void *data);
static void ngx_http_hookstream_publish_detach(void *data);
static void ngx_http_hookstream_ingest_detach(void *data);
static const char *ngx_http_hookstream_publish_one(ngx_http_request_t *r,
    ngx_str_t *line);

static ngx_int_t ngx_http_hookstream_stream_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_hookstream_channel_match(ngx_str_t *ch,
    ngx_hookstream_msg_t *msg);
static ngx_int_t ngx_http_hookstream_stream_message(
    ngx_http_hookstream_ws_t *ws, ngx_uint_t opcode, u_char *data,
    size_t len);
static ngx_int_t ngx_http_hookstream_stream_ping(ngx_http_hookstream_ws_t *ws);
static void ngx_http_hookstream_stream_cleanup(ngx_http_hookstream_ws_t *ws);
static void ngx_http_hookstream_stream_deliver(ngx_hookstream_sub_t *sub,
    ngx_hookstream_msg_t *msg);
static void ngx_http_hookstream_stream_sub_reset(ngx_hookstream_sub_t *sub);
static ngx_int_t ngx_http_hookstream_stream_reply(
    ngx_http_hookstream_stream_ctx_t *ctx, const char *type,
    ngx_str_t *channel);
static ngx_int_t ngx_http_hookstream_stream_error(
    ngx_http_hookstream_stream_ctx_t *ctx, const char *code,
    const char *message);
static ngx_int_t ngx_http_hookstream_stream_reset(
    ngx_http_hookstream_stream_ctx_t *ctx, const char *reason);
static ngx_int_t ngx_http_hookstream_valid_channel(
    ngx_http_hookstream_main_conf_t *hmcf, ngx_str_t *channel);


static ngx_http_hookstream_ws_handler_t  ngx_http_hookstream_source_ws = {
    ngx_http_hookstream_source_message,
    NULL,
    ngx_http_hookstream_source_cleanup
};


static ngx_http_hookstream_ws_handler_t  ngx_http_hookstream_stream_ws = {
    ngx_http_hookstream_stream_message,
    ngx_http_hookstream_stream_ping,
    ngx_http_hookstream_stream_cleanup
};


ngx_int_t
ngx_http_hookstream_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    switch (hlcf->endpoint) {

    case NGX_HOOKSTREAM_EP_SOURCE:
        rc = ngx_http_hookstream_source_handler(r);
        break;

    case NGX_HOOKSTREAM_EP_STREAM:
        rc = ngx_http_hookstream_stream_handler(r);
        break;

    case NGX_HOOKSTREAM_EP_TEST_STREAM:
        rc = ngx_http_hookstream_test_stream_handler(r);
        break;

    case NGX_HOOKSTREAM_EP_INGEST:
        return ngx_http_hookstream_ingest_handler(r);

    case NGX_HOOKSTREAM_EP_PUBLISH:
        return ngx_http_hookstream_publish_handler(r);

    case NGX_HOOKSTREAM_EP_STATUS:
        return ngx_http_hookstream_status_handler(r);

    case NGX_HOOKSTREAM_EP_TEST_SESSIONS:
        return ngx_http_hookstream_sessions_handler(r);

    default:
        return NGX_DECLINED;
    }

    /* a WebSocket handshake: upgraded, or answered with its status */

    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (hmcf->shm_zone) {
        ngx_hookstream_stats_handshake(hmcf->shm_zone->data,
                                       r->headers_out.status
                                       ? r->headers_out.status
                                       : (ngx_uint_t) rc);
    }

    return rc;
}


/* the id in the URL: a variable of the directive, or the last segment */

ngx_int_t
ngx_http_hookstream_get_id(ngx_http_request_t *r,
    ngx_http_hookstream_loc_conf_t *hlcf, ngx_str_t *id)
{
    u_char  *p, *last;

    if (hlcf->id) {
        return ngx_http_complex_value(r, hlcf->id, id);
    }

    last = r->uri.data + r->uri.len;

    while (last > r->uri.data && last[-1] == '/') {
        last--;
    }

    p = last;

    while (p > r->uri.data && p[-1] != '/') {
        p--;
    }

    id->data = p;
    id->len = last - p;

    return NGX_OK;
}


/* "src_" and 32 lowercase hex digits; with an empty prefix, bare hex */

static ngx_uint_t
ngx_hookstream_valid_id(ngx_str_t *id, const char *prefix)
{
    size_t      n;
    ngx_uint_t  i;

    n = ngx_strlen(prefix);

    if (id->len != n + NGX_HOOKSTREAM_HEX_ID_LEN
        || ngx_strncmp(id->data, prefix, n) != 0)
    {
        return 0;
    }

    for (i = n; i < id->len; i++) {
        if (!((id->data[i] >= '0' && id->data[i] <= '9')
              || (id->data[i] >= 'a' && id->data[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


/* GET /v1/ws/source/:source_id: each text message is an event */

static ngx_int_t
ngx_http_hookstream_source_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_str_t                          id, org, owner;
    const char                        *msg;
    ngx_http_hookstream_ws_t          *ws;
    ngx_http_hookstream_loc_conf_t    *hlcf;
    ngx_http_hookstream_source_ctx_t  *ctx;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_hookstream_ws_check(r, &msg);
    if (rc != NGX_OK) {
        return ngx_http_hookstream_send_error(r, rc, msg);
    }

    rc = ngx_http_hookstream_authenticate(r, NGX_HOOKSTREAM_AUTH_KEY, &org,
                                          &msg);
    if (rc != NGX_OK) {
        return ngx_http_hookstream_send_error(r, rc, msg);
    }

    if (ngx_http_hookstream_get_id(r, hlcf, &id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the directory's owner, or the sources the authority listed */

    if (!ngx_hookstream_valid_id(&id, "src_")
        || ngx_http_hookstream_auth_source(r, &id, &owner) != NGX_OK)
    {
        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "Source not found");
    }

    if (owner.len != org.len
        || ngx_strncmp(owner.data, org.data, org.len) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client's API key may not use source \"%V\"", &id);
        return ngx_http_hookstream_send_error(r, NGX_HTTP_FORBIDDEN,
                                  "API key may not send to this source");
    }

    if (org.len > NGX_HOOKSTREAM_MAX_ID_LEN) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the state lives with the WebSocket, which outlives the request */

    ws = ngx_http_hookstream_ws_upgrade(r, &ngx_http_hookstream_source_ws,
                                     sizeof(ngx_http_hookstream_source_ctx_t));
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ws->data;
    ctx->ws = ws;

    ctx->org_id.data = ctx->org_data;
    ctx->org_id.len = ngx_cpymem(ctx->org_data, org.data, org.len)
                      - ctx->org_data;
    ctx->source_id.data = ctx->source_data;
    ctx->source_id.len = ngx_cpymem(ctx->source_data, id.data, id.len)
                         - ctx->source_data;

    ngx_http_hookstream_ws_start(ws);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_hookstream_source_message(ngx_http_hookstream_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len)
{
    u_char                            *p;
    size_t                             n;
    cJSON                             *json, *item;
    ngx_int_t                          rc;
    ngx_str_t                          text, type, key;
    ngx_hookstream_event_t            *ev;
    ngx_http_hookstream_reply_t       *reply;
    ngx_http_hookstream_source_ctx_t  *ctx;
    u_char                             buf[NGX_HOOKSTREAM_REPLY_SIZE];

    ctx = ws->data;

    if (opcode != NGX_HOOKSTREAM_WS_OP_TEXT) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "client sent a binary message to a source");
        n = ngx_http_hookstream_error_text(buf, "binary_not_supported",
                                "events are JSON text messages");
        return ngx_http_hookstream_source_reply(ctx, buf, n);
    }

    json = cJSON_ParseWithLength((const char *) data, len);

    if (json == NULL) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "client sent an event that is not JSON");
        n = ngx_http_hookstream_error_text(buf, "invalid_json",
                                "the message is not valid JSON");
        return ngx_http_hookstream_source_reply(ctx, buf, n);
    }

    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        n = ngx_http_hookstream_error_text(buf, "invalid_event",
                                "an event must be a JSON object");
        return ngx_http_hookstream_source_reply(ctx, buf, n);
    }

    /* the fields the module reads; their text is taken as written */

    text.data = data;
    text.len = len;

    ngx_str_null(&type);
    ngx_str_null(&key);

    item = cJSON_GetObjectItemCaseSensitive(json, "type");

    if (cJSON_IsString(item)
        && ngx_hookstream_json_member(&text, "type", &type) != NGX_OK)
    {
        ngx_str_null(&type);
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "idempotency_key");

    if (item) {
        if (!cJSON_IsString(item)
            || ngx_strlen(item->valuestring) == 0
            || ngx_strlen(item->valuestring) > NGX_HOOKSTREAM_IDEMPOTENCY_MAX
            || ngx_hookstream_json_member(&text, "idempotency_key", &key)
               != NGX_OK)
        {
            cJSON_Delete(json);
            n = ngx_http_hookstream_error_text(buf, "invalid_idempotency_key",
                    "idempotency_key must be a string of 1 to 255 bytes");
            return ngx_http_hookstream_source_reply(ctx, buf, n);
        }
    }

    cJSON_Delete(json);

    /*
     * The event may outlive the connection (the client goes away while
     * the journal syncs): it keeps its own copies of the ids, and logs
     * to the cycle's log.
     */

    ev = ngx_hookstream_event_create(len + type.len + key.len
                                     + ctx->org_id.len + ctx->source_id.len,
                                     ngx_cycle->log);
    if (ev == NULL) {
        return NGX_ERROR;
    }

    p = ngx_hookstream_event_storage(ev);

    ev->org_id.data = p;
    ev->org_id.len = ctx->org_id.len;
    p = ngx_cpymem(p, ctx->org_id.data, ctx->org_id.len);

    ev->source_id.data = p;
    ev->source_id.len = ctx->source_id.len;
    p = ngx_cpymem(p, ctx->source_id.data, ctx->source_id.len);

    ev->body.data = p;
    ev->body.len = len;
    p = ngx_cpymem(p, data, len);

    if (type.len) {
        ev->type.data = p;
        ev->type.len = type.len;
        p = ngx_cpymem(p, type.data, type.len);
    }

    if (key.len) {
        ev->idempotency_key.data = p;
        ev->idempotency_key.len = key.len;
        ngx_memcpy(p, key.data, key.len);
    }

    ngx_str_set(&ev->method, "WS");
    ev->buffer_count = ws->conf->buffer_count;
    ev->buffer_age = ws->conf->buffer_age;

    rc = ngx_hookstream_ingest(ev, ws->main_conf);

    if (rc == NGX_AGAIN) {
        reply = ngx_alloc(sizeof(ngx_http_hookstream_reply_t),
                          ws->connection->log);
        if (reply == NULL) {
            /* the event is stored all the same; the connection ends */
            ev->handler = NULL;
            return NGX_ERROR;
        }

        reply->next = NULL;
        reply->ctx = ctx;
        reply->ready = 0;
        reply->len = 0;

        if (ctx->tail) {
            ctx->tail->next = reply;

        } else {
            ctx->head = reply;
        }

        ctx->tail = reply;
        ctx->inflight++;

        ev->handler = ngx_http_hookstream_source_stored;
        ev->data = reply;

        if (ctx->inflight >= NGX_HOOKSTREAM_MAX_INFLIGHT) {
            ngx_http_hookstream_ws_pause(ws);
        }

        return NGX_OK;
    }

    if (rc == NGX_OK) {
        n = ngx_http_hookstream_ack(buf, ev);

    } else {
        n = ngx_http_hookstream_error_text(buf, "not_stored",
                                "the event could not be stored");
    }

    ngx_hookstream_event_free(ev);

    return ngx_http_hookstream_source_reply(ctx, buf, n);
}


static void
ngx_http_hookstream_source_stored(ngx_hookstream_event_t *ev)
{
    ngx_http_hookstream_reply_t       *reply;
    ngx_http_hookstream_source_ctx_t  *ctx;

    reply = ev->data;
    ctx = reply->ctx;

    if (ctx == NULL) {
        ngx_free(reply);
        return;
    }

    if (ev->rc == NGX_OK) {
        reply->len = ngx_http_hookstream_ack(reply->text, ev);

    } else {
        reply->len = ngx_http_hookstream_error_text(reply->text,
                                "not_stored",
                                "the event could not be stored");
    }

    reply->ready = 1;
    ctx->inflight--;

    ngx_http_hookstream_source_flush(ctx);
}


/* sends a reply now, or behind the replies still waiting for the journal */

static ngx_int_t
ngx_http_hookstream_source_reply(ngx_http_hookstream_source_ctx_t *ctx,
    u_char *text, size_t len)
{
    ngx_http_hookstream_reply_t  *reply;

    if (ctx->head == NULL) {
        return ngx_http_hookstream_ws_send_text(ctx->ws, text, len);
    }

    reply = ngx_alloc(sizeof(ngx_http_hookstream_reply_t),
                      ctx->ws->connection->log);
    if (reply == NULL) {
        return NGX_ERROR;
    }

    reply->next = NULL;
    reply->ctx = ctx;
    reply->ready = 1;
    reply->len = len;
    ngx_memcpy(reply->text, text, len);

    ctx->tail->next = reply;
    ctx->tail = reply;

    return NGX_OK;
}


static void
ngx_http_hookstream_source_flush(ngx_http_hookstream_source_ctx_t *ctx)
{
    ngx_http_hookstream_reply_t  *reply;

    while (ctx->head && ctx->head->ready) {
        reply = ctx->head;
        ctx->head = reply->next;

        if (ctx->head == NULL) {
            ctx->tail = NULL;
        }

        (void) ngx_http_hookstream_ws_send_text(ctx->ws, reply->text,
                                                reply->len);
        ngx_free(reply);
    }

    if (ctx->inflight < NGX_HOOKSTREAM_MAX_INFLIGHT / 2) {
        ngx_http_hookstream_ws_resume(ctx->ws);
    }
}


static void
ngx_http_hookstream_source_cleanup(ngx_http_hookstream_ws_t *ws)
{
    ngx_http_hookstream_reply_t       *reply, *next;
    ngx_http_hookstream_source_ctx_t  *ctx;

    ctx = ws->data;

    for (reply = ctx->head; reply; reply = next) {
        next = reply->next;

        if (reply->ready) {
            ngx_free(reply);

        } else {
            /* the journal still owns the event: it frees this reply */
            reply->ctx = NULL;
        }
    }

    ctx->head = NULL;
    ctx->tail = NULL;
}


static size_t
ngx_http_hookstream_ack(u_char *buf, ngx_hookstream_event_t *ev)
{
    u_char  *p;

    p = ngx_sprintf(buf, "{\"type\":\"ack\",\"event_id\":\"%*s\"",
                    NGX_HOOKSTREAM_EVENT_ID_LEN, ev->id);

    if (ev->duplicate) {
        p = ngx_cpymem(p, ",\"duplicate\":true",
                       sizeof(",\"duplicate\":true") - 1);

    } else if (!ev->durable) {
        p = ngx_cpymem(p, ",\"durable\":false",
                       sizeof(",\"durable\":false") - 1);
    }

    *p++ = '}';

    return p - buf;
}


/* code and message are ours: plain ASCII that needs no escaping */

static size_t
ngx_http_hookstream_error_text(u_char *buf, const char *code,
    const char *message)
{
    u_char  *p;

    p = ngx_snprintf(buf, NGX_HOOKSTREAM_REPLY_SIZE,
                     "{\"type\":\"error\",\"data\":{\"code\":\"%s\","
                     "\"message\":\"%s\"}}", code, message);

    return p - buf;
}


/* ANY /v1/ingest/:source_id: an HTTP webhook becomes an event */

static ngx_int_t
ngx_http_hookstream_ingest_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_str_t                         id, org;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (ngx_http_hookstream_get_id(r, hlcf, &id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_hookstream_session_valid_id(&id)) {
        /* a test session: counted against its limit here */

        if (ngx_http_hookstream_session_ingest(r, &id, &rc) != NGX_OK) {
            return rc;
        }

    } else if (!ngx_hookstream_valid_id(&id, "src_")
               || hmcf->directory == NULL
               || ngx_hookstream_directory_source(hmcf->directory, &id, &org)
                  != NGX_OK)
    {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "Source not found");
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_hookstream_ingest_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_hookstream_ingest_body(ngx_http_request_t *r)
{
    u_char                           *p;
    size_t                            len;
    cJSON                            *json;
    ngx_int_t                         rc;
    ngx_str_t                         body, id, org, headers, ctype;
    ngx_str_t                         b64, *key, none;
    ngx_uint_t                        utf8;
    uint32_t                          state;
    ngx_table_elt_t                  *h;
    ngx_http_cleanup_t               *cln;
    ngx_hookstream_event_t           *ev;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (ngx_http_hookstream_get_id(r, hlcf, &id) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* a test session is its own topic */
    org = id;
    ngx_str_null(&headers);

    if ((!ngx_hookstream_session_valid_id(&id)
         && ngx_hookstream_directory_source(hmcf->directory, &id, &org)
            != NGX_OK)
        || ngx_http_hookstream_read_body(r, &body) != NGX_OK
        || ngx_http_hookstream_headers_json(r, &headers) != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_str_null(&none);
    key = &none;

    /* Idempotency-Key: scoped like the inbound socket's idempotency_key */

    h = ngx_http_hookstream_header(r, "Idempotency-Key",
                                   sizeof("Idempotency-Key") - 1);

    if (h) {
        if (h->value.len == 0
            || h->value.len > NGX_HOOKSTREAM_IDEMPOTENCY_MAX)
        {
            ngx_http_finalize_request(r,
                ngx_http_hookstream_send_error(r, NGX_HTTP_BAD_REQUEST,
                    "Idempotency-Key must be 1 to 255 bytes"));
            return;
        }

        key = &h->value;
    }

    /* the body as JSON: itself if it is JSON, else a string */

    utf8 = 0;
    json = NULL;

    if (body.len) {
        json = cJSON_ParseWithLength((const char *) body.data, body.len);

        if (json == NULL) {
            state = 0;
            utf8 = (ngx_hookstream_utf8_validate(&state, body.data, body.len)
                    == NGX_OK);
        }
    }

    ctype.len = 0;

    if (r->headers_in.content_type) {
        ctype = r->headers_in.content_type->value;
    }

    len = body.len * 6 + 2 + key->len * 6 + 2 + ctype.len * 6 + 2
          + r->uri.len * 6 + 2 + r->args.len * 6 + 2
          + r->connection->addr_text.len + 2 + r->method_name.len
          + headers.len + 16;

    if (body.len && json == NULL && !utf8) {
        len += ngx_base64_encoded_length(body.len) + 16;
    }

    /* what the event refers to is its own: it may outlive the request */

    len += org.len + id.len;

    ev = ngx_hookstream_event_create(len, ngx_cycle->log);
    if (ev == NULL) {
        cJSON_Delete(json);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ngx_hookstream_event_storage(ev);

    ev->body.data = p;

    if (body.len == 0) {
        p = ngx_cpymem(p, "null", 4);

    } else if (json) {
        p = ngx_cpymem(p, body.data, body.len);

    } else if (utf8) {
        p = ngx_http_hookstream_json_string(p, &body);

    } else {
        /* binary: base64 in a string, marked so a reader can tell */
        p = ngx_cpymem(p, "{\"base64\":\"", sizeof("{\"base64\":\"") - 1);
        b64.data = p;
        ngx_encode_base64(&b64, &body);
        p += b64.len;
        *p++ = '"';
        *p++ = '}';
    }

    ev->body.len = p - ev->body.data;

    if (json && cJSON_IsObject(json)
        && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(json, "type")))
    {
        (void) ngx_hookstream_json_member(&ev->body, "type", &ev->type);
    }

    cJSON_Delete(json);

    if (key->len) {
        ev->idempotency_key.data = p;
        p = ngx_http_hookstream_json_string(p, key);
        ev->idempotency_key.len = p - ev->idempotency_key.data;
    }

    ev->path.data = p;
    p = ngx_http_hookstream_json_string(p, &r->uri);
    ev->path.len = p - ev->path.data;

    ev->query.data = p;

    if (r->args.len) {
        p = ngx_http_hookstream_json_string(p, &r->args);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    ev->query.len = p - ev->query.data;

    ev->content_type.data = p;

    if (ctype.len) {
        p = ngx_http_hookstream_json_string(p, &ctype);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    ev->content_type.len = p - ev->content_type.data;

    ev->source_ip.data = p;
    p = ngx_http_hookstream_json_string(p, &r->connection->addr_text);
    ev->source_ip.len = p - ev->source_ip.data;

    ev->headers.data = p;
    ev->headers.len = headers.len;
    p = ngx_cpymem(p, headers.data, headers.len);

    ev->method.data = p;
    p = ngx_cpymem(p, r->method_name.data, r->method_name.len);
    ev->method.len = r->method_name.len;

    ev->org_id.data = p;
    ev->org_id.len = org.len;
    p = ngx_cpymem(p, org.data, org.len);

    ev->source_id.data = p;
    ev->source_id.len = id.len;
    ngx_memcpy(p, id.data, id.len);

    ev->http = 1;
    ev->buffer_count = hlcf->buffer_count;
    ev->buffer_age = hlcf->buffer_age;

    if (ngx_hookstream_session_valid_id(&id)) {
        /* published on the session's "test" channel, never journaled */
        ev->test = 1;
        ev->ephemeral = 1;
    }

    rc = ngx_hookstream_ingest(ev, hmcf);

    if (rc == NGX_AGAIN) {
        /* the request waits for the journal, unless nginx ends it */

        cln = ngx_http_cleanup_add(r, 0);
        if (cln == NULL) {
            /* the event is stored all the same */
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        cln->handler = ngx_http_hookstream_ingest_detach;
        cln->data = ev;

        r->main->count++;
        ev->handler = ngx_http_hookstream_ingest_stored;
        ev->data = r;
        ev->detach = cln;
        ngx_http_finalize_request(r, NGX_DONE);
        return;
    }

    ngx_http_finalize_request(r, ngx_http_hookstream_ingest_answer(r, ev));
    ngx_hookstream_event_free(ev);
}


static void
ngx_http_hookstream_ingest_stored(ngx_hookstream_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ev->data;
    c = r->connection;

    ((ngx_http_cleanup_t *) ev->detach)->handler = NULL;

    ngx_http_finalize_request(r, ngx_http_hookstream_ingest_answer(r, ev));
    ngx_http_run_posted_requests(c);
}


/* nginx ended the request first: the event goes on without it */

static void
ngx_http_hookstream_ingest_detach(void *data)
{
    ngx_hookstream_event_t  *ev = data;

    ev->handler = NULL;
}


static ngx_int_t
ngx_http_hookstream_ingest_answer(ngx_http_request_t *r,
    ngx_hookstream_event_t *ev)
{
    u_char     *p;
    ngx_str_t   body;

    if (ev->rc != NGX_OK) {
        return ngx_http_hookstream_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "Event could not be stored");
    }

    body.data = ngx_pnalloc(r->pool, 128 + ev->source_id.len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body.data, "{\"event_id\":\"%*s\",\"source_id\":\"%V\"",
                    NGX_HOOKSTREAM_EVENT_ID_LEN, ev->id, &ev->source_id);

    if (ev->duplicate) {
        p = ngx_cpymem(p, ",\"duplicate\":true",
                       sizeof(",\"duplicate\":true") - 1);

    } else if (!ev->durable && !ev->ephemeral) {
        p = ngx_cpymem(p, ",\"durable\":false",
                       sizeof(",\"durable\":false") - 1);
    }

    *p++ = '}';
    body.len = p - body.data;

    return ngx_http_hookstream_send_json(r, NGX_HTTP_OK, &body);
}


/* the whole request body in one piece, from memory or its temp file */

static ngx_int_t
ngx_http_hookstream_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    off_t         len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = NULL;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;

        } else if (b->last > b->pos) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    body->len = p - body->data;

    return NGX_OK;
}


static u_char *
ngx_http_hookstream_json_string(u_char *p, ngx_str_t *s)
{
    *p++ = '"';
    p = ngx_hookstream_json_escape(p, s->data, s->len);
    *p++ = '"';

    return p;
}


/* the request's headers as a JSON object, hop-by-hop ones left out */

static ngx_int_t
ngx_http_hookstream_headers_json(ngx_http_request_t *r, ngx_str_t *out)
{
    u_char           *p;
    size_t            len;
    ngx_uint_t        i, j, first;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    static ngx_str_t  hop[] = {
        ngx_string("connection"),
        ngx_string("keep-alive"),
        ngx_string("proxy-authenticate"),
        ngx_string("proxy-authorization"),
        ngx_string("proxy-connection"),
        ngx_string("te"),
        ngx_string("trailer"),
        ngx_string("transfer-encoding"),
        ngx_string("upgrade"),
        ngx_null_string
    };

    len = 2;
    p = NULL;

    for (j = 0; j < 2; j++) {

        part = &r->headers_in.headers.part;
        h = part->elts;
        first = 1;

        if (j == 1) {
            out->data = ngx_pnalloc(r->pool, len);
            if (out->data == NULL) {
                return NGX_ERROR;
            }

            p = out->data;
            *p++ = '{';
        }

        for (i = 0; /* void */; i++) {
            ngx_str_t  *s;

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            for (s = hop; s->len; s++) {
                if (s->len == h[i].key.len
                    && ngx_strncasecmp(s->data, h[i].key.data, s->len) == 0)
                {
                    break;
                }
            }

            if (s->len) {
                continue;
            }

            if (j == 0) {
                len += 6 + ngx_hookstream_json_escape_len(h[i].key.data,
                                                          h[i].key.len)
                       + ngx_hookstream_json_escape_len(h[i].value.data,
                                                        h[i].value.len);
                continue;
            }

            if (!first) {
                *p++ = ',';
            }

            first = 0;
            p = ngx_http_hookstream_json_string(p, &h[i].key);
            *p++ = ':';
            p = ngx_http_hookstream_json_string(p, &h[i].value);
        }
    }

    *p++ = '}';
    out->len = p - out->data;

    return NGX_OK;
}


/* POST /internal/publish: the backend's deliveries, issues and syncs */

static ngx_int_t
ngx_http_hookstream_publish_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_table_elt_t                 *h;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                              "Use POST to publish");
    }

    if (hlcf->publish_secret.len) {
        h = ngx_http_hookstream_header(r, "X-Hookstream-Secret",
                                       sizeof("X-Hookstream-Secret") - 1);

        rc = (h && h->value.len == hlcf->publish_secret.len
              && CRYPTO_memcmp(h->value.data, hlcf->publish_secret.data,
                               h->value.len) == 0)
             ? NGX_OK : NGX_HTTP_UNAUTHORIZED;

        if (rc != NGX_OK) {
            (void) ngx_http_discard_request_body(r);
            return ngx_http_hookstream_send_error(r, rc,
                                                  "Invalid publish secret");
        }
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_hookstream_publish_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_hookstream_publish_body(ngx_http_request_t *r)
{
    u_char                                *p, *last, *start, *eol;
    size_t                                 len;
    ngx_str_t                              body, line, out;
    ngx_uint_t                             n, published, nerr, status;
    const char                            *err;
    u_char                                *errs, *e;
    ngx_http_hookstream_publish_answer_t  *pa;

    if (ngx_http_hookstream_read_body(r, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (body.len == 0) {
        ngx_http_finalize_request(r,
            ngx_http_hookstream_send_error(r, NGX_HTTP_BAD_REQUEST,
                                           "Empty body: nothing to publish"));
        return;
    }

    /* at most one error entry per line, each bounded */

    n = 1;

    for (p = body.data; p < body.data + body.len; p++) {
        if (*p == '\n') {
            n++;
        }
    }

    errs = ngx_pnalloc(r->pool, n * 96 + 1);
    if (errs == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    e = errs;
    published = 0;
    nerr = 0;

    p = body.data;
    last = body.data + body.len;

    for (n = 1; p < last; n++) {
        eol = ngx_strlchr(p, last, '\n');
        start = p;

        if (eol == NULL) {
            eol = last;
        }

        p = eol + 1;

        line.data = start;
        line.len = eol - start;

        while (line.len && (line.data[line.len - 1] == '\r'
                            || line.data[line.len - 1] == ' '
                            || line.data[line.len - 1] == '\t'))
        {
            line.len--;
        }

        while (line.len && (line.data[0] == ' ' || line.data[0] == '\t')) {
            line.data++;
            line.len--;
        }

        if (line.len == 0) {
            continue;
        }

        err = ngx_http_hookstream_publish_one(r, &line);

        if (err == NULL) {
            published++;
            continue;
        }

        e = ngx_sprintf(e, "%s{\"line\":%ui,\"error\":\"%s\"}",
                        nerr ? "," : "", n, err);
        nerr++;
    }

    len = sizeof("{\"published\":,\"errors\":[]}") - 1 + NGX_INT_T_LEN
          + (e - errs);

    out.data = ngx_pnalloc(r->pool, len);
    if (out.data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    out.len = ngx_sprintf(out.data, "{\"published\":%ui,\"errors\":[%*s]}",
                          published, (size_t) (e - errs), errs)
              - out.data;

    status = (published || nerr == 0) ? NGX_HTTP_OK : NGX_HTTP_BAD_REQUEST;

    if (published) {
        /*
         * Through Redis: the answer waits until Redis has the messages,
         * so that a publisher's next request comes after them.
         */

        pa = ngx_alloc(sizeof(ngx_http_hookstream_publish_answer_t),
                       r->connection->log);
        if (pa == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        pa->cleanup = ngx_http_cleanup_add(r, 0);
        if (pa->cleanup == NULL) {
            ngx_free(pa);
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        pa->request = r;
        pa->status = status;
        pa->body = out;

        if (ngx_hookstream_redis_sync(ngx_http_hookstream_publish_synced, pa,
                                      ngx_cycle->log)
            == NGX_OK)
        {
            pa->cleanup->handler = ngx_http_hookstream_publish_detach;
            pa->cleanup->data = pa;
            return;
        }

        ngx_free(pa);
    }

    ngx_http_finalize_request(r,
                              ngx_http_hookstream_send_json(r, status, &out));
}


static void
ngx_http_hookstream_publish_synced(void *data)
{
    ngx_http_hookstream_publish_answer_t *pa = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = pa->request;

    if (r == NULL) {
        /* nginx ended the request meanwhile */
        ngx_free(pa);
        return;
    }

    pa->cleanup->handler = NULL;
    c = r->connection;

    ngx_http_finalize_request(r,
        ngx_http_hookstream_send_json(r, pa->status, &pa->body));

    ngx_free(pa);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_hookstream_publish_detach(void *data)
{
    ngx_http_hookstream_publish_answer_t *pa = data;

    pa->request = NULL;
}


/* one message: NULL when published, else what was wrong with it */

static const char *
ngx_http_hookstream_publish_one(ngx_http_request_t *r, ngx_str_t *line)
{
    u_char                           *colon;
    cJSON                            *json, *item;
    ngx_str_t                         org, type, channel, data, key;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;
    const char                       *err;
    ngx_hookstream_pub_t              pub;
    static const char                *keys[] = {
        "source_id", "destination_id", "collection_id", NULL
    };
    const char                      **k;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    json = cJSON_ParseWithLength((const char *) line->data, line->len);

    if (json == NULL) {
        return "invalid JSON";
    }

    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        return "a message must be a JSON object";
    }

    /* {"type":"revoke","key_hash":...}: no org, channel or data */

    item = cJSON_GetObjectItemCaseSensitive(json, "type");

    if (cJSON_IsString(item) && ngx_strcmp(item->valuestring, "revoke") == 0)
    {
        err = ngx_http_hookstream_auth_revoke(r, json);
        cJSON_Delete(json);
        return err;
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "org_id");

    if (!cJSON_IsString(item)) {
        cJSON_Delete(json);
        return "org_id is missing";
    }

    org.data = (u_char *) item->valuestring;
    org.len = ngx_strlen(item->valuestring);

    if (!ngx_hookstream_valid_id(&org, "org_")) {
        cJSON_Delete(json);
        return "org_id is not an org id";
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "type");

    if (!cJSON_IsString(item)) {
        cJSON_Delete(json);
        return "type is missing";
    }

    type.data = (u_char *) item->valuestring;
    type.len = ngx_strlen(item->valuestring);

    item = cJSON_GetObjectItemCaseSensitive(json, "channel");

    if (!cJSON_IsString(item)) {
        cJSON_Delete(json);
        return "channel is missing";
    }

    channel.data = (u_char *) item->valuestring;
    channel.len = ngx_strlen(item->valuestring);

    if (type.len == 0 || type.len > 64
        || ngx_http_hookstream_valid_channel(hmcf, &type) != NGX_OK
        || ngx_strlchr(type.data, type.data + type.len, ':'))
    {
        cJSON_Delete(json);
        return "invalid type";
    }

    if (ngx_http_hookstream_valid_channel(hmcf, &channel) != NGX_OK) {
        cJSON_Delete(json);
        return "invalid channel";
    }

    if (cJSON_GetObjectItemCaseSensitive(json, "data") == NULL
        || ngx_hookstream_json_member(line, "data", &data) != NGX_OK)
    {
        cJSON_Delete(json);
        return "data is missing";
    }

    /* "deliveries:dst_..." names its key; else the data may carry it */

    ngx_str_null(&key);
    colon = ngx_strlchr(channel.data, channel.data + channel.len, ':');

    if (colon) {
        key.data = colon + 1;
        key.len = channel.data + channel.len - key.data;
        channel.len = colon - channel.data;

    } else {
        item = cJSON_GetObjectItemCaseSensitive(json, "data");

        for (k = keys; *k; k++) {
            cJSON  *v;

            v = cJSON_GetObjectItemCaseSensitive(item, *k);

            if (cJSON_IsString(v)
                && ngx_strlen(v->valuestring) <= NGX_HOOKSTREAM_MAX_ID_LEN)
            {
                key.data = (u_char *) v->valuestring;
                key.len = ngx_strlen(v->valuestring);
                break;
            }
        }
    }

    pub.topic = org;
    pub.type = type;
    pub.channel = channel;
    pub.key = key;
    pub.data = data;

    if (hmcf->shm_zone == NULL
        || ngx_hookstream_broker_publish(hmcf->shm_zone->data, &pub,
                                         hlcf->buffer_count,
                                         hlcf->buffer_age, NULL,
                                         r->connection->log)
           != NGX_OK)
    {
        cJSON_Delete(json);
        return "not stored: the zone is full";
    }

    cJSON_Delete(json);

    return NULL;
}


/* a channel name: lowercase letters, digits, ".", "_", "-", one ":" */

static ngx_int_t
ngx_http_hookstream_valid_channel(ngx_http_hookstream_main_conf_t *hmcf,
    ngx_str_t *channel)
{
    if (channel->len == 0 || channel->len > NGX_HOOKSTREAM_MAX_CHANNEL) {
        return NGX_DECLINED;
    }

    if (ngx_regex_exec(hmcf->channel_regex, channel, NULL, 0)
        == NGX_REGEX_NO_MATCHED)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* GET /v1/ws: an org's dashboard stream */

static ngx_int_t
ngx_http_hookstream_stream_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc, n;
    ngx_str_t                         org;
    const char                       *msg;
    ngx_hookstream_shctx_t           *sh;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);
    sh = hmcf->shm_zone->data;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_hookstream_ws_check(r, &msg);
    if (rc != NGX_OK) {
        return ngx_http_hookstream_send_error(r, rc, msg);
    }

    rc = ngx_http_hookstream_authenticate(r, NGX_HOOKSTREAM_AUTH_KEY
                                             |NGX_HOOKSTREAM_AUTH_COOKIE,
                                          &org, &msg);
    if (rc != NGX_OK) {
        return ngx_http_hookstream_send_error(r, rc, msg);
    }

    n = ngx_hookstream_broker_connections(sh, &org, 1);

    if (n == NGX_ERROR) {
        /* the zone is full: nothing was counted */
        return ngx_http_hookstream_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "Server is at capacity");
    }

    if ((ngx_uint_t) n > hlcf->max_connections_per_org) {
        (void) ngx_hookstream_broker_connections(sh, &org, -1);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "org \"%V\" has too many connections", &org);

        return ngx_http_hookstream_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                    "Too many connections for this org");
    }

    rc = ngx_http_hookstream_stream_open(r, &org,
                                         NGX_HOOKSTREAM_STREAM_WELCOME
                                         |NGX_HOOKSTREAM_STREAM_COUNTED);

    if (rc != NGX_DONE) {
        (void) ngx_hookstream_broker_connections(sh, &org, -1);
    }

    return rc;
}


/*
 * Upgrades a checked request into a stream of a topic's messages: the
 * welcome (for dashboards), then the replay from ?cursor=, then live.
 * Returns NGX_DONE, or an HTTP status before the upgrade.
 */

ngx_int_t
ngx_http_hookstream_stream_open(ngx_http_request_t *r, ngx_str_t *topic,
    ngx_uint_t flags)
{
    u_char                            *p;
    ngx_int_t                          rc;
    ngx_str_t                          cursor, arg;
    ngx_uint_t                         redis;
    ngx_hookstream_shctx_t            *sh;
    ngx_http_hookstream_ws_t          *ws;
    ngx_http_hookstream_loc_conf_t    *hlcf;
    ngx_http_hookstream_main_conf_t   *hmcf;
    ngx_http_hookstream_stream_ctx_t  *ctx;
    u_char                             conn_id[NGX_HOOKSTREAM_HEX_ID_LEN];
    u_char                             buf[NGX_HOOKSTREAM_CURSOR_LEN];
    u_char                             welcome[256 + NGX_HOOKSTREAM_MAX_ID_LEN];

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);
    sh = hmcf->shm_zone->data;

    if (topic->len > NGX_HOOKSTREAM_MAX_ID_LEN) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the state lives with the WebSocket, which outlives the request */

    ws = ngx_http_hookstream_ws_upgrade(r, &ngx_http_hookstream_stream_ws,
                                     sizeof(ngx_http_hookstream_stream_ctx_t));
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ws->data;
    ctx->ws = ws;

    ctx->topic.data = ctx->topic_data;
    ctx->topic.len = ngx_cpymem(ctx->topic_data, topic->data, topic->len)
                     - ctx->topic_data;
    ctx->test = (flags & NGX_HOOKSTREAM_STREAM_TEST) ? 1 : 0;

    /* from here on the cleanup handler gives the connection count back */
    ctx->counted = (flags & NGX_HOOKSTREAM_STREAM_COUNTED) ? 1 : 0;

    ctx->sub.deliver = ngx_http_hookstream_stream_deliver;
    ctx->sub.reset = ngx_http_hookstream_stream_sub_reset;
    ctx->sub.data = ctx;
    ctx->sub.log = r->connection->log;

    if (ngx_http_arg(r, (u_char *) "cursor", 6, &arg) != NGX_OK) {
        arg.len = 0;
    }

    redis = ngx_hookstream_redis_topic(&ctx->topic);

    if (redis) {
        /*
         * Through Redis nothing is delivered from inside subscribe (a
         * resume is read from Redis first), so the subscriber is linked
         * before the welcome's cursor is taken: nothing falls between.
         */
        rc = ngx_hookstream_broker_subscribe(sh, &ctx->sub, &ctx->topic,
                                             arg.len ? &arg : NULL);

        if (rc != NGX_ERROR) {
            ctx->subscribed = 1;
        }

    } else {
        rc = NGX_OK;
    }

    /* the welcome's cursor is where live delivery starts */

    p = ngx_hookstream_broker_cursor(sh, &ctx->topic, buf);
    cursor.data = buf;
    cursor.len = p - buf;

    if (flags & NGX_HOOKSTREAM_STREAM_WELCOME) {
        (void) ngx_hookstream_random_hex(conn_id,
                                         NGX_HOOKSTREAM_HEX_ID_LEN / 2);

        p = ngx_snprintf(welcome, sizeof(welcome),
                         "{\"type\":\"welcome\",\"data\":{\"org_id\":\"%V\","
                         "\"connection_id\":\"conn_%*s\",\"heartbeat_s\":%M,"
                         "\"cursor\":\"%V\"}}",
                         &ctx->topic, (size_t) NGX_HOOKSTREAM_HEX_ID_LEN,
                         conn_id, hlcf->heartbeat_interval / 1000, &cursor);

        if (ngx_http_hookstream_ws_send_text(ws, welcome, p - welcome)
            != NGX_OK)
        {
            ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_INTERNAL,
                                         "internal error");
            ngx_http_hookstream_ws_start(ws);
            return NGX_DONE;
        }
    }

    /* resume from the client's cursor, else from the welcome's */

    if (!redis) {
        ctx->replaying = 1;

        if (arg.len) {
            rc = ngx_hookstream_broker_subscribe(sh, &ctx->sub, &ctx->topic,
                                                 &arg);

        } else {
            rc = ngx_hookstream_broker_subscribe(sh, &ctx->sub, &ctx->topic,
                                                 &cursor);
        }

        ctx->replaying = 0;
    }

    if (rc == NGX_ERROR) {
        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_INTERNAL,
                                     "internal error");

    } else {
        ctx->subscribed = 1;

        if (rc == NGX_DECLINED) {
            (void) ngx_http_hookstream_stream_reset(ctx,
                                  "the cursor is no longer buffered");
        }
    }

    ngx_http_hookstream_ws_start(ws);

    return NGX_DONE;
}


/* a resume read from Redis could not be honoured */

static void
ngx_http_hookstream_stream_sub_reset(ngx_hookstream_sub_t *sub)
{
    ngx_http_hookstream_stream_ctx_t  *ctx;

    ctx = sub->data;

    (void) ngx_http_hookstream_stream_reset(ctx,
                                  "the cursor is no longer buffered");
}


static void
ngx_http_hookstream_stream_deliver(ngx_hookstream_sub_t *sub,
    ngx_hookstream_msg_t *msg)
{
    ngx_str_t                         *ch;
    ngx_uint_t                         i;
    ngx_http_hookstream_stream_ctx_t  *ctx;

    ctx = sub->data;

    if (ctx->test && msg->type.len == sizeof("session_ended") - 1
        && ngx_strncmp(msg->type.data, "session_ended",
                       sizeof("session_ended") - 1) == 0)
    {
        ngx_http_hookstream_ws_close(ctx->ws, NGX_HOOKSTREAM_CLOSE_NORMAL,
                                     "session ended");
        return;
    }

    if (msg->replay) {
        /* offered again by a cursor in a subscribe: for that channel only */

        ch = msg->replay_channel ? msg->replay_channel : ctx->replay;

        if (ch == NULL || !ngx_http_hookstream_channel_match(ch, msg))
        {
            return;
        }

    } else if (ctx->explicit) {

        for (i = 0; i < ctx->nchannels; i++) {
            if (ngx_http_hookstream_channel_match(&ctx->channels[i], msg)) {
                break;
            }
        }

        if (i == ctx->nchannels) {
            return;
        }
    }

    if (ngx_http_hookstream_ws_send_buf(ctx->ws, msg->buf) == NGX_OK) {
        if (msg->replay || ctx->replaying) {
            ngx_hookstream_stat_add(ctx->ws->shctx, messages_replayed, 1);

        } else {
            ngx_hookstream_stat_add(ctx->ws->shctx, messages_out, 1);
        }
    }
}


/* does a subscription "C" or "C:K" take a message of channel C, key K? */

static ngx_uint_t
ngx_http_hookstream_channel_match(ngx_str_t *ch, ngx_hookstream_msg_t *msg)
{
    size_t  n;

    n = msg->channel.len;

    if (ch->len < n || ngx_strncmp(ch->data, msg->channel.data, n) != 0) {
        return 0;
    }

    if (ch->len == n) {
        return 1;
    }

    return ch->data[n] == ':' && ch->len - n - 1 == msg->key.len
           && ngx_strncmp(ch->data + n + 1, msg->key.data, msg->key.len) == 0;
}


static ngx_int_t
ngx_http_hookstream_stream_message(ngx_http_hookstream_ws_t *ws,
    ngx_uint_t opcode, u_char *data, size_t len)
{
    cJSON                             *json, *item;
    ngx_int_t                          rc;
    ngx_str_t                          type, channel, cursor, *ch;
    ngx_uint_t                         i;
    ngx_hookstream_shctx_t            *sh;
    ngx_http_hookstream_stream_ctx_t  *ctx;

    ctx = ws->data;

    if (opcode != NGX_HOOKSTREAM_WS_OP_TEXT) {
        return ngx_http_hookstream_stream_error(ctx, "invalid_json",
                                    "messages are JSON text");
    }

    json = cJSON_ParseWithLength((const char *) data, len);

    if (json == NULL || !cJSON_IsObject(json)) {
        cJSON_Delete(json);
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "client sent a message that is not a JSON object");
        return ngx_http_hookstream_stream_error(ctx, "invalid_json",
                                    "the message is not a JSON object");
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "type");

    if (!cJSON_IsString(item)) {
        cJSON_Delete(json);
        return ngx_http_hookstream_stream_error(ctx, "unknown_type",
                                    "the message has no type");
    }

    type.data = (u_char *) item->valuestring;
    type.len = ngx_strlen(item->valuestring);

    if (type.len == 4 && ngx_strncmp(type.data, "pong", 4) == 0) {
        cJSON_Delete(json);
        ngx_http_hookstream_ws_alive(ws);
        return NGX_OK;
    }

    if (type.len == 4 && ngx_strncmp(type.data, "ping", 4) == 0) {
        cJSON_Delete(json);
        ngx_http_hookstream_ws_alive(ws);
        return ngx_http_hookstream_ws_send_text(ws, (u_char *)
                                                "{\"type\":\"pong\"}", 15);
    }

    rc = -1;

    if (type.len == 9 && ngx_strncmp(type.data, "subscribe", 9) == 0) {
        rc = 1;

    } else if (type.len == 11
               && ngx_strncmp(type.data, "unsubscribe", 11) == 0)
    {
        rc = 0;
    }

    if (rc == -1) {
        cJSON_Delete(json);
        return ngx_http_hookstream_stream_error(ctx, "unknown_type",
                                    "unknown message type");
    }

    item = cJSON_GetObjectItemCaseSensitive(json, "channel");

    if (!cJSON_IsString(item)) {
        cJSON_Delete(json);
        return ngx_http_hookstream_stream_error(ctx, "invalid_channel",
                                    "the message has no channel");
    }

    channel.data = (u_char *) item->valuestring;
    channel.len = ngx_strlen(item->valuestring);

    if (ngx_http_hookstream_valid_channel(ws->main_conf, &channel)
        != NGX_OK)
    {
        cJSON_Delete(json);
        return ngx_http_hookstream_stream_error(ctx, "invalid_channel",
                                    "invalid channel name");
    }

    for (i = 0; i < ctx->nchannels; i++) {
        ch = &ctx->channels[i];

        if (ch->len == channel.len
            && ngx_strncmp(ch->data, channel.data, channel.len) == 0)
        {
            break;
        }
    }

    if (rc == 0) {
        /* unsubscribe */

        if (i < ctx->nchannels) {
            ngx_free(ctx->channels[i].data);
            ctx->channels[i] = ctx->channels[--ctx->nchannels];
        }

        ctx->explicit = 1;

        rc = ngx_http_hookstream_stream_reply(ctx, "unsubscribed", &channel);
        cJSON_Delete(json);
        return rc;
    }

    if (i == ctx->nchannels) {

        if (ctx->nchannels == NGX_HOOKSTREAM_MAX_SUBSCRIPTIONS) {
            cJSON_Delete(json);
            return ngx_http_hookstream_stream_error(ctx,
                                    "too_many_subscriptions",
                                    "at most 64 channels per connection");
        }

        if (ctx->channels == NULL) {
            ctx->channels = ngx_palloc(ws->connection->pool,
                                       NGX_HOOKSTREAM_MAX_SUBSCRIPTIONS
                                       * sizeof(ngx_str_t));
            if (ctx->channels == NULL) {
                cJSON_Delete(json);
                return NGX_ERROR;
            }
        }

        ch = &ctx->channels[ctx->nchannels];

        ch->data = ngx_alloc(channel.len, ws->connection->log);
        if (ch->data == NULL) {
            cJSON_Delete(json);
            return NGX_ERROR;
        }

        ngx_memcpy(ch->data, channel.data, channel.len);
        ch->len = channel.len;
        ctx->nchannels++;
    }

    ctx->explicit = 1;

    rc = ngx_http_hookstream_stream_reply(ctx, "subscribed", &channel);

    item = cJSON_GetObjectItemCaseSensitive(json, "cursor");

    if (rc == NGX_OK && cJSON_IsString(item) && ctx->subscribed) {
        cursor.data = (u_char *) item->valuestring;
        cursor.len = ngx_strlen(item->valuestring);

        sh = ws->shctx;

        ctx->replay = &ctx->channels[i];
        ctx->sub.replay_channel = ctx->replay;
        ctx->replaying = 1;
        rc = ngx_hookstream_broker_replay(sh, &ctx->sub, &cursor);
        ctx->replaying = 0;
        ctx->replay = NULL;
        ctx->sub.replay_channel = NULL;

        if (rc == NGX_DECLINED) {
            rc = ngx_http_hookstream_stream_reset(ctx,
                                  "the cursor is no longer buffered");
        }
    }

    cJSON_Delete(json);

    return rc;
}


static ngx_int_t
ngx_http_hookstream_stream_reply(ngx_http_hookstream_stream_ctx_t *ctx,
    const char *type, ngx_str_t *channel)
{
    u_char  *p, buf[64 + NGX_HOOKSTREAM_MAX_CHANNEL];

    p = ngx_snprintf(buf, sizeof(buf), "{\"type\":\"%s\",\"channel\":\"%V\"}",
                     type, channel);

    return ngx_http_hookstream_ws_send_text(ctx->ws, buf, p - buf);
}


static ngx_int_t
ngx_http_hookstream_stream_error(ngx_http_hookstream_stream_ctx_t *ctx,
    const char *code, const char *message)
{
    size_t  n;
    u_char  buf[NGX_HOOKSTREAM_REPLY_SIZE];

    n = ngx_http_hookstream_error_text(buf, code, message);

    return ngx_http_hookstream_ws_send_text(ctx->ws, buf, n);
}


static ngx_int_t
ngx_http_hookstream_stream_reset(ngx_http_hookstream_stream_ctx_t *ctx,
    const char *reason)
{
    u_char                  *p, *c;
    ngx_hookstream_shctx_t  *sh;
    u_char                   cursor[NGX_HOOKSTREAM_CURSOR_LEN];
    u_char                   buf[128 + NGX_HOOKSTREAM_CURSOR_LEN];

    sh = ctx->ws->shctx;

    c = ngx_hookstream_broker_cursor(sh, &ctx->topic, cursor);

    p = ngx_snprintf(buf, sizeof(buf),
                     "{\"type\":\"reset\",\"data\":{\"reason\":\"%s\","
                     "\"cursor\":\"%*s\"}}",
                     reason, (size_t) (c - cursor), cursor);

    return ngx_http_hookstream_ws_send_text(ctx->ws, buf, p - buf);
}


static ngx_int_t
ngx_http_hookstream_stream_ping(ngx_http_hookstream_ws_t *ws)
{
    return ngx_http_hookstream_ws_send_text(ws, (u_char *)
                                            "{\"type\":\"ping\"}", 15);
}


static void
ngx_http_hookstream_stream_cleanup(ngx_http_hookstream_ws_t *ws)
{
    ngx_uint_t                         i;
    ngx_hookstream_shctx_t            *sh;
    ngx_http_hookstream_stream_ctx_t  *ctx;

    ctx = ws->data;

    sh = ws->shctx;

    if (ctx->subscribed) {
        ngx_hookstream_broker_unsubscribe(&ctx->sub);
        ctx->subscribed = 0;
    }

    if (ctx->counted) {
        (void) ngx_hookstream_broker_connections(sh, &ctx->topic, -1);
        ctx->counted = 0;
    }

    for (i = 0; i < ctx->nchannels; i++) {
        ngx_free(ctx->channels[i].data);
    }

    ctx->nchannels = 0;
}
