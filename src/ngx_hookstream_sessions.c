
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"


/*
 * Sessions live in the shared zone: an rbtree by id and a queue by
 * expiry, soonest first, from which every operation reaps a few expired
 * sessions (no timer per session).  Creation is counted per client
 * address in fixed windows of an hour, kept in a second rbtree with its
 * own queue.  A session's events are the broker's messages on the topic
 * named by its id; nothing of a session is written to the journal.
 */


/* expired sessions (and address windows) reaped per operation */
#define NGX_HOOKSTREAM_SESSIONS_REAP     16
#define NGX_HOOKSTREAM_SESSIONS_WINDOW   3600
#define NGX_HOOKSTREAM_SESSIONS_INGEST   "/v1/ingest/"


typedef struct {
    ngx_rbtree_node_t                node;      /* key: crc32 of the id */
    ngx_queue_t                      queue;     /* by expiry */
    uint64_t                         created;   /* ms since the epoch */
    uint64_t                         expires;
    ngx_uint_t                       limit;
    ngx_uint_t                       count;
    u_char                           id[NGX_HOOKSTREAM_HEX_ID_LEN];
} ngx_hookstream_session_t;


/* sessions created from one client address in the current window */
typedef struct {
    ngx_rbtree_node_t                node;      /* key: crc32 of addr */
    ngx_queue_t                      queue;     /* by end of window */
    time_t                           reset;     /* the window ends */
    ngx_uint_t                       count;
    u_short                          len;
    u_char                           addr[1];
} ngx_hookstream_session_addr_t;


typedef struct {
    ngx_rbtree_t                     rbtree;
    ngx_rbtree_node_t                sentinel;
    ngx_queue_t                      expiry;
    ngx_uint_t                       count;

    ngx_rbtree_t                     addrs;
    ngx_rbtree_node_t                addrs_sentinel;
    ngx_queue_t                      windows;
} ngx_hookstream_sessions_t;


/* a session as read under the lock */
typedef struct {
    uint64_t                         created;
    uint64_t                         expires;
    ngx_uint_t                       limit;
    ngx_uint_t                       count;
    u_char                           id[NGX_HOOKSTREAM_HEX_ID_LEN];
} ngx_hookstream_session_info_t;


/* sessions that expired under the lock: their streams are told after */
typedef struct {
    ngx_uint_t                       n;
    u_char                           ids[NGX_HOOKSTREAM_SESSIONS_REAP + 1]
                                        [NGX_HOOKSTREAM_HEX_ID_LEN];
} ngx_hookstream_sessions_ended_t;


/* the events of a GET, collected from the broker's buffer */
typedef struct {
    ngx_http_request_t              *request;
    ngx_chain_t                     *out;
    ngx_chain_t                    **last;
    size_t                           size;
    ngx_uint_t                       nevents;
    ngx_uint_t                       error;
} ngx_http_hookstream_session_events_t;


static ngx_hookstream_shctx_t *ngx_http_hookstream_sessions_zone(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_hookstream_sessions_path(ngx_http_request_t *r,
    ngx_str_t *id);
static ngx_int_t ngx_http_hookstream_session_create(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh);
static ngx_int_t ngx_http_hookstream_session_show(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *id);
static ngx_int_t ngx_http_hookstream_session_delete(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *id);
static ngx_int_t ngx_http_hookstream_session_live(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *id,
    ngx_hookstream_session_info_t *info);
static ngx_int_t ngx_http_hookstream_session_events(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_hookstream_session_info_t *info,
    ngx_http_hookstream_session_events_t *ctx, ngx_str_t *cursor);
static ngx_int_t ngx_http_hookstream_session_replay(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *topic, ngx_str_t *epoch,
    uint64_t from, ngx_http_hookstream_session_events_t *ctx,
    uint64_t *last);
static void ngx_http_hookstream_session_collect(ngx_hookstream_sub_t *sub,
    ngx_hookstream_msg_t *msg);
static ngx_int_t ngx_http_hookstream_session_json(ngx_http_request_t *r,
    ngx_hookstream_session_info_t *info, size_t reserve, ngx_str_t *out);
static ngx_int_t ngx_http_hookstream_session_url(ngx_http_request_t *r,
    u_char *id, ngx_str_t *url);
static ngx_int_t ngx_http_hookstream_sessions_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *message, const char *name,
    time_t seconds, const char *value);

static ngx_hookstream_session_t *ngx_hookstream_sessions_find(
    ngx_hookstream_shctx_t *sh, u_char *id, uint64_t now,
    ngx_hookstream_sessions_ended_t *ended);
static ngx_hookstream_session_t *ngx_hookstream_sessions_lookup(
    ngx_hookstream_sessions_t *ss, u_char *id);
static void ngx_hookstream_sessions_expire(ngx_hookstream_shctx_t *sh,
    uint64_t now, ngx_hookstream_sessions_ended_t *ended);
