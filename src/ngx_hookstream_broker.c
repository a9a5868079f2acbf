
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"


/*
 * The zone holds one byte ring for the messages of every topic, carved
 * once in init_zone, and an rbtree of topics.  A message is a record in
 * the ring: a header, the envelope, the sub-channel key.  A topic links
 * its records oldest first through ring positions.  Positions are byte
 * offsets that only grow (the physical offset is pos % size), so a stale
 * position is recognised by comparing it with the ring's tail.
 *
 * The ring is also the publish log: each worker reads it from its own
 * position and fans out the records of the topics it has subscribers of.
 * See docs/broker.md.
 */


#define NGX_HOOKSTREAM_POS_NONE      ((uint64_t) -1)
#define NGX_HOOKSTREAM_NAME_MAX      255
#define NGX_HOOKSTREAM_FIELD_MAX     255

#define NGX_HOOKSTREAM_REC_DEAD      0x01
#define NGX_HOOKSTREAM_REC_PAD       0x02

/* a fan-out pass copies this much under the lock, then delivers */
#define NGX_HOOKSTREAM_BATCH         64
#define NGX_HOOKSTREAM_BATCH_BYTES   (256 * 1024)
#define NGX_HOOKSTREAM_BATCH_ROUNDS  16

/* the safety poll, for wakeups that cannot reach a worker */
#define NGX_HOOKSTREAM_POLL_SLOW     1000
#define NGX_HOOKSTREAM_POLL_FAST     100
#define NGX_HOOKSTREAM_FOREIGN_SECS  5


#define ngx_hookstream_rec(b, pos)                                            \
    ((ngx_hookstream_rec_t *) ((b)->ring + (size_t) ((pos) % (b)->size)))


typedef struct ngx_hookstream_shtopic_s  ngx_hookstream_shtopic_t;


/* one message in the ring; the envelope and the key follow it */
typedef struct {
    uint64_t                     seq;
    uint64_t                     topic_id;
    uint64_t                     next;       /* the topic's next record */
    ngx_hookstream_shtopic_t    *topic;      /* valid unless dead */
    ngx_hookstream_rid_t         rid;        /* from Redis, or none */
    time_t                       time;
    uint32_t                     size;       /* the whole record, aligned */
    uint32_t                     len;        /* the envelope */
    uint16_t                     type_len;
    uint16_t                     channel_len;
    uint16_t                     key_len;
    uint16_t                     flags;
} ngx_hookstream_rec_t;


/* a topic in the zone */
struct ngx_hookstream_shtopic_s {
    ngx_rbtree_node_t            node;       /* key: crc32 of the name */
    uint64_t                     id;
    uint64_t                     last_seq;
    uint64_t                     first;      /* the oldest record kept */
    uint64_t                     last;       /* the newest record kept */
    ngx_hookstream_rid_t         last_rid;   /* the newest Redis id */
    ngx_hookstream_rid_t         evicted_rid; /* the newest one evicted */
    ngx_uint_t                   nmsgs;
    ngx_uint_t                   nsubs;      /* in all workers */
    ngx_uint_t                   conns;      /* in all workers */
    ngx_uint_t                   holders;    /* workers that refer to it */
    time_t                       age;        /* of the last publish */
    u_short                      len;
    u_char                       name[1];
};


/* a worker process known to the zone, with what it holds */
typedef struct {
    ngx_queue_t                  queue;
    ngx_queue_t                  holders;
    ngx_pid_t                    pid;
} ngx_hookstream_proc_t;


/* one worker's share of one topic: given back if the worker dies */
typedef struct {
    ngx_queue_t                  queue;
    ngx_hookstream_shtopic_t    *topic;
    ngx_uint_t                   nsubs;
    ngx_uint_t                   conns;
} ngx_hookstream_holder_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  procs;

    u_char                      *ring;
    uint64_t                     size;
    uint64_t                     max_record;
    uint64_t                     head;       /* where the next record goes */
    uint64_t                     tail;       /* the oldest record */

    uint64_t                     next_id;
    uint64_t                     seq_floor;  /* new topics start above it */

    ngx_atomic_t                 published;  /* read without the lock */
    ngx_atomic_t                 foreign;    /* time an exiting worker
                                                published */

    uint64_t                     refused;
    uint64_t                     evicted_count;
    uint64_t                     evicted_age;
    uint64_t                     evicted_memory;
    uint64_t                     lagged;
    uint64_t                     messages;
    ngx_uint_t                   topics;
    ngx_uint_t                   subscribers;
    ngx_uint_t                   connections;

    /* Redis: this host has every message published after redis_floor,
     * once redis_live; redis_gen counts the subscriptions */
    ngx_hookstream_rid_t         redis_floor;
    uint64_t                     redis_gen;
    ngx_uint_t                   redis_live;

    ngx_str_t                    name;       /* copied into the zone */
} ngx_hookstream_broker_sh_t;


/* a topic with local subscribers or connections, on the worker's heap */
struct ngx_hookstream_topic_s {
    ngx_rbtree_node_t            node;       /* key: the topic id */
    uint64_t                     id;
    ngx_hookstream_shtopic_t    *sh;         /* held while this exists */
    ngx_hookstream_holder_t     *holder;
    ngx_queue_t                  subs;
    ngx_queue_t                 *next;       /* the fan-out's next sub */
    uint64_t                     last_seq;   /* the last seq fanned out */
    uint64_t                     lap_seq;    /* where a reset resumes */
    ngx_uint_t                   nsubs;
    ngx_uint_t                   conns;
    ngx_uint_t                   refs;       /* messages in flight */
    unsigned                     lapped:1;   /* subscribers owe a reset */
};


/* a message copied out of the ring */
typedef struct {
    ngx_hookstream_topic_t      *topic;
    ngx_hookstream_buf_t        *buf;
    u_char                      *pos;        /* the envelope */
    uint64_t                     seq;
    ngx_hookstream_rid_t         rid;
    size_t                       len;
    size_t                       type_len;
    size_t                       channel_len;
    size_t                       key_len;
} ngx_hookstream_item_t;


/* a replay in progress: unsubscribe marks it */
typedef struct ngx_hookstream_replay_s  ngx_hookstream_replay_t;

struct ngx_hookstream_replay_s {
    ngx_hookstream_sub_t        *sub;
    ngx_hookstream_replay_t     *prev;
    ngx_uint_t                   gone;
};


/* this worker's side of the broker */
typedef struct {
    ngx_hookstream_shctx_t      *sh;
    ngx_hookstream_broker_sh_t  *b;
    ngx_hookstream_proc_t       *proc;
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_uint_t                   ntopics;
    uint64_t                     rpos;
    ngx_atomic_uint_t            seen;
    ngx_hookstream_replay_t     *replays;
    ngx_event_t                  fanout;
    ngx_event_t                  poll;
    ngx_log_t                   *log;
    unsigned                     lapped:1;   /* fell a whole ring behind */
} ngx_hookstream_worker_t;


static void ngx_hookstream_broker_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_hookstream_shtopic_t *ngx_hookstream_broker_lookup(
    ngx_hookstream_broker_sh_t *b, ngx_str_t *name, uint32_t hash);
static ngx_hookstream_shtopic_t *ngx_hookstream_broker_create(
    ngx_hookstream_shctx_t *sh, ngx_str_t *name, uint32_t hash);
static void ngx_hookstream_broker_reclaim(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_shtopic_t *t);
static void ngx_hookstream_broker_evict_oldest(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t);
static void ngx_hookstream_broker_evict_age(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t, time_t now);
static void ngx_hookstream_broker_evict_tail(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_shtopic_t *keep, ngx_log_t *log);
static void ngx_hookstream_broker_drop_all(ngx_hookstream_broker_sh_t *b,
    ngx_log_t *log);
static ngx_int_t ngx_hookstream_broker_store(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_pub_t *pub, ngx_hookstream_rid_t *rid, ngx_uint_t count,
    time_t age, uint64_t *seq, ngx_log_t *log);
static ngx_int_t ngx_hookstream_broker_subscribe_redis(
    ngx_hookstream_shctx_t *sh, ngx_hookstream_sub_t *sub,
    ngx_hookstream_topic_t *lt, ngx_str_t *cursor);
static void ngx_hookstream_broker_redis_cursor(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t, ngx_hookstream_rid_t *rid);
static ngx_int_t ngx_hookstream_broker_check(ngx_hookstream_shtopic_t *t,
    uint64_t c);
static ngx_int_t ngx_hookstream_broker_copy(ngx_hookstream_rec_t *rec,
    ngx_hookstream_item_t *it, ngx_log_t *log);
static ngx_int_t ngx_hookstream_broker_collect(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t, uint64_t from, ngx_hookstream_item_t **items,
    ngx_uint_t *n, ngx_log_t *log);
