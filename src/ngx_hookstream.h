
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_H_INCLUDED_
#define _NGX_HOOKSTREAM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <cjson/cJSON.h>


/* lengths of the public identifiers: a prefix and 32 lowercase hex */
#define NGX_HOOKSTREAM_HEX_ID_LEN        32
#define NGX_HOOKSTREAM_SHA256_LEN        32
#define NGX_HOOKSTREAM_MAX_ID_LEN        64

#define NGX_HTTP_HOOKSTREAM_UPGRADE_REQUIRED  426


typedef struct ngx_hookstream_directory_s  ngx_hookstream_directory_t;
typedef struct ngx_hookstream_shctx_s      ngx_hookstream_shctx_t;
typedef struct ngx_hookstream_stats_s      ngx_hookstream_stats_t;
typedef struct ngx_hookstream_journal_s    ngx_hookstream_journal_t;
typedef struct ngx_hookstream_redis_conf_s ngx_hookstream_redis_conf_t;
typedef struct ngx_http_hookstream_ws_s    ngx_http_hookstream_ws_t;


typedef enum {
    NGX_HOOKSTREAM_EP_NONE = 0,
    NGX_HOOKSTREAM_EP_STREAM,
    NGX_HOOKSTREAM_EP_TEST_STREAM,
    NGX_HOOKSTREAM_EP_SOURCE,
    NGX_HOOKSTREAM_EP_INGEST,
    NGX_HOOKSTREAM_EP_TEST_SESSIONS,
    NGX_HOOKSTREAM_EP_PUBLISH,
    NGX_HOOKSTREAM_EP_STATUS
} ngx_hookstream_endpoint_e;


typedef struct {
    ngx_str_t                    zone_name;
    size_t                       zone_size;
    ngx_shm_zone_t              *shm_zone;

    ngx_str_t                    directory_file;
    ngx_hookstream_directory_t  *directory;

    ngx_str_t                    journal_path;
    ngx_flag_t                   journal_fsync;
    size_t                       journal_segment;
    ngx_hookstream_journal_t    *journal;

    ngx_hookstream_redis_conf_t *redis;

    ngx_uint_t                   auth_cache_max;

    ngx_regex_t                 *channel_regex;
    ngx_uint_t                   endpoints;
} ngx_http_hookstream_main_conf_t;


typedef struct {
    ngx_uint_t                   endpoint;
    ngx_http_complex_value_t    *id;

    ngx_str_t                    auth_request;
    time_t                       auth_valid;
    time_t                       auth_invalid;

    ngx_str_t                    session_cookie;
    ngx_int_t                    cookie_index;
    ngx_array_t                 *allowed_origins;

    ngx_msec_t                   heartbeat_interval;
    ngx_msec_t                   heartbeat_timeout;

    ngx_uint_t                   buffer_count;
    time_t                       buffer_age;

    size_t                       max_message;
    size_t                       send_queue;

    ngx_uint_t                   max_connections_per_org;

    time_t                       test_session_ttl;
    ngx_uint_t                   test_session_requests;
    ngx_uint_t                   test_session_per_ip;
    ngx_http_complex_value_t    *test_session_url;

    ngx_uint_t                   auth_fail_limit;
    ngx_msec_t                   auth_timeout;
    ngx_uint_t                   client_rate;
    ngx_flag_t                   deflate;
    ngx_str_t                    publish_secret;
} ngx_http_hookstream_loc_conf_t;


struct ngx_hookstream_shctx_s {
    ngx_slab_pool_t             *shpool;
    uint64_t                     epoch;
    ngx_hookstream_stats_t      *stats;     /* ngx_hookstream_status.c */
    void                        *broker;    /* ngx_hookstream_broker.c */
    void                        *dedup;     /* ngx_hookstream_ingest.c */
    void                        *sessions;  /* ngx_hookstream_sessions.c */
    void                        *authcache; /* ngx_hookstream_authcache.c */
};


/* an allowed Origin: an exact string or a compiled regex ("~...") */
typedef struct {
    ngx_str_t                    value;
#if (NGX_PCRE)
    ngx_regex_t                 *regex;
#endif
} ngx_http_hookstream_origin_t;


extern ngx_module_t  ngx_hookstream_module;


ngx_int_t ngx_http_hookstream_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_hookstream_get_id(ngx_http_request_t *r,
    ngx_http_hookstream_loc_conf_t *hlcf, ngx_str_t *id);
ngx_table_elt_t *ngx_http_hookstream_header(ngx_http_request_t *r,
    const char *name, size_t len);

#define NGX_HOOKSTREAM_STREAM_WELCOME  0x01   /* the dashboard's welcome */
#define NGX_HOOKSTREAM_STREAM_COUNTED  0x02   /* counted against the org */
#define NGX_HOOKSTREAM_STREAM_TEST     0x04   /* a test session's stream */

ngx_int_t ngx_http_hookstream_stream_open(ngx_http_request_t *r,
    ngx_str_t *topic, ngx_uint_t flags);
ngx_int_t ngx_hookstream_dedup_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone);


/* ngx_hookstream_json.c: envelopes and error bodies */

ngx_int_t ngx_http_hookstream_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *message);
ngx_int_t ngx_http_hookstream_send_json(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);
u_char *ngx_hookstream_json_escape(u_char *dst, u_char *src, size_t size);
size_t ngx_hookstream_json_escape_len(u_char *src, size_t size);
ngx_int_t ngx_hookstream_json_member(ngx_str_t *json, const char *name,
    ngx_str_t *value);
u_char *ngx_hookstream_json_skip_space(u_char *p, u_char *last);
u_char *ngx_hookstream_json_skip_value(u_char *p, u_char *last);
u_char *ngx_hookstream_time_rfc3339(u_char *buf, ngx_msec_t ms);
void ngx_hookstream_random_bytes(u_char *dst, size_t n);
u_char *ngx_hookstream_random_hex(u_char *dst, size_t bytes);

#define NGX_HOOKSTREAM_RFC3339_LEN  (sizeof("2026-03-01T14:30:00.123Z") - 1)


#include "ngx_hookstream_buf.h"
#include "ngx_hookstream_stats.h"
#include "ngx_hookstream_ws_parse.h"
#include "ngx_hookstream_broker.h"
#include "ngx_hookstream_journal.h"
#include "ngx_hookstream_redis.h"
#include "ngx_hookstream_auth.h"
#include "ngx_hookstream_ingest.h"
#include "ngx_hookstream_ws.h"
#include "ngx_hookstream_sessions.h"


#endif /* _NGX_HOOKSTREAM_H_INCLUDED_ */
