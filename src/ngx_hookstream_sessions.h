
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_SESSIONS_H_INCLUDED_
#define _NGX_HOOKSTREAM_SESSIONS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * Test sessions: short-lived ingest URLs without an account.  A session
 * is a 32 hex digit id kept in the shared zone with its expiry and its
 * request limit; its events are published on the broker topic named by
 * the id (channel "test") and never reach the journal.  Expired sessions
 * are reaped lazily, a few at a time, whenever sessions are used.
 */


/* called from the module's init_zone for a new zone */
ngx_int_t ngx_hookstream_sessions_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone);

/* hookstream_test_sessions: POST creates, GET shows, DELETE ends */
ngx_int_t ngx_http_hookstream_sessions_handler(ngx_http_request_t *r);

/* hookstream_test_stream: GET /v1/ws/test/:id, the session's events */
ngx_int_t ngx_http_hookstream_test_stream_handler(ngx_http_request_t *r);

/*
 * A webhook to a test session: counts it against the session's limit.
 * NGX_OK: go on reading the body.  NGX_DONE: answered (404 for a session
 * that is not live, 429 with Retry-After past its limit), and *rc is what
 * the content handler returns.
 */
ngx_int_t ngx_http_hookstream_session_ingest(ngx_http_request_t *r,
    ngx_str_t *id, ngx_int_t *rc);

/* 32 lowercase hex digits, the shape of a test session id */
ngx_uint_t ngx_hookstream_session_valid_id(ngx_str_t *id);
ngx_uint_t ngx_hookstream_sessions_live(ngx_hookstream_shctx_t *sh);


#endif /* _NGX_HOOKSTREAM_SESSIONS_H_INCLUDED_ */
