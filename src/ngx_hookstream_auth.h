
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_AUTH_H_INCLUDED_
#define _NGX_HOOKSTREAM_AUTH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* which credentials an endpoint accepts */
#define NGX_HOOKSTREAM_AUTH_KEY     0x01    /* ?token= or X-API-Key */
#define NGX_HOOKSTREAM_AUTH_COOKIE  0x02    /* the session cookie */


/* a credential's SHA-256 and the org it belongs to */
typedef struct {
    u_char                          hash[NGX_HOOKSTREAM_SHA256_LEN];
    ngx_str_t                      *org_id;
} ngx_hookstream_dir_hash_t;


/* a source id ("src_" and 32 hex) as its 16 raw bytes, and its org */
typedef struct {
    u_char                          id[NGX_HOOKSTREAM_HEX_ID_LEN / 2];
    ngx_str_t                      *org_id;
} ngx_hookstream_dir_source_t;


/*
 * The directory file in configuration memory: three arrays sorted by
 * their raw bytes for binary search, each entry pointing at its org id.
 */
struct ngx_hookstream_directory_s {
    ngx_str_t                       file;

    ngx_str_t                      *orgs;
    ngx_uint_t                      norgs;

    ngx_hookstream_dir_hash_t      *api_keys;
    ngx_uint_t                      napi_keys;

    ngx_hookstream_dir_hash_t      *sessions;
    ngx_uint_t                      nsessions;

    ngx_hookstream_dir_source_t    *sources;
    ngx_uint_t                      nsources;
};


/*
 * Reads hookstream_directory's JSON file at configuration time (start and
 * reload) into the configuration pool; logs an EMERG naming the file,
 * the line and the reason on a malformed file.
 */
ngx_hookstream_directory_t *ngx_hookstream_directory_load(ngx_conf_t *cf,
    ngx_str_t *path);

/* the index of the $cookie_NAME variable for hookstream_session_cookie */
ngx_int_t ngx_http_hookstream_cookie_index(ngx_conf_t *cf, ngx_str_t *name);

/*
 * The org of the request's credential.  "allow" is a mask of
 * NGX_HOOKSTREAM_AUTH_*.  Masks a ?token= in the request line before
 * anything can log it.  Returns what the access phase resolved (the
 * directory, the shared cache or the authority); when the access phase
 * did not run, resolves what needs no waiting.  NGX_OK with *org_id set
 * (into configuration or request memory; the request is then listed for
 * revocations), or the HTTP status to answer with *message set to the
 * text of the JSON error body: NGX_HTTP_UNAUTHORIZED (no or unknown
 * credential), NGX_HTTP_FORBIDDEN (cookie from an Origin not allowed, or
 * refused by the authority), NGX_HTTP_TOO_MANY_REQUESTS (failed
 * credentials; Retry-After is added), NGX_HTTP_SERVICE_UNAVAILABLE (the
 * authority could not answer), NGX_HTTP_INTERNAL_SERVER_ERROR.
 */
ngx_int_t ngx_http_hookstream_authenticate(ngx_http_request_t *r,
    ngx_uint_t allow, ngx_str_t *org_id, const char **message);

/* the org that owns a source id: NGX_OK with *org_id set, or
 * NGX_DECLINED when the directory does not know the source */
ngx_int_t ngx_hookstream_directory_source(ngx_hookstream_directory_t *d,
    ngx_str_t *source_id, ngx_str_t *org_id);

/*
 * The org of a credential's SHA-256: "kind" is NGX_HOOKSTREAM_AUTH_KEY
 * (api_keys) or NGX_HOOKSTREAM_AUTH_COOKIE (sessions).  NGX_OK with
 * *org_id set, or NGX_DECLINED.
 */
ngx_int_t ngx_hookstream_directory_lookup(ngx_hookstream_directory_t *d,
    ngx_uint_t kind, u_char *hash, ngx_str_t *org_id);

