
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"


#define NGX_HOOKSTREAM_STATUS_SIZE  16384


typedef struct {
    const char   *name;
    ngx_uint_t    endpoint;
} ngx_hookstream_endpoint_name_t;


static u_char *ngx_http_hookstream_status_redis_json(u_char *p,
    ngx_hookstream_shctx_t *sh);
static u_char *ngx_http_hookstream_status_redis_text(u_char *p,
    ngx_hookstream_shctx_t *sh);
static u_char *ngx_http_hookstream_status_json(u_char *p,
    ngx_hookstream_shctx_t *sh, ngx_hookstream_stats_t *st,
    ngx_hookstream_broker_stats_t *bs, ngx_hookstream_authcache_stats_t *as);
static u_char *ngx_http_hookstream_status_prometheus(u_char *p,
    ngx_hookstream_shctx_t *sh, ngx_hookstream_stats_t *st,
    ngx_hookstream_broker_stats_t *bs, ngx_hookstream_authcache_stats_t *as);
static ngx_uint_t ngx_http_hookstream_status_wants_text(
    ngx_http_request_t *r);


/* upper bounds of the fsync latency buckets, in microseconds */
static uint64_t  ngx_hookstream_fsync_bounds[NGX_HOOKSTREAM_FSYNC_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    (uint64_t) -1
};

static const char  *ngx_hookstream_fsync_labels[NGX_HOOKSTREAM_FSYNC_BUCKETS]
    = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05", "0.1", "0.25", "+Inf"
};

static ngx_hookstream_endpoint_name_t  ngx_hookstream_ws_endpoints[] = {
    { "stream", NGX_HOOKSTREAM_EP_STREAM },
    { "test_stream", NGX_HOOKSTREAM_EP_TEST_STREAM },
    { "source", NGX_HOOKSTREAM_EP_SOURCE },
    { NULL, 0 }
};

static const char  *ngx_hookstream_handshake_names[NGX_HOOKSTREAM_HS_MAX] = {
    "upgraded", "bad_request", "unauthorized", "forbidden", "not_found",
    "limited", "unavailable"
};


