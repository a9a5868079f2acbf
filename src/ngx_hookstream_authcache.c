
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"


/*
 * The authority's answers, shared by all workers in the module's zone.
 *
 * An entry is keyed by the credential's SHA-256, its kind (API key or
 * session) and the source id the credential was checked for (none on
 * /v1/ws).  The rbtree key is the first bytes of the hash, which are
 * uniformly distributed already; ties are broken by the rest of the key,
 * so that every entry of one credential is a contiguous run of the tree
 * (a revocation walks it).  An LRU queue bounds the entries: a hit moves
 * an entry to the front, an insertion past the maximum or into a full
 * slab evicts from the back.
 *
 * An entry is "pending" while one request asks the authority: the others
 * that need the same answer wait for it instead of asking too.  A pending
 * entry carries a deadline, after which another request takes over (the
 * worker that asked may have died).  "error" is what a failed question
 * leaves for the requests that waited on it: they fail with it, but a new
 * request asks again.
 *
 * Failed credentials are counted per client address in a second tree,
 * as a leaky bucket that drains "limit" failures a minute.
 */


#define NGX_HOOKSTREAM_AUTHCACHE_TREE_KEY  sizeof(ngx_rbtree_key_t)
#define NGX_HOOKSTREAM_AUTHCACHE_REST      (NGX_HOOKSTREAM_SHA256_LEN         \
                                            - NGX_HOOKSTREAM_AUTHCACHE_TREE_KEY)
#define NGX_HOOKSTREAM_AUTHCACHE_ID_LEN    (NGX_HOOKSTREAM_HEX_ID_LEN / 2)

/* how long an "error" entry is kept for the requests that waited */
#define NGX_HOOKSTREAM_AUTHCACHE_ERROR_TTL  1000

/* expired entries removed from the back of a queue per operation */
#define NGX_HOOKSTREAM_AUTHCACHE_REAP      2

#define NGX_HOOKSTREAM_AUTHCACHE_HAS_SOURCE  0x01
#define NGX_HOOKSTREAM_AUTHCACHE_FORBIDDEN   0x02


/*
 * An entry, laid over an ngx_rbtree_node_t from its "color" on, as
 * limit_req does, so that it takes 120 bytes (a 128-byte slab chunk).
 */
typedef struct {
    u_char                        color;
    u_char                        kind;
    u_char                        state;
    u_char                        flags;
    u_char                        sources;
    u_char                        reserved[3];
    ngx_queue_t                   queue;
    u_char                        rest[NGX_HOOKSTREAM_AUTHCACHE_REST];
    u_char                        source[NGX_HOOKSTREAM_AUTHCACHE_ID_LEN];
    u_char                        org[NGX_HOOKSTREAM_AUTHCACHE_ID_LEN];
    ngx_msec_t                    expire;
} ngx_hookstream_authcache_node_t;


/* failed credentials of one client address */
typedef struct {
    u_char                        color;
    u_char                        len;
    u_char                        reserved[6];
    ngx_queue_t                   queue;
    ngx_uint_t                    excess;   /* thousandths of a failure */
    ngx_msec_t                    last;
    u_char                        addr[16];
} ngx_hookstream_authfail_node_t;


/* a key laid out as an entry, on the stack, aligned as a node */
typedef union {
    ngx_rbtree_node_t             node;
    u_char                        data[offsetof(ngx_rbtree_node_t, color)
                                   + sizeof(ngx_hookstream_authcache_node_t)];
} ngx_hookstream_authcache_probe_t;


typedef struct {
    ngx_slab_pool_t                   *shpool;

    ngx_rbtree_t                       rbtree;
    ngx_rbtree_node_t                  sentinel;
    ngx_queue_t                        lru;
    ngx_uint_t                         count;

    ngx_rbtree_t                       fails;
    ngx_rbtree_node_t                  fails_sentinel;
    ngx_queue_t                        fails_lru;
    ngx_uint_t                         nfails;

    uint64_t                           generation;
    ngx_hookstream_authcache_stats_t   stats;
} ngx_hookstream_authcache_t;


static void ngx_hookstream_authcache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_hookstream_authcache_cmp(
    ngx_hookstream_authcache_node_t *a, ngx_hookstream_authcache_node_t *b);
static void ngx_hookstream_authcache_fill(ngx_rbtree_node_t *node,
    ngx_hookstream_authkey_t *key);
