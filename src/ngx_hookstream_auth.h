
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
 * Resolves the request's credential to an org.  "allow" is a mask of
 * NGX_HOOKSTREAM_AUTH_*.  Masks a ?token= in the request line before
 * anything can log it.  Returns NGX_OK with *org_id set (pointing into
 * configuration memory), or the HTTP status to answer with *message set
 * to the text of the JSON error body: NGX_HTTP_UNAUTHORIZED (no or
 * unknown credential), NGX_HTTP_FORBIDDEN (cookie from an Origin not
 * allowed), NGX_HTTP_INTERNAL_SERVER_ERROR when memory runs out.
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
 * phases (allow/deny, limit_req, auth_request) never log it either.
 */
ngx_int_t ngx_http_hookstream_auth_init(ngx_conf_t *cf);


#endif /* _NGX_HOOKSTREAM_AUTH_H_INCLUDED_ */