static void ngx_hookstream_sessions_remove(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_session_t *s);
static void ngx_hookstream_sessions_end(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sessions_ended_t *ended, const char *reason,
    ngx_http_hookstream_loc_conf_t *hlcf, ngx_log_t *log);
static ngx_int_t ngx_hookstream_sessions_addr_hit(ngx_hookstream_shctx_t *sh,
    ngx_str_t *addr, ngx_uint_t limit, time_t now, time_t *retry,
    ngx_hookstream_session_addr_t **hit);
static ngx_hookstream_session_addr_t *ngx_hookstream_sessions_addr_lookup(
    ngx_hookstream_sessions_t *ss, ngx_str_t *addr, uint32_t hash);
static void ngx_hookstream_sessions_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_hookstream_sessions_addr_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static uint64_t ngx_hookstream_sessions_now(void);


ngx_int_t
ngx_hookstream_sessions_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone)
{
    ngx_hookstream_sessions_t  *ss;

    ss = ngx_slab_calloc(sh->shpool, sizeof(ngx_hookstream_sessions_t));
    if (ss == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&ss->rbtree, &ss->sentinel,
                    ngx_hookstream_sessions_insert_value);
    ngx_queue_init(&ss->expiry);

    ngx_rbtree_init(&ss->addrs, &ss->addrs_sentinel,
                    ngx_hookstream_sessions_addr_insert_value);
    ngx_queue_init(&ss->windows);

    sh->sessions = ss;

    return NGX_OK;
}


/* live sessions, for the status page (the expired but not reaped too) */

ngx_uint_t
ngx_hookstream_sessions_live(ngx_hookstream_shctx_t *sh)
{
    ngx_hookstream_sessions_t  *ss;

    if (sh == NULL || sh->sessions == NULL) {
        return 0;
    }

    ss = sh->sessions;

    return ss->count;
}


ngx_uint_t
ngx_hookstream_session_valid_id(ngx_str_t *id)
{
    ngx_uint_t  i;

    if (id->len != NGX_HOOKSTREAM_HEX_ID_LEN) {
        return 0;
    }

    for (i = 0; i < id->len; i++) {
        if (!((id->data[i] >= '0' && id->data[i] <= '9')
              || (id->data[i] >= 'a' && id->data[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


/* /v1/test/sessions and /v1/test/sessions/:id */

ngx_int_t
ngx_http_hookstream_sessions_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t                id;
    ngx_hookstream_shctx_t  *sh;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    sh = ngx_http_hookstream_sessions_zone(r);
    if (sh == NULL) {
        return ngx_http_hookstream_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "Test sessions are not "
                                              "available");
    }

    rc = ngx_http_hookstream_sessions_path(r, &id);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        /* the collection */

        if (r->method == NGX_HTTP_POST) {
            return ngx_http_hookstream_session_create(r, sh);
        }

        return ngx_http_hookstream_sessions_error(r, NGX_HTTP_NOT_ALLOWED,
                                    "Use POST to create a test session",
                                    "Allow", -1, "POST");
    }

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        return ngx_http_hookstream_session_show(r, sh, &id);
    }

    if (r->method == NGX_HTTP_DELETE) {
        return ngx_http_hookstream_session_delete(r, sh, &id);
    }

    return ngx_http_hookstream_sessions_error(r, NGX_HTTP_NOT_ALLOWED,
                                "Use GET or DELETE on a test session",
                                "Allow", -1, "GET, HEAD, DELETE");
}


/* GET /v1/ws/test/:id: the live requests of a test session */

ngx_int_t
ngx_http_hookstream_test_stream_handler(ngx_http_request_t *r)
{
    ngx_int_t                        n, rc;
    ngx_str_t                        id;
    const char                      *msg;
    ngx_hookstream_shctx_t          *sh;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_hookstream_ws_check(r, &msg);
    if (rc != NGX_OK) {
        return ngx_http_hookstream_send_error(r, rc, msg);
    }

    sh = ngx_http_hookstream_sessions_zone(r);
    if (sh == NULL) {
        return ngx_http_hookstream_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "Test sessions are not "
                                              "available");
    }

    if (ngx_http_hookstream_get_id(r, hlcf, &id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_hookstream_session_live(r, sh, &id, NULL);

    if (rc != NGX_OK) {
        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "Test session not found");
    }

    n = ngx_hookstream_broker_connections(sh, &id, 1);

    if (n == NGX_ERROR) {
        return ngx_http_hookstream_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "The zone is full");
    }

    if ((ngx_uint_t) n > hlcf->max_connections_per_org) {
        (void) ngx_hookstream_broker_connections(sh, &id, -1);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "test session \"%V\" has too many connections", &id);

        return ngx_http_hookstream_send_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                    "Too many connections for this session");
    }

    /*
     * Looked up again now that the connection is counted: a DELETE that
     * removed the session in between either sees this connection and
     * publishes "session_ended", or this lookup sees it gone.
     */

    if (ngx_http_hookstream_session_live(r, sh, &id, NULL) != NGX_OK) {
        (void) ngx_hookstream_broker_connections(sh, &id, -1);
        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "Test session not found");
    }

    rc = ngx_http_hookstream_stream_open(r, &id,
                                         NGX_HOOKSTREAM_STREAM_TEST
                                         |NGX_HOOKSTREAM_STREAM_COUNTED);

    if (rc != NGX_DONE) {
        (void) ngx_hookstream_broker_connections(sh, &id, -1);
    }

    return rc;
}