static ngx_rbtree_node_t *ngx_hookstream_authcache_find(
    ngx_hookstream_authcache_t *c, ngx_hookstream_authkey_t *key);
static ngx_rbtree_node_t *ngx_hookstream_authcache_create(
    ngx_hookstream_shctx_t *sh, ngx_hookstream_authkey_t *key,
    ngx_uint_t max);
static void ngx_hookstream_authcache_delete(ngx_hookstream_authcache_t *c,
    ngx_rbtree_node_t *node);
static void ngx_hookstream_authcache_reap(ngx_hookstream_authcache_t *c,
    ngx_msec_t now);
static void *ngx_hookstream_authcache_alloc(ngx_hookstream_shctx_t *sh,
    size_t size);
static void ngx_hookstream_authcache_result(ngx_hookstream_authcache_node_t *e,
    ngx_hookstream_authres_t *res);

static void ngx_hookstream_authfail_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_rbtree_node_t *ngx_hookstream_authfail_find(
    ngx_hookstream_authcache_t *c, ngx_str_t *addr, uint32_t hash);
static void ngx_hookstream_authfail_leak(ngx_hookstream_authfail_node_t *f,
    ngx_uint_t limit, ngx_msec_t now);
static void ngx_hookstream_authfail_reap(ngx_hookstream_authcache_t *c,
    ngx_uint_t limit, ngx_msec_t now);


#define ngx_hookstream_authcache_entry(node)                                 \
    ((ngx_hookstream_authcache_node_t *) &(node)->color)

#define ngx_hookstream_authcache_node(entry)                                 \
    ((ngx_rbtree_node_t *)                                                   \
     ((u_char *) (entry) - offsetof(ngx_rbtree_node_t, color)))

#define ngx_hookstream_authfail_entry(node)                                  \
    ((ngx_hookstream_authfail_node_t *) &(node)->color)

#define ngx_hookstream_authfail_node(entry)                                  \
    ((ngx_rbtree_node_t *)                                                   \
     ((u_char *) (entry) - offsetof(ngx_rbtree_node_t, color)))

#define NGX_HOOKSTREAM_AUTHCACHE_NODE_SIZE                                   \
    (offsetof(ngx_rbtree_node_t, color)                                      \
     + sizeof(ngx_hookstream_authcache_node_t))

#define NGX_HOOKSTREAM_AUTHFAIL_NODE_SIZE                                    \
    (offsetof(ngx_rbtree_node_t, color)                                      \
     + sizeof(ngx_hookstream_authfail_node_t))


ngx_int_t
ngx_hookstream_authcache_init_zone(ngx_hookstream_shctx_t *sh,
    ngx_shm_zone_t *shm_zone)
{
    ngx_hookstream_authcache_t  *c;

    c = ngx_slab_calloc(sh->shpool, sizeof(ngx_hookstream_authcache_t));
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->shpool = sh->shpool;

    ngx_rbtree_init(&c->rbtree, &c->sentinel,
                    ngx_hookstream_authcache_insert_value);
    ngx_queue_init(&c->lru);

    ngx_rbtree_init(&c->fails, &c->fails_sentinel,
                    ngx_hookstream_authfail_insert_value);
    ngx_queue_init(&c->fails_lru);

    sh->authcache = c;

    return NGX_OK;
}