ngx_int_t
ngx_hookstream_stats_init_zone(ngx_hookstream_shctx_t *sh)
{
    sh->stats = ngx_slab_calloc(sh->shpool, sizeof(ngx_hookstream_stats_t));
    if (sh->stats == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_hookstream_stats_connection(ngx_hookstream_shctx_t *sh,
    ngx_uint_t endpoint, ngx_int_t delta)
{
    if (sh == NULL || sh->stats == NULL) {
        return;
    }

    if (endpoint < 8) {
        (void) ngx_atomic_fetch_add(&sh->stats->connections[endpoint],
                                    delta);
    }

    if (ngx_worker < NGX_HOOKSTREAM_STATS_WORKERS) {
        (void) ngx_atomic_fetch_add(
                       &sh->stats->worker_connections[ngx_worker], delta);
    }
}


void
ngx_hookstream_stats_handshake(ngx_hookstream_shctx_t *sh, ngx_uint_t status)
{
    ngx_uint_t  i;

    switch (status) {
    case NGX_HTTP_SWITCHING_PROTOCOLS:
        i = NGX_HOOKSTREAM_HS_UPGRADED;
        break;
    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_HOOKSTREAM_UPGRADE_REQUIRED:
        i = NGX_HOOKSTREAM_HS_BAD_REQUEST;
        break;
    case NGX_HTTP_UNAUTHORIZED:
        i = NGX_HOOKSTREAM_HS_UNAUTHORIZED;
        break;
    case NGX_HTTP_FORBIDDEN:
        i = NGX_HOOKSTREAM_HS_FORBIDDEN;
        break;
    case NGX_HTTP_NOT_FOUND:
        i = NGX_HOOKSTREAM_HS_NOT_FOUND;
        break;
    case NGX_HTTP_TOO_MANY_REQUESTS:
        i = NGX_HOOKSTREAM_HS_LIMITED;
        break;
    default:
        i = NGX_HOOKSTREAM_HS_UNAVAILABLE;
        break;
    }

    ngx_hookstream_stat_add(sh, handshakes[i], 1);
}


void
ngx_hookstream_stats_fsync(ngx_hookstream_shctx_t *sh, uint64_t us,
    ngx_uint_t records)
{
    ngx_uint_t  i;

    if (sh == NULL || sh->stats == NULL) {
        return;
    }

    for (i = 0; i < NGX_HOOKSTREAM_FSYNC_BUCKETS - 1; i++) {
        if (us <= ngx_hookstream_fsync_bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&sh->stats->fsync_buckets[i], 1);
    (void) ngx_atomic_fetch_add(&sh->stats->fsync_us, (ngx_atomic_int_t) us);
    (void) ngx_atomic_fetch_add(&sh->stats->journal_fsyncs, 1);
    (void) ngx_atomic_fetch_add(&sh->stats->journal_records, records);
}


/* GET /internal/status: JSON, or Prometheus text with ?format=prometheus */

ngx_int_t
ngx_http_hookstream_status_handler(ngx_http_request_t *r)
{
    u_char                           *p;
    ngx_int_t                         rc;
    ngx_buf_t                        *b;
    ngx_chain_t                       out;
    ngx_uint_t                        text;
    ngx_hookstream_shctx_t           *sh;
    ngx_hookstream_stats_t            st;
    ngx_hookstream_broker_stats_t     bs;
    ngx_hookstream_authcache_stats_t  as;
    ngx_http_hookstream_main_conf_t  *hmcf;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (hmcf->shm_zone == NULL || hmcf->shm_zone->data == NULL) {
        return ngx_http_hookstream_send_error(r, NGX_HTTP_NOT_FOUND,
                                              "No hookstream zone");
    }

    sh = hmcf->shm_zone->data;

    /* a snapshot, so both formats print one consistent set */

    ngx_memcpy(&st, sh->stats, sizeof(ngx_hookstream_stats_t));
    ngx_hookstream_broker_stats(sh, &bs);
    ngx_hookstream_authcache_stats(sh, &as);

    b = ngx_create_temp_buf(r->pool, NGX_HOOKSTREAM_STATUS_SIZE);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    text = ngx_http_hookstream_status_wants_text(r);

    if (text) {
        p = ngx_http_hookstream_status_prometheus(b->last, sh, &st, &bs,
                                                  &as);
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4; charset=utf-8");

    } else {
        p = ngx_http_hookstream_status_json(b->last, sh, &st, &bs, &as);
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_uint_t
ngx_http_hookstream_status_wants_text(ngx_http_request_t *r)
{
    ngx_str_t         arg;
    ngx_table_elt_t  *h;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {
        return arg.len == 10
               && ngx_strncmp(arg.data, "prometheus", 10) == 0;
    }

    h = ngx_http_hookstream_header(r, "Accept", sizeof("Accept") - 1);

    return h && ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                                 (u_char *) "text/plain", 10 - 1)
                != NULL;
}


/* "redis": the health of this host's connections to Redis */

static u_char *
ngx_http_hookstream_status_redis_json(u_char *p, ngx_hookstream_shctx_t *sh)
{
    ngx_hookstream_redis_health_t  h;
    u_char                         err[NGX_HOOKSTREAM_REDIS_ERROR_LEN];

    ngx_hookstream_redis_health(sh, &h, err, sizeof(err));

    if (!h.configured) {
        return ngx_sprintf(p, ",\"redis\":null");
    }

    p = ngx_sprintf(p, ",\"redis\":{\"connected\":%ui,\"subscribed\":%ui,"
                    "\"reconnects\":%uL,\"errors\":%uL,"
                    "\"published\":%uL,\"received\":%uL,"
                    "\"recovered\":%uL,\"published_locally\":%uL,"
                    "\"journal_records\":%uL,\"last_error\":",
                    h.connected, h.subscribed, h.reconnects, h.errors,
                    h.published, h.received, h.recovered, h.local,
                    h.journal);

    if (h.error.len == 0) {
        return ngx_sprintf(p, "null,\"last_error_at\":null}");
    }

    *p++ = '"';
    p = ngx_hookstream_json_escape(p, h.error.data, h.error.len);
    *p++ = '"';

    p = ngx_sprintf(p, ",\"last_error_at\":\"");
    p = ngx_hookstream_time_rfc3339(p, (ngx_msec_t) h.error_time * 1000);

    return ngx_sprintf(p, "\"}");
}


static u_char *
ngx_http_hookstream_status_redis_text(u_char *p, ngx_hookstream_shctx_t *sh)
{
    ngx_hookstream_redis_health_t  h;
    u_char                         err[NGX_HOOKSTREAM_REDIS_ERROR_LEN];

    ngx_hookstream_redis_health(sh, &h, err, sizeof(err));

    if (!h.configured) {
        return p;
    }

    return ngx_sprintf(p, "# HELP hookstream_redis_connections Connections "
                       "to Redis that are up, over the workers.\n"
                       "# TYPE hookstream_redis_connections gauge\n"
                       "hookstream_redis_connections %ui\n"
                       "# HELP hookstream_redis_subscribed Subscriber "
                       "connections of this host.\n"
                       "# TYPE hookstream_redis_subscribed gauge\n"
                       "hookstream_redis_subscribed %ui\n"
                       "# HELP hookstream_redis_reconnects_total Connection "
                       "attempts after the first.\n"
                       "# TYPE hookstream_redis_reconnects_total counter\n"
                       "hookstream_redis_reconnects_total %uL\n"
                       "# HELP hookstream_redis_errors_total Redis errors.\n"
                       "# TYPE hookstream_redis_errors_total counter\n"
                       "hookstream_redis_errors_total %uL\n"
                       "# HELP hookstream_redis_messages_total Messages, "
                       "by way.\n"
                       "# TYPE hookstream_redis_messages_total counter\n"
                       "hookstream_redis_messages_total{way=\"published\"} "
                       "%uL\n"
                       "hookstream_redis_messages_total{way=\"received\"} "
                       "%uL\n"
                       "hookstream_redis_messages_total{way=\"recovered\"} "
                       "%uL\n"
                       "hookstream_redis_messages_total{way=\"local\"} "
                       "%uL\n"
                       "# HELP hookstream_redis_journal_records_total "
                       "Events added to the Redis journal.\n"
                       "# TYPE hookstream_redis_journal_records_total "
                       "counter\n"
                       "hookstream_redis_journal_records_total %uL\n",
                       h.connected, h.subscribed, h.reconnects, h.errors,
                       h.published, h.received, h.recovered, h.local,
                       h.journal);
}


static u_char *
ngx_http_hookstream_status_json(u_char *p, ngx_hookstream_shctx_t *sh,
    ngx_hookstream_stats_t *st, ngx_hookstream_broker_stats_t *bs,
    ngx_hookstream_authcache_stats_t *as)
{
    ngx_uint_t                       i, n;
    ngx_hookstream_endpoint_name_t  *e;

    p = ngx_sprintf(p, "{\"connections\":{");

    for (e = ngx_hookstream_ws_endpoints; e->name; e++) {
        p = ngx_sprintf(p, "%s\"%s\":%uA", e == ngx_hookstream_ws_endpoints
                                           ? "" : ",",
                        e->name, st->connections[e->endpoint]);
    }

    p = ngx_sprintf(p, ",\"by_worker\":[");

    n = ngx_min(NGX_HOOKSTREAM_STATS_WORKERS, (ngx_uint_t) ngx_worker + 1);

    for (i = 0; i < NGX_HOOKSTREAM_STATS_WORKERS; i++) {
        if (st->worker_connections[i] || i < n) {
            n = i + 1;
        }
    }

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "%s%uA", i ? "," : "", st->worker_connections[i]);
    }

    p = ngx_sprintf(p, "]},\"handshakes\":{");

    for (i = 0; i < NGX_HOOKSTREAM_HS_MAX; i++) {
        p = ngx_sprintf(p, "%s\"%s\":%uA", i ? "," : "",
                        ngx_hookstream_handshake_names[i],
                        st->handshakes[i]);
    }

    p = ngx_sprintf(p, "},\"messages\":{\"in\":%uA,\"out\":%uA,"
                    "\"replayed\":%uA,\"dropped\":%uA,\"published\":%uL,"
                    "\"refused\":%uL,\"buffered\":%uL}",
                    st->messages_in, st->messages_out,
                    st->messages_replayed, st->messages_dropped,
                    bs->published, bs->refused, bs->messages);

    p = ngx_sprintf(p, ",\"closes\":{\"slow_consumer\":%uA,"
                    "\"heartbeat\":%uA,\"protocol\":%uA}",
                    st->closes_slow, st->closes_heartbeat,
                    st->closes_protocol);

    p = ngx_sprintf(p, ",\"events\":{\"ingested\":%uA,\"duplicate\":%uA,"
                    "\"not_stored\":%uA}",
                    st->events_ingested, st->events_duplicate,
                    st->events_not_stored);

    p = ngx_sprintf(p, ",\"auth\":{\"cache_hits\":%uL,\"cache_misses\":%uL,"
                    "\"allowed\":%uL,\"denied\":%uL,"
                    "\"authority_failures\":%uL,\"revocations\":%uL,"
                    "\"failed_credentials\":%uL,\"limited\":%uL,"
                    "\"cache_entries\":%ui,\"cache_evicted\":%uL}",
                    as->hits, as->misses, as->allowed, as->denied,
                    as->errors, as->revocations, as->failures, as->limited,
                    as->entries, as->evicted);

    p = ngx_sprintf(p, ",\"journal\":{\"records\":%uA,\"fsyncs\":%uA,"
                    "\"errors\":%uA,\"fsync_seconds_sum\":%.6f,"
                    "\"fsync_seconds\":{",
                    st->journal_records, st->journal_fsyncs,
                    st->journal_errors, (double) st->fsync_us / 1000000);

    n = 0;

    for (i = 0; i < NGX_HOOKSTREAM_FSYNC_BUCKETS; i++) {
        n += st->fsync_buckets[i];
        p = ngx_sprintf(p, "%s\"%s\":%ui", i ? "," : "",
                        ngx_hookstream_fsync_labels[i], n);
    }

    p = ngx_sprintf(p, "}},\"zone\":{\"bytes\":%uz,\"bytes_free\":%uz,"
                    "\"ring_bytes\":%uL,\"ring_used\":%uL,"
                    "\"evicted\":{\"count\":%uL,\"age\":%uL,\"memory\":%uL},"
                    "\"topics\":%ui,\"subscribers\":%ui}",
                    (size_t) (sh->shpool->end - (u_char *) sh->shpool),
                    sh->shpool->pfree * ngx_pagesize,
                    bs->ring_size, bs->ring_used, bs->evicted_count,
                    bs->evicted_age, bs->evicted_memory, bs->topics,
                    bs->subscribers);

    p = ngx_http_hookstream_status_redis_json(p, sh);

    p = ngx_sprintf(p, ",\"test_sessions\":{\"live\":%ui}}\n",
                    ngx_hookstream_sessions_live(sh));

    return p;
}


static u_char *
ngx_http_hookstream_status_prometheus(u_char *p, ngx_hookstream_shctx_t *sh,
    ngx_hookstream_stats_t *st, ngx_hookstream_broker_stats_t *bs,
    ngx_hookstream_authcache_stats_t *as)
{
    ngx_uint_t                       i, n;
    ngx_hookstream_endpoint_name_t  *e;

    p = ngx_sprintf(p, "# HELP hookstream_connections Live WebSocket "
                    "connections.\n# TYPE hookstream_connections gauge\n");

    for (e = ngx_hookstream_ws_endpoints; e->name; e++) {
        p = ngx_sprintf(p, "hookstream_connections{endpoint=\"%s\"} %uA\n",
                        e->name, st->connections[e->endpoint]);
    }

    p = ngx_sprintf(p, "# HELP hookstream_worker_connections Live "
                    "WebSocket connections by worker slot.\n"
                    "# TYPE hookstream_worker_connections gauge\n");

    for (i = 0; i < NGX_HOOKSTREAM_STATS_WORKERS; i++) {
        if (st->worker_connections[i] || i <= (ngx_uint_t) ngx_worker) {
            p = ngx_sprintf(p, "hookstream_worker_connections"
                            "{worker=\"%ui\"} %uA\n",
                            i, st->worker_connections[i]);
        }
    }

    p = ngx_sprintf(p, "# HELP hookstream_handshakes_total WebSocket "
                    "handshakes by outcome.\n"
                    "# TYPE hookstream_handshakes_total counter\n");

    for (i = 0; i < NGX_HOOKSTREAM_HS_MAX; i++) {
        p = ngx_sprintf(p, "hookstream_handshakes_total{outcome=\"%s\"} "
                        "%uA\n", ngx_hookstream_handshake_names[i],
                        st->handshakes[i]);
    }

    p = ngx_sprintf(p, "# HELP hookstream_messages_total Messages by "
                    "direction.\n"
                    "# TYPE hookstream_messages_total counter\n"
                    "hookstream_messages_total{kind=\"in\"} %uA\n"
                    "hookstream_messages_total{kind=\"out\"} %uA\n"
                    "hookstream_messages_total{kind=\"replayed\"} %uA\n"
                    "hookstream_messages_total{kind=\"dropped\"} %uA\n"
                    "hookstream_messages_total{kind=\"published\"} %uL\n"
                    "hookstream_messages_total{kind=\"refused\"} %uL\n",
                    st->messages_in, st->messages_out,
                    st->messages_replayed, st->messages_dropped,
                    bs->published, bs->refused);

    p = ngx_sprintf(p, "# HELP hookstream_closes_total Connections closed "
                    "by the module, by reason.\n"
                    "# TYPE hookstream_closes_total counter\n"
                    "hookstream_closes_total{reason=\"slow_consumer\"} %uA\n"
                    "hookstream_closes_total{reason=\"heartbeat\"} %uA\n"
                    "hookstream_closes_total{reason=\"protocol\"} %uA\n",
                    st->closes_slow, st->closes_heartbeat,
                    st->closes_protocol);

    p = ngx_sprintf(p, "# HELP hookstream_events_total Inbound events.\n"
                    "# TYPE hookstream_events_total counter\n"
                    "hookstream_events_total{result=\"ingested\"} %uA\n"
                    "hookstream_events_total{result=\"duplicate\"} %uA\n"
                    "hookstream_events_total{result=\"not_stored\"} %uA\n",
                    st->events_ingested, st->events_duplicate,
                    st->events_not_stored);

    p = ngx_sprintf(p, "# HELP hookstream_auth_total Credential lookups.\n"
                    "# TYPE hookstream_auth_total counter\n"
                    "hookstream_auth_total{result=\"cache_hit\"} %uL\n"
                    "hookstream_auth_total{result=\"cache_miss\"} %uL\n"
                    "hookstream_auth_total{result=\"allowed\"} %uL\n"
                    "hookstream_auth_total{result=\"denied\"} %uL\n"
                    "hookstream_auth_total{result=\"authority_failed\"} %uL\n"
                    "hookstream_auth_total{result=\"failed_credential\"} "
                    "%uL\n"
                    "hookstream_auth_total{result=\"limited\"} %uL\n"
                    "# HELP hookstream_auth_revocations_total Revocations "
                    "published.\n"
                    "# TYPE hookstream_auth_revocations_total counter\n"
                    "hookstream_auth_revocations_total %uL\n"
                    "# HELP hookstream_auth_cache_entries Cached answers.\n"
                    "# TYPE hookstream_auth_cache_entries gauge\n"
                    "hookstream_auth_cache_entries %ui\n",
                    as->hits, as->misses, as->allowed, as->denied, as->errors,
                    as->failures, as->limited, as->revocations, as->entries);

    p = ngx_sprintf(p, "# HELP hookstream_journal_records_total Records "
                    "synced to the journal.\n"
                    "# TYPE hookstream_journal_records_total counter\n"
                    "hookstream_journal_records_total %uA\n"
                    "# HELP hookstream_journal_errors_total Failed journal "
                    "batches.\n"
                    "# TYPE hookstream_journal_errors_total counter\n"
                    "hookstream_journal_errors_total %uA\n"
                    "# HELP hookstream_journal_fsync_seconds Time of one "
                    "grouped write and fdatasync.\n"
                    "# TYPE hookstream_journal_fsync_seconds histogram\n",
                    st->journal_records, st->journal_errors);

    n = 0;

    for (i = 0; i < NGX_HOOKSTREAM_FSYNC_BUCKETS; i++) {
        n += st->fsync_buckets[i];
        p = ngx_sprintf(p, "hookstream_journal_fsync_seconds_bucket"
                        "{le=\"%s\"} %ui\n",
                        ngx_hookstream_fsync_labels[i], n);
    }

    p = ngx_sprintf(p, "hookstream_journal_fsync_seconds_sum %.6f\n"
                    "hookstream_journal_fsync_seconds_count %uA\n",
                    (double) st->fsync_us / 1000000, st->journal_fsyncs);

    p = ngx_sprintf(p, "# HELP hookstream_zone_bytes The shared zone.\n"
                    "# TYPE hookstream_zone_bytes gauge\n"
                    "hookstream_zone_bytes{kind=\"total\"} %uz\n"
                    "hookstream_zone_bytes{kind=\"free\"} %uz\n"
                    "hookstream_zone_bytes{kind=\"ring\"} %uL\n"
                    "hookstream_zone_bytes{kind=\"ring_used\"} %uL\n"
                    "# HELP hookstream_ring_evictions_total Buffered "
                    "messages evicted, by cause.\n"
                    "# TYPE hookstream_ring_evictions_total counter\n"
                    "hookstream_ring_evictions_total{cause=\"count\"} %uL\n"
                    "hookstream_ring_evictions_total{cause=\"age\"} %uL\n"
                    "hookstream_ring_evictions_total{cause=\"memory\"} %uL\n"
                    "# HELP hookstream_buffered_messages Messages kept for "
                    "resuming.\n"
                    "# TYPE hookstream_buffered_messages gauge\n"
                    "hookstream_buffered_messages %uL\n"
                    "# HELP hookstream_test_sessions Live test sessions.\n"
                    "# TYPE hookstream_test_sessions gauge\n"
                    "hookstream_test_sessions %ui\n",
                    (size_t) (sh->shpool->end - (u_char *) sh->shpool),
                    sh->shpool->pfree * ngx_pagesize,
                    bs->ring_size, bs->ring_used, bs->evicted_count,
                    bs->evicted_age, bs->evicted_memory, bs->messages,
                    ngx_hookstream_sessions_live(sh));

    p = ngx_http_hookstream_status_redis_text(p, sh);

    return p;
}