static ngx_int_t ngx_hookstream_broker_deliver_replay(
    ngx_hookstream_worker_t *w, ngx_hookstream_sub_t *sub,
    ngx_hookstream_item_t *items, ngx_uint_t n, uint64_t seen);
static void ngx_hookstream_broker_free_items(ngx_hookstream_item_t *items,
    ngx_uint_t n);
static void ngx_hookstream_broker_msg(ngx_hookstream_item_t *it,
    ngx_hookstream_msg_t *msg);

static void ngx_hookstream_broker_local_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_hookstream_topic_t *ngx_hookstream_broker_local_lookup(
    ngx_hookstream_worker_t *w, uint64_t id);
static ngx_hookstream_topic_t *ngx_hookstream_broker_local_get(
    ngx_hookstream_worker_t *w, ngx_hookstream_shtopic_t *t);
static void ngx_hookstream_broker_local_release(ngx_hookstream_worker_t *w,
    ngx_hookstream_topic_t *lt);
static void ngx_hookstream_broker_local_unref(ngx_hookstream_worker_t *w,
    ngx_hookstream_topic_t *lt);
static ngx_hookstream_worker_t *ngx_hookstream_broker_worker(
    ngx_hookstream_shctx_t *sh);

static void ngx_hookstream_broker_fanout_handler(ngx_event_t *ev);
static void ngx_hookstream_broker_lap_reset(ngx_hookstream_worker_t *w);
static ngx_uint_t ngx_hookstream_broker_fanout_collect(
    ngx_hookstream_worker_t *w, ngx_hookstream_item_t *items,
    ngx_uint_t *more);
static void ngx_hookstream_broker_fanout_deliver(ngx_hookstream_worker_t *w,
    ngx_hookstream_item_t *it);
static void ngx_hookstream_broker_poll_handler(ngx_event_t *ev);
static void ngx_hookstream_broker_poll_arm(ngx_hookstream_worker_t *w);

static void ngx_hookstream_broker_reap(ngx_hookstream_shctx_t *sh,
    ngx_log_t *log);
static void ngx_hookstream_broker_release_proc(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_proc_t *proc);
static void ngx_hookstream_broker_exit(void *data);


/*
 * The worker's broker state.  Like ngx_worker or ngx_channel in nginx
 * itself this is per-process state: a worker serves the one cycle it was
 * started with, and its subscribers are its own.  It is set in
 * init_process, points into that cycle's pool and is cleared by the
 * pool's cleanup when the worker exits; the master never sets it.
 */
static ngx_hookstream_worker_t  *ngx_hookstream_worker;


ngx_int_t
ngx_hookstream_broker_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone)
{
    size_t                       size;
    ngx_slab_pool_t             *shpool;
    ngx_hookstream_broker_sh_t  *b;

    shpool = sh->shpool;

    b = ngx_slab_calloc(shpool, sizeof(ngx_hookstream_broker_sh_t));
    if (b == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&b->rbtree, &b->sentinel,
                    ngx_hookstream_broker_rbtree_insert_value);

    ngx_queue_init(&b->procs);

    /*
     * Half of the zone is the message ring; the other half is left to
     * the slab allocator for topics, credentials, dedup keys, sessions.
     */

    size = shm_zone->shm.size / 2;
    size &= ~((size_t) ngx_pagesize - 1);

    b->ring = ngx_slab_alloc(shpool, size);
    if (b->ring == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "hookstream zone \"%V\" is too small for its message "
                      "ring of %uz bytes", &shm_zone->shm.name, size);
        return NGX_ERROR;
    }

    b->size = size;
    b->max_record = (size / 4) & ~((uint64_t) 7);

    /* not known until a subscriber connection to Redis says */
    b->redis_floor.ms = (uint64_t) -1;
    b->redis_floor.seq = (uint64_t) -1;

    b->name.data = ngx_slab_alloc(shpool, shm_zone->shm.name.len);
    if (b->name.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(b->name.data, shm_zone->shm.name.data, shm_zone->shm.name.len);
    b->name.len = shm_zone->shm.name.len;

    sh->broker = b;

    return NGX_OK;
}


ngx_int_t
ngx_hookstream_broker_init_process(ngx_cycle_t *cycle,
    ngx_hookstream_shctx_t *sh)
{
    ngx_pool_cleanup_t       *cln;
    ngx_hookstream_proc_t    *proc;
    ngx_hookstream_worker_t  *w;

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_hookstream_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    w->sh = sh;
    w->b = sh->broker;
    w->log = cycle->log;

    ngx_rbtree_init(&w->rbtree, &w->sentinel,
                    ngx_hookstream_broker_local_insert_value);

    w->fanout.handler = ngx_hookstream_broker_fanout_handler;
    w->fanout.data = w;
    w->fanout.log = cycle->log;

    w->poll.handler = ngx_hookstream_broker_poll_handler;
    w->poll.data = w;
    w->poll.log = cycle->log;
    w->poll.cancelable = 1;

    ngx_shmtx_lock(&sh->shpool->mutex);

    /* what crashed workers held is given back by the one that replaces
     * them */
    ngx_hookstream_broker_reap(sh, cycle->log);

    proc = ngx_slab_calloc_locked(sh->shpool, sizeof(ngx_hookstream_proc_t));

    if (proc) {
        proc->pid = ngx_pid;
        ngx_queue_init(&proc->holders);
        ngx_queue_insert_tail(&w->b->procs, &proc->queue);

        w->proc = proc;
        w->rpos = w->b->head;
        w->seen = w->b->published;
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);

    if (proc == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "hookstream zone \"%V\" is full: no room to register "
                      "a worker", &w->b->name);
        return NGX_ERROR;
    }

    cln->handler = ngx_hookstream_broker_exit;
    cln->data = w;

    ngx_hookstream_worker = w;

    return NGX_OK;
}


static void
ngx_hookstream_broker_exit(void *data)
{
    ngx_hookstream_worker_t *w = data;

    if (w->fanout.posted) {
        ngx_delete_posted_event(&w->fanout);
    }

    if (w->poll.timer_set) {
        ngx_del_timer(&w->poll);
    }

    /*
     * The local topics stay allocated: a connection closed after this
     * point may still unsubscribe, and only unlinks itself.
     */

    ngx_shmtx_lock(&w->sh->shpool->mutex);

    ngx_hookstream_broker_release_proc(w->sh, w->proc);

    ngx_shmtx_unlock(&w->sh->shpool->mutex);

    w->proc = NULL;

    if (ngx_hookstream_worker == w) {
        ngx_hookstream_worker = NULL;
    }
}


static void
ngx_hookstream_broker_reap(ngx_hookstream_shctx_t *sh, ngx_log_t *log)
{
    ngx_queue_t                 *q, *next;
    ngx_hookstream_proc_t       *proc;
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;

    for (q = ngx_queue_head(&b->procs);
         q != ngx_queue_sentinel(&b->procs);
         q = next)
    {
        next = ngx_queue_next(q);
        proc = ngx_queue_data(q, ngx_hookstream_proc_t, queue);

        if (proc->pid != ngx_pid
            && (kill(proc->pid, 0) == 0 || ngx_errno != NGX_ESRCH))
        {
            continue;
        }

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "hookstream zone \"%V\": releasing what exited "
                      "process %P held", &b->name, proc->pid);

        ngx_hookstream_broker_release_proc(sh, proc);
    }
}


static void
ngx_hookstream_broker_release_proc(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_proc_t *proc)
{
    ngx_queue_t                 *q;
    ngx_hookstream_holder_t     *h;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    if (proc == NULL) {
        return;
    }

    b = sh->broker;

    while (!ngx_queue_empty(&proc->holders)) {
        q = ngx_queue_head(&proc->holders);
        h = ngx_queue_data(q, ngx_hookstream_holder_t, queue);
        t = h->topic;

        ngx_queue_remove(q);

        t->nsubs -= ngx_min(h->nsubs, t->nsubs);
        t->conns -= ngx_min(h->conns, t->conns);
        b->subscribers -= ngx_min(h->nsubs, b->subscribers);
        b->connections -= ngx_min(h->conns, b->connections);
        t->holders--;

        ngx_slab_free_locked(sh->shpool, h);

        ngx_hookstream_broker_reclaim(sh, t);
    }

    ngx_queue_remove(&proc->queue);
    ngx_slab_free_locked(sh->shpool, proc);
}


ngx_int_t
ngx_hookstream_broker_publish(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_pub_t *pub, ngx_uint_t count, time_t age, uint64_t *seq,
    ngx_log_t *log)
{
    /*
     * An org's message goes out through Redis when it is configured: it
     * comes back to this host, as to every other, from the subscriber
     * connection.  Redis unreachable: this host's subscribers still get
     * it, with a cursor of this zone.
     */

    if (ngx_hookstream_redis_publish(pub, count, log) == NGX_OK) {
        if (seq) {
            *seq = 0;
        }

        return NGX_OK;
    }

    return ngx_hookstream_broker_store(sh, pub, NULL, count, age, seq, log);
}