ngx_uint_t
ngx_hookstream_authcache_lookup(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_authkey_t *key, ngx_uint_t flags, ngx_msec_t pending,
    ngx_uint_t max, ngx_hookstream_authres_t *res)
{
    ngx_msec_t                        now;
    ngx_uint_t                        state;
    ngx_rbtree_node_t                *node;
    ngx_hookstream_authcache_t       *c;
    ngx_hookstream_authcache_node_t  *e;

    ngx_memzero(res, sizeof(ngx_hookstream_authres_t));

    c = sh->authcache;

    if (c == NULL) {
        return NGX_HOOKSTREAM_AUTHCACHE_MISS;
    }

    now = ngx_current_msec;

    ngx_shmtx_lock(&sh->shpool->mutex);

    res->generation = c->generation;

    ngx_hookstream_authcache_reap(c, now);

    node = ngx_hookstream_authcache_find(c, key);

    if (node) {
        e = ngx_hookstream_authcache_entry(node);
        state = e->state;

        if ((ngx_msec_int_t) (e->expire - now) > 0
            && (state == NGX_HOOKSTREAM_AUTHCACHE_ALLOW
                || state == NGX_HOOKSTREAM_AUTHCACHE_DENY
                || state == NGX_HOOKSTREAM_AUTHCACHE_PENDING
                || (flags & NGX_HOOKSTREAM_AUTHCACHE_WAITED)))
        {
            if (state != NGX_HOOKSTREAM_AUTHCACHE_PENDING) {
                ngx_queue_remove(&e->queue);
                ngx_queue_insert_head(&c->lru, &e->queue);
                ngx_hookstream_authcache_result(e, res);

                if (state != NGX_HOOKSTREAM_AUTHCACHE_ERROR) {
                    c->stats.hits++;
                }
            }

            ngx_shmtx_unlock(&sh->shpool->mutex);
            return state;
        }

        /* expired, or a failure nobody waited for: ask again */

        if (!(flags & NGX_HOOKSTREAM_AUTHCACHE_CREATE)) {
            c->stats.misses++;
            ngx_shmtx_unlock(&sh->shpool->mutex);
            return NGX_HOOKSTREAM_AUTHCACHE_MISS;
        }

    } else {

        if (!(flags & NGX_HOOKSTREAM_AUTHCACHE_CREATE)) {
            c->stats.misses++;
            ngx_shmtx_unlock(&sh->shpool->mutex);
            return NGX_HOOKSTREAM_AUTHCACHE_MISS;
        }

        node = ngx_hookstream_authcache_create(sh, key, max);

        if (node == NULL) {
            /* the caller asks all the same, only nobody can wait on it */
            c->stats.misses++;
            c->stats.nomem++;
            ngx_shmtx_unlock(&sh->shpool->mutex);
            return NGX_HOOKSTREAM_AUTHCACHE_MISS;
        }

        e = ngx_hookstream_authcache_entry(node);
    }

    e->state = NGX_HOOKSTREAM_AUTHCACHE_PENDING;
    e->expire = now + pending;

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&c->lru, &e->queue);

    c->stats.misses++;
    res->owner = 1;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return NGX_HOOKSTREAM_AUTHCACHE_MISS;
}


ngx_int_t
ngx_hookstream_authcache_store(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_authkey_t *key, ngx_hookstream_authres_t *res,
    ngx_msec_t ttl, ngx_uint_t max)
{
    ngx_rbtree_node_t                *node;
    ngx_hookstream_authcache_t       *c;
    ngx_hookstream_authcache_node_t  *e;

    c = sh->authcache;

    if (c == NULL) {
        return NGX_OK;
    }

    ngx_shmtx_lock(&sh->shpool->mutex);

    switch (res->state) {

    case NGX_HOOKSTREAM_AUTHCACHE_ALLOW:
        c->stats.allowed++;
        break;

    case NGX_HOOKSTREAM_AUTHCACHE_DENY:
        c->stats.denied++;
        break;

    default: /* NGX_HOOKSTREAM_AUTHCACHE_ERROR */
        c->stats.errors++;
        ttl = NGX_HOOKSTREAM_AUTHCACHE_ERROR_TTL;
        break;
    }

    node = ngx_hookstream_authcache_find(c, key);

    if (res->state == NGX_HOOKSTREAM_AUTHCACHE_ALLOW
        && res->generation != c->generation)
    {
        /*
         * A revocation came while the authority was asked: its answer
         * may predate the revocation.  The caller asks again.
         */

        if (node) {
            ngx_hookstream_authcache_delete(c, node);
        }

        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_DECLINED;
    }

    if (node == NULL) {
        node = ngx_hookstream_authcache_create(sh, key, max);

        if (node == NULL) {
            c->stats.nomem++;
            ngx_shmtx_unlock(&sh->shpool->mutex);
            return NGX_OK;
        }
    }

    e = ngx_hookstream_authcache_entry(node);

    e->state = (u_char) res->state;
    e->sources = (u_char) res->sources;
    ngx_memcpy(e->org, res->org, NGX_HOOKSTREAM_AUTHCACHE_ID_LEN);

    if (res->status == NGX_HTTP_FORBIDDEN) {
        e->flags |= NGX_HOOKSTREAM_AUTHCACHE_FORBIDDEN;

    } else {
        e->flags &= ~NGX_HOOKSTREAM_AUTHCACHE_FORBIDDEN;
    }

    e->expire = ngx_current_msec + ttl;

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&c->lru, &e->queue);

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return NGX_OK;
}