ngx_int_t
ngx_http_hookstream_session_ingest(ngx_http_request_t *r, ngx_str_t *id,
    ngx_int_t *answer)
{
    time_t                            retry;
    uint64_t                          now;
    ngx_int_t                         rc;
    ngx_hookstream_shctx_t           *sh;
    ngx_hookstream_session_t         *s;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_hookstream_sessions_ended_t   ended;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    sh = ngx_http_hookstream_sessions_zone(r);
    retry = 0;

    if (sh == NULL || !ngx_hookstream_session_valid_id(id)) {
        rc = NGX_DECLINED;
        goto failed;
    }

    now = ngx_hookstream_sessions_now();
    ended.n = 0;

    ngx_shmtx_lock(&sh->shpool->mutex);

    s = ngx_hookstream_sessions_find(sh, id->data, now, &ended);

    if (s == NULL) {
        rc = NGX_DECLINED;

    } else if (s->count >= s->limit) {
        rc = NGX_BUSY;
        retry = (time_t) ((s->expires - now + 999) / 1000);

    } else {
        s->count++;
        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_hookstream_sessions_end(sh, &ended, "expired", hlcf,
                                r->connection->log);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

failed:

    *answer = ngx_http_discard_request_body(r);

    if (*answer != NGX_OK) {
        return NGX_DONE;
    }

    if (rc == NGX_BUSY) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "test session \"%V\" reached its request limit", id);

        /*
         * The limit does not reset: Retry-After is when the session
         * expires, after which a new session is needed.
         */

        *answer = ngx_http_hookstream_sessions_error(r,
                                    NGX_HTTP_TOO_MANY_REQUESTS,
                                    "Test session request limit reached",
                                    "Retry-After", retry, NULL);
        return NGX_DONE;
    }

    *answer = ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                             "Test session not found");
    return NGX_DONE;
}


static ngx_hookstream_shctx_t *
ngx_http_hookstream_sessions_zone(ngx_http_request_t *r)
{
    ngx_hookstream_shctx_t           *sh;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (hmcf->shm_zone == NULL) {
        return NULL;
    }

    sh = hmcf->shm_zone->data;

    /* a zone adopted from a build without sessions has none */

    if (sh == NULL || sh->sessions == NULL) {
        return NULL;
    }

    return sh;
}


/*
 * NGX_DECLINED for the collection (a variable of the directive that is
 * empty, or the URI of the location itself), else NGX_OK and the id: the
 * variable's value, or the last segment of the URI.
 */