ngx_int_t
ngx_hookstream_broker_publish_rid(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_pub_t *pub, ngx_hookstream_rid_t *rid, ngx_uint_t count,
    ngx_log_t *log)
{
    return ngx_hookstream_broker_store(sh, pub, rid, count, 0, NULL, log);
}


static ngx_int_t
ngx_hookstream_broker_store(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_pub_t *pub, ngx_hookstream_rid_t *rid, ngx_uint_t count,
    time_t age, uint64_t *seq, ngx_log_t *log)
{
    u_char                      *p, cursor[NGX_HOOKSTREAM_CURSOR_LEN];
    size_t                       fixed, len, clen;
    time_t                       now;
    uint32_t                     hash;
    uint64_t                     need, room, skip, pos, n;
    ngx_str_t                    data;
    ngx_hookstream_rec_t        *rec, *pad;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;

    if (pub->topic.len == 0 || pub->topic.len > NGX_HOOKSTREAM_NAME_MAX
        || pub->type.len > NGX_HOOKSTREAM_FIELD_MAX
        || pub->channel.len > NGX_HOOKSTREAM_FIELD_MAX
        || pub->key.len > NGX_HOOKSTREAM_FIELD_MAX)
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "hookstream: cannot publish to \"%V\": "
                      "invalid topic, type, channel or key", &pub->topic);
        return NGX_ERROR;
    }

    data = pub->data;

    if (data.len == 0) {
        ngx_str_set(&data, "null");
    }

    fixed = sizeof("{\"type\":\"") - 1 + pub->type.len
            + sizeof("\",\"channel\":\"") - 1 + pub->channel.len
            + sizeof("\",\"cursor\":\"") - 1
            + sizeof("\",\"data\":") - 1 + data.len
            + sizeof("}") - 1;

    need = ngx_align(sizeof(ngx_hookstream_rec_t) + fixed
                     + NGX_HOOKSTREAM_CURSOR_LEN + pub->key.len, 8);

    if (need > b->max_record) {
        ngx_shmtx_lock(&sh->shpool->mutex);
        b->refused++;
        ngx_shmtx_unlock(&sh->shpool->mutex);

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "hookstream zone \"%V\" is full: a message of %uz "
                      "bytes to \"%V\" refused, the largest that fits is "
                      "%uL bytes", &b->name, data.len, &pub->topic,
                      b->max_record - (need - data.len));
        return NGX_ERROR;
    }

    hash = ngx_crc32_short(pub->topic.data, pub->topic.len);
    now = ngx_time();

    ngx_shmtx_lock(&sh->shpool->mutex);

    t = ngx_hookstream_broker_lookup(b, &pub->topic, hash);

    if (t == NULL) {
        t = ngx_hookstream_broker_create(sh, &pub->topic, hash);

        if (t == NULL) {
            b->refused++;
            ngx_shmtx_unlock(&sh->shpool->mutex);

            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "hookstream zone \"%V\" is full: a message to "
                          "\"%V\" refused, no memory for a new topic",
                          &b->name, &pub->topic);
            return NGX_ERROR;
        }
    }

    if (rid && ngx_hookstream_rid_cmp(rid, &t->last_rid) <= 0) {
        /* seen already: a reload's two subscribers, or a re-read */
        ngx_hookstream_broker_reclaim(sh, t);
        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_DECLINED;
    }

    t->age = age;

    ngx_hookstream_broker_evict_age(b, t, now);

    while (count && t->nmsgs >= count) {
        ngx_hookstream_broker_evict_oldest(b, t);
        b->evicted_count++;
    }

    if (rid) {
        clen = ngx_sprintf(cursor, "%uL-%uL", rid->ms, rid->seq) - cursor;

    } else {
        clen = ngx_sprintf(cursor, "%xL-%uL", sh->epoch, t->last_seq + 1)
               - cursor;
    }

    len = fixed + clen;
    need = ngx_align(sizeof(ngx_hookstream_rec_t) + len + pub->key.len, 8);

    room = b->size - b->head % b->size;
    skip = (room < need) ? room : 0;

    while (b->head + skip + need - b->tail > b->size) {
        ngx_hookstream_broker_evict_tail(sh, t, log);
    }

    if (skip) {
        if (skip >= sizeof(ngx_hookstream_rec_t)) {
            pad = ngx_hookstream_rec(b, b->head);
            ngx_memzero(pad, sizeof(ngx_hookstream_rec_t));
            pad->size = (uint32_t) skip;
            pad->flags = NGX_HOOKSTREAM_REC_PAD;
        }

        b->head += skip;
    }

    pos = b->head;
    rec = ngx_hookstream_rec(b, pos);

    rec->seq = t->last_seq + 1;
    rec->topic_id = t->id;
    rec->next = NGX_HOOKSTREAM_POS_NONE;
    rec->topic = t;
    rec->time = now;

    if (rid) {
        rec->rid = *rid;
        t->last_rid = *rid;

    } else {
        rec->rid.ms = 0;
        rec->rid.seq = 0;
    }

    rec->size = (uint32_t) need;
    rec->len = (uint32_t) len;
    rec->type_len = (uint16_t) pub->type.len;
    rec->channel_len = (uint16_t) pub->channel.len;
    rec->key_len = (uint16_t) pub->key.len;
    rec->flags = 0;

    /* the envelope is written once, here; data is spliced verbatim */

    p = (u_char *) rec + sizeof(ngx_hookstream_rec_t);

    p = ngx_cpymem(p, "{\"type\":\"", sizeof("{\"type\":\"") - 1);
    p = ngx_cpymem(p, pub->type.data, pub->type.len);
    p = ngx_cpymem(p, "\",\"channel\":\"", sizeof("\",\"channel\":\"") - 1);
    p = ngx_cpymem(p, pub->channel.data, pub->channel.len);
    p = ngx_cpymem(p, "\",\"cursor\":\"", sizeof("\",\"cursor\":\"") - 1);
    p = ngx_cpymem(p, cursor, clen);
    p = ngx_cpymem(p, "\",\"data\":", sizeof("\",\"data\":") - 1);
    p = ngx_cpymem(p, data.data, data.len);
    *p++ = '}';

    if (pub->key.len) {
        ngx_memcpy(p, pub->key.data, pub->key.len);
    }

    /*
     * The head moves before the record is linked: a worker killed here
     * leaves an unlinked record, which eviction recognises, rather than a
     * topic pointing past the head.
     */

    b->head += need;

    if (t->nmsgs == 0) {
        t->first = pos;

    } else {
        ngx_hookstream_rec(b, t->last)->next = pos;
    }

    t->last = pos;
    t->nmsgs++;
    t->last_seq = rec->seq;

    n = t->last_seq;

    b->messages++;
    b->published++;

    if (ngx_exiting) {
        b->foreign = now;
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_log_debug4(NGX_LOG_DEBUG_CORE, log, 0,
                   "hookstream publish \"%V\" seq:%uL len:%uz pos:%uL",
                   &pub->topic, n, len, pos);

    if (seq) {
        *seq = n;
    }

    ngx_hookstream_ipc_wake_all(sh);

    return NGX_OK;
}