ngx_uint_t
ngx_hookstream_authcache_revoke(ngx_hookstream_shctx_t *sh, u_char *hash)
{
    ngx_int_t                         rc;
    ngx_uint_t                        n;
    ngx_rbtree_key_t                  k;
    ngx_rbtree_node_t                *node, *sentinel, *first, *next;
    ngx_hookstream_authcache_t       *c;
    ngx_hookstream_authcache_node_t  *e;

    c = sh->authcache;

    if (c == NULL) {
        return 0;
    }

    ngx_memcpy(&k, hash, NGX_HOOKSTREAM_AUTHCACHE_TREE_KEY);
    hash += NGX_HOOKSTREAM_AUTHCACHE_TREE_KEY;

    ngx_shmtx_lock(&sh->shpool->mutex);

    /* answers being fetched now must not be kept: see the store */
    c->generation++;

    /* the first entry of the credential: a lower bound in key order */

    node = c->rbtree.root;
    sentinel = c->rbtree.sentinel;
    first = NULL;

    while (node != sentinel) {

        if (k != node->key) {
            node = (k < node->key) ? node->left : node->right;
            continue;
        }

        e = ngx_hookstream_authcache_entry(node);
        rc = ngx_memcmp(hash, e->rest, NGX_HOOKSTREAM_AUTHCACHE_REST);

        if (rc <= 0) {
            if (rc == 0) {
                first = node;
            }

            node = node->left;

        } else {
            node = node->right;
        }
    }

    n = 0;

    for (node = first; node; node = next) {
        e = ngx_hookstream_authcache_entry(node);

        if (node->key != k
            || ngx_memcmp(hash, e->rest, NGX_HOOKSTREAM_AUTHCACHE_REST) != 0)
        {
            break;
        }

        next = ngx_rbtree_next(&c->rbtree, node);

        ngx_hookstream_authcache_delete(c, node);
        n++;
    }

    c->stats.revoked += n;
    c->stats.revocations++;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return n;
}


ngx_int_t
ngx_hookstream_authcache_fail_check(ngx_hookstream_shctx_t *sh,
    ngx_str_t *addr, ngx_uint_t limit, time_t *retry_after)
{
    ngx_msec_t                       now, wait;
    ngx_uint_t                       threshold;
    ngx_rbtree_node_t               *node;
    ngx_hookstream_authcache_t      *c;
    ngx_hookstream_authfail_node_t  *f;

    c = sh->authcache;

    if (c == NULL || limit == 0 || addr->len > 16) {
        return NGX_OK;
    }

    now = ngx_current_msec;

    ngx_shmtx_lock(&sh->shpool->mutex);

    node = ngx_hookstream_authfail_find(c, addr,
                                        ngx_crc32_short(addr->data,
                                                        addr->len));
    if (node == NULL) {
        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_OK;
    }

    f = ngx_hookstream_authfail_entry(node);

    ngx_hookstream_authfail_leak(f, limit, now);

    /* limited while the bucket has no room for one more failure */

    threshold = (limit - 1) * 1000;

    if (f->excess <= threshold) {
        ngx_shmtx_unlock(&sh->shpool->mutex);
        return NGX_OK;
    }
    wait = (ngx_msec_t) ((f->excess - threshold) * 60 / limit);

    *retry_after = (time_t) ((wait + 999) / 1000);

    if (*retry_after < 1) {
        *retry_after = 1;
    }

    c->stats.limited++;

    ngx_shmtx_unlock(&sh->shpool->mutex);

    return NGX_BUSY;
}