static ngx_int_t
ngx_http_hookstream_sessions_path(ngx_http_request_t *r, ngx_str_t *id)
{
    size_t                           len;
    u_char                          *last;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    if (hlcf->id) {
        if (ngx_http_complex_value(r, hlcf->id, id) != NGX_OK) {
            return NGX_ERROR;
        }

        return id->len ? NGX_OK : NGX_DECLINED;
    }

    if (ngx_http_hookstream_get_id(r, hlcf, id) != NGX_OK) {
        return NGX_ERROR;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

#if (NGX_PCRE)
    if (clcf->regex) {
        /* a regex location without a variable: only an id is an id */
        return ngx_hookstream_session_valid_id(id) ? NGX_OK : NGX_DECLINED;
    }
#endif

    last = r->uri.data + r->uri.len;

    while (last > r->uri.data && last[-1] == '/') {
        last--;
    }

    len = clcf->name.len;

    while (len && clcf->name.data[len - 1] == '/') {
        len--;
    }

    return ((size_t) (last - r->uri.data) <= len) ? NGX_DECLINED : NGX_OK;
}


/* POST /v1/test/sessions */

static ngx_int_t
ngx_http_hookstream_session_create(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh)
{
    time_t                            now, retry;
    uint64_t                          ms;
    ngx_int_t                         rc;
    ngx_str_t                         body;
    ngx_hookstream_session_t         *s;
    ngx_hookstream_sessions_t        *ss;
    ngx_hookstream_session_info_t     info;
    ngx_hookstream_session_addr_t    *hit;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_hookstream_sessions_ended_t   ended;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    ss = sh->sessions;

    (void) ngx_hookstream_random_hex(info.id, NGX_HOOKSTREAM_HEX_ID_LEN / 2);

    now = ngx_time();
    ms = ngx_hookstream_sessions_now();

    info.created = ms;
    info.expires = ms + (uint64_t) hlcf->test_session_ttl * 1000;
    info.limit = hlcf->test_session_requests;
    info.count = 0;

    ended.n = 0;
    retry = 0;
    hit = NULL;
    s = NULL;

    ngx_shmtx_lock(&sh->shpool->mutex);

    ngx_hookstream_sessions_expire(sh, ms, &ended);

    rc = NGX_OK;

    if (hlcf->test_session_per_ip) {
        rc = ngx_hookstream_sessions_addr_hit(sh, &r->connection->addr_text,
                                              hlcf->test_session_per_ip, now,
                                              &retry, &hit);
    }

    if (rc == NGX_OK
        && ngx_hookstream_sessions_lookup(ss, info.id) == NULL)
    {
        s = ngx_slab_alloc_locked(sh->shpool,
                                  sizeof(ngx_hookstream_session_t));
    }

    if (rc == NGX_OK && s == NULL) {
        /* the zone is full: the address is not charged for it */
        if (hit) {
            hit->count--;
        }

        rc = NGX_ERROR;
    }

    if (s) {
        ngx_queue_t               *q;
        ngx_hookstream_session_t  *t;

        s->node.key = ngx_crc32_short(info.id, NGX_HOOKSTREAM_HEX_ID_LEN);
        ngx_memcpy(s->id, info.id, NGX_HOOKSTREAM_HEX_ID_LEN);
        s->created = info.created;
        s->expires = info.expires;
        s->limit = info.limit;
        s->count = 0;

        ngx_rbtree_insert(&ss->rbtree, &s->node);

        /* kept in expiry order; with one TTL this is the tail */

        for (q = ngx_queue_last(&ss->expiry);
             q != ngx_queue_sentinel(&ss->expiry);
             q = ngx_queue_prev(q))
        {
            t = ngx_queue_data(q, ngx_hookstream_session_t, queue);

            if (t->expires <= s->expires) {
                break;
            }
        }

        ngx_queue_insert_after(q, &s->queue);
        ss->count++;
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_hookstream_sessions_end(sh, &ended, "expired", hlcf,
                                r->connection->log);

    if (rc == NGX_BUSY) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client created too many test sessions");

        return ngx_http_hookstream_sessions_error(r,
                                    NGX_HTTP_TOO_MANY_REQUESTS,
                                    "Too many test sessions created from "
                                    "this address", "Retry-After",
                                    ngx_max(retry, 1), NULL);
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hookstream zone is full: test session not created");

        return ngx_http_hookstream_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "The zone is full");
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "hookstream test session %*s created",
                   (size_t) NGX_HOOKSTREAM_HEX_ID_LEN, info.id);

    if (ngx_http_hookstream_session_json(r, &info, 1, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data[body.len++] = '}';

    return ngx_http_hookstream_send_json(r, NGX_HTTP_CREATED, &body);
}


/* GET /v1/test/sessions/:id: the session and its buffered events */

static ngx_int_t
ngx_http_hookstream_session_show(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *id)
{
    u_char                                *p;
    ngx_int_t                              rc;
    ngx_str_t                              head, cursor;
    ngx_buf_t                             *b, *tail;
    ngx_chain_t                           *cl, *tl;
    ngx_hookstream_session_info_t          info;
    ngx_http_hookstream_session_events_t   ctx;
    u_char                                 buf[NGX_HOOKSTREAM_CURSOR_LEN];

    if (ngx_http_hookstream_session_live(r, sh, id, &info) != NGX_OK) {
        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "Test session not found");
    }

    ngx_memzero(&ctx, sizeof(ngx_http_hookstream_session_events_t));
    ctx.request = r;
    ctx.last = &ctx.out;

    cursor.data = buf;

    if (ngx_http_hookstream_session_events(r, sh, &info, &ctx, &cursor)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_hookstream_session_json(r, &info,
                              sizeof(",\"cursor\":\"\",\"events\":[") - 1
                              + cursor.len, &head);
    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = head.data + head.len;
    p = ngx_sprintf(p, ",\"cursor\":\"%V\",\"events\":[", &cursor);
    head.len = p - head.data;

    b = ngx_calloc_buf(r->pool);
    tail = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);
    tl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || tail == NULL || cl == NULL || tl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = head.data;
    b->last = head.data + head.len;
    b->memory = 1;

    tail->pos = (u_char *) "]}\n";
    tail->last = tail->pos + 3;
    tail->memory = 1;
    tail->last_buf = (r == r->main) ? 1 : 0;
    tail->last_in_chain = 1;

    tl->buf = tail;
    tl->next = NULL;
    *ctx.last = tl;
    cl->buf = b;
    cl->next = ctx.out;

    r->headers_out.status = NGX_HTTP_OK;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_length_n = head.len + ctx.size + 3;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, cl);
}