ngx_int_t
ngx_hookstream_broker_subscribe(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub, ngx_str_t *topic, ngx_str_t *cursor)
{
    uint32_t                     hash;
    uint64_t                     c;
    ngx_int_t                    rc;
    ngx_uint_t                   n;
    ngx_hookstream_item_t       *items;
    ngx_hookstream_topic_t      *lt;
    ngx_hookstream_worker_t     *w;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    w = ngx_hookstream_broker_worker(sh);
    if (w == NULL) {
        return NGX_ERROR;
    }

    if (sub->topic) {
        ngx_log_error(NGX_LOG_ALERT, sub->log, 0,
                      "hookstream: subscriber is already subscribed");
        return NGX_ERROR;
    }

    if (topic->len == 0 || topic->len > NGX_HOOKSTREAM_NAME_MAX) {
        ngx_log_error(NGX_LOG_ALERT, sub->log, 0,
                      "hookstream: invalid topic \"%V\"", topic);
        return NGX_ERROR;
    }

    rc = NGX_OK;
    c = 0;

    if (cursor && cursor->len) {
        rc = ngx_hookstream_broker_parse_cursor(sh, cursor, &c);
    }

    b = sh->broker;
    hash = ngx_crc32_short(topic->data, topic->len);
    items = NULL;
    n = 0;

    ngx_shmtx_lock(&sh->shpool->mutex);

    t = ngx_hookstream_broker_lookup(b, topic, hash);

    if (t == NULL) {
        t = ngx_hookstream_broker_create(sh, topic, hash);
    }

    lt = t ? ngx_hookstream_broker_local_get(w, t) : NULL;

    if (lt == NULL) {
        if (t) {
            ngx_hookstream_broker_reclaim(sh, t);
        }

        ngx_shmtx_unlock(&sh->shpool->mutex);

        ngx_log_error(NGX_LOG_ERR, sub->log, 0,
                      "hookstream zone \"%V\" is full: cannot subscribe "
                      "to \"%V\"", &b->name, topic);
        return NGX_ERROR;
    }

    if (ngx_hookstream_redis_topic(topic)) {
        ngx_queue_insert_tail(&lt->subs, &sub->queue);
        sub->topic = lt;
        sub->last_seq = t->last_seq;
        sub->rid = t->last_rid;

        lt->nsubs++;
        lt->holder->nsubs++;
        t->nsubs++;
        b->subscribers++;

        ngx_shmtx_unlock(&sh->shpool->mutex);

        return ngx_hookstream_broker_subscribe_redis(sh, sub, lt, cursor);
    }

    ngx_hookstream_broker_evict_age(b, t, ngx_time());

    if (cursor && cursor->len && rc == NGX_OK) {
        rc = ngx_hookstream_broker_check(t, c);
    }

    if (cursor && cursor->len && rc == NGX_OK) {
        if (ngx_hookstream_broker_collect(b, t, c, &items, &n, sub->log)
            != NGX_OK)
        {
            ngx_hookstream_broker_local_release(w, lt);
            ngx_shmtx_unlock(&sh->shpool->mutex);
            return NGX_ERROR;
        }

        sub->last_seq = c;

    } else {
        sub->last_seq = t->last_seq;
    }

    ngx_queue_insert_tail(&lt->subs, &sub->queue);
    sub->topic = lt;

    lt->nsubs++;
    lt->holder->nsubs++;
    t->nsubs++;
    b->subscribers++;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_log_debug4(NGX_LOG_DEBUG_CORE, sub->log, 0,
                   "hookstream subscribe \"%V\" rc:%i last:%uL replay:%ui",
                   topic, rc, sub->last_seq, n);

    if (n) {
        (void) ngx_hookstream_broker_deliver_replay(w, sub, items, n, c);
    }

    return rc;
}


ngx_int_t
ngx_hookstream_broker_replay(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub, ngx_str_t *cursor)
{
    uint64_t                     c, seen;
    ngx_int_t                    rc;
    ngx_str_t                    name;
    ngx_uint_t                   n;
    ngx_hookstream_rid_t         rid;
    ngx_hookstream_item_t       *items;
    ngx_hookstream_topic_t      *lt;
    ngx_hookstream_worker_t     *w;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    w = ngx_hookstream_broker_worker(sh);
    if (w == NULL) {
        return NGX_ERROR;
    }

    lt = sub->topic;

    if (lt == NULL) {
        ngx_log_error(NGX_LOG_ALERT, sub->log, 0,
                      "hookstream: replay for a subscriber not subscribed");
        return NGX_ERROR;
    }

    if (cursor == NULL || cursor->len == 0) {
        return NGX_OK;
    }

    name.data = lt->sh->name;
    name.len = lt->sh->len;

    if (ngx_hookstream_redis_topic(&name)) {

        if (ngx_hookstream_rid_parse(cursor->data, cursor->len, &rid)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        /* what was delivered up to now is offered again from Redis */
        return ngx_hookstream_redis_resume(sub, &name, &rid, 1);
    }

    if (ngx_hookstream_broker_parse_cursor(sh, cursor, &c) != NGX_OK) {
        return NGX_DECLINED;
    }

    b = sh->broker;
    t = lt->sh;
    items = NULL;
    n = 0;
    seen = sub->last_seq;

    ngx_shmtx_lock(&sh->shpool->mutex);

    ngx_hookstream_broker_evict_age(b, t, ngx_time());

    rc = ngx_hookstream_broker_check(t, c);

    if (rc == NGX_OK) {
        rc = ngx_hookstream_broker_collect(b, t, ngx_min(c, seen), &items,
                                           &n, sub->log);
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_log_debug4(NGX_LOG_DEBUG_CORE, sub->log, 0,
                   "hookstream replay from:%uL last:%uL rc:%i n:%ui",
                   c, seen, rc, n);

    if (rc != NGX_OK) {
        return rc;
    }

    if (n) {
        (void) ngx_hookstream_broker_deliver_replay(w, sub, items, n, seen);
    }

    return NGX_OK;
}


void
ngx_hookstream_broker_unsubscribe(ngx_hookstream_sub_t *sub)
{
    ngx_hookstream_topic_t   *lt;
    ngx_hookstream_replay_t  *r;
    ngx_hookstream_worker_t  *w;

    lt = sub->topic;

    if (lt == NULL) {
        return;
    }

    if (lt->next == &sub->queue) {
        lt->next = ngx_queue_next(&sub->queue);
    }

    ngx_queue_remove(&sub->queue);
    sub->topic = NULL;
    sub->pending = 0;

    lt->nsubs--;

    if (sub->redis) {
        ngx_hookstream_redis_forget(sub);
    }

    w = ngx_hookstream_worker;

    if (w == NULL) {
        return;
    }

    for (r = w->replays; r; r = r->prev) {
        if (r->sub == sub) {
            r->gone = 1;
        }
    }

    ngx_shmtx_lock(&w->sh->shpool->mutex);

    lt->holder->nsubs--;

    if (lt->sh->nsubs) {
        lt->sh->nsubs--;
    }

    if (w->b->subscribers) {
        w->b->subscribers--;
    }

    ngx_hookstream_broker_local_release(w, lt);

    ngx_shmtx_unlock(&w->sh->shpool->mutex);
}


u_char *
ngx_hookstream_broker_cursor(ngx_hookstream_shctx_t *sh, ngx_str_t *topic,
    u_char *buf)
{
    uint64_t                     seq;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;

    ngx_shmtx_lock(&sh->shpool->mutex);

    t = ngx_hookstream_broker_lookup(b, topic,
                                     ngx_crc32_short(topic->data,
                                                     topic->len));

    if (ngx_hookstream_redis_topic(topic)) {
        ngx_hookstream_rid_t  rid;

        ngx_hookstream_broker_redis_cursor(b, t, &rid);

        ngx_shmtx_unlock(&sh->shpool->mutex);

        return ngx_sprintf(buf, "%uL-%uL", rid.ms, rid.seq);
    }

    /* a topic that does not exist yet will start above the floor */
    seq = t ? t->last_seq : b->seq_floor;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return ngx_sprintf(buf, "%xL-%uL", sh->epoch, seq);
}


ngx_int_t
ngx_hookstream_broker_connections(ngx_hookstream_shctx_t *sh,
    ngx_str_t *topic, ngx_int_t delta)
{
    uint32_t                     hash;
    ngx_int_t                    n;
    ngx_uint_t                   d;
    ngx_hookstream_topic_t      *lt;
    ngx_hookstream_worker_t     *w;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;
    hash = ngx_crc32_short(topic->data, topic->len);

    if (delta == 0) {
        ngx_shmtx_lock(&sh->shpool->mutex);

        t = ngx_hookstream_broker_lookup(b, topic, hash);
        n = t ? (ngx_int_t) t->conns : 0;

        ngx_shmtx_unlock(&sh->shpool->mutex);

        return n;
    }

    w = ngx_hookstream_broker_worker(sh);
    if (w == NULL) {
        return NGX_ERROR;
    }

    if (topic->len == 0 || topic->len > NGX_HOOKSTREAM_NAME_MAX) {
        ngx_log_error(NGX_LOG_ALERT, w->log, 0,
                      "hookstream: invalid topic \"%V\"", topic);
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&sh->shpool->mutex);

    t = ngx_hookstream_broker_lookup(b, topic, hash);

    if (delta < 0) {
        lt = t ? ngx_hookstream_broker_local_lookup(w, t->id) : NULL;

        d = (ngx_uint_t) -delta;

        if (lt == NULL || lt->conns < d) {
            ngx_shmtx_unlock(&sh->shpool->mutex);

            ngx_log_error(NGX_LOG_ALERT, w->log, 0,
                          "hookstream: more connections to \"%V\" closed "
                          "than opened", topic);
            return NGX_ERROR;
        }

        lt->conns -= d;
        lt->holder->conns -= d;
        t->conns -= ngx_min(d, t->conns);
        b->connections -= ngx_min(d, b->connections);

        n = t->conns;

        ngx_hookstream_broker_local_release(w, lt);

        ngx_shmtx_unlock(&sh->shpool->mutex);

        return n;
    }

    if (t == NULL) {
        t = ngx_hookstream_broker_create(sh, topic, hash);
    }

    lt = t ? ngx_hookstream_broker_local_get(w, t) : NULL;

    if (lt == NULL) {
        if (t) {
            ngx_hookstream_broker_reclaim(sh, t);
        }

        ngx_shmtx_unlock(&sh->shpool->mutex);

        ngx_log_error(NGX_LOG_ERR, w->log, 0,
                      "hookstream zone \"%V\" is full: cannot count a "
                      "connection to \"%V\"", &b->name, topic);
        return NGX_ERROR;
    }

    d = (ngx_uint_t) delta;

    lt->conns += d;
    lt->holder->conns += d;
    t->conns += d;
    b->connections += d;

    n = t->conns;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return n;
}


ngx_int_t
ngx_hookstream_broker_parse_cursor(ngx_hookstream_shctx_t *sh,
    ngx_str_t *cursor, uint64_t *seq)
{
    u_char      *p, *last, ch;
    uint64_t     epoch, s;
    ngx_uint_t   digits;

    p = cursor->data;
    last = p + cursor->len;

    epoch = 0;
    digits = 0;

    for ( /* void */ ; p < last && *p != '-'; p++) {
        ch = *p;

        if (ch >= '0' && ch <= '9') {
            ch -= '0';

        } else if (ch >= 'a' && ch <= 'f') {
            ch -= 'a' - 10;

        } else {
            return NGX_DECLINED;
        }

        if (++digits > 16) {
            return NGX_DECLINED;
        }

        epoch = (epoch << 4) | ch;
    }

    if (digits == 0 || p == last) {
        return NGX_DECLINED;
    }

    p++;

    if (p == last) {
        return NGX_DECLINED;
    }

    s = 0;

    for ( /* void */ ; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_DECLINED;
        }

        ch = *p - '0';

        if (s > ((uint64_t) -1 - ch) / 10) {
            return NGX_DECLINED;
        }

        s = s * 10 + ch;
    }

    if (epoch != sh->epoch) {
        return NGX_DECLINED;
    }

    *seq = s;

    return NGX_OK;
}


void
ngx_hookstream_broker_stats(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_broker_stats_t *st)
{
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;

    ngx_shmtx_lock(&sh->shpool->mutex);

    st->published = b->published;
    st->refused = b->refused;
    st->evicted_count = b->evicted_count;
    st->evicted_age = b->evicted_age;
    st->evicted_memory = b->evicted_memory;
    st->lagged = b->lagged;
    st->messages = b->messages;
    st->ring_size = b->size;
    st->ring_used = b->head - b->tail;
    st->topics = b->topics;
    st->subscribers = b->subscribers;
    st->connections = b->connections;

    ngx_shmtx_unlock(&sh->shpool->mutex);
}


void
ngx_hookstream_broker_wakeup(void)
{
    ngx_hookstream_worker_t  *w;

    w = ngx_hookstream_worker;

    if (w == NULL || w->ntopics == 0 || w->fanout.posted) {
        return;
    }

    ngx_post_event(&w->fanout, &ngx_posted_events);
}


static ngx_hookstream_worker_t *
ngx_hookstream_broker_worker(ngx_hookstream_shctx_t *sh)
{
    ngx_hookstream_worker_t  *w;

    w = ngx_hookstream_worker;

    if (w == NULL || w->sh != sh || w->proc == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "hookstream: the broker is not set up in this "
                      "process");
        return NULL;
    }

    return w;
}