void
ngx_hookstream_authcache_fail_add(ngx_hookstream_shctx_t *sh,
    ngx_str_t *addr, ngx_uint_t limit, ngx_uint_t max)
{
    uint32_t                         hash;
    ngx_msec_t                       now;
    ngx_queue_t                     *q;
    ngx_rbtree_node_t               *node;
    ngx_hookstream_authcache_t      *c;
    ngx_hookstream_authfail_node_t  *f;

    c = sh->authcache;

    if (c == NULL || limit == 0 || addr->len > 16) {
        return;
    }

    now = ngx_current_msec;
    hash = ngx_crc32_short(addr->data, addr->len);

    ngx_shmtx_lock(&sh->shpool->mutex);

    ngx_hookstream_authfail_reap(c, limit, now);

    node = ngx_hookstream_authfail_find(c, addr, hash);

    if (node) {
        f = ngx_hookstream_authfail_entry(node);
        ngx_hookstream_authfail_leak(f, limit, now);

        ngx_queue_remove(&f->queue);

    } else {

        if (c->nfails >= max && !ngx_queue_empty(&c->fails_lru)) {
            /* the address that failed longest ago makes room */
            q = ngx_queue_last(&c->fails_lru);
            f = ngx_queue_data(q, ngx_hookstream_authfail_node_t, queue);

            ngx_queue_remove(q);
            ngx_rbtree_delete(&c->fails, ngx_hookstream_authfail_node(f));
            ngx_slab_free_locked(c->shpool, ngx_hookstream_authfail_node(f));
            c->nfails--;
        }

        node = ngx_hookstream_authcache_alloc(sh,
                                             NGX_HOOKSTREAM_AUTHFAIL_NODE_SIZE);

        if (node == NULL && !ngx_queue_empty(&c->fails_lru)) {
            q = ngx_queue_last(&c->fails_lru);
            f = ngx_queue_data(q, ngx_hookstream_authfail_node_t, queue);

            ngx_queue_remove(q);
            ngx_rbtree_delete(&c->fails, ngx_hookstream_authfail_node(f));
            ngx_slab_free_locked(c->shpool, ngx_hookstream_authfail_node(f));
            c->nfails--;

            node = ngx_hookstream_authcache_alloc(sh,
                                            NGX_HOOKSTREAM_AUTHFAIL_NODE_SIZE);
        }

        if (node == NULL) {
            c->stats.nomem++;
            ngx_shmtx_unlock(&sh->shpool->mutex);
            return;
        }

        node->key = hash;

        f = ngx_hookstream_authfail_entry(node);

        f->len = (u_char) addr->len;
        f->excess = 0;
        f->last = now;
        ngx_memcpy(f->addr, addr->data, addr->len);

        ngx_rbtree_insert(&c->fails, node);
        c->nfails++;
    }

    f->excess += 1000;

    if (f->excess > limit * 1000) {
        f->excess = limit * 1000;
    }

    ngx_queue_insert_head(&c->fails_lru, &f->queue);

    c->stats.failures++;

    ngx_shmtx_unlock(&sh->shpool->mutex);
}


void
ngx_hookstream_authcache_stats(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_authcache_stats_t *st)
{
    ngx_hookstream_authcache_t  *c;

    c = sh->authcache;

    if (c == NULL) {
        ngx_memzero(st, sizeof(ngx_hookstream_authcache_stats_t));
        return;
    }

    ngx_shmtx_lock(&sh->shpool->mutex);

    *st = c->stats;
    st->entries = c->count;
    st->addresses = c->nfails;

    ngx_shmtx_unlock(&sh->shpool->mutex);
}


static void
ngx_hookstream_authcache_result(ngx_hookstream_authcache_node_t *e,
    ngx_hookstream_authres_t *res)
{
    res->state = e->state;
    res->sources = e->sources;
    res->status = (e->flags & NGX_HOOKSTREAM_AUTHCACHE_FORBIDDEN)
                  ? NGX_HTTP_FORBIDDEN : NGX_HTTP_UNAUTHORIZED;
    ngx_memcpy(res->org, e->org, NGX_HOOKSTREAM_AUTHCACHE_ID_LEN);
}


/* the tree: the first bytes of the hash, then the rest of the key */

static void
ngx_hookstream_authcache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t  **p;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            p = (ngx_hookstream_authcache_cmp(
                     ngx_hookstream_authcache_entry(node),
                     ngx_hookstream_authcache_entry(temp))
                 < 0)
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


