
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/sha.h>
#include "ngx_hookstream.h"


/* how long an idempotency key is remembered */
#define NGX_HOOKSTREAM_DEDUP_WINDOW  86400
#define NGX_HOOKSTREAM_DEDUP_MAX     100000


typedef struct {
    ngx_rbtree_node_t            node;
    ngx_queue_t                  lru;
    u_char                       hash[NGX_HOOKSTREAM_SHA256_LEN];
    u_char                       id[NGX_HOOKSTREAM_EVENT_ID_LEN];
    time_t                       expires;
} ngx_hookstream_dedup_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;
    ngx_uint_t                   count;
} ngx_hookstream_dedup_t;


static ngx_int_t ngx_hookstream_dedup_check(ngx_hookstream_event_t *ev);
static void ngx_hookstream_dedup_forget(ngx_hookstream_event_t *ev);
static ngx_hookstream_dedup_node_t *ngx_hookstream_dedup_find(
    ngx_hookstream_dedup_t *dd, u_char *hash);
static void ngx_hookstream_dedup_expire(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_dedup_t *dd, ngx_uint_t all);
static void ngx_hookstream_dedup_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_hookstream_event_build(ngx_hookstream_event_t *ev);
static void ngx_hookstream_event_stored(ngx_hookstream_journal_req_t *req);
static void ngx_hookstream_event_publish(ngx_hookstream_event_t *ev);
static ngx_int_t ngx_hookstream_event_pub(ngx_hookstream_event_t *ev,
    ngx_hookstream_pub_t *pub);
static ngx_int_t ngx_hookstream_event_sync(ngx_hookstream_event_t *ev);
static void ngx_hookstream_event_synced(void *data);


ngx_hookstream_event_t *
ngx_hookstream_event_create(size_t extra, ngx_log_t *log)
{
    ngx_time_t              *tp;
    ngx_hookstream_event_t  *ev;

    ev = ngx_calloc(sizeof(ngx_hookstream_event_t) + extra, log);
    if (ev == NULL) {
        return NULL;
    }

    ev->log = log;
    ev->req.data = ev;
    ev->req.handler = ngx_hookstream_event_stored;

    ngx_memcpy(ev->id, "evt_", 4);
    (void) ngx_hookstream_random_hex(ev->id + 4,
                                     NGX_HOOKSTREAM_HEX_ID_LEN / 2);

    tp = ngx_timeofday();
    ev->received_at = (ngx_msec_t) tp->sec * 1000 + tp->msec;

    return ev;
}


u_char *
ngx_hookstream_event_storage(ngx_hookstream_event_t *ev)
{
    return (u_char *) (ev + 1);
}


void
ngx_hookstream_event_free(ngx_hookstream_event_t *ev)
{
    if (ev->record.data) {
        ngx_free(ev->record.data);
    }

    ngx_free(ev);
}