/*
 * Takes the ?token= argument out of the request: hashes it, keeps the
 * hash for ngx_http_hookstream_authenticate() and overwrites the value in
 * $request, $request_uri and $args.  Idempotent; authenticate calls it.
 */
ngx_int_t ngx_http_hookstream_auth_mask(ngx_http_request_t *r);

/*
 * For postconfiguration: adds a rewrite-phase handler that masks the
 * token on the endpoints that take one, so that the access and preaccess
 * phases (allow/deny, limit_req, auth_request) never log it either, and
 * the access-phase handler that resolves credentials (and waits for the
 * shared cache or the hookstream_auth_request subrequest).
 */
ngx_int_t ngx_http_hookstream_auth_init(ngx_conf_t *cf);

/*
 * For init_process, after the broker's (ngx_hookstream_ipc_init_process):
 * the worker's list of authenticated connections, and its subscription
 * to revocations.
 */
ngx_int_t ngx_http_hookstream_auth_init_process(ngx_cycle_t *cycle);

/*
 * The org that owns a source, for hookstream_source: the directory's
 * answer when it knows the source, else what the authority listed in
 * X-Hookstream-Sources when it resolved this request's credential for
 * that source.  NGX_OK with *owner set (an empty *owner when the
 * authority listed the org's sources and this one is not among them), or
 * NGX_DECLINED when nothing knows the source.
 */
/*
 * On the upgrade, the WebSocket takes over the request's credential and
 * is listed by it, for revocations, until detached when it closes.
 */
void ngx_http_hookstream_auth_attach(ngx_http_request_t *r,
    ngx_http_hookstream_ws_t *ws);
void ngx_http_hookstream_auth_detach(ngx_http_hookstream_ws_t *ws);

ngx_int_t ngx_http_hookstream_auth_source(ngx_http_request_t *r,
    ngx_str_t *source_id, ngx_str_t *owner);

/*
 * A {"type":"revoke","key_hash":"<64 hex>"} (or "session_hash") line of
 * POST /internal/publish: drops the credential's cached answers in the
 * zone and has every worker close the connections that used it with
 * 4001.  NULL when done, or what was wrong with the line.
 */
const char *ngx_http_hookstream_auth_revoke(ngx_http_request_t *r,
    cJSON *json);

/*
 * hookstream_client_rate, for the WebSocket layer: called once per
 * complete data message of a dashboard or test stream.  NGX_OK: deliver
 * it; NGX_DECLINED: it was over the rate and is dropped (the client was
 * told with an "error" message, or the connection is being closed with
 * 1008 when it kept on).
 */
ngx_int_t ngx_http_hookstream_client_rate(ngx_http_hookstream_ws_t *ws);

/* directive handlers (ngx_hookstream_module.c lists them) */
char *ngx_http_hookstream_auth_request_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_hookstream_auth_cache_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

#define NGX_HOOKSTREAM_CLIENT_RATE_DEFAULT   100
#define NGX_HOOKSTREAM_AUTH_TIMEOUT_DEFAULT  10000


/* the shared cache of the authority's answers (ngx_hookstream_authcache.c) */

#define NGX_HOOKSTREAM_AUTHCACHE_MISS      0
#define NGX_HOOKSTREAM_AUTHCACHE_PENDING   1
#define NGX_HOOKSTREAM_AUTHCACHE_ALLOW     2
#define NGX_HOOKSTREAM_AUTHCACHE_DENY      3
#define NGX_HOOKSTREAM_AUTHCACHE_ERROR     4

/* lookup flags */
#define NGX_HOOKSTREAM_AUTHCACHE_CREATE    0x01  /* make a pending entry */
#define NGX_HOOKSTREAM_AUTHCACHE_WAITED    0x02  /* the caller waited on it */

