
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_STATS_H_INCLUDED_
#define _NGX_HOOKSTREAM_STATS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * Counters in the shared zone, so every worker reports the same numbers.
 * They are plain atomics: incremented without the zone's lock.
 */

#define NGX_HOOKSTREAM_STATS_WORKERS   64
#define NGX_HOOKSTREAM_FSYNC_BUCKETS   12
#define NGX_HOOKSTREAM_REDIS_ERROR_LEN 160
#define NGX_HOOKSTREAM_REDIS_PROCS     128


/* one process's Redis connections; pid 0: a free entry */
typedef struct {
    ngx_atomic_t   pid;
    ngx_atomic_t   connected;
    ngx_atomic_t   subscribed;
} ngx_hookstream_redis_proc_t;


typedef enum {
    NGX_HOOKSTREAM_HS_UPGRADED = 0,
    NGX_HOOKSTREAM_HS_BAD_REQUEST,       /* 400, 426 */
    NGX_HOOKSTREAM_HS_UNAUTHORIZED,      /* 401 */
    NGX_HOOKSTREAM_HS_FORBIDDEN,         /* 403 */
    NGX_HOOKSTREAM_HS_NOT_FOUND,         /* 404 */
    NGX_HOOKSTREAM_HS_LIMITED,           /* 429 */
    NGX_HOOKSTREAM_HS_UNAVAILABLE,       /* 503 and others */
    NGX_HOOKSTREAM_HS_MAX
} ngx_hookstream_handshake_e;


struct ngx_hookstream_stats_s {
    /* live WebSocket connections by endpoint, and by worker slot */
    ngx_atomic_t   connections[8];
    ngx_atomic_t   worker_connections[NGX_HOOKSTREAM_STATS_WORKERS];

    ngx_atomic_t   handshakes[NGX_HOOKSTREAM_HS_MAX];

    ngx_atomic_t   messages_in;         /* client messages read */
    ngx_atomic_t   messages_out;        /* broker messages queued */
    ngx_atomic_t   messages_replayed;
    ngx_atomic_t   messages_dropped;    /* not queued: slow or closing */

    ngx_atomic_t   closes_slow;
    ngx_atomic_t   closes_heartbeat;
    ngx_atomic_t   closes_protocol;     /* 1002, 1007, 1009 */

    ngx_atomic_t   events_ingested;
    ngx_atomic_t   events_duplicate;
    ngx_atomic_t   events_not_stored;

    ngx_atomic_t   journal_records;
    ngx_atomic_t   journal_fsyncs;
    ngx_atomic_t   journal_errors;
    ngx_atomic_t   fsync_us;            /* sum of fsync latencies */
    ngx_atomic_t   fsync_buckets[NGX_HOOKSTREAM_FSYNC_BUCKETS];

    /* hookstream_redis: the gauges by process (those of a process that
     * is gone are not counted), the counters; the last error is
     * written and read under the zone's lock */
    ngx_hookstream_redis_proc_t  redis_procs[NGX_HOOKSTREAM_REDIS_PROCS];
    ngx_atomic_t   redis_reconnects;
    ngx_atomic_t   redis_errors;
    ngx_atomic_t   redis_published;
    ngx_atomic_t   redis_received;
    ngx_atomic_t   redis_recovered;
    ngx_atomic_t   redis_local;
    ngx_atomic_t   redis_journal;
    time_t         redis_error_time;
    size_t         redis_error_len;
    u_char         redis_error[NGX_HOOKSTREAM_REDIS_ERROR_LEN];
};


#define ngx_hookstream_stat_add(sh, field, n)                               \
    if ((sh) && (sh)->stats) {                                              \
        (void) ngx_atomic_fetch_add(&(sh)->stats->field, (n));              \
    }


ngx_int_t ngx_hookstream_stats_init_zone(ngx_hookstream_shctx_t *sh);
void ngx_hookstream_stats_connection(ngx_hookstream_shctx_t *sh,
    ngx_uint_t endpoint, ngx_int_t delta);
void ngx_hookstream_stats_handshake(ngx_hookstream_shctx_t *sh,
    ngx_uint_t status);
void ngx_hookstream_stats_fsync(ngx_hookstream_shctx_t *sh, uint64_t us,
    ngx_uint_t records);
ngx_int_t ngx_http_hookstream_status_handler(ngx_http_request_t *r);


#endif /* _NGX_HOOKSTREAM_STATS_H_INCLUDED_ */