/* topics in the zone */


static void
ngx_hookstream_broker_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_hookstream_shtopic_t   *t, *tt;

    for ( ;; ) {

        if (node->key < temp->key) {

            p = &temp->left;

        } else if (node->key > temp->key) {

            p = &temp->right;

        } else { /* node->key == temp->key */

            t = (ngx_hookstream_shtopic_t *) node;
            tt = (ngx_hookstream_shtopic_t *) temp;

            p = (ngx_memn2cmp(t->name, tt->name, t->len, tt->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_hookstream_shtopic_t *
ngx_hookstream_broker_lookup(ngx_hookstream_broker_sh_t *b, ngx_str_t *name,
    uint32_t hash)
{
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_hookstream_shtopic_t  *t;

    node = b->rbtree.root;
    sentinel = b->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        t = (ngx_hookstream_shtopic_t *) node;

        rc = ngx_memn2cmp(name->data, t->name, name->len, (size_t) t->len);

        if (rc == 0) {
            return t;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static ngx_hookstream_shtopic_t *
ngx_hookstream_broker_create(ngx_hookstream_shctx_t *sh, ngx_str_t *name,
    uint32_t hash)
{
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;

    t = ngx_slab_alloc_locked(sh->shpool,
                              offsetof(ngx_hookstream_shtopic_t, name)
                              + name->len);
    if (t == NULL) {
        return NULL;
    }

    ngx_memzero(t, offsetof(ngx_hookstream_shtopic_t, name));

    t->node.key = hash;
    t->id = ++b->next_id;
    t->last_seq = b->seq_floor;
    t->first = NGX_HOOKSTREAM_POS_NONE;
    t->last = NGX_HOOKSTREAM_POS_NONE;
    t->len = (u_short) name->len;
    ngx_memcpy(t->name, name->data, name->len);

    ngx_rbtree_insert(&b->rbtree, &t->node);
    b->topics++;

    return t;
}


/*
 * A topic with no message, subscriber or connection left goes.  Its
 * sequence numbers are not reused: topics made later start above the
 * highest seq any reclaimed topic reached, so a cursor of the old topic
 * can never point into the new one's history.
 */

static void
ngx_hookstream_broker_reclaim(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_shtopic_t *t)
{
    ngx_hookstream_broker_sh_t  *b;

    if (t->nmsgs || t->nsubs || t->conns || t->holders) {
        return;
    }

    b = sh->broker;

    if (b->seq_floor < t->last_seq) {
        b->seq_floor = t->last_seq;
    }

    ngx_rbtree_delete(&b->rbtree, &t->node);
    b->topics--;

    ngx_slab_free_locked(sh->shpool, t);
}


/* the oldest message of a topic leaves its history; the bytes stay in
 * the ring until the tail passes, so a worker that has not fanned it out
 * yet still can */

static void
ngx_hookstream_broker_evict_oldest(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t)
{
    ngx_hookstream_rec_t  *rec;

    rec = ngx_hookstream_rec(b, t->first);
    rec->flags |= NGX_HOOKSTREAM_REC_DEAD;

    if (!ngx_hookstream_rid_null(&rec->rid)) {
        t->evicted_rid = rec->rid;
    }

    t->nmsgs--;
    b->messages--;

    if (t->nmsgs == 0) {
        t->first = NGX_HOOKSTREAM_POS_NONE;
        t->last = NGX_HOOKSTREAM_POS_NONE;

    } else {
        t->first = rec->next;
    }
}


static void
ngx_hookstream_broker_evict_age(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t, time_t now)
{
    ngx_hookstream_rec_t  *rec;

    if (t->age <= 0) {
        return;
    }

    while (t->nmsgs) {
        rec = ngx_hookstream_rec(b, t->first);

        if (now - rec->time < t->age) {
            break;
        }

        ngx_hookstream_broker_evict_oldest(b, t);
        b->evicted_age++;
    }
}


static void
ngx_hookstream_broker_evict_tail(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_shtopic_t *keep, ngx_log_t *log)
{
    uint64_t                     pos, room;
    ngx_hookstream_rec_t        *rec;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;
    pos = b->tail;
    room = b->size - pos % b->size;

    if (room < sizeof(ngx_hookstream_rec_t)) {
        b->tail += room;
        return;
    }

    rec = ngx_hookstream_rec(b, pos);

    if (rec->size < sizeof(ngx_hookstream_rec_t) || rec->size > room
        || (rec->size & 7))
    {
        ngx_hookstream_broker_drop_all(b, log);
        return;
    }

    if (!(rec->flags & (NGX_HOOKSTREAM_REC_DEAD|NGX_HOOKSTREAM_REC_PAD))) {
        t = rec->topic;

        if (t->nmsgs && t->first == pos) {
            ngx_hookstream_broker_evict_oldest(b, t);
            b->evicted_memory++;

            if (t != keep) {
                ngx_hookstream_broker_reclaim(sh, t);
            }

        } else {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "hookstream zone \"%V\": unlinked message at "
                          "%uL in the ring", &b->name, pos);
        }
    }

    b->tail += rec->size;
}


/* an impossible record at the tail: forget every message rather than
 * walk garbage */

static void
ngx_hookstream_broker_drop_all(ngx_hookstream_broker_sh_t *b, ngx_log_t *log)
{
    ngx_rbtree_node_t         *node, *root, *sentinel;
    ngx_hookstream_shtopic_t  *t;

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "hookstream zone \"%V\": message ring is corrupted at "
                  "%uL, dropping every buffered message",
                  &b->name, b->tail);

    sentinel = b->rbtree.sentinel;
    root = b->rbtree.root;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&b->rbtree, node))
        {
            t = (ngx_hookstream_shtopic_t *) node;

            t->nmsgs = 0;
            t->first = NGX_HOOKSTREAM_POS_NONE;
            t->last = NGX_HOOKSTREAM_POS_NONE;
        }
    }

    b->messages = 0;

    /* restart on a fresh lap so that workers see they fell behind */
    b->head += b->size - b->head % b->size;
    b->tail = b->head;
}


/* a cursor's seq c is good if nothing after it has been evicted and it
 * is not ahead of the topic */

static ngx_int_t
ngx_hookstream_broker_check(ngx_hookstream_shtopic_t *t, uint64_t c)
{
    uint64_t  oldest;

    oldest = t->last_seq - t->nmsgs + 1;

    if (c > t->last_seq || c + 1 < oldest) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_broker_copy(ngx_hookstream_rec_t *rec,
    ngx_hookstream_item_t *it, ngx_log_t *log)
{
    ngx_hookstream_buf_t  *buf;

    buf = ngx_hookstream_buf_alloc(rec->len + rec->key_len, log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(buf->start, (u_char *) rec + sizeof(ngx_hookstream_rec_t),
               rec->len + rec->key_len);

    buf->last = buf->start + rec->len;

    it->buf = buf;
    it->pos = buf->start;
    it->seq = rec->seq;
    it->rid = rec->rid;
    it->len = rec->len;
    it->type_len = rec->type_len;
    it->channel_len = rec->channel_len;
    it->key_len = rec->key_len;

    return NGX_OK;
}


/* copies a topic's messages after "from", under the lock */

static ngx_int_t
ngx_hookstream_broker_collect(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t, uint64_t from, ngx_hookstream_item_t **items,
    ngx_uint_t *n, ngx_log_t *log)
{
    uint64_t                pos;
    ngx_uint_t              i, count;
    ngx_hookstream_rec_t   *rec;
    ngx_hookstream_item_t  *it;

    *items = NULL;
    *n = 0;

    if (from >= t->last_seq || t->nmsgs == 0) {
        return NGX_OK;
    }

    count = (ngx_uint_t) ngx_min(t->last_seq - from, t->nmsgs);

    it = ngx_alloc(count * sizeof(ngx_hookstream_item_t), log);
    if (it == NULL) {
        return NGX_ERROR;
    }

    i = 0;

    for (pos = t->first;
         pos != NGX_HOOKSTREAM_POS_NONE && i < count;
         pos = rec->next)
    {
        rec = ngx_hookstream_rec(b, pos);

        if (rec->seq <= from) {
            continue;
        }

        if (ngx_hookstream_broker_copy(rec, &it[i], log) != NGX_OK) {
            ngx_hookstream_broker_free_items(it, i);
            return NGX_ERROR;
        }

        it[i].topic = NULL;
        i++;
    }

    *items = it;
    *n = i;

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_broker_deliver_replay(ngx_hookstream_worker_t *w,
    ngx_hookstream_sub_t *sub, ngx_hookstream_item_t *items, ngx_uint_t n,
    uint64_t seen)
{
    ngx_uint_t               i;
    ngx_hookstream_msg_t     msg;
    ngx_hookstream_replay_t  r;

    r.sub = sub;
    r.gone = 0;
    r.prev = w->replays;
    w->replays = &r;

    for (i = 0; i < n; i++) {
        ngx_hookstream_broker_msg(&items[i], &msg);

        msg.replay = (msg.seq <= seen);

        if (msg.seq > sub->last_seq) {
            sub->last_seq = msg.seq;
        }

        if (ngx_hookstream_rid_cmp(&msg.rid, &sub->rid) > 0) {
            sub->rid = msg.rid;
        }

        sub->deliver(sub, &msg);

        ngx_hookstream_buf_unref(items[i].buf);

        if (r.gone) {
            i++;
            break;
        }
    }

    w->replays = r.prev;

    ngx_hookstream_broker_free_items(items + i, n - i);
    ngx_free(items);

    return r.gone ? NGX_DONE : NGX_OK;
}


static void
ngx_hookstream_broker_free_items(ngx_hookstream_item_t *items, ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        ngx_hookstream_buf_unref(items[i].buf);
    }
}


static void
ngx_hookstream_broker_msg(ngx_hookstream_item_t *it,
    ngx_hookstream_msg_t *msg)
{
    u_char  *p;

    p = it->pos + sizeof("{\"type\":\"") - 1;

    msg->seq = it->seq;
    msg->type.data = p;
    msg->type.len = it->type_len;

    p += it->type_len + sizeof("\",\"channel\":\"") - 1;

    msg->channel.data = p;
    msg->channel.len = it->channel_len;

    msg->key.data = it->pos + it->len;
    msg->key.len = it->key_len;

    msg->buf = it->buf;
    msg->rid = it->rid;
    msg->replay_channel = NULL;
    msg->replay = 0;
}


/* the worker's own topics */


static void
ngx_hookstream_broker_local_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t       **p;
    ngx_hookstream_topic_t   *lt, *ltt;

    lt = (ngx_hookstream_topic_t *) node;

    for ( ;; ) {

        ltt = (ngx_hookstream_topic_t *) temp;

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            p = (lt->id < ltt->id) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_hookstream_topic_t *
ngx_hookstream_broker_local_lookup(ngx_hookstream_worker_t *w, uint64_t id)
{
    ngx_rbtree_key_t         key;
    ngx_rbtree_node_t       *node, *sentinel;
    ngx_hookstream_topic_t  *lt;

    key = (ngx_rbtree_key_t) id;
    node = w->rbtree.root;
    sentinel = w->rbtree.sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        lt = (ngx_hookstream_topic_t *) node;

        if (id == lt->id) {
            return lt;
        }

        node = (id < lt->id) ? node->left : node->right;
    }

    return NULL;
}


/* finds or makes the worker's entry for a zone topic, under the lock */

static ngx_hookstream_topic_t *
ngx_hookstream_broker_local_get(ngx_hookstream_worker_t *w,
    ngx_hookstream_shtopic_t *t)
{
    ngx_hookstream_holder_t  *h;
    ngx_hookstream_topic_t   *lt;

    lt = ngx_hookstream_broker_local_lookup(w, t->id);

    if (lt) {
        return lt;
    }

    h = ngx_slab_calloc_locked(w->sh->shpool,
                               sizeof(ngx_hookstream_holder_t));
    if (h == NULL) {
        return NULL;
    }

    lt = ngx_calloc(sizeof(ngx_hookstream_topic_t), w->log);
    if (lt == NULL) {
        ngx_slab_free_locked(w->sh->shpool, h);
        return NULL;
    }

    h->topic = t;
    ngx_queue_insert_tail(&w->proc->holders, &h->queue);
    t->holders++;

    lt->id = t->id;
    lt->sh = t;
    lt->holder = h;
    lt->last_seq = t->last_seq;
    ngx_queue_init(&lt->subs);

    lt->node.key = (ngx_rbtree_key_t) t->id;
    ngx_rbtree_insert(&w->rbtree, &lt->node);

    if (w->ntopics++ == 0) {
        /* nothing before this point concerns the worker */
        w->rpos = w->b->head;
        w->seen = w->b->published;
    }

    ngx_hookstream_broker_poll_arm(w);

    return lt;
}


/* drops the worker's entry once nothing uses it, under the lock */

static void
ngx_hookstream_broker_local_release(ngx_hookstream_worker_t *w,
    ngx_hookstream_topic_t *lt)
{
    ngx_hookstream_holder_t  *h;

    if (lt->nsubs || lt->conns || lt->refs) {
        return;
    }

    h = lt->holder;

    ngx_queue_remove(&h->queue);
    ngx_slab_free_locked(w->sh->shpool, h);

    lt->sh->holders--;
    ngx_hookstream_broker_reclaim(w->sh, lt->sh);

    ngx_rbtree_delete(&w->rbtree, &lt->node);
    w->ntopics--;

    ngx_free(lt);
}


static void
ngx_hookstream_broker_local_unref(ngx_hookstream_worker_t *w,
    ngx_hookstream_topic_t *lt)
{
    if (--lt->refs || lt->nsubs || lt->conns) {
        return;
    }

    if (w->proc == NULL) {
        /* the worker is exiting: the zone was settled already */
        return;
    }

    ngx_shmtx_lock(&w->sh->shpool->mutex);
    ngx_hookstream_broker_local_release(w, lt);
    ngx_shmtx_unlock(&w->sh->shpool->mutex);
}


/* fan-out */


static void
ngx_hookstream_broker_fanout_handler(ngx_event_t *ev)
{
    ngx_uint_t                i, n, round, more;
    ngx_hookstream_item_t     items[NGX_HOOKSTREAM_BATCH];
    ngx_hookstream_worker_t  *w;

    w = ev->data;
    more = 0;

    for (round = 0; round < NGX_HOOKSTREAM_BATCH_ROUNDS; round++) {

        n = ngx_hookstream_broker_fanout_collect(w, items, &more);

        if (w->lapped) {
            ngx_hookstream_broker_lap_reset(w);
        }

        for (i = 0; i < n; i++) {
            ngx_hookstream_broker_fanout_deliver(w, &items[i]);
        }

        if (!more) {
            break;
        }
    }

    if (more && !ev->posted) {
        /* a long backlog: let other events run in between */
        ngx_post_event(ev, &ngx_posted_next_events);
    }
}


/*
 * After a lap: every subscriber of a lapped topic that had not yet been
 * given what was current at the lap gets a reset, once.  Resets only
 * queue a frame, so no subscriber goes away under this loop.
 */

static void
ngx_hookstream_broker_lap_reset(ngx_hookstream_worker_t *w)
{
    ngx_queue_t             *q;
    ngx_rbtree_node_t       *node;
    ngx_hookstream_sub_t    *sub;
    ngx_hookstream_topic_t  *lt;

    w->lapped = 0;

    for (node = ngx_rbtree_min(w->rbtree.root, w->rbtree.sentinel);
         node;
         node = ngx_rbtree_next(&w->rbtree, node))
    {
        lt = (ngx_hookstream_topic_t *) node;

        if (!lt->lapped) {
            continue;
        }

        lt->lapped = 0;

        for (q = ngx_queue_head(&lt->subs);
             q != ngx_queue_sentinel(&lt->subs);
             q = ngx_queue_next(q))
        {
            sub = ngx_queue_data(q, ngx_hookstream_sub_t, queue);

            if (sub->last_seq >= lt->lap_seq || sub->pending) {
                /* up to date, or still reading its resume from Redis */
                continue;
            }

            sub->last_seq = lt->lap_seq;

            if (sub->reset) {
                sub->reset(sub);
            }
        }
    }
}


static ngx_uint_t
ngx_hookstream_broker_fanout_collect(ngx_hookstream_worker_t *w,
    ngx_hookstream_item_t *items, ngx_uint_t *more)
{
    size_t                       bytes;
    uint64_t                     room;
    ngx_uint_t                   n;
    ngx_hookstream_rec_t        *rec;
    ngx_rbtree_node_t           *node;
    ngx_hookstream_topic_t      *lt;
    ngx_hookstream_broker_sh_t  *b;

    b = w->b;
    n = 0;
    bytes = 0;
    *more = 0;

    if (w->proc == NULL) {
        return 0;
    }

    ngx_shmtx_lock(&w->sh->shpool->mutex);

    if (w->ntopics == 0) {
        w->rpos = b->head;
        w->seen = b->published;
        goto done;
    }

    if (w->rpos < b->tail) {
        b->lagged++;

        ngx_log_error(NGX_LOG_WARN, w->log, 0,
                      "hookstream zone \"%V\": this worker fell %uL bytes "
                      "behind the message ring, its subscribers missed "
                      "messages and are sent a reset", &b->name,
                      b->tail - w->rpos);

        w->rpos = b->tail;

        /*
         * What is left of the ring comes too late to be a stream without
         * a gap: each local topic's subscribers get a reset, and live
         * delivery goes on after what is current now.
         */

        for (node = ngx_rbtree_min(w->rbtree.root, w->rbtree.sentinel);
             node;
             node = ngx_rbtree_next(&w->rbtree, node))
        {
            lt = (ngx_hookstream_topic_t *) node;
            lt->lap_seq = lt->sh->last_seq;
            lt->last_seq = ngx_max(lt->last_seq, lt->lap_seq);
            lt->lapped = 1;
        }

        w->lapped = 1;
    }

    while (w->rpos < b->head) {

        if (n == NGX_HOOKSTREAM_BATCH || bytes >= NGX_HOOKSTREAM_BATCH_BYTES) {
            *more = 1;
            goto done;
        }

        room = b->size - w->rpos % b->size;

        if (room < sizeof(ngx_hookstream_rec_t)) {
            w->rpos += room;
            continue;
        }

        rec = ngx_hookstream_rec(b, w->rpos);

        if (rec->size < sizeof(ngx_hookstream_rec_t) || rec->size > room) {
            ngx_log_error(NGX_LOG_ALERT, w->log, 0,
                          "hookstream zone \"%V\": bad record at %uL in "
                          "the message ring", &b->name, w->rpos);
            w->rpos = b->head;
            break;
        }

        w->rpos += rec->size;

        if (rec->flags & NGX_HOOKSTREAM_REC_PAD) {
            continue;
        }

        /* a dead record is still whole: deliver it live all the same */

        lt = ngx_hookstream_broker_local_lookup(w, rec->topic_id);

        if (lt == NULL || rec->seq <= lt->last_seq) {
            continue;
        }

        lt->last_seq = rec->seq;

        if (ngx_hookstream_broker_copy(rec, &items[n], w->log) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, w->log, 0,
                          "hookstream: message %uL lost for lack of "
                          "memory", rec->seq);
            continue;
        }

        items[n].topic = lt;
        lt->refs++;

        bytes += rec->len;
        n++;
    }

    w->seen = b->published;

done:

    ngx_shmtx_unlock(&w->sh->shpool->mutex);

    return n;
}


static void
ngx_hookstream_broker_fanout_deliver(ngx_hookstream_worker_t *w,
    ngx_hookstream_item_t *it)
{
    ngx_queue_t             *q;
    ngx_hookstream_msg_t     msg;
    ngx_hookstream_sub_t    *sub;
    ngx_hookstream_topic_t  *lt;

    lt = it->topic;

    ngx_hookstream_broker_msg(it, &msg);

    /*
     * deliver() may unsubscribe this subscriber or any other one:
     * unsubscribe moves lt->next past a subscriber it removes.
     */

    for (q = ngx_queue_head(&lt->subs);
         q != ngx_queue_sentinel(&lt->subs);
         q = lt->next)
    {
        lt->next = ngx_queue_next(q);

        sub = ngx_queue_data(q, ngx_hookstream_sub_t, queue);

        if (msg.seq <= sub->last_seq || sub->pending) {
            continue;
        }

        sub->last_seq = msg.seq;

        if (!ngx_hookstream_rid_null(&msg.rid)) {
            if (ngx_hookstream_rid_cmp(&msg.rid, &sub->rid) <= 0) {
                /* a Redis read gave it to this subscriber already */
                continue;
            }

            sub->rid = msg.rid;
        }

        sub->deliver(sub, &msg);
    }

    lt->next = NULL;

    ngx_hookstream_buf_unref(it->buf);

    ngx_hookstream_broker_local_unref(w, lt);
}


/*
 * The wakeup channel reaches the workers of this worker's own cycle.
 * The poll catches what it cannot: publishes by workers of another
 * cycle during a reload, and any write that failed.  It only reads one
 * counter unless something was published.
 */

static void
ngx_hookstream_broker_poll_handler(ngx_event_t *ev)
{
    ngx_hookstream_worker_t  *w;

    w = ev->data;

    if (w->ntopics == 0 || w->proc == NULL) {
        return;
    }

    if (w->b->published != w->seen) {
        ngx_hookstream_broker_wakeup();
    }

    ngx_hookstream_broker_poll_arm(w);
}


static void
ngx_hookstream_broker_poll_arm(ngx_hookstream_worker_t *w)
{
    ngx_msec_t  timer;

    if (w->poll.timer_set) {
        return;
    }

    if (ngx_exiting
        || ngx_time() - (time_t) w->b->foreign < NGX_HOOKSTREAM_FOREIGN_SECS)
    {
        timer = NGX_HOOKSTREAM_POLL_FAST;

    } else {
        timer = NGX_HOOKSTREAM_POLL_SLOW;
    }

    ngx_add_timer(&w->poll, timer);
}


/* Redis */


static ngx_int_t
ngx_hookstream_broker_subscribe_redis(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub, ngx_hookstream_topic_t *lt, ngx_str_t *cursor)
{
    ngx_int_t                    rc;
    ngx_str_t                    name;
    ngx_uint_t                   live;
    ngx_hookstream_rid_t         rid, current;
    ngx_hookstream_broker_sh_t  *b;

    if (cursor == NULL || cursor->len == 0) {
        return NGX_OK;
    }

    if (ngx_hookstream_rid_parse(cursor->data, cursor->len, &rid) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    b = sh->broker;

    ngx_shmtx_lock(&sh->shpool->mutex);

    ngx_hookstream_broker_redis_cursor(b, lt->sh, &current);
    live = b->redis_live;

    /*
     * The current cursor of a host that is subscribed: nothing after it
     * was missed, live delivery is exact.  Anything else is read from
     * Redis first, with the subscriber held back from live delivery.
     */

    if (live && ngx_hookstream_rid_cmp(&rid, &current) == 0) {
        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_OK;
    }

    sub->pending = 1;
    sub->rid = rid;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    name.data = lt->sh->name;
    name.len = lt->sh->len;

    rc = ngx_hookstream_redis_resume(sub, &name, &rid, 0);

    if (rc != NGX_OK) {
        ngx_hookstream_broker_go_live(sh, sub);
        return rc;
    }

    return NGX_OK;
}


/* the cursor a Redis topic is at, as far as this host knows */

static void
ngx_hookstream_broker_redis_cursor(ngx_hookstream_broker_sh_t *b,
    ngx_hookstream_shtopic_t *t, ngx_hookstream_rid_t *rid)
{
    ngx_time_t  *tp;
    ngx_uint_t   known;

    known = (b->redis_floor.ms != (uint64_t) -1);

    if (t && !ngx_hookstream_rid_null(&t->last_rid)
        && (!known || ngx_hookstream_rid_cmp(&t->last_rid, &b->redis_floor)
                      > 0))
    {
        *rid = t->last_rid;
        return;
    }

    if (known) {
        *rid = b->redis_floor;
        return;
    }

    /* never subscribed yet: the clock, which Redis ids follow */

    tp = ngx_timeofday();

    rid->ms = (uint64_t) tp->sec * 1000 + tp->msec;
    rid->seq = 0;
}


/*
 * After a Redis read delivered a pending subscriber everything up to
 * sub->rid: goes live if the ring has nothing after it, or if this
 * host has been subscribed throughout (gen) so that the topic's kept
 * messages after sub->rid are complete: those are delivered now.
 * NGX_AGAIN: read from Redis again.
 */

ngx_int_t
ngx_hookstream_broker_catch_up(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub, uint64_t gen)
{
    uint64_t                     pos;
    ngx_uint_t                   n;
    ngx_hookstream_rec_t        *rec;
    ngx_hookstream_item_t       *items;
    ngx_hookstream_topic_t      *lt;
    ngx_hookstream_worker_t     *w;
    ngx_hookstream_shtopic_t    *t;
    ngx_hookstream_broker_sh_t  *b;

    w = ngx_hookstream_broker_worker(sh);
    lt = sub->topic;

    if (w == NULL || lt == NULL) {
        return NGX_ERROR;
    }

    b = sh->broker;
    t = lt->sh;
    items = NULL;
    n = 0;

    ngx_shmtx_lock(&sh->shpool->mutex);

    if (ngx_hookstream_rid_cmp(&t->last_rid, &sub->rid) <= 0) {
        goto live;
    }

    if (!b->redis_live || b->redis_gen != gen
        || ngx_hookstream_rid_cmp(&t->evicted_rid, &sub->rid) > 0)
    {
        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_AGAIN;
    }

    items = ngx_alloc(t->nmsgs * sizeof(ngx_hookstream_item_t), sub->log);
    if (items == NULL) {
        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_ERROR;
    }

    for (pos = t->first; pos != NGX_HOOKSTREAM_POS_NONE; pos = rec->next) {
        rec = ngx_hookstream_rec(b, pos);

        if (ngx_hookstream_rid_null(&rec->rid)
            || ngx_hookstream_rid_cmp(&rec->rid, &sub->rid) <= 0)
        {
            continue;
        }

        if (ngx_hookstream_broker_copy(rec, &items[n], sub->log) != NGX_OK) {
            ngx_hookstream_broker_free_items(items, n);
            ngx_free(items);
            ngx_shmtx_unlock(&sh->shpool->mutex);
            return NGX_ERROR;
        }

        items[n].topic = NULL;
        n++;
    }

live:

    sub->last_seq = t->last_seq;
    sub->pending = 0;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, sub->log, 0,
                   "hookstream redis catch-up last:%uL ring:%ui",
                   sub->last_seq, n);

    if (n) {
        (void) ngx_hookstream_broker_deliver_replay(w, sub, items, n, 0);

    } else if (items) {
        ngx_free(items);
    }

    return NGX_OK;
}


/* a pending subscriber that cannot be caught up: live from now on */

void
ngx_hookstream_broker_go_live(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_sub_t *sub)
{
    ngx_hookstream_shtopic_t  *t;

    if (sub->topic == NULL) {
        return;
    }

    t = sub->topic->sh;

    ngx_shmtx_lock(&sh->shpool->mutex);

    sub->last_seq = t->last_seq;

    if (ngx_hookstream_rid_cmp(&t->last_rid, &sub->rid) > 0) {
        sub->rid = t->last_rid;
    }

    sub->pending = 0;

    ngx_shmtx_unlock(&sh->shpool->mutex);
}


void
ngx_hookstream_broker_redis_state(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_rid_t *floor, uint64_t *gen, ngx_uint_t *live)
{
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;

    ngx_shmtx_lock(&sh->shpool->mutex);

    if (floor) {
        *floor = b->redis_floor;
    }

    if (gen) {
        *gen = b->redis_gen;
    }

    if (live) {
        *live = b->redis_live;
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);
}


/* the subscriber connection: went down (live 0), or is subscribed and
 * has read what it missed (live 1, floor: the time it subscribed) */

void
ngx_hookstream_broker_redis_live(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_rid_t *floor, ngx_uint_t live)
{
    ngx_hookstream_broker_sh_t  *b;

    b = sh->broker;

    ngx_shmtx_lock(&sh->shpool->mutex);

    if (live) {
        if (floor) {
            b->redis_floor = *floor;
        }

        b->redis_gen++;
    }

    b->redis_live = live;

    ngx_shmtx_unlock(&sh->shpool->mutex);
}


/* the Redis topics with subscribers on this host, each with the id to
 * read from after a gap */

ngx_int_t
ngx_hookstream_broker_redis_topics(ngx_hookstream_shctx_t *sh,
    ngx_array_t *topics, ngx_pool_t *pool)
{
    ngx_str_t                      name;
    ngx_rbtree_node_t             *node, *root, *sentinel;
    ngx_hookstream_shtopic_t      *t;
    ngx_hookstream_broker_sh_t    *b;
    ngx_hookstream_redis_topic_t  *rt;

    b = sh->broker;

    ngx_shmtx_lock(&sh->shpool->mutex);

    sentinel = b->rbtree.sentinel;
    root = b->rbtree.root;

    if (root == sentinel) {
        goto done;
    }

    for (node = ngx_rbtree_min(root, sentinel);
         node;
         node = ngx_rbtree_next(&b->rbtree, node))
    {
        t = (ngx_hookstream_shtopic_t *) node;

        name.data = t->name;
        name.len = t->len;

        if (t->nsubs == 0 || !ngx_hookstream_redis_topic(&name)) {
            continue;
        }

        if (b->redis_floor.ms == (uint64_t) -1
            && ngx_hookstream_rid_null(&t->last_rid))
        {
            /* nothing known to read from */
            continue;
        }

        rt = ngx_array_push(topics);
        if (rt == NULL) {
            goto failed;
        }

        rt->topic.data = ngx_pstrdup(pool, &name);
        if (rt->topic.data == NULL) {
            goto failed;
        }

        rt->topic.len = name.len;

        ngx_hookstream_broker_redis_cursor(b, t, &rt->from);
    }

done:

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return NGX_OK;

failed:

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return NGX_ERROR;
}


ngx_int_t
ngx_hookstream_rid_parse(u_char *p, size_t len, ngx_hookstream_rid_t *rid)
{
    u_char    *last;
    uint64_t   v[2];
    ngx_uint_t i, digits;

    last = p + len;

    for (i = 0; i < 2; i++) {
        v[i] = 0;
        digits = 0;

        for ( /* void */ ; p < last && *p >= '0' && *p <= '9'; p++) {
            if (v[i] > ((uint64_t) -1 - (*p - '0')) / 10) {
                return NGX_DECLINED;
            }

            v[i] = v[i] * 10 + (*p - '0');
            digits++;
        }

        if (digits == 0) {
            return NGX_DECLINED;
        }

        if (i == 0) {
            if (p == last || *p != '-') {
                return NGX_DECLINED;
            }

            p++;
        }
    }

    if (p != last) {
        return NGX_DECLINED;
    }

    rid->ms = v[0];
    rid->seq = v[1];

    return NGX_OK;
}


ngx_int_t
ngx_hookstream_rid_cmp(ngx_hookstream_rid_t *a, ngx_hookstream_rid_t *b)
{
    if (a->ms != b->ms) {
        return (a->ms < b->ms) ? -1 : 1;
    }

    if (a->seq != b->seq) {
        return (a->seq < b->seq) ? -1 : 1;
    }

    return 0;
}
