
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_INGEST_H_INCLUDED_
#define _NGX_HOOKSTREAM_INGEST_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HOOKSTREAM_EVENT_ID_LEN  (sizeof("evt_") - 1 \
                                      + NGX_HOOKSTREAM_HEX_ID_LEN)
#define NGX_HOOKSTREAM_IDEMPOTENCY_MAX  255


typedef struct ngx_hookstream_event_s  ngx_hookstream_event_t;

typedef void (*ngx_hookstream_stored_pt)(ngx_hookstream_event_t *ev);


/*
 * One event on its way into the pipeline, from an inbound WebSocket
 * message or an HTTP webhook.  It lives on the worker's heap: the ingest
 * code owns it from ngx_hookstream_ingest() returning NGX_AGAIN until the
 * "stored" handler has run; a caller that goes away before then sets
 * "handler" to NULL and the event is freed without calling it.
 */

struct ngx_hookstream_event_s {
    ngx_hookstream_journal_req_t     req;

    ngx_hookstream_stored_pt         handler;
    void                            *data;
    void                            *detach;    /* the caller's own */
    ngx_log_t                       *log;

    ngx_hookstream_shctx_t          *shctx;
    ngx_uint_t                       buffer_count;
    time_t                           buffer_age;

    u_char                           id[NGX_HOOKSTREAM_EVENT_ID_LEN];
    ngx_msec_t                       received_at;
    ngx_int_t                        rc;        /* NGX_OK: stored */

    ngx_str_t                        org_id;
    ngx_str_t                        source_id;
    ngx_str_t                        method;
    ngx_str_t                        type;
    ngx_str_t                        idempotency_key;

    /* JSON text of the body: the message itself, or for HTTP a JSON
     * value built from the request body */
    ngx_str_t                        body;

    /* HTTP webhooks only; each a JSON value already */
    ngx_str_t                        path;
    ngx_str_t                        query;
    ngx_str_t                        headers;
    ngx_str_t                        content_type;
    ngx_str_t                        source_ip;

    ngx_str_t                        record;    /* the journal's line */

    u_char                           dedup_hash[NGX_HOOKSTREAM_SHA256_LEN];

    unsigned                         http:1;
    unsigned                         test:1;    /* a test session */
    unsigned                         ephemeral:1;  /* published only,
                                                      never journaled */
    unsigned                         duplicate:1;
    unsigned                         durable:1;
    unsigned                         dedup:1;
    unsigned                         published:1;  /* by the Redis
                                                      journal's script */
};


/*
 * Allocates an event with "extra" bytes of storage after it; strings the
 * caller sets must live at least as long as the event (copy them there).
 */
ngx_hookstream_event_t *ngx_hookstream_event_create(size_t extra,
    ngx_log_t *log);
u_char *ngx_hookstream_event_storage(ngx_hookstream_event_t *ev);
void ngx_hookstream_event_free(ngx_hookstream_event_t *ev);

/*
 * Stores and publishes an event.  NGX_OK: done now (a duplicate, or no
 * journal configured): ev->rc says how, the caller frees ev.  NGX_AGAIN:
 * ev->handler runs once the journal answered, ev->rc set; the ingest code
 * frees ev after it.  NGX_ERROR: not stored; the caller frees ev.
 */
ngx_int_t ngx_hookstream_ingest(ngx_hookstream_event_t *ev,
    ngx_http_hookstream_main_conf_t *hmcf);


#endif /* _NGX_HOOKSTREAM_INGEST_H_INCLUDED_ */
