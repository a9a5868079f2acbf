
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_BROKER_H_INCLUDED_
#define _NGX_HOOKSTREAM_BROKER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_hookstream_buf.h"


/*
 * The channel broker.  Messages are published to a topic (an org id, or a
 * test session id for test streams), written once into the topic's ring
 * in the shared zone with a per-topic sequence number, and fanned out by
 * every worker to its own local subscribers of that topic.  A cursor is
 * the zone's epoch and the sequence number, printed as "<epoch>-<seq>"
 * in lowercase hex and decimal.  The broker knows nothing of WebSocket.
 */


typedef struct ngx_hookstream_sub_s       ngx_hookstream_sub_t;
typedef struct ngx_hookstream_topic_s     ngx_hookstream_topic_t;


/*
 * A Redis stream id ("<ms>-<seq>"): the cursor of a topic that goes
 * through Redis (see docs/broker.md, "Past one host").  All zero: none.
 */
typedef struct {
    uint64_t                  ms;
    uint64_t                  seq;
} ngx_hookstream_rid_t;

#define ngx_hookstream_rid_null(r)  ((r)->ms == 0 && (r)->seq == 0)


/* what a publisher hands over; every string is copied by publish */
typedef struct {
    ngx_str_t                 topic;    /* "org_<hex>" or a session id */
    ngx_str_t                 type;     /* "event", "delivery", ... */
    ngx_str_t                 channel;  /* base channel: "events", ... */
    ngx_str_t                 key;      /* sub-channel key or empty: the
                                           source, destination or
                                           collection id */
    ngx_str_t                 data;     /* JSON text of "data", verbatim */
} ngx_hookstream_pub_t;


/* one message as a subscriber sees it, valid during deliver() only */
typedef struct {
    uint64_t                  seq;
    ngx_str_t                 type;
    ngx_str_t                 channel;
    ngx_str_t                 key;
    ngx_hookstream_buf_t     *buf;      /* the JSON envelope, with headroom;
                                           take a ref to keep it */
    ngx_hookstream_rid_t      rid;      /* its Redis stream id, or none */
    ngx_str_t                *replay_channel; /* a replay read from Redis:
                                           the channel that asked */
    unsigned                  replay:1; /* re-offered by a cursor replay:
                                           seq <= the sub's last_seq */
} ngx_hookstream_msg_t;


typedef void (*ngx_hookstream_deliver_pt)(ngx_hookstream_sub_t *sub,
    ngx_hookstream_msg_t *msg);
typedef void (*ngx_hookstream_reset_pt)(ngx_hookstream_sub_t *sub);


struct ngx_hookstream_sub_s {
    ngx_queue_t               queue;    /* broker-private */
    ngx_hookstream_topic_t   *topic;    /* broker-private */
    uint64_t                  last_seq; /* the last seq delivered */
    ngx_hookstream_deliver_pt deliver;
    ngx_hookstream_reset_pt   reset;    /* a resume that went through
                                           Redis failed: may be NULL */
    void                     *data;
    ngx_log_t                *log;
    ngx_hookstream_rid_t      rid;      /* the last Redis id delivered */
    ngx_str_t                *replay_channel; /* set by the caller of
                                           replay(): handed back in the
                                           messages of a replay read
                                           from Redis (a copy) */
    void                     *redis;    /* Redis reads in flight */
    unsigned                  pending:1; /* held back until a Redis
                                           read caught it up */
};


/* called from the module's init_zone for a new zone */
ngx_int_t ngx_hookstream_broker_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone);

/*
 * Publishes one message: assigns the topic's next sequence number (into
 * *seq when seq is not NULL), stores the envelope
 *   {"type":T,"channel":C,"cursor":"E-S","data":D}
 * in the topic's ring (evicting the oldest entries beyond "count" or older
 * than "age" seconds, or when the zone is full), and wakes every worker.
 * NGX_ERROR when the message cannot be stored at all (logged).
 */
ngx_int_t ngx_hookstream_broker_publish(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_pub_t *pub, ngx_uint_t count, time_t age, uint64_t *seq,
    ngx_log_t *log);

/*
 * Adds a local subscriber of a topic.  With a cursor, first delivers the
 * buffered messages after it (synchronously, through sub->deliver) and
 * then live ones, with no gap and no duplicate; NGX_DECLINED when the
 * cursor cannot be honoured (unparsable, another epoch, older than the
 * ring): the subscriber is then live from now on and the caller sends a
 * reset.  NGX_ERROR on memory failure.  A NULL or empty cursor: live only.
 * sub->topic must be NULL (a zeroed sub) before the call.
 */
ngx_int_t ngx_hookstream_broker_subscribe(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub, ngx_str_t *topic, ngx_str_t *cursor);