/* DELETE /v1/test/sessions/:id */

static ngx_int_t
ngx_http_hookstream_session_delete(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *id)
{
    uint64_t                          now;
    ngx_hookstream_session_t         *s;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_hookstream_sessions_ended_t   ended, deleted;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    if (!ngx_hookstream_session_valid_id(id)) {
        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "Test session not found");
    }

    now = ngx_hookstream_sessions_now();
    ended.n = 0;
    deleted.n = 0;

    ngx_shmtx_lock(&sh->shpool->mutex);

    s = ngx_hookstream_sessions_find(sh, id->data, now, &ended);

    if (s) {
        ngx_hookstream_sessions_remove(sh, s);
        ngx_memcpy(deleted.ids[0], id->data, NGX_HOOKSTREAM_HEX_ID_LEN);
        deleted.n = 1;
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_hookstream_sessions_end(sh, &ended, "expired", hlcf,
                                r->connection->log);

    if (s == NULL) {
        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "Test session not found");
    }

    ngx_hookstream_sessions_end(sh, &deleted, "deleted", hlcf,
                                r->connection->log);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "hookstream test session %V deleted", id);

    return NGX_HTTP_NO_CONTENT;
}


/* NGX_OK when the id is a live session (copied into info if not NULL) */

static ngx_int_t
ngx_http_hookstream_session_live(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *id,
    ngx_hookstream_session_info_t *info)
{
    uint64_t                          now;
    ngx_hookstream_session_t         *s;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_hookstream_sessions_ended_t   ended;

    if (!ngx_hookstream_session_valid_id(id)) {
        return NGX_DECLINED;
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    now = ngx_hookstream_sessions_now();
    ended.n = 0;

    ngx_shmtx_lock(&sh->shpool->mutex);

    s = ngx_hookstream_sessions_find(sh, id->data, now, &ended);

    if (s && info) {
        info->created = s->created;
        info->expires = s->expires;
        info->limit = s->limit;
        info->count = s->count;
        ngx_memcpy(info->id, s->id, NGX_HOOKSTREAM_HEX_ID_LEN);
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_hookstream_sessions_end(sh, &ended, "expired", hlcf,
                                r->connection->log);

    return s ? NGX_OK : NGX_DECLINED;
}


/*
 * The session's buffered events, oldest first, read by a subscriber that
 * lives only for this call.  The broker replays what follows a cursor if
 * nothing after it has been evicted; the session's request count bounds
 * how far back its topic goes, and when older events have been evicted a
 * binary search finds the oldest cursor the broker still honours.  The
 * cursor returned is where the list ends: a stream opened with it goes
 * on with no gap.
 */

static ngx_int_t
ngx_http_hookstream_session_events(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_hookstream_session_info_t *info,
    ngx_http_hookstream_session_events_t *ctx, ngx_str_t *cursor)
{
    u_char     *p, *dash;
    uint64_t    seq, lo, hi, mid, last;
    ngx_int_t   rc;
    ngx_str_t   topic, epoch;

    topic.data = info->id;
    topic.len = NGX_HOOKSTREAM_HEX_ID_LEN;

    p = ngx_hookstream_broker_cursor(sh, &topic, cursor->data);
    cursor->len = p - cursor->data;

    dash = ngx_strlchr(cursor->data, p, '-');

    if (dash == NULL
        || ngx_hookstream_broker_parse_cursor(sh, cursor, &seq) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "hookstream: unexpected cursor \"%V\"", cursor);
        return NGX_ERROR;
    }

    epoch.data = cursor->data;
    epoch.len = dash - cursor->data;

    lo = seq - ngx_min(seq, (uint64_t) info->count);

    rc = ngx_http_hookstream_session_replay(r, sh, &topic, &epoch, lo, ctx,
                                            &last);

    if (rc == NGX_DECLINED) {
        /* lo is too old now; seq itself is always honoured */

        hi = seq;

        while (hi - lo > 1) {
            mid = lo + (hi - lo) / 2;

            rc = ngx_http_hookstream_session_replay(r, sh, &topic, &epoch,
                                                    mid, NULL, &last);
            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (rc == NGX_OK) {
                hi = mid;

            } else {
                lo = mid;
            }
        }

        rc = ngx_http_hookstream_session_replay(r, sh, &topic, &epoch, hi,
                                                ctx, &last);
    }

    if (rc == NGX_ERROR || ctx->error) {
        return NGX_ERROR;
    }

    if (rc == NGX_OK) {
        cursor->len = ngx_sprintf(cursor->data, "%V-%uL", &epoch, last)
                      - cursor->data;
    }

    /* else evictions outran the search: no events, the current cursor */

    return NGX_OK;
}


/* one look at the buffer from "from" on: NGX_OK, NGX_DECLINED, NGX_ERROR */

static ngx_int_t
ngx_http_hookstream_session_replay(ngx_http_request_t *r,
    ngx_hookstream_shctx_t *sh, ngx_str_t *topic, ngx_str_t *epoch,
    uint64_t from, ngx_http_hookstream_session_events_t *ctx,
    uint64_t *last)
{
    ngx_int_t             rc;
    ngx_str_t             cursor;
    ngx_hookstream_sub_t  sub;
    u_char                buf[NGX_HOOKSTREAM_CURSOR_LEN];

    cursor.data = buf;
    cursor.len = ngx_snprintf(buf, sizeof(buf), "%V-%uL", epoch, from) - buf;

    ngx_memzero(&sub, sizeof(ngx_hookstream_sub_t));

    sub.deliver = ngx_http_hookstream_session_collect;
    sub.data = ctx;
    sub.log = r->connection->log;

    rc = ngx_hookstream_broker_subscribe(sh, &sub, topic, &cursor);

    *last = sub.last_seq;

    ngx_hookstream_broker_unsubscribe(&sub);

    return rc;
}


static void
ngx_http_hookstream_session_collect(ngx_hookstream_sub_t *sub,
    ngx_hookstream_msg_t *msg)
{
    ngx_str_t                              env, data;
    ngx_buf_t                             *b;
    ngx_chain_t                           *cl;
    ngx_http_request_t                    *r;
    ngx_http_hookstream_session_events_t  *ctx;

    ctx = sub->data;

    /* a probe of the search, or an earlier failure */

    if (ctx == NULL || ctx->error) {
        return;
    }

    if (msg->type.len != sizeof("event") - 1
        || ngx_strncmp(msg->type.data, "event", sizeof("event") - 1) != 0)
    {
        return;
    }

    /* a replayed buffer is a fresh copy of the envelope, never framed */

    env.data = msg->buf->start;
    env.len = msg->buf->last - msg->buf->start;

    if (ngx_hookstream_json_member(&env, "data", &data) != NGX_OK) {
        return;
    }

    r = ctx->request;

    b = ngx_create_temp_buf(r->pool, data.len + 1);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        ctx->error = 1;
        return;
    }

    if (ctx->nevents) {
        *b->last++ = ',';
    }

    b->last = ngx_cpymem(b->last, data.data, data.len);

    cl->buf = b;
    cl->next = NULL;

    *ctx->last = cl;
    ctx->last = &cl->next;

    ctx->size += b->last - b->pos;
    ctx->nevents++;
}