static ngx_int_t
ngx_hookstream_authcache_cmp(ngx_hookstream_authcache_node_t *a,
    ngx_hookstream_authcache_node_t *b)
{
    ngx_int_t  rc;

    rc = ngx_memcmp(a->rest, b->rest, NGX_HOOKSTREAM_AUTHCACHE_REST);
    if (rc != 0) {
        return rc;
    }

    if (a->kind != b->kind) {
        return (ngx_int_t) a->kind - (ngx_int_t) b->kind;
    }

    rc = (ngx_int_t) (a->flags & NGX_HOOKSTREAM_AUTHCACHE_HAS_SOURCE)
         - (ngx_int_t) (b->flags & NGX_HOOKSTREAM_AUTHCACHE_HAS_SOURCE);
    if (rc != 0) {
        return rc;
    }

    return ngx_memcmp(a->source, b->source, NGX_HOOKSTREAM_AUTHCACHE_ID_LEN);
}


/* a key laid out as an entry, for comparisons and new entries */

static void
ngx_hookstream_authcache_fill(ngx_rbtree_node_t *node,
    ngx_hookstream_authkey_t *key)
{
    ngx_hookstream_authcache_node_t  *e;

    e = ngx_hookstream_authcache_entry(node);

    ngx_memcpy(&node->key, key->hash, NGX_HOOKSTREAM_AUTHCACHE_TREE_KEY);
    ngx_memcpy(e->rest, key->hash + NGX_HOOKSTREAM_AUTHCACHE_TREE_KEY,
               NGX_HOOKSTREAM_AUTHCACHE_REST);

    e->kind = (u_char) key->kind;
    e->flags = key->has_source ? NGX_HOOKSTREAM_AUTHCACHE_HAS_SOURCE : 0;

    if (key->has_source) {
        ngx_memcpy(e->source, key->source, NGX_HOOKSTREAM_AUTHCACHE_ID_LEN);

    } else {
        ngx_memzero(e->source, NGX_HOOKSTREAM_AUTHCACHE_ID_LEN);
    }
}