/*
 * Replays from a cursor for an existing subscriber (a "cursor" in a
 * subscribe message).  With L the subscriber's last_seq on entry and C
 * the cursor's seq, delivers every buffered message with seq > min(C, L)
 * in order; those with seq <= L were offered to this subscriber before
 * and carry msg->replay (the caller passes them on only for the channel
 * that asked for the replay), the others are new and handled as live
 * ones.  Same results as subscribe; on NGX_DECLINED nothing is delivered.
 * deliver() may unsubscribe the subscriber, which ends the replay (still
 * NGX_OK).  See docs/broker.md.
 */
ngx_int_t ngx_hookstream_broker_replay(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub, ngx_str_t *cursor);

void ngx_hookstream_broker_unsubscribe(ngx_hookstream_sub_t *sub);

/* the current cursor of a topic ("<epoch>-<seq>"), into buf of at least
 * NGX_HOOKSTREAM_CURSOR_LEN bytes; returns the end */
u_char *ngx_hookstream_broker_cursor(ngx_hookstream_shctx_t *sh,
    ngx_str_t *topic, u_char *buf);

/*
 * Adds delta to a topic's connection counter in the zone and returns the
 * new value, counted over all workers (hookstream_max_connections_per_org);
 * delta 0 only reads it.  What a worker added is taken back when it exits
 * or dies.  NGX_ERROR when the zone has no room for the topic.
 */
ngx_int_t ngx_hookstream_broker_connections(ngx_hookstream_shctx_t *sh,
    ngx_str_t *topic, ngx_int_t delta);

#define NGX_HOOKSTREAM_CURSOR_LEN  (NGX_INT64_LEN * 2 + 1)


/*
 * The sequence number of a cursor of this zone: NGX_DECLINED when it
 * cannot be parsed or belongs to another epoch.
 */
ngx_int_t ngx_hookstream_broker_parse_cursor(ngx_hookstream_shctx_t *sh,
    ngx_str_t *cursor, uint64_t *seq);


/* counters for a status page, read under the zone's lock */
typedef struct {
    uint64_t                  published;
    uint64_t                  refused;      /* could not be stored */
    uint64_t                  evicted_count;
    uint64_t                  evicted_age;
    uint64_t                  evicted_memory;
    uint64_t                  lagged;       /* a worker fell behind */
    uint64_t                  messages;     /* kept now */
    uint64_t                  ring_size;
    uint64_t                  ring_used;
    ngx_uint_t                topics;
    ngx_uint_t                subscribers;  /* in all workers */
    ngx_uint_t                connections;
} ngx_hookstream_broker_stats_t;

void ngx_hookstream_broker_stats(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_broker_stats_t *st);


/*
 * Between the broker and the Redis bridge (ngx_hookstream_redis.c).
 * publish_rid() stores a message that came from Redis under its stream
 * id: NGX_DECLINED when the topic already has that id or a later one.
 */
ngx_int_t ngx_hookstream_broker_publish_rid(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_pub_t *pub, ngx_hookstream_rid_t *rid, ngx_uint_t count,
    ngx_log_t *log);
ngx_int_t ngx_hookstream_broker_catch_up(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub, uint64_t gen);
void ngx_hookstream_broker_go_live(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub);
void ngx_hookstream_broker_redis_state(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_rid_t *floor, uint64_t *gen, ngx_uint_t *live);
void ngx_hookstream_broker_redis_live(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_rid_t *floor, ngx_uint_t live);

typedef struct {
    ngx_str_t                 topic;
    ngx_hookstream_rid_t      from;
} ngx_hookstream_redis_topic_t;

ngx_int_t ngx_hookstream_broker_redis_topics(ngx_hookstream_shctx_t *sh,
    ngx_array_t *topics, ngx_pool_t *pool);

ngx_int_t ngx_hookstream_rid_parse(u_char *p, size_t len,
    ngx_hookstream_rid_t *rid);
ngx_int_t ngx_hookstream_rid_cmp(ngx_hookstream_rid_t *a,
    ngx_hookstream_rid_t *b);


/* between the broker and the wakeup channel */
ngx_int_t ngx_hookstream_broker_init_process(ngx_cycle_t *cycle,
    ngx_hookstream_shctx_t *sh);
void ngx_hookstream_broker_wakeup(void);


/* cross-worker wakeup (ngx_hookstream_ipc.c) */
ngx_int_t ngx_hookstream_ipc_init_module(ngx_cycle_t *cycle);
ngx_int_t ngx_hookstream_ipc_init_process(ngx_cycle_t *cycle);
void ngx_hookstream_ipc_wake_all(ngx_hookstream_shctx_t *sh);


#endif /* _NGX_HOOKSTREAM_BROKER_H_INCLUDED_ */