ngx_int_t
ngx_hookstream_ingest(ngx_hookstream_event_t *ev,
    ngx_http_hookstream_main_conf_t *hmcf)
{
    ngx_int_t             rc;
    ngx_hookstream_pub_t  pub;

    ev->shctx = hmcf->shm_zone ? hmcf->shm_zone->data : NULL;

    if (ev->idempotency_key.len && ev->shctx) {
        rc = ngx_hookstream_dedup_check(ev);

        if (rc == NGX_DECLINED) {
            /* a repeat: the first event's id, nothing stored */
            ngx_hookstream_stat_add(ev->shctx, events_duplicate, 1);
            ev->duplicate = 1;
            ev->rc = NGX_OK;
            return NGX_OK;
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    if (ev->ephemeral) {
        /* a test session's request: seen live, kept nowhere */
        ev->rc = NGX_OK;
        ev->durable = 0;
        ngx_hookstream_event_publish(ev);
        return NGX_OK;
    }

    if (ngx_hookstream_event_build(ev) != NGX_OK) {
        ngx_hookstream_stat_add(ev->shctx, events_not_stored, 1);
        ngx_hookstream_dedup_forget(ev);
        return NGX_ERROR;
    }

    if (hmcf->redis && hmcf->redis->journal.len) {
        /* the pipeline on Redis: stored and published by one script,
         * acked once it (and WAIT) answered */
        ev->durable = 1;

        rc = ngx_hookstream_event_pub(ev, &pub);

        if (rc == NGX_ERROR
            || ngx_hookstream_redis_append(&ev->record, ev->id,
                                           rc == NGX_OK ? &pub : NULL,
                                           ev->buffer_count, &ev->req,
                                           ev->log)
               != NGX_OK)
        {
            if (rc == NGX_OK) {
                ngx_free(pub.data.data);
            }

            ngx_hookstream_stat_add(ev->shctx, events_not_stored, 1);
            ngx_hookstream_dedup_forget(ev);
            ev->rc = NGX_ERROR;
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            ev->published = ngx_hookstream_redis_topic(&pub.topic);
            ngx_free(pub.data.data);
        }

        return NGX_AGAIN;
    }

    if (hmcf->journal == NULL) {
        /* an explicit choice of the operator: events are not kept */
        ev->rc = NGX_OK;
        ev->durable = 0;
        ngx_hookstream_event_publish(ev);

        return ngx_hookstream_event_sync(ev);
    }

    ev->durable = 1;

    if (ngx_hookstream_journal_append(hmcf->journal, &ev->record, &ev->req)
        != NGX_OK)
    {
        ngx_hookstream_stat_add(ev->shctx, events_not_stored, 1);
        ngx_hookstream_dedup_forget(ev);
        ev->rc = NGX_ERROR;
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


static void
ngx_hookstream_event_stored(ngx_hookstream_journal_req_t *req)
{
    ngx_hookstream_event_t  *ev = req->data;

    ev->rc = req->rc;

    if (ev->rc == NGX_OK) {
        ngx_hookstream_event_publish(ev);

        if (ngx_hookstream_event_sync(ev) == NGX_AGAIN) {
            return;
        }

    } else {
        ngx_hookstream_stat_add(ev->shctx, events_not_stored, 1);
        ngx_hookstream_dedup_forget(ev);
    }

    if (ev->handler) {
        ev->handler(ev);
    }

    ngx_hookstream_event_free(ev);
}


/*
 * An org's event published through Redis after the journal (not with
 * it): the ack waits until Redis has it, so that events acked one after
 * the other are in that order on every host.  NGX_AGAIN: the handler
 * runs then.
 */

static ngx_int_t
ngx_hookstream_event_sync(ngx_hookstream_event_t *ev)
{
    if (ev->published || ev->test || !ngx_hookstream_redis_topic(&ev->org_id)
        || ngx_hookstream_redis_sync(ngx_hookstream_event_synced, ev,
                                     ev->log)
           != NGX_OK)
    {
        return NGX_OK;
    }

    return NGX_AGAIN;
}


static void
ngx_hookstream_event_synced(void *data)
{
    ngx_hookstream_event_t  *ev = data;

    if (ev->handler) {
        ev->handler(ev);
    }

    ngx_hookstream_event_free(ev);
}


/*
 * The journal's record: one JSON object per line, the body spliced in
 * byte for byte.
 */

static ngx_int_t
ngx_hookstream_event_build(ngx_hookstream_event_t *ev)
{
    u_char  *p;
    size_t   len;

    len = sizeof("{\"id\":\"\",\"org_id\":\"\",\"source_id\":\"\","
                 "\"type\":,\"method\":\"\",\"received_at\":\"\","
                 "\"idempotency_key\":,\"body\":}") - 1
          + NGX_HOOKSTREAM_EVENT_ID_LEN
          + ev->org_id.len + ev->source_id.len
          + (ev->type.len ? ev->type.len : 4)
          + ev->method.len + NGX_HOOKSTREAM_RFC3339_LEN
          + (ev->idempotency_key.len ? ev->idempotency_key.len : 4)
          + ev->body.len;

    if (ev->http) {
        len += sizeof(",\"path\":,\"query\":,\"headers\":,"
                      "\"content_type\":,\"source_ip\":") - 1
               + ev->path.len + ev->query.len + ev->headers.len
               + ev->content_type.len + ev->source_ip.len;
    }

    p = ngx_alloc(len, ev->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ev->record.data = p;

    p = ngx_sprintf(p, "{\"id\":\"%*s\",\"org_id\":\"%V\",\"source_id\":\"%V\","
                    "\"type\":",
                    NGX_HOOKSTREAM_EVENT_ID_LEN, ev->id, &ev->org_id,
                    &ev->source_id);

    /* type and idempotency_key are JSON strings taken from the input */

    if (ev->type.len) {
        p = ngx_cpymem(p, ev->type.data, ev->type.len);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_sprintf(p, ",\"method\":\"%V\",\"received_at\":\"", &ev->method);
    p = ngx_hookstream_time_rfc3339(p, ev->received_at);
    p = ngx_cpymem(p, "\",\"idempotency_key\":",
                   sizeof("\",\"idempotency_key\":") - 1);

    if (ev->idempotency_key.len) {
        p = ngx_cpymem(p, ev->idempotency_key.data, ev->idempotency_key.len);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    if (ev->http) {
        p = ngx_sprintf(p, ",\"path\":%V,\"query\":%V,\"headers\":%V,"
                        "\"content_type\":%V,\"source_ip\":%V",
                        &ev->path, &ev->query, &ev->headers,
                        &ev->content_type, &ev->source_ip);
    }

    p = ngx_cpymem(p, ",\"body\":", sizeof(",\"body\":") - 1);
    p = ngx_cpymem(p, ev->body.data, ev->body.len);
    *p++ = '}';

    ev->record.len = p - ev->record.data;

    return NGX_OK;
}


/*
 * On the org's "events" channel, the dashboard's summary; on a test
 * session's "test" channel, the whole request.
 */

static void
ngx_hookstream_event_publish(ngx_hookstream_event_t *ev)
{
    ngx_hookstream_pub_t  pub;

    ngx_hookstream_stat_add(ev->shctx, events_ingested, 1);

    if (ev->published) {
        /* with its record, by the Redis journal */
        return;
    }

    if (ngx_hookstream_event_pub(ev, &pub) != NGX_OK) {
        return;
    }

    (void) ngx_hookstream_broker_publish(ev->shctx, &pub, ev->buffer_count,
                                         ev->buffer_age, NULL, ev->log);

    ngx_free(pub.data.data);
}


/* the message of an event; pub->data is allocated, the caller frees it */

static ngx_int_t
ngx_hookstream_event_pub(ngx_hookstream_event_t *ev,
    ngx_hookstream_pub_t *pub)
{
    u_char  *p, *data;
    size_t   len;

    if (ev->shctx == NULL || ev->org_id.len == 0) {
        return NGX_DECLINED;
    }

    len = sizeof("{\"id\":\"\",\"source_id\":\"\",\"method\":\"\","
                 "\"status\":\"received\",\"received_at\":\"\","
                 "\"type\":}") - 1
          + NGX_HOOKSTREAM_EVENT_ID_LEN + ev->source_id.len + ev->method.len
          + NGX_HOOKSTREAM_RFC3339_LEN + ev->type.len;

    if (ev->test) {
        len += sizeof(",\"path\":,\"query\":,\"headers\":,\"body\":,"
                      "\"content_type\":,\"source_ip\":") - 1
               + ev->path.len + ev->query.len + ev->headers.len
               + ev->body.len + ev->content_type.len + ev->source_ip.len;
    }

    data = ngx_alloc(len, ev->log);
    if (data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(data, "{\"id\":\"%*s\",\"source_id\":\"%V\","
                    "\"method\":\"%V\",\"status\":\"received\","
                    "\"received_at\":\"",
                    NGX_HOOKSTREAM_EVENT_ID_LEN, ev->id, &ev->source_id,
                    &ev->method);
    p = ngx_hookstream_time_rfc3339(p, ev->received_at);
    *p++ = '"';

    if (ev->type.len) {
        p = ngx_sprintf(p, ",\"type\":%V", &ev->type);
    }

    if (ev->test) {
        p = ngx_sprintf(p, ",\"path\":%V,\"query\":%V,\"headers\":%V,"
                        "\"body\":%V,\"content_type\":%V,\"source_ip\":%V",
                        &ev->path, &ev->query, &ev->headers, &ev->body,
                        &ev->content_type, &ev->source_ip);
    }

    *p++ = '}';

    pub->topic = ev->org_id;
    ngx_str_set(&pub->type, "event");
    pub->data.data = data;
    pub->data.len = p - data;

    if (ev->test) {
        ngx_str_set(&pub->channel, "test");
        ngx_str_null(&pub->key);

    } else {
        ngx_str_set(&pub->channel, "events");
        pub->key = ev->source_id;
    }

    return NGX_OK;
}


/* idempotency keys: a table in the zone shared by every worker */

ngx_int_t
ngx_hookstream_dedup_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone)
{
    ngx_hookstream_dedup_t  *dd;

    dd = ngx_slab_calloc(sh->shpool, sizeof(ngx_hookstream_dedup_t));
    if (dd == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&dd->rbtree, &dd->sentinel,
                    ngx_hookstream_dedup_insert_value);
    ngx_queue_init(&dd->lru);

    sh->dedup = dd;

    return NGX_OK;
}


/* NGX_OK: a new key, remembered; NGX_DECLINED: a repeat (ev->id set) */

static ngx_int_t
ngx_hookstream_dedup_check(ngx_hookstream_event_t *ev)
{
    u_char                       *p;
    ngx_hookstream_shctx_t       *sh;
    ngx_hookstream_dedup_t       *dd;
    ngx_hookstream_dedup_node_t  *node;
    u_char                        buf[NGX_HOOKSTREAM_MAX_ID_LEN + 1
                                      + 6 * NGX_HOOKSTREAM_IDEMPOTENCY_MAX
                                      + 2];

    sh = ev->shctx;
    dd = sh->dedup;

    /* keys are scoped to the source they were sent to */

    if (ev->source_id.len > NGX_HOOKSTREAM_MAX_ID_LEN
        || ev->idempotency_key.len > sizeof(buf) - NGX_HOOKSTREAM_MAX_ID_LEN
                                     - 1)
    {
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, ev->source_id.data, ev->source_id.len);
    *p++ = '\n';
    p = ngx_cpymem(p, ev->idempotency_key.data, ev->idempotency_key.len);

    SHA256(buf, p - buf, ev->dedup_hash);

    ngx_shmtx_lock(&sh->shpool->mutex);

    ngx_hookstream_dedup_expire(sh, dd, 0);

    node = ngx_hookstream_dedup_find(dd, ev->dedup_hash);

    if (node) {
        ngx_memcpy(ev->id, node->id, NGX_HOOKSTREAM_EVENT_ID_LEN);
        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_DECLINED;
    }

    if (dd->count >= NGX_HOOKSTREAM_DEDUP_MAX) {
        ngx_hookstream_dedup_expire(sh, dd, 1);
    }

    node = ngx_slab_alloc_locked(sh->shpool,
                                 sizeof(ngx_hookstream_dedup_node_t));

    if (node == NULL) {
        /* the zone is full: the oldest keys make room */
        ngx_hookstream_dedup_expire(sh, dd, 1);

        node = ngx_slab_alloc_locked(sh->shpool,
                                     sizeof(ngx_hookstream_dedup_node_t));
        if (node == NULL) {
            ngx_shmtx_unlock(&sh->shpool->mutex);
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "hookstream zone is full: idempotency key "
                          "not remembered");
            return NGX_ERROR;
        }
    }

    node->node.key = ngx_crc32_short(ev->dedup_hash,
                                     NGX_HOOKSTREAM_SHA256_LEN);
    ngx_memcpy(node->hash, ev->dedup_hash, NGX_HOOKSTREAM_SHA256_LEN);
    ngx_memcpy(node->id, ev->id, NGX_HOOKSTREAM_EVENT_ID_LEN);
    node->expires = ngx_time() + NGX_HOOKSTREAM_DEDUP_WINDOW;

    ngx_rbtree_insert(&dd->rbtree, &node->node);
    ngx_queue_insert_head(&dd->lru, &node->lru);
    dd->count++;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    ev->dedup = 1;

    return NGX_OK;
}


/* an event that was not stored does not hold its key */

static void
ngx_hookstream_dedup_forget(ngx_hookstream_event_t *ev)
{
    ngx_hookstream_shctx_t       *sh;
    ngx_hookstream_dedup_t       *dd;
    ngx_hookstream_dedup_node_t  *node;

    if (!ev->dedup) {
        return;
    }

    ev->dedup = 0;
    sh = ev->shctx;
    dd = sh->dedup;

    ngx_shmtx_lock(&sh->shpool->mutex);

    node = ngx_hookstream_dedup_find(dd, ev->dedup_hash);

    if (node && ngx_strncmp(node->id, ev->id, NGX_HOOKSTREAM_EVENT_ID_LEN)
                == 0)
    {
        ngx_rbtree_delete(&dd->rbtree, &node->node);
        ngx_queue_remove(&node->lru);
        ngx_slab_free_locked(sh->shpool, node);
        dd->count--;
    }

    ngx_shmtx_unlock(&sh->shpool->mutex);
}


static ngx_hookstream_dedup_node_t *
ngx_hookstream_dedup_find(ngx_hookstream_dedup_t *dd, u_char *hash)
{
    ngx_int_t                     rc;
    uint32_t                      key;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_hookstream_dedup_node_t  *dn;

    key = ngx_crc32_short(hash, NGX_HOOKSTREAM_SHA256_LEN);

    node = dd->rbtree.root;
    sentinel = dd->rbtree.sentinel;

    while (node != sentinel) {

        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        dn = (ngx_hookstream_dedup_node_t *) node;

        rc = ngx_memcmp(hash, dn->hash, NGX_HOOKSTREAM_SHA256_LEN);

        if (rc == 0) {
            return dn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* expired keys go; with "all", the oldest few go even if not expired */

static void
ngx_hookstream_dedup_expire(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_dedup_t *dd, ngx_uint_t all)
{
    time_t                        now;
    ngx_uint_t                    n;
    ngx_queue_t                  *q;
    ngx_hookstream_dedup_node_t  *node;

    now = ngx_time();

    for (n = 0; n < 64; n++) {

        if (ngx_queue_empty(&dd->lru)) {
            return;
        }

        q = ngx_queue_last(&dd->lru);
        node = ngx_queue_data(q, ngx_hookstream_dedup_node_t, lru);

        if (!all && node->expires > now) {
            return;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&dd->rbtree, &node->node);
        ngx_slab_free_locked(sh->shpool, node);
        dd->count--;
    }
}


static void
ngx_hookstream_dedup_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t            **p;
    ngx_hookstream_dedup_node_t   *dn, *dt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            dn = (ngx_hookstream_dedup_node_t *) node;
            dt = (ngx_hookstream_dedup_node_t *) temp;

            p = (ngx_memcmp(dn->hash, dt->hash, NGX_HOOKSTREAM_SHA256_LEN)
                 < 0) ? &temp->left : &temp->right;
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