static ngx_rbtree_node_t *
ngx_hookstream_authcache_find(ngx_hookstream_authcache_t *c,
    ngx_hookstream_authkey_t *key)
{
    ngx_int_t                          rc;
    ngx_rbtree_node_t                 *node, *sentinel, *probe;
    ngx_hookstream_authcache_probe_t   buf;

    probe = &buf.node;
    ngx_hookstream_authcache_fill(probe, key);

    node = c->rbtree.root;
    sentinel = c->rbtree.sentinel;

    while (node != sentinel) {

        if (probe->key != node->key) {
            node = (probe->key < node->key) ? node->left : node->right;
            continue;
        }

        rc = ngx_hookstream_authcache_cmp(
                 ngx_hookstream_authcache_entry(probe),
                 ngx_hookstream_authcache_entry(node));

        if (rc == 0) {
            return node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* a new entry, linked but with no state yet; under the lock */

static ngx_rbtree_node_t *
ngx_hookstream_authcache_create(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_authkey_t *key, ngx_uint_t max)
{
    ngx_uint_t                        i;
    ngx_queue_t                      *q;
    ngx_rbtree_node_t                *node;
    ngx_hookstream_authcache_t       *c;
    ngx_hookstream_authcache_node_t  *e;

    c = sh->authcache;

    while (c->count >= max && !ngx_queue_empty(&c->lru)) {
        q = ngx_queue_last(&c->lru);
        e = ngx_queue_data(q, ngx_hookstream_authcache_node_t, queue);

        ngx_hookstream_authcache_delete(c, ngx_hookstream_authcache_node(e));
        c->stats.evicted++;
    }

    node = NULL;

    for (i = 0; i < 8; i++) {
        node = ngx_hookstream_authcache_alloc(sh,
                                            NGX_HOOKSTREAM_AUTHCACHE_NODE_SIZE);
        if (node) {
            break;
        }

        /* the slab is full: the least recently used entries make room */

        if (ngx_queue_empty(&c->lru)) {
            return NULL;
        }

        q = ngx_queue_last(&c->lru);
        e = ngx_queue_data(q, ngx_hookstream_authcache_node_t, queue);

        ngx_hookstream_authcache_delete(c, ngx_hookstream_authcache_node(e));
        c->stats.evicted++;
    }

    if (node == NULL) {
        return NULL;
    }

    ngx_memzero(node, NGX_HOOKSTREAM_AUTHCACHE_NODE_SIZE);
    ngx_hookstream_authcache_fill(node, key);

    e = ngx_hookstream_authcache_entry(node);
    ngx_queue_insert_head(&c->lru, &e->queue);

    ngx_rbtree_insert(&c->rbtree, node);
    c->count++;

    return node;
}


static void
ngx_hookstream_authcache_delete(ngx_hookstream_authcache_t *c,
    ngx_rbtree_node_t *node)
{
    ngx_hookstream_authcache_node_t  *e;

    e = ngx_hookstream_authcache_entry(node);

    ngx_queue_remove(&e->queue);
    ngx_rbtree_delete(&c->rbtree, node);
    ngx_slab_free_locked(c->shpool, node);

    c->count--;
}


/* expired entries at the back of the queue go first */

static void
ngx_hookstream_authcache_reap(ngx_hookstream_authcache_t *c, ngx_msec_t now)
{
    ngx_uint_t                        i;
    ngx_queue_t                      *q;
    ngx_hookstream_authcache_node_t  *e;

    for (i = 0; i < NGX_HOOKSTREAM_AUTHCACHE_REAP; i++) {

        if (ngx_queue_empty(&c->lru)) {
            return;
        }

        q = ngx_queue_last(&c->lru);
        e = ngx_queue_data(q, ngx_hookstream_authcache_node_t, queue);

        if ((ngx_msec_int_t) (e->expire - now) > 0) {
            return;
        }

        ngx_hookstream_authcache_delete(c, ngx_hookstream_authcache_node(e));
    }
}


/*
 * A zone allocation under the lock.  Running out of zone memory is
 * expected here and handled by eviction, so the slab's own "no memory"
 * line (at crit) is not logged for it.
 */

static void *
ngx_hookstream_authcache_alloc(ngx_hookstream_shctx_t *sh, size_t size)
{
    void        *p;
    ngx_uint_t   log_nomem;

    log_nomem = sh->shpool->log_nomem;
    sh->shpool->log_nomem = 0;

    p = ngx_slab_alloc_locked(sh->shpool, size);

    sh->shpool->log_nomem = log_nomem;

    return p;
}


/* failed credentials per client address */

static void
ngx_hookstream_authfail_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t               **p;
    ngx_hookstream_authfail_node_t   *f, *ft;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            f = ngx_hookstream_authfail_entry(node);
            ft = ngx_hookstream_authfail_entry(temp);

            p = (ngx_memn2cmp(f->addr, ft->addr, f->len, ft->len) < 0)
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


static ngx_rbtree_node_t *
ngx_hookstream_authfail_find(ngx_hookstream_authcache_t *c, ngx_str_t *addr,
    uint32_t hash)
{
    ngx_int_t                        rc;
    ngx_rbtree_node_t               *node, *sentinel;
    ngx_hookstream_authfail_node_t  *f;

    node = c->fails.root;
    sentinel = c->fails.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        f = ngx_hookstream_authfail_entry(node);

        rc = ngx_memn2cmp(addr->data, f->addr, addr->len, f->len);

        if (rc == 0) {
            return node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* the bucket drains "limit" failures a minute */

static void
ngx_hookstream_authfail_leak(ngx_hookstream_authfail_node_t *f,
    ngx_uint_t limit, ngx_msec_t now)
{
    ngx_uint_t  drained;
    ngx_msec_t  elapsed;

    elapsed = now - f->last;

    if ((ngx_msec_int_t) elapsed <= 0) {
        return;
    }

    /* a full bucket drains in a minute: no need to count further */
    elapsed = ngx_min(elapsed, 120000);

    drained = (ngx_uint_t) elapsed * limit / 60;

    f->excess = (f->excess > drained) ? f->excess - drained : 0;
    f->last = now;
}


static void
ngx_hookstream_authfail_reap(ngx_hookstream_authcache_t *c, ngx_uint_t limit,
    ngx_msec_t now)
{
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_hookstream_authfail_node_t  *f;

    for (i = 0; i < NGX_HOOKSTREAM_AUTHCACHE_REAP; i++) {

        if (ngx_queue_empty(&c->fails_lru)) {
            return;
        }

        q = ngx_queue_last(&c->fails_lru);
        f = ngx_queue_data(q, ngx_hookstream_authfail_node_t, queue);

        ngx_hookstream_authfail_leak(f, limit, now);

        if (f->excess) {
            return;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&c->fails, ngx_hookstream_authfail_node(f));
        ngx_slab_free_locked(c->shpool, ngx_hookstream_authfail_node(f));
        c->nfails--;
    }
}