/* what the authority said of the source asked about */
#define NGX_HOOKSTREAM_SOURCES_UNKNOWN     0     /* no X-Hookstream-Sources */
#define NGX_HOOKSTREAM_SOURCES_LISTED      1
#define NGX_HOOKSTREAM_SOURCES_NOT_LISTED  2


typedef struct {
    u_char                          hash[NGX_HOOKSTREAM_SHA256_LEN];
    u_char                          source[NGX_HOOKSTREAM_HEX_ID_LEN / 2];
    ngx_uint_t                      kind;        /* NGX_HOOKSTREAM_AUTH_* */
    ngx_uint_t                      has_source;
} ngx_hookstream_authkey_t;


typedef struct {
    ngx_uint_t                      state;
    ngx_uint_t                      status;      /* DENY: 401 or 403 */
    u_char                          org[NGX_HOOKSTREAM_HEX_ID_LEN / 2];
    ngx_uint_t                      sources;     /* NGX_HOOKSTREAM_SOURCES_* */
    uint64_t                        generation;  /* revocations seen */
    ngx_uint_t                      owner;       /* a pending entry is ours */
} ngx_hookstream_authres_t;


typedef struct {
    uint64_t                        hits;
    uint64_t                        misses;
    uint64_t                        allowed;     /* answers of the authority */
    uint64_t                        denied;
    uint64_t                        errors;      /* failed closed: 503 */
    uint64_t                        evicted;
    uint64_t                        nomem;
    uint64_t                        revocations;
    uint64_t                        revoked;     /* entries dropped by them */
    uint64_t                        failures;    /* failed credentials */
    uint64_t                        limited;     /* 429s */
    ngx_uint_t                      entries;
    ngx_uint_t                      addresses;
} ngx_hookstream_authcache_stats_t;


/* called from the module's init_zone for a new zone */
ngx_int_t ngx_hookstream_authcache_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone);

/*
 * Looks a key up.  ALLOW or DENY: a cached answer in *res; PENDING:
 * another request is asking (wait and look again); ERROR: the question
 * that the caller waited for failed (only with AUTHCACHE_WAITED).  MISS:
 * ask the authority; with AUTHCACHE_CREATE the entry is made pending
 * for "pending" ms and res->owner set, unless the zone had no room.
 * res->generation is to be handed back to the store.
 */
ngx_uint_t ngx_hookstream_authcache_lookup(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_authkey_t *key, ngx_uint_t flags, ngx_msec_t pending,
    ngx_uint_t max, ngx_hookstream_authres_t *res);

/*
 * Stores an answer (res->state ALLOW, DENY or ERROR) for "ttl" ms (an
 * ERROR only for a second, for the requests that waited).  NGX_DECLINED
 * for an ALLOW when a revocation happened since the lookup that gave
 * res->generation: nothing is stored, and the caller asks again.
 */
ngx_int_t ngx_hookstream_authcache_store(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_authkey_t *key, ngx_hookstream_authres_t *res,
    ngx_msec_t ttl, ngx_uint_t max);

/* drops every entry of a credential hash; returns how many */
ngx_uint_t ngx_hookstream_authcache_revoke(ngx_hookstream_shctx_t *sh,
    u_char *hash);

/*
 * Failed credentials per client address (the binary address, at most 16
 * bytes): NGX_BUSY with *retry_after in seconds when "limit" a minute
 * were passed, else NGX_OK; fail_add counts one more failure.
 */
ngx_int_t ngx_hookstream_authcache_fail_check(ngx_hookstream_shctx_t *sh,
    ngx_str_t *addr, ngx_uint_t limit, time_t *retry_after);
void ngx_hookstream_authcache_fail_add(ngx_hookstream_shctx_t *sh,
    ngx_str_t *addr, ngx_uint_t limit, ngx_uint_t max);

/* counters for a status page, read under the zone's lock */
void ngx_hookstream_authcache_stats(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_authcache_stats_t *st);


#endif /* _NGX_HOOKSTREAM_AUTH_H_INCLUDED_ */