/*
 * {"session_id":..,"url":..,"created_at":..,"expires_at":..,
 *  "request_limit":N,"request_count":N   with "reserve" bytes more
 * room and no closing brace
 */

static ngx_int_t
ngx_http_hookstream_session_json(ngx_http_request_t *r,
    ngx_hookstream_session_info_t *info, size_t reserve, ngx_str_t *out)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   url;

    if (ngx_http_hookstream_session_url(r, info->id, &url) != NGX_OK) {
        return NGX_ERROR;
    }

    len = sizeof("{\"session_id\":\"\",\"url\":\"\",\"created_at\":\"\","
                 "\"expires_at\":\"\",\"request_limit\":,"
                 "\"request_count\":") - 1
          + NGX_HOOKSTREAM_HEX_ID_LEN
          + ngx_hookstream_json_escape_len(url.data, url.len)
          + 2 * NGX_HOOKSTREAM_RFC3339_LEN + 2 * NGX_INT_T_LEN + reserve;

    out->data = ngx_pnalloc(r->pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(out->data, "{\"session_id\":\"%*s\",\"url\":\"",
                    (size_t) NGX_HOOKSTREAM_HEX_ID_LEN, info->id);
    p = ngx_hookstream_json_escape(p, url.data, url.len);
    p = ngx_cpymem(p, "\",\"created_at\":\"",
                   sizeof("\",\"created_at\":\"") - 1);
    p = ngx_hookstream_time_rfc3339(p, (ngx_msec_t) info->created);
    p = ngx_cpymem(p, "\",\"expires_at\":\"",
                   sizeof("\",\"expires_at\":\"") - 1);
    p = ngx_hookstream_time_rfc3339(p, (ngx_msec_t) info->expires);
    p = ngx_sprintf(p, "\",\"request_limit\":%ui,\"request_count\":%ui",
                    info->limit, info->count);

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * The session's ingest URL: hookstream_test_session_url with the id
 * appended, else the request's scheme and Host with /v1/ingest/<id>.
 */

static ngx_int_t
ngx_http_hookstream_session_url(ngx_http_request_t *r, u_char *id,
    ngx_str_t *url)
{
    u_char                          *p;
    ngx_str_t                        prefix, scheme, host;
    ngx_http_core_srv_conf_t        *cscf;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    if (hlcf->test_session_url) {
        if (ngx_http_complex_value(r, hlcf->test_session_url, &prefix)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        url->data = ngx_pnalloc(r->pool, prefix.len + 1
                                         + NGX_HOOKSTREAM_HEX_ID_LEN);
        if (url->data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(url->data, prefix.data, prefix.len);

        if (prefix.len == 0 || prefix.data[prefix.len - 1] != '/') {
            *p++ = '/';
        }

        p = ngx_cpymem(p, id, NGX_HOOKSTREAM_HEX_ID_LEN);
        url->len = p - url->data;

        return NGX_OK;
    }

    ngx_str_set(&scheme, "http");

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        ngx_str_set(&scheme, "https");
    }
#endif

    if (r->headers_in.host) {
        host = r->headers_in.host->value;

    } else {
        cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);
        host = cscf->server_name;
    }

    url->data = ngx_pnalloc(r->pool, scheme.len + sizeof("://") - 1
                                     + host.len
                                     + sizeof(NGX_HOOKSTREAM_SESSIONS_INGEST)
                                     - 1 + NGX_HOOKSTREAM_HEX_ID_LEN);
    if (url->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(url->data, "%V://%V" NGX_HOOKSTREAM_SESSIONS_INGEST,
                    &scheme, &host);
    p = ngx_cpymem(p, id, NGX_HOOKSTREAM_HEX_ID_LEN);
    url->len = p - url->data;

    return NGX_OK;
}


/*
 * A JSON error with one more header: "value", or "seconds" printed when
 * value is NULL (Retry-After).
 */

static ngx_int_t
ngx_http_hookstream_sessions_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *message, const char *name, time_t seconds, const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);

    if (value) {
        h->value.data = (u_char *) value;
        h->value.len = ngx_strlen(value);

    } else {
        h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (h->value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->value.len = ngx_sprintf(h->value.data, "%T", seconds)
                       - h->value.data;
    }

    return ngx_http_hookstream_send_error(r, status, message);
}


/* under the lock: a live session, after reaping a few expired ones */

static ngx_hookstream_session_t *
ngx_hookstream_sessions_find(ngx_hookstream_shctx_t *sh, u_char *id,
    uint64_t now, ngx_hookstream_sessions_ended_t *ended)
{
    ngx_hookstream_session_t  *s;

    ngx_hookstream_sessions_expire(sh, now, ended);

    s = ngx_hookstream_sessions_lookup(sh->sessions, id);

    if (s == NULL) {
        return NULL;
    }

    if (s->expires <= now) {
        /* behind more expired sessions than one call reaps */
        ngx_memcpy(ended->ids[ended->n++], s->id, NGX_HOOKSTREAM_HEX_ID_LEN);
        ngx_hookstream_sessions_remove(sh, s);
        return NULL;
    }

    return s;
}


static ngx_hookstream_session_t *
ngx_hookstream_sessions_lookup(ngx_hookstream_sessions_t *ss, u_char *id)
{
    uint32_t                   hash;
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_hookstream_session_t  *s;

    hash = ngx_crc32_short(id, NGX_HOOKSTREAM_HEX_ID_LEN);

    node = ss->rbtree.root;
    sentinel = ss->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        s = (ngx_hookstream_session_t *) node;

        rc = ngx_memcmp(id, s->id, NGX_HOOKSTREAM_HEX_ID_LEN);

        if (rc == 0) {
            return s;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* under the lock; leaves room in "ended" for one more */

static void
ngx_hookstream_sessions_expire(ngx_hookstream_shctx_t *sh, uint64_t now,
    ngx_hookstream_sessions_ended_t *ended)
{
    ngx_queue_t                *q;
    ngx_hookstream_session_t   *s;
    ngx_hookstream_sessions_t  *ss;

    ss = sh->sessions;

    while (ended->n < NGX_HOOKSTREAM_SESSIONS_REAP
           && !ngx_queue_empty(&ss->expiry))
    {
        q = ngx_queue_head(&ss->expiry);
        s = ngx_queue_data(q, ngx_hookstream_session_t, queue);

        if (s->expires > now) {
            return;
        }

        ngx_memcpy(ended->ids[ended->n++], s->id, NGX_HOOKSTREAM_HEX_ID_LEN);
        ngx_hookstream_sessions_remove(sh, s);
    }
}


static void
ngx_hookstream_sessions_remove(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_session_t *s)
{
    ngx_hookstream_sessions_t  *ss;

    ss = sh->sessions;

    ngx_rbtree_delete(&ss->rbtree, &s->node);
    ngx_queue_remove(&s->queue);
    ss->count--;

    ngx_slab_free_locked(sh->shpool, s);
}


/*
 * Tells the open test streams of ended sessions, after the lock: a
 * "session_ended" message on the session's topic closes them with 1000.
 * A session nobody watches gets no message, so its topic is not made.
 */

static void
ngx_hookstream_sessions_end(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sessions_ended_t *ended, const char *reason,
    ngx_http_hookstream_loc_conf_t *hlcf, ngx_log_t *log)
{
    u_char                *p;
    ngx_uint_t             i;
    ngx_hookstream_pub_t   pub;
    u_char                 data[64 + NGX_HOOKSTREAM_HEX_ID_LEN];

    for (i = 0; i < ended->n; i++) {
        pub.topic.data = ended->ids[i];
        pub.topic.len = NGX_HOOKSTREAM_HEX_ID_LEN;

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "hookstream test session %V %s", &pub.topic, reason);

        if (ngx_hookstream_broker_connections(sh, &pub.topic, 0) <= 0) {
            continue;
        }

        p = ngx_snprintf(data, sizeof(data),
                         "{\"session_id\":\"%V\",\"reason\":\"%s\"}",
                         &pub.topic, reason);

        ngx_str_set(&pub.type, "session_ended");
        ngx_str_set(&pub.channel, "test");
        ngx_str_null(&pub.key);
        pub.data.data = data;
        pub.data.len = p - data;

        (void) ngx_hookstream_broker_publish(sh, &pub, hlcf->buffer_count,
                                             hlcf->buffer_age, NULL, log);
    }
}


/*
 * Under the lock: counts a creation from an address in its window.
 * NGX_OK (the entry in *hit), NGX_BUSY past the limit (*retry: seconds
 * until the window ends), NGX_ERROR when the zone is full.
 */

static ngx_int_t
ngx_hookstream_sessions_addr_hit(ngx_hookstream_shctx_t *sh,
    ngx_str_t *addr, ngx_uint_t limit, time_t now, time_t *retry,
    ngx_hookstream_session_addr_t **hit)
{
    uint32_t                        hash;
    ngx_uint_t                      n;
    ngx_queue_t                    *q;
    ngx_hookstream_sessions_t      *ss;
    ngx_hookstream_session_addr_t  *a;

    ss = sh->sessions;

    for (n = 0; n < NGX_HOOKSTREAM_SESSIONS_REAP; n++) {

        if (ngx_queue_empty(&ss->windows)) {
            break;
        }

        q = ngx_queue_head(&ss->windows);
        a = ngx_queue_data(q, ngx_hookstream_session_addr_t, queue);

        if (a->reset > now) {
            break;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&ss->addrs, &a->node);
        ngx_slab_free_locked(sh->shpool, a);
    }

    if (addr->len > 0xffff) {
        return NGX_ERROR;
    }

    hash = ngx_crc32_short(addr->data, addr->len);

    a = ngx_hookstream_sessions_addr_lookup(ss, addr, hash);

    if (a && a->reset <= now) {
        a->count = 0;
        a->reset = now + NGX_HOOKSTREAM_SESSIONS_WINDOW;

        ngx_queue_remove(&a->queue);
        ngx_queue_insert_tail(&ss->windows, &a->queue);
    }

    if (a == NULL) {
        a = ngx_slab_alloc_locked(sh->shpool,
                                  offsetof(ngx_hookstream_session_addr_t,
                                           addr)
                                  + addr->len);
        if (a == NULL) {
            return NGX_ERROR;
        }

        a->node.key = hash;
        a->reset = now + NGX_HOOKSTREAM_SESSIONS_WINDOW;
        a->count = 0;
        a->len = (u_short) addr->len;
        ngx_memcpy(a->addr, addr->data, addr->len);

        ngx_rbtree_insert(&ss->addrs, &a->node);
        ngx_queue_insert_tail(&ss->windows, &a->queue);
    }

    if (a->count >= limit) {
        *retry = a->reset - now;
        return NGX_BUSY;
    }

    a->count++;
    *hit = a;

    return NGX_OK;
}


static ngx_hookstream_session_addr_t *
ngx_hookstream_sessions_addr_lookup(ngx_hookstream_sessions_t *ss,
    ngx_str_t *addr, uint32_t hash)
{
    ngx_int_t                       rc;
    ngx_rbtree_node_t              *node, *sentinel;
    ngx_hookstream_session_addr_t  *a;

    node = ss->addrs.root;
    sentinel = ss->addrs.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        a = (ngx_hookstream_session_addr_t *) node;

        rc = ngx_memn2cmp(addr->data, a->addr, addr->len, (size_t) a->len);

        if (rc == 0) {
            return a;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_hookstream_sessions_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_hookstream_session_t   *s, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            s = (ngx_hookstream_session_t *) node;
            t = (ngx_hookstream_session_t *) temp;

            p = (ngx_memcmp(s->id, t->id, NGX_HOOKSTREAM_HEX_ID_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static void
ngx_hookstream_sessions_addr_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t              **p;
    ngx_hookstream_session_addr_t   *a, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            a = (ngx_hookstream_session_addr_t *) node;
            t = (ngx_hookstream_session_addr_t *) temp;

            p = (ngx_memn2cmp(a->addr, t->addr, a->len, t->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* wall-clock milliseconds, the same in every worker and after a reload */

static uint64_t
ngx_hookstream_sessions_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}
