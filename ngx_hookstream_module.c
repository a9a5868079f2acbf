
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"


#define NGX_HOOKSTREAM_DEFAULT_ZONE_SIZE  (32 * 1024 * 1024)


static ngx_int_t ngx_http_hookstream_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_hookstream_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hookstream_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_hookstream_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hookstream_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);

static char *ngx_http_hookstream_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hookstream_directory(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_hookstream_redis_conf_t *ngx_http_hookstream_redis_conf(
    ngx_conf_t *cf, ngx_http_hookstream_main_conf_t *hmcf);
static char *ngx_http_hookstream_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hookstream_journal_redis(ngx_conf_t *cf,
    ngx_http_hookstream_main_conf_t *hmcf);
static char *ngx_http_hookstream_journal(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hookstream_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hookstream_heartbeat(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hookstream_buffer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hookstream_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hookstream_session_cookie(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hookstream_test_session_limits(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hookstream_positive_time(ngx_conf_t *cf, void *post,
    void *data);

static ngx_int_t ngx_http_hookstream_add_zone(ngx_conf_t *cf,
    ngx_http_hookstream_main_conf_t *hmcf, ngx_str_t *name, size_t size);
static ngx_int_t ngx_http_hookstream_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_hookstream_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_hookstream_init_process(ngx_cycle_t *cycle);
static void ngx_http_hookstream_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_hookstream_positive_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_MAX_INT_T_VALUE
};

static ngx_conf_post_t  ngx_http_hookstream_positive_time_post = {
    ngx_http_hookstream_positive_time
};


static ngx_command_t  ngx_http_hookstream_commands[] = {

    { ngx_string("hookstream_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_hookstream_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_directory"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hookstream_directory,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_journal"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_hookstream_journal,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_hookstream_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_stream"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS,
      ngx_http_hookstream_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HOOKSTREAM_EP_STREAM,
      NULL },

    { ngx_string("hookstream_source"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_hookstream_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HOOKSTREAM_EP_SOURCE,
      NULL },

    { ngx_string("hookstream_ingest"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_hookstream_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HOOKSTREAM_EP_INGEST,
      NULL },

    { ngx_string("hookstream_status"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS,
      ngx_http_hookstream_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HOOKSTREAM_EP_STATUS,
      NULL },

    { ngx_string("hookstream_publish"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS,
      ngx_http_hookstream_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HOOKSTREAM_EP_PUBLISH,
      NULL },

    { ngx_string("hookstream_test_sessions"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_hookstream_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HOOKSTREAM_EP_TEST_SESSIONS,
      NULL },

    { ngx_string("hookstream_test_stream"),
      NGX_HTTP_LOC_CONF|NGX_HTTP_LIF_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_hookstream_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HOOKSTREAM_EP_TEST_STREAM,
      NULL },

    { ngx_string("hookstream_test_session_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, test_session_ttl),
      &ngx_http_hookstream_positive_time_post },

    { ngx_string("hookstream_test_session_limits"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_hookstream_test_session_limits,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_test_session_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, test_session_url),
      NULL },

    { ngx_string("hookstream_session_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_hookstream_session_cookie,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_allowed_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_hookstream_origins,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_heartbeat"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_hookstream_heartbeat,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_hookstream_buffer,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, max_message),
      NULL },

    { ngx_string("hookstream_send_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, send_queue),
      NULL },

    { ngx_string("hookstream_max_connections_per_org"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, max_connections_per_org),
      &ngx_http_hookstream_positive_bounds },

    { ngx_string("hookstream_deflate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, deflate),
      NULL },

    { ngx_string("hookstream_auth_request"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_hookstream_auth_request_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_auth_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_hookstream_auth_cache_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hookstream_auth_cache_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hookstream_main_conf_t, auth_cache_max),
      &ngx_http_hookstream_positive_bounds },

    { ngx_string("hookstream_auth_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, auth_timeout),
      NULL },

    { ngx_string("hookstream_auth_fail_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, auth_fail_limit),
      NULL },

    { ngx_string("hookstream_client_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, client_rate),
      NULL },

    { ngx_string("hookstream_publish_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hookstream_loc_conf_t, publish_secret),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_hookstream_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_hookstream_postconfiguration, /* postconfiguration */

    ngx_http_hookstream_create_main_conf,  /* create main configuration */
    ngx_http_hookstream_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_hookstream_create_loc_conf,   /* create location configuration */
    ngx_http_hookstream_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_hookstream_module = {
    NGX_MODULE_V1,
    &ngx_hookstream_module_ctx,            /* module context */
    ngx_http_hookstream_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_hookstream_init_module,       /* init module */
    ngx_http_hookstream_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_hookstream_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_hookstream_default_zone = ngx_string("hookstream");
static ngx_str_t  ngx_http_hookstream_default_cookie =
    ngx_string("better-auth.session_token");


static ngx_int_t
ngx_http_hookstream_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_hookstream_module);

    if (hmcf->redis) {
        if (hmcf->redis->journal.len && hmcf->redis->url.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"hookstream_journal redis:...\" needs "
                               "\"hookstream_redis\"");
            return NGX_ERROR;
        }

        /* the ring keeps what arrives from Redis as the http level says */
        hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_hookstream_module);

        hmcf->redis->buffer_count =
                               (hlcf->buffer_count == NGX_CONF_UNSET_UINT)
                               ? 1000 : hlcf->buffer_count;
    }

    return ngx_http_hookstream_auth_init(cf);
}


static void *
ngx_http_hookstream_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hookstream_main_conf_t));
    if (hmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     hmcf->zone_name = { 0, NULL };
     *     hmcf->shm_zone = NULL;
     *     hmcf->directory_file = { 0, NULL };
     *     hmcf->directory = NULL;
     *     hmcf->journal_path = { 0, NULL };
     *     hmcf->journal = NULL;
     *     hmcf->endpoints = 0;
     */

    hmcf->zone_size = NGX_CONF_UNSET_SIZE;
    hmcf->journal_fsync = NGX_CONF_UNSET;
    hmcf->journal_segment = NGX_CONF_UNSET_SIZE;
    hmcf->auth_cache_max = NGX_CONF_UNSET_UINT;

    return hmcf;
}


static char *
ngx_http_hookstream_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hookstream_main_conf_t *hmcf = conf;

    u_char               errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t  rc;

    /* channel names, checked once per subscribe and publish */

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    ngx_str_set(&rc.pattern, "^[a-z0-9._-]+(:[A-Za-z0-9._-]{1,64})?$");
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
        return NGX_CONF_ERROR;
    }

    hmcf->channel_regex = rc.regex;

    if (hmcf->shm_zone == NULL && hmcf->endpoints) {
        if (ngx_http_hookstream_add_zone(cf, hmcf,
                                         &ngx_http_hookstream_default_zone,
                                         NGX_HOOKSTREAM_DEFAULT_ZONE_SIZE)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_init_value(hmcf->journal_fsync, 1);
    ngx_conf_init_size_value(hmcf->journal_segment, 64 * 1024 * 1024);

    /* the credential cache may take an eighth of the zone by default */
    ngx_conf_init_uint_value(hmcf->auth_cache_max,
                             ngx_max((hmcf->zone_size == NGX_CONF_UNSET_SIZE
                                      ? NGX_HOOKSTREAM_DEFAULT_ZONE_SIZE
                                      : hmcf->zone_size) / 8 / 128, 64));

    return NGX_CONF_OK;
}


static void *
ngx_http_hookstream_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hookstream_loc_conf_t));
    if (hlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     hlcf->endpoint = NGX_HOOKSTREAM_EP_NONE;
     *     hlcf->id = NULL;
     *     hlcf->auth_request = { 0, NULL };
     *     hlcf->session_cookie = { 0, NULL };
     *     hlcf->publish_secret = { 0, NULL };
     */

    hlcf->auth_valid = NGX_CONF_UNSET;
    hlcf->auth_invalid = NGX_CONF_UNSET;
    hlcf->cookie_index = NGX_CONF_UNSET;
    hlcf->allowed_origins = NGX_CONF_UNSET_PTR;
    hlcf->heartbeat_interval = NGX_CONF_UNSET_MSEC;
    hlcf->heartbeat_timeout = NGX_CONF_UNSET_MSEC;
    hlcf->buffer_count = NGX_CONF_UNSET_UINT;
    hlcf->buffer_age = NGX_CONF_UNSET;
    hlcf->max_message = NGX_CONF_UNSET_SIZE;
    hlcf->send_queue = NGX_CONF_UNSET_SIZE;
    hlcf->max_connections_per_org = NGX_CONF_UNSET_UINT;
    hlcf->test_session_ttl = NGX_CONF_UNSET;
    hlcf->test_session_requests = NGX_CONF_UNSET_UINT;
    hlcf->test_session_per_ip = NGX_CONF_UNSET_UINT;
    hlcf->test_session_url = NGX_CONF_UNSET_PTR;
    hlcf->auth_fail_limit = NGX_CONF_UNSET_UINT;
    hlcf->auth_timeout = NGX_CONF_UNSET_MSEC;
    hlcf->client_rate = NGX_CONF_UNSET_UINT;
    hlcf->deflate = NGX_CONF_UNSET;

    return hlcf;
}


static char *
ngx_http_hookstream_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_hookstream_loc_conf_t *prev = parent;
    ngx_http_hookstream_loc_conf_t *conf = child;

    ngx_conf_merge_str_value(conf->auth_request, prev->auth_request, "");
    ngx_conf_merge_value(conf->auth_valid, prev->auth_valid, 60);
    ngx_conf_merge_value(conf->auth_invalid, prev->auth_invalid, 10);

    if (conf->session_cookie.data == NULL) {
        conf->session_cookie = prev->session_cookie;
        conf->cookie_index = prev->cookie_index;
    }

    if (conf->session_cookie.data == NULL) {
        conf->session_cookie = ngx_http_hookstream_default_cookie;
        conf->cookie_index = ngx_http_hookstream_cookie_index(cf,
                                                     &conf->session_cookie);
        if (conf->cookie_index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_merge_ptr_value(conf->allowed_origins, prev->allowed_origins,
                             NULL);

    ngx_conf_merge_msec_value(conf->heartbeat_interval,
                              prev->heartbeat_interval, 30000);
    ngx_conf_merge_msec_value(conf->heartbeat_timeout,
                              prev->heartbeat_timeout, 10000);

    ngx_conf_merge_uint_value(conf->buffer_count, prev->buffer_count, 1000);
    ngx_conf_merge_value(conf->buffer_age, prev->buffer_age, 3600);

    ngx_conf_merge_size_value(conf->max_message, prev->max_message,
                              1024 * 1024);
    ngx_conf_merge_size_value(conf->send_queue, prev->send_queue,
                              1024 * 1024);

    ngx_conf_merge_uint_value(conf->max_connections_per_org,
                              prev->max_connections_per_org, 1000);

    ngx_conf_merge_value(conf->test_session_ttl, prev->test_session_ttl,
                         14 * 86400);
    ngx_conf_merge_uint_value(conf->test_session_requests,
                              prev->test_session_requests, 2000);
    ngx_conf_merge_uint_value(conf->test_session_per_ip,
                              prev->test_session_per_ip, 10);
    ngx_conf_merge_ptr_value(conf->test_session_url, prev->test_session_url,
                             NULL);

    ngx_conf_merge_uint_value(conf->auth_fail_limit, prev->auth_fail_limit,
                              30);
    ngx_conf_merge_msec_value(conf->auth_timeout, prev->auth_timeout,
                              NGX_HOOKSTREAM_AUTH_TIMEOUT_DEFAULT);

    /* unset stays unset: the default depends on the endpoint */
    if (conf->client_rate == NGX_CONF_UNSET_UINT) {
        conf->client_rate = prev->client_rate;
    }
    ngx_conf_merge_value(conf->deflate, prev->deflate, 0);

    ngx_conf_merge_str_value(conf->publish_secret, prev->publish_secret, "");

    if (conf->max_message < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hookstream_max_message\" must be at least 1 "
                           "byte");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_main_conf_t *hmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (hmcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (512 * 1024)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: \"%V\" "
                           "(at least 512k is needed)", &value[1], &value[2]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_hookstream_add_zone(cf, hmcf, &value[1], size) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_hookstream_add_zone(ngx_conf_t *cf,
    ngx_http_hookstream_main_conf_t *hmcf, ngx_str_t *name, size_t size)
{
    hmcf->zone_name = *name;
    hmcf->zone_size = size;

    hmcf->shm_zone = ngx_shared_memory_add(cf, name, size,
                                           &ngx_hookstream_module);
    if (hmcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    if (hmcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used by another module",
                           name);
        return NGX_ERROR;
    }

    hmcf->shm_zone->init = ngx_http_hookstream_init_zone;
    hmcf->shm_zone->data = hmcf;
    hmcf->shm_zone->noreuse = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hookstream_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_hookstream_shctx_t  *octx = data;

    ngx_slab_pool_t         *shpool;
    ngx_hookstream_shctx_t  *ctx;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (octx) {
        /* a reload: keep the broker, caches and sessions of the old zone */
        shm_zone->data = octx;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    ctx = ngx_slab_calloc(shpool, sizeof(ngx_hookstream_shctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool = shpool;
    shpool->data = ctx;

    /* a full zone is an expected event: its users log their own line */
    shpool->log_nomem = 0;

    /* an epoch per zone: cursors of an older zone are recognised as foreign */
    ngx_hookstream_random_bytes((u_char *) &ctx->epoch, sizeof(ctx->epoch));
    ctx->epoch &= 0xffffffffffff;

    if (ngx_hookstream_broker_init_zone(ctx, shm_zone) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_hookstream_dedup_init_zone(ctx, shm_zone) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_hookstream_stats_init_zone(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_hookstream_sessions_init_zone(ctx, shm_zone) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_hookstream_authcache_init_zone(ctx, shm_zone) != NGX_OK) {
        return NGX_ERROR;
    }

    shm_zone->data = ctx;

    return NGX_OK;
}


static char *
ngx_http_hookstream_directory(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_main_conf_t *hmcf = conf;

    ngx_str_t  *value;

    if (hmcf->directory_file.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    hmcf->directory_file = value[1];

    if (ngx_conf_full_name(cf->cycle, &hmcf->directory_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    hmcf->directory = ngx_hookstream_directory_load(cf,
                                                    &hmcf->directory_file);
    if (hmcf->directory == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_hookstream_redis_conf_t *
ngx_http_hookstream_redis_conf(ngx_conf_t *cf,
    ngx_http_hookstream_main_conf_t *hmcf)
{
    if (hmcf->redis == NULL) {
        hmcf->redis = ngx_pcalloc(cf->pool,
                                  sizeof(ngx_hookstream_redis_conf_t));
        if (hmcf->redis == NULL) {
            return NULL;
        }

        ngx_str_set(&hmcf->redis->prefix, "hookstream:");
        hmcf->redis->connect_timeout = 5000;
        hmcf->redis->journal_wait_timeout = 1000;
    }

    return hmcf->redis;
}


static char *
ngx_http_hookstream_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_main_conf_t *hmcf = conf;

    ngx_str_t                    *value;
    ngx_msec_t                    ms;
    ngx_uint_t                    i;
    ngx_hookstream_redis_conf_t  *rcf;

    rcf = ngx_http_hookstream_redis_conf(cf, hmcf);
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (rcf->url.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_hookstream_redis_parse_url(cf, rcf, &value[1]) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rcf->prefix.data = value[i].data + 7;
            rcf->prefix.len = value[i].len - 7;

            if (rcf->prefix.len > 64
                || ngx_strlchr(rcf->prefix.data,
                               rcf->prefix.data + rcf->prefix.len, ' '))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid key prefix \"%V\" (at most 64 "
                                   "bytes, no spaces)", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            ngx_str_t  s;

            s.data = value[i].data + 16;
            s.len = value[i].len - 16;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid connect timeout \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            rcf->connect_timeout = ms;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* hookstream_journal redis:KEY [wait=N] [wait_timeout=T] */

static char *
ngx_http_hookstream_journal_redis(ngx_conf_t *cf,
    ngx_http_hookstream_main_conf_t *hmcf)
{
    ngx_int_t                     n;
    ngx_str_t                    *value, s;
    ngx_msec_t                    ms;
    ngx_uint_t                    i;
    ngx_hookstream_redis_conf_t  *rcf;

    rcf = ngx_http_hookstream_redis_conf(cf, hmcf);
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    rcf->journal.data = value[1].data + 6;
    rcf->journal.len = value[1].len - 6;

    if (rcf->journal.len == 0
        || ngx_strlchr(rcf->journal.data,
                       rcf->journal.data + rcf->journal.len, ' '))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid Redis stream \"%V\": "
                           "expected redis:KEY", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "wait=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid number of replicas \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            rcf->journal_wait = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "wait_timeout=", 13) == 0) {
            s.data = value[i].data + 13;
            s.len = value[i].len - 13;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid wait timeout \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            rcf->journal_wait_timeout = ms;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_journal(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_main_conf_t *hmcf = conf;

    ssize_t     size;
    ngx_str_t  *value, s;
    ngx_uint_t  i;

    if (hmcf->journal_path.data
        || (hmcf->redis && hmcf->redis->journal.len))
    {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len >= 6 && ngx_strncmp(value[1].data, "redis:", 6) == 0) {
        return ngx_http_hookstream_journal_redis(cf, hmcf);
    }

    hmcf->journal_path = value[1];

    if (ngx_conf_full_name(cf->cycle, &hmcf->journal_path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "fsync=on") == 0) {
            hmcf->journal_fsync = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fsync=off") == 0) {
            hmcf->journal_fsync = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "segment=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            size = ngx_parse_size(&s);
            if (size == NGX_ERROR || size < 4096) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid segment size \"%V\" "
                                   "(at least 4k)", &value[i]);
                return NGX_CONF_ERROR;
            }

            hmcf->journal_segment = size;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (ngx_hookstream_journal_conf(cf, hmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    ngx_str_t                         *value;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_hookstream_main_conf_t   *hmcf;
    ngx_http_compile_complex_value_t   ccv;

    if (hlcf->endpoint != NGX_HOOKSTREAM_EP_NONE) {
        return "is duplicate: a location serves one hookstream endpoint";
    }

    hlcf->endpoint = cmd->offset;

    if (cf->args->nelts == 2) {
        value = cf->args->elts;

        hlcf->id = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (hlcf->id == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &value[1];
        ccv.complex_value = hlcf->id;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_hookstream_module);
    hmcf->endpoints++;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_hookstream_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_heartbeat(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    ngx_str_t  *value;

    if (hlcf->heartbeat_interval != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    hlcf->heartbeat_interval = ngx_parse_time(&value[1], 0);
    if (hlcf->heartbeat_interval == (ngx_msec_t) NGX_ERROR
        || hlcf->heartbeat_interval == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid heartbeat interval \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    hlcf->heartbeat_timeout = ngx_parse_time(&value[2], 0);
    if (hlcf->heartbeat_timeout == (ngx_msec_t) NGX_ERROR
        || hlcf->heartbeat_timeout == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid heartbeat timeout \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_buffer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (hlcf->buffer_count != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR || n < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid buffer count \"%V\" (a positive number "
                           "of messages)", &value[1]);
        return NGX_CONF_ERROR;
    }

    hlcf->buffer_count = n;

    hlcf->buffer_age = ngx_parse_time(&value[2], 1);
    if (hlcf->buffer_age == (time_t) NGX_ERROR || hlcf->buffer_age == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid buffer age \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_session_cookie(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    ngx_str_t  *value;

    if (hlcf->session_cookie.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "takes a cookie name";
    }

    hlcf->session_cookie = value[1];
    hlcf->cookie_index = ngx_http_hookstream_cookie_index(cf, &value[1]);

    if (hlcf->cookie_index == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_test_session_limits(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (hlcf->test_session_requests != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR || n < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid request limit \"%V\" (a positive number "
                           "of requests per session)", &value[1]);
        return NGX_CONF_ERROR;
    }

    hlcf->test_session_requests = n;

    n = ngx_atoi(value[2].data, value[2].len);
    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid creation limit \"%V\" (sessions per "
                           "client address and hour, 0 for no limit)",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    hlcf->test_session_per_ip = n;

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_positive_time(ngx_conf_t *cf, void *post, void *data)
{
    time_t  *sp = data;

    if (*sp < 1) {
        return "must be at least 1 second";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hookstream_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    ngx_str_t                     *value;
    ngx_uint_t                     i;
    ngx_http_hookstream_origin_t  *o;
#if (NGX_PCRE)
    u_char                         errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t            rc;
#endif

    if (hlcf->allowed_origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    hlcf->allowed_origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                        sizeof(ngx_http_hookstream_origin_t));
    if (hlcf->allowed_origins == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        o = ngx_array_push(hlcf->allowed_origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(o, sizeof(ngx_http_hookstream_origin_t));
        o->value = value[i];

        if (value[i].len == 0 || value[i].data[0] != '~') {
            continue;
        }

#if (NGX_PCRE)
        ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

        rc.pattern.data = value[i].data + 1;
        rc.pattern.len = value[i].len - 1;
        rc.options = NGX_REGEX_CASELESS;
        rc.err.len = NGX_MAX_CONF_ERRSTR;
        rc.err.data = errstr;

        o->regex = ngx_regex_compile(&rc) == NGX_OK ? rc.regex : NULL;

        if (o->regex == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid origin pattern \"%V\": %V",
                               &value[i], &rc.err);
            return NGX_CONF_ERROR;
        }
#else
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "origin pattern \"%V\" needs nginx built with "
                           "PCRE", &value[i]);
        return NGX_CONF_ERROR;
#endif
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_hookstream_init_module(ngx_cycle_t *cycle)
{
    return ngx_hookstream_ipc_init_module(cycle);
}


static ngx_int_t
ngx_http_hookstream_init_process(ngx_cycle_t *cycle)
{
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_hookstream_module);
    if (hmcf == NULL) {
        return NGX_OK;
    }

    if (ngx_hookstream_ipc_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_hookstream_auth_init_process(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    if (hmcf->journal) {
        if (ngx_hookstream_journal_init_process(cycle, hmcf->journal)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (hmcf->redis && hmcf->redis->url.len && hmcf->shm_zone) {
        if (ngx_hookstream_redis_init_process(cycle, hmcf->redis,
                                              hmcf->shm_zone->data)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_hookstream_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_hookstream_module);
    if (hmcf == NULL) {
        return;
    }

    if (hmcf->journal) {
        ngx_hookstream_journal_exit_process(cycle, hmcf->journal);
    }

    ngx_hookstream_redis_exit_process(cycle);
}
