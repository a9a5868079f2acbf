
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_REDIS_H_INCLUDED_
#define _NGX_HOOKSTREAM_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * Redis between nginx hosts (hookstream_redis): each worker keeps one
 * non-blocking connection for commands, and one worker per host (slot 0)
 * a second one subscribed to the hosts' channel.  An org's messages are
 * added to the org's stream and published in one script; what the
 * subscriber receives is stored in the zone's ring under its stream id
 * and fanned out as in single-host mode.  The stream id is the cursor.
 * With "hookstream_journal redis:KEY" the events go to a stream too and
 * are acked after Redis answered.  See docs/broker.md and
 * docs/journal.md.
 */


struct ngx_hookstream_redis_conf_s {
    ngx_str_t                    url;
    ngx_str_t                    display;      /* the url, password
                                                  masked: for logs */
    u_char                      *host;         /* numeric, NUL-ended */
    int                          port;
    u_char                      *path;         /* unix socket or NULL */
    ngx_str_t                    user;
    ngx_str_t                    password;
    ngx_uint_t                   db;
    ngx_str_t                    prefix;
    ngx_msec_t                   connect_timeout;

    ngx_str_t                    journal;      /* the stream key, or empty */
    ngx_uint_t                   journal_wait; /* replicas */
    ngx_msec_t                   journal_wait_timeout;

    ngx_uint_t                   buffer_count; /* http level */
};


char *ngx_hookstream_redis_parse_url(ngx_conf_t *cf,
    ngx_hookstream_redis_conf_t *rcf, ngx_str_t *url);
ngx_int_t ngx_hookstream_redis_init_process(ngx_cycle_t *cycle,
    ngx_hookstream_redis_conf_t *rcf, ngx_hookstream_shctx_t *sh);
void ngx_hookstream_redis_exit_process(ngx_cycle_t *cycle);

/* does the topic go through Redis in this process (an org, and Redis
 * configured)? */
ngx_uint_t ngx_hookstream_redis_topic(ngx_str_t *topic);

/*
 * Adds a message to its topic's stream and publishes it to every host.
 * NGX_OK: sent (it comes back through the subscriber); NGX_DECLINED: not
 * a Redis topic; NGX_ERROR: Redis is not reachable now.
 */
ngx_int_t ngx_hookstream_redis_publish(ngx_hookstream_pub_t *pub,
    ngx_uint_t count, ngx_log_t *log);

/*
 * Reads a topic's stream after "from" for a subscriber.  Not "replay":
 * the subscriber is pending; the entries are delivered, then the broker
 * catches it up and it goes live.  "replay": a cursor in a subscribe
 * message; entries it was offered before are delivered again with
 * msg->replay set.  A cursor that Redis no longer reaches calls
 * sub->reset.  NGX_DECLINED: Redis is not reachable now.
 */
ngx_int_t ngx_hookstream_redis_resume(ngx_hookstream_sub_t *sub,
    ngx_str_t *topic, ngx_hookstream_rid_t *from, ngx_uint_t replay);

/* the subscriber goes away: its reads in flight are forgotten */
void ngx_hookstream_redis_forget(ngx_hookstream_sub_t *sub);

/*
 * The journal on Redis: XADD of the record, then req->handler with
 * req->rc once Redis answered (and, with wait=N, N replicas did).  With
 * pub, an org's message, the record is stored and the message published
 * by one script: both or neither.
 * NGX_ERROR: not connected, refused now (the handler is not called).
 */
ngx_int_t ngx_hookstream_redis_append(ngx_str_t *record, u_char *event_id,
    ngx_hookstream_pub_t *pub, ngx_uint_t count,
    ngx_hookstream_journal_req_t *req, ngx_log_t *log);

/*
 * handler(data) runs once Redis answered what this worker sent before
 * (so a reply to a client can follow its publishes in Redis's order).
 * NGX_DECLINED: nothing to wait for, the handler is not called.
 */
typedef void (*ngx_hookstream_redis_sync_pt)(void *data);

ngx_int_t ngx_hookstream_redis_sync(ngx_hookstream_redis_sync_pt handler,
    void *data, ngx_log_t *log);

/* the health of this host's connections, for the status endpoint */
typedef struct {
    ngx_uint_t                   configured;
    ngx_uint_t                   connected;    /* connections up */
    ngx_uint_t                   subscribed;
    uint64_t                     reconnects;
    uint64_t                     errors;
    uint64_t                     published;
    uint64_t                     received;
    uint64_t                     recovered;
    uint64_t                     local;
    uint64_t                     journal;
    time_t                       error_time;
    ngx_str_t                    error;        /* copy, valid until the
                                                  next call */
} ngx_hookstream_redis_health_t;

void ngx_hookstream_redis_health(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_redis_health_t *h, u_char *buf, size_t size);


#endif /* _NGX_HOOKSTREAM_REDIS_H_INCLUDED_ */
