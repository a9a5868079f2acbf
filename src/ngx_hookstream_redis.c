
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"
#include <hiredis/hiredis.h>
#include <hiredis/async.h>


/*
 * hiredis on nginx's event loop.  Each connection's descriptor gets an
 * nginx connection whose read and write handlers call
 * redisAsyncHandleRead/Write; hiredis's addRead/delRead/addWrite/delWrite
 * hooks add and delete level-triggered events (hiredis reads at most one
 * buffer per call, so an edge-triggered event could strand a reply), and
 * its cleanup hook, called before it closes the descriptor, gives the
 * nginx connection back and schedules the reconnect.
 *
 * Keys: "<prefix>stream:<org>" (one stream per org), the channel
 * "<prefix>bus" (every host), and the journal's stream.  See
 * docs/broker.md, "Past one host".
 */


#define NGX_HOOKSTREAM_REDIS_BACKOFF_MIN   100
#define NGX_HOOKSTREAM_REDIS_BACKOFF_MAX   5000
#define NGX_HOOKSTREAM_REDIS_HELD_MAX      65536
#define NGX_HOOKSTREAM_REDIS_HELD_BYTES    (64 * 1024 * 1024)


typedef struct ngx_hookstream_redis_s  ngx_hookstream_redis_t;


typedef struct {
    redisAsyncContext              *ac;
    ngx_connection_t               *c;
    ngx_hookstream_redis_t         *rd;
    ngx_event_t                     retry;
    ngx_event_t                     timeout;
    ngx_msec_t                      backoff;
    const char                     *name;
    unsigned                        ready:1;
    unsigned                        subscriber:1;
    unsigned                        tried:1;
    unsigned                        failing:1;
} ngx_hookstream_redis_conn_t;


/* a message of the channel held while a gap is read back */
typedef struct {
    ngx_queue_t                     queue;
    size_t                          len;
    u_char                          data[1];
} ngx_hookstream_redis_held_t;


struct ngx_hookstream_redis_s {
    ngx_hookstream_redis_conf_t    *conf;
    ngx_hookstream_shctx_t         *sh;
    ngx_log_t                      *log;

    ngx_hookstream_redis_conn_t     cmd;
    ngx_hookstream_redis_conn_t     sub;

    ngx_str_t                       bus;
    u_char                          sha[41];

    /* the subscriber's recovery after (re)subscribing */
    ngx_queue_t                     held;
    ngx_uint_t                      nheld;
    size_t                          held_bytes;
    ngx_uint_t                      recovering;   /* 1: waits for the
                                                     command connection;
                                                     2: TIME sent; 3: TIME
                                                     and XREAD sent */
    ngx_uint_t                      overflow;
    uintptr_t                       round;
    ngx_hookstream_rid_t            floor;

    time_t                          refused_log;

    ngx_hookstream_redis_proc_t    *proc;      /* in the zone's stats */
    ngx_hookstream_redis_proc_t     noproc;    /* when the table is full */

    unsigned                        subscribed:1;
    unsigned                        exiting:1;
};


/* a read of a stream for a subscriber */
typedef struct ngx_hookstream_redis_read_s  ngx_hookstream_redis_read_t;

struct ngx_hookstream_redis_read_s {
    ngx_hookstream_sub_t           *sub;
    ngx_hookstream_redis_read_t    *next;
    ngx_hookstream_rid_t            from;
    uint64_t                        gen;
    ngx_uint_t                      replay;
    ngx_str_t                       topic;
    ngx_str_t                       channel;  /* of a replay */
};


/* EVALSHA, its sha, numkeys, then the script's keys and arguments */
#define NGX_HOOKSTREAM_REDIS_PUB_ARGS  14

/*
 * Commands not yet written to a Redis that stopped reading (a partition
 * that TCP has not given up on yet) are refused past this many bytes:
 * events get not_stored, messages stay on their host.
 */
#define NGX_HOOKSTREAM_REDIS_OBUF_MAX  (32 * 1024 * 1024)


typedef struct {
    ngx_hookstream_journal_req_t   *req;
    ngx_int_t                       rc;
    ngx_uint_t                      wait;     /* a WAIT follows */
} ngx_hookstream_redis_append_t;


/* a run of the script: its arguments kept until answered */
typedef struct {
    ngx_uint_t                      argc;
    const char                     *argv[NGX_HOOKSTREAM_REDIS_PUB_ARGS];
    size_t                          lens[NGX_HOOKSTREAM_REDIS_PUB_ARGS];
    ngx_log_t                      *log;
    ngx_hookstream_redis_append_t  *append;   /* with a journal record */
} ngx_hookstream_redis_pub_t;


typedef struct {
    ngx_hookstream_redis_sync_pt    handler;
    void                           *data;
} ngx_hookstream_redis_sync_t;


static ngx_int_t ngx_hookstream_redis_mask(ngx_pool_t *pool, ngx_str_t *url,
    ngx_str_t *display);
static void ngx_hookstream_redis_proc_claim(ngx_hookstream_redis_t *rd);
static ngx_uint_t ngx_hookstream_redis_proc_alive(ngx_pid_t pid);
static void ngx_hookstream_redis_connect(ngx_hookstream_redis_conn_t *rc);
static void ngx_hookstream_redis_retry_handler(ngx_event_t *ev);
static void ngx_hookstream_redis_timeout_handler(ngx_event_t *ev);
static void ngx_hookstream_redis_schedule(ngx_hookstream_redis_conn_t *rc);
static void ngx_hookstream_redis_read_handler(ngx_event_t *ev);
static void ngx_hookstream_redis_write_handler(ngx_event_t *ev);
static void ngx_hookstream_redis_add_read(void *data);
static void ngx_hookstream_redis_del_read(void *data);
static void ngx_hookstream_redis_add_write(void *data);
static void ngx_hookstream_redis_del_write(void *data);
static void ngx_hookstream_redis_cleanup(void *data);
static void ngx_hookstream_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_hookstream_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_hookstream_redis_up(ngx_hookstream_redis_conn_t *rc);
static void ngx_hookstream_redis_check_reply(redisAsyncContext *ac,
    void *r, void *data);
static void ngx_hookstream_redis_script_loaded(redisAsyncContext *ac,
    void *r, void *data);
static void ngx_hookstream_redis_error(ngx_hookstream_redis_t *rd,
    ngx_uint_t level, const char *what, const char *err, size_t len);
static void ngx_hookstream_redis_conn_error(ngx_hookstream_redis_conn_t *rc,
    const char *what, const char *err, size_t len);

static ngx_uint_t ngx_hookstream_redis_open(ngx_hookstream_redis_t *rd);
static ngx_int_t ngx_hookstream_redis_eval(ngx_hookstream_redis_t *rd,
    ngx_hookstream_pub_t *pub, ngx_uint_t count, ngx_str_t *record,
    u_char *event_id, ngx_hookstream_redis_append_t *append, ngx_log_t *log);
static ngx_uint_t ngx_hookstream_redis_has_lf(ngx_str_t *s);
static void ngx_hookstream_redis_published(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_hookstream_redis_synced(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_hookstream_redis_message(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_hookstream_redis_apply(ngx_hookstream_redis_t *rd,
    u_char *p, size_t len);
static ngx_int_t ngx_hookstream_redis_store(ngx_hookstream_redis_t *rd,
    ngx_str_t *topic, redisReply *entry);
static void ngx_hookstream_redis_recover(ngx_hookstream_redis_t *rd);
static void ngx_hookstream_redis_recover_time(redisAsyncContext *ac,
    void *r, void *data);
static void ngx_hookstream_redis_recover_read(redisAsyncContext *ac,
    void *r, void *data);
static void ngx_hookstream_redis_recover_done(ngx_hookstream_redis_t *rd);
static void ngx_hookstream_redis_drop_held(ngx_hookstream_redis_t *rd);

static ngx_int_t ngx_hookstream_redis_read(ngx_hookstream_redis_read_t *rr);
static void ngx_hookstream_redis_read_done(redisAsyncContext *ac, void *r,
    void *data);
static ngx_int_t ngx_hookstream_redis_read_check(redisReply *info,
    ngx_hookstream_rid_t *from);
static void ngx_hookstream_redis_read_free(ngx_hookstream_redis_read_t *rr);
static ngx_int_t ngx_hookstream_redis_entry(redisReply *entry,
    ngx_hookstream_rid_t *rid, ngx_hookstream_pub_t *pub);
static ngx_int_t ngx_hookstream_redis_deliver(ngx_hookstream_sub_t *sub,
    ngx_hookstream_pub_t *pub, ngx_hookstream_rid_t *rid,
    ngx_str_t *replay);

static void ngx_hookstream_redis_appended(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_hookstream_redis_waited(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_hookstream_redis_append_done(
    ngx_hookstream_redis_append_t *a);


/*
 * XADD and PUBLISH in one step: no host can see a message that is not
 * in the stream, and the channel's order is the stream's order.  The
 * channel's message: topic, id, type, channel, key, each ended by a
 * line feed (none of them can hold one), then the data.  With a second
 * key, an event's record is added to the journal's stream first, so an
 * event is stored and published together or not at all.
 */

static char  ngx_hookstream_redis_script[] =
    "if #KEYS == 2 then\n"
    "  redis.call('XADD', KEYS[2], '*', 'id', ARGV[8], 'record', ARGV[9])\n"
    "end\n"
    "local id\n"
    "if ARGV[1] ~= '0' then\n"
    "  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',\n"
    "    'type', ARGV[2], 'channel', ARGV[3], 'key', ARGV[4],\n"
    "    'data', ARGV[5])\n"
    "else\n"
    "  id = redis.call('XADD', KEYS[1], '*',\n"
    "    'type', ARGV[2], 'channel', ARGV[3], 'key', ARGV[4],\n"
    "    'data', ARGV[5])\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[6], ARGV[7] .. '\\n' .. id .. '\\n' ..\n"
    "  ARGV[2] .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4] .. '\\n' .. ARGV[5])\n"
    "return id\n";


/*
 * Per-process state, set in init_process to memory of the cycle's pool
 * and cleared at exit, as ngx_hookstream_ipc and ngx_hookstream_worker
 * are (docs/broker.md, "Per-process state").
 */
static ngx_hookstream_redis_t  *ngx_hookstream_redis;


char *
ngx_hookstream_redis_parse_url(ngx_conf_t *cf,
    ngx_hookstream_redis_conf_t *rcf, ngx_str_t *url)
{
    u_char     *p, *last, *at, *colon, *q, *slash;
    size_t      len;
    ngx_int_t   n;
    ngx_str_t   arg;
    ngx_url_t   u;

    rcf->url = *url;

    if (ngx_hookstream_redis_mask(cf->pool, url, &rcf->display) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    p = url->data;
    last = p + url->len;

    if (url->len > 8 && ngx_strncmp(p, "redis://", 8) == 0) {
        p += 8;

        slash = ngx_strlchr(p, last, '/');
        if (slash == NULL) {
            slash = last;
        }

        at = NULL;

        for (q = p; q < slash; q++) {
            if (*q == '@') {
                at = q;
            }
        }

        if (at) {
            colon = ngx_strlchr(p, at, ':');

            if (colon == NULL) {
                goto invalid;
            }

            rcf->user.data = p;
            rcf->user.len = colon - p;
            rcf->password.data = colon + 1;
            rcf->password.len = at - colon - 1;
            p = at + 1;
        }

        if (slash < last) {
            n = ngx_atoi(slash + 1, last - slash - 1);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rcf->db = n;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url.data = p;
        u.url.len = slash - p;
        u.default_port = 6379;

        if (u.url.len == 0) {
            goto invalid;
        }

        /* resolved here, in the master: no DNS query from a worker */

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid Redis URL \"%V\": %s",
                               &rcf->display,
                               u.err ? u.err : "host not found");
            return NGX_CONF_ERROR;
        }

        rcf->host = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (rcf->host == NULL) {
            return NGX_CONF_ERROR;
        }

        len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                            rcf->host, NGX_SOCKADDR_STRLEN, 0);
        rcf->host[len] = '\0';

        /* hiredis takes an IPv6 address without brackets */

        if (rcf->host[0] == '[') {
            rcf->host[len - 1] = '\0';
            rcf->host++;
        }

        rcf->port = u.port;

        return NGX_CONF_OK;
    }

    if (url->len > 7 && ngx_strncmp(p, "unix://", 7) == 0) {
        p += 7;

    } else if (url->len > 13 && ngx_strncmp(p, "redis+unix://", 13) == 0) {
        p += 13;

    } else {
        goto invalid;
    }

    q = ngx_strlchr(p, last, '?');
    if (q == NULL) {
        q = last;
    }

    if (q == p || *p != '/') {
        goto invalid;
    }

    rcf->path = ngx_pnalloc(cf->pool, q - p + 1);
    if (rcf->path == NULL) {
        return NGX_CONF_ERROR;
    }

    *ngx_cpymem(rcf->path, p, q - p) = '\0';

    /* ?db=N&password=P */

    while (q < last) {
        p = q + 1;
        q = ngx_strlchr(p, last, '&');
        if (q == NULL) {
            q = last;
        }

        arg.data = p;
        arg.len = q - p;

        if (arg.len > 3 && ngx_strncmp(arg.data, "db=", 3) == 0) {
            n = ngx_atoi(arg.data + 3, arg.len - 3);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rcf->db = n;

        } else if (arg.len > 9 && ngx_strncmp(arg.data, "password=", 9) == 0)
        {
            rcf->password.data = arg.data + 9;
            rcf->password.len = arg.len - 9;

        } else {
            goto invalid;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid Redis URL \"%V\": expected "
                       "redis://[[user]:password@]host[:port][/db] or "
                       "unix:///path[?db=N&password=P]", &rcf->display);

    return NGX_CONF_ERROR;
}


/* the URL with its password, if any, as "***": logs never show it */

static ngx_int_t
ngx_hookstream_redis_mask(ngx_pool_t *pool, ngx_str_t *url,
    ngx_str_t *display)
{
    u_char  *p, *last, *start, *end, *at;

    p = url->data;
    last = p + url->len;
    start = NULL;
    end = NULL;

    if (url->len > 8 && ngx_strncmp(p, "redis://", 8) == 0) {
        p += 8;
        end = ngx_strlchr(p, last, '/');
        at = NULL;

        for ( /* void */ ; p < (end ? end : last); p++) {
            if (*p == '@') {
                at = p;
            }
        }

        if (at) {
            start = ngx_strlchr(url->data + 8, at, ':');
            end = at;
        }

        if (start) {
            start++;
        }

    } else {
        start = ngx_strlcasestrn(p, last, (u_char *) "password=", 9 - 1);

        if (start) {
            start += 9;
            end = ngx_strlchr(start, last, '&');

            if (end == NULL) {
                end = last;
            }
        }
    }

    if (start == NULL || end == NULL || end <= start) {
        *display = *url;
        return NGX_OK;
    }

    display->len = url->len - (end - start) + 3;
    display->data = ngx_pnalloc(pool, display->len);
    if (display->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(display->data, url->data, start - url->data);
    p = ngx_cpymem(p, "***", 3);
    ngx_memcpy(p, end, last - end);

    return NGX_OK;
}


ngx_int_t
ngx_hookstream_redis_init_process(ngx_cycle_t *cycle,
    ngx_hookstream_redis_conf_t *rcf, ngx_hookstream_shctx_t *sh)
{
    ngx_hookstream_redis_t  *rd;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        /* the cache manager and loader have no use for Redis */
        return NGX_OK;
    }

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_hookstream_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->conf = rcf;
    rd->sh = sh;
    rd->log = cycle->log;

    rd->bus.len = rcf->prefix.len + sizeof("bus") - 1;
    rd->bus.data = ngx_pnalloc(cycle->pool, rd->bus.len);
    if (rd->bus.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(rd->bus.data, "%Vbus", &rcf->prefix);

    ngx_queue_init(&rd->held);

    ngx_hookstream_redis_proc_claim(rd);

    rd->cmd.rd = rd;
    rd->cmd.name = "command";
    rd->sub.rd = rd;
    rd->sub.name = "subscriber";
    rd->sub.subscriber = 1;

    rd->cmd.retry.handler = ngx_hookstream_redis_retry_handler;
    rd->cmd.retry.data = &rd->cmd;
    rd->cmd.retry.log = cycle->log;
    rd->cmd.retry.cancelable = 1;
    rd->cmd.timeout.handler = ngx_hookstream_redis_timeout_handler;
    rd->cmd.timeout.data = &rd->cmd;
    rd->cmd.timeout.log = cycle->log;
    rd->cmd.timeout.cancelable = 1;

    rd->sub.retry = rd->cmd.retry;
    rd->sub.retry.data = &rd->sub;
    rd->sub.timeout = rd->cmd.timeout;
    rd->sub.timeout.data = &rd->sub;

    ngx_hookstream_redis = rd;

    ngx_hookstream_redis_connect(&rd->cmd);

    /* one subscriber per host: the worker of slot 0 (during a reload an
     * old and a new one both are, and the zone keeps one copy) */

    if (ngx_worker == 0) {
        ngx_hookstream_redis_connect(&rd->sub);
    }

    return NGX_OK;
}


void
ngx_hookstream_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_hookstream_redis_t  *rd;

    rd = ngx_hookstream_redis;

    if (rd == NULL) {
        return;
    }

    rd->exiting = 1;

    if (rd->cmd.ac) {
        redisAsyncFree(rd->cmd.ac);
    }

    if (rd->sub.ac) {
        redisAsyncFree(rd->sub.ac);
    }

    ngx_hookstream_redis_drop_held(rd);

    if (rd->proc != &rd->noproc) {
        rd->proc->connected = 0;
        rd->proc->subscribed = 0;
        ngx_memory_barrier();
        rd->proc->pid = 0;
    }

    ngx_hookstream_redis = NULL;
}


ngx_uint_t
ngx_hookstream_redis_topic(ngx_str_t *topic)
{
    return ngx_hookstream_redis != NULL
           && topic->len > sizeof("org_") - 1
           && ngx_strncmp(topic->data, "org_", sizeof("org_") - 1) == 0;
}


/*
 * An entry of the zone's table for this process's gauges: a free one,
 * or one of a process that is gone (a crashed worker gives nothing
 * back, as in the broker).
 */

static void
ngx_hookstream_redis_proc_claim(ngx_hookstream_redis_t *rd)
{
    ngx_uint_t                    i;
    ngx_atomic_uint_t             pid;
    ngx_hookstream_redis_proc_t  *pr;

    for (i = 0; i < NGX_HOOKSTREAM_REDIS_PROCS; i++) {
        pr = &rd->sh->stats->redis_procs[i];
        pid = pr->pid;

        if (pid && ngx_hookstream_redis_proc_alive((ngx_pid_t) pid)) {
            continue;
        }

        if (ngx_atomic_cmp_set(&pr->pid, pid, 0)) {
            pr->connected = 0;
            pr->subscribed = 0;

            if (ngx_atomic_cmp_set(&pr->pid, 0, (ngx_atomic_uint_t) ngx_pid))
            {
                rd->proc = pr;
                return;
            }
        }
    }

    ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                  "hookstream redis: more than %d processes, this one's "
                  "connections are not in the status",
                  NGX_HOOKSTREAM_REDIS_PROCS);

    rd->proc = &rd->noproc;
}


static ngx_uint_t
ngx_hookstream_redis_proc_alive(ngx_pid_t pid)
{
    return pid == ngx_pid || kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


/* connections */


static void
ngx_hookstream_redis_connect(ngx_hookstream_redis_conn_t *rc)
{
    int                           n;
    const char                   *argv[3];
    size_t                        lens[3];
    u_char                        db[NGX_INT_T_LEN];
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_hookstream_redis_t       *rd;
    ngx_hookstream_redis_conf_t  *rcf;

    rd = rc->rd;
    rcf = rd->conf;

    if (rc->tried) {
        ngx_hookstream_stat_add(rd->sh, redis_reconnects, 1);
    }

    rc->tried = 1;

    if (rcf->path) {
        ac = redisAsyncConnectUnix((char *) rcf->path);

    } else {
        ac = redisAsyncConnect((char *) rcf->host, rcf->port);
    }

    if (ac == NULL) {
        ngx_hookstream_redis_conn_error(rc, rc->name, "out of memory", 13);
        ngx_hookstream_redis_schedule(rc);
        return;
    }

    if (ac->err) {
        ngx_hookstream_redis_conn_error(rc, rc->name, ac->errstr,
                                        ngx_strlen(ac->errstr));
        redisAsyncFree(ac);
        ngx_hookstream_redis_schedule(rc);
        return;
    }

    if (rcf->path == NULL) {
        /*
         * TCP keepalive (hiredis: idle 15 s, then probes): a Redis that
         * went silent without a reset, a partition, is noticed even by a
         * connection with nothing to send, such as the subscriber.
         */
        (void) redisEnableKeepAlive(&ac->c);
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_hookstream_redis_schedule(rc);
        return;
    }

    c->data = rc;
    c->read->handler = ngx_hookstream_redis_read_handler;
    c->write->handler = ngx_hookstream_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    rc->ac = ac;
    rc->c = c;

    ac->data = rc;
    ac->ev.data = rc;
    ac->ev.addRead = ngx_hookstream_redis_add_read;
    ac->ev.delRead = ngx_hookstream_redis_del_read;
    ac->ev.addWrite = ngx_hookstream_redis_add_write;
    ac->ev.delWrite = ngx_hookstream_redis_del_write;
    ac->ev.cleanup = ngx_hookstream_redis_cleanup;

    (void) redisAsyncSetConnectCallback(ac, ngx_hookstream_redis_on_connect);
    (void) redisAsyncSetDisconnectCallback(ac,
                                      ngx_hookstream_redis_on_disconnect);

    /* the connect completes on the first write event */

    ngx_hookstream_redis_add_read(rc);
    ngx_hookstream_redis_add_write(rc);

    ngx_add_timer(&rc->timeout, rcf->connect_timeout);

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, rd->log, 0,
                   "hookstream redis %s connection fd:%d",
                   rc->name, ac->c.fd);

    /* queued now, sent once connected, answered in this order */

    if (rcf->password.len) {
        argv[0] = "AUTH";
        lens[0] = 4;
        n = 1;

        if (rcf->user.len) {
            argv[n] = (char *) rcf->user.data;
            lens[n++] = rcf->user.len;
        }

        argv[n] = (char *) rcf->password.data;
        lens[n++] = rcf->password.len;

        (void) redisAsyncCommandArgv(ac, ngx_hookstream_redis_check_reply,
                                     (void *) "AUTH", n, argv, lens);
    }

    if (rcf->db) {
        argv[0] = "SELECT";
        lens[0] = 6;
        argv[1] = (char *) db;
        lens[1] = ngx_sprintf(db, "%ui", rcf->db) - db;

        (void) redisAsyncCommandArgv(ac, ngx_hookstream_redis_check_reply,
                                     (void *) "SELECT", 2, argv, lens);
    }

    if (rc->subscriber) {
        argv[0] = "SUBSCRIBE";
        lens[0] = 9;
        argv[1] = (char *) rd->bus.data;
        lens[1] = rd->bus.len;

        (void) redisAsyncCommandArgv(ac, ngx_hookstream_redis_message, rd,
                                     2, argv, lens);

    } else {
        argv[0] = "SCRIPT";
        lens[0] = 6;
        argv[1] = "LOAD";
        lens[1] = 4;
        argv[2] = ngx_hookstream_redis_script;
        lens[2] = sizeof(ngx_hookstream_redis_script) - 1;

        (void) redisAsyncCommandArgv(ac, ngx_hookstream_redis_script_loaded,
                                     rd, 3, argv, lens);
    }
}


static void
ngx_hookstream_redis_schedule(ngx_hookstream_redis_conn_t *rc)
{
    ngx_msec_t  delay;

    if (rc->rd->exiting || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (rc->backoff == 0) {
        rc->backoff = NGX_HOOKSTREAM_REDIS_BACKOFF_MIN;

    } else {
        rc->backoff = ngx_min(rc->backoff * 2,
                              NGX_HOOKSTREAM_REDIS_BACKOFF_MAX);
    }

    /* jitter: hosts that lost Redis together do not return together */

    delay = rc->backoff / 2 + (ngx_msec_t) ngx_random() % (rc->backoff / 2);

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, rc->rd->log, 0,
                   "hookstream redis %s reconnect in %M ms",
                   rc->name, delay);

    if (!rc->retry.timer_set) {
        ngx_add_timer(&rc->retry, delay);
    }
}


static void
ngx_hookstream_redis_retry_handler(ngx_event_t *ev)
{
    ngx_hookstream_redis_conn_t  *rc;

    rc = ev->data;

    if (rc->ac == NULL && !rc->rd->exiting) {
        ngx_hookstream_redis_connect(rc);
    }
}


static void
ngx_hookstream_redis_timeout_handler(ngx_event_t *ev)
{
    ngx_hookstream_redis_conn_t  *rc;

    rc = ev->data;

    if (rc->ac == NULL || rc->ready) {
        return;
    }

    ngx_hookstream_redis_conn_error(rc, rc->name, "connect timed out", 17);

    redisAsyncFree(rc->ac);
}


static void
ngx_hookstream_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_hookstream_redis_conn_t  *rc;

    c = ev->data;
    rc = c->data;

    if (rc->ac) {
        redisAsyncHandleRead(rc->ac);
    }
}


static void
ngx_hookstream_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_hookstream_redis_conn_t  *rc;

    c = ev->data;
    rc = c->data;

    if (rc->ac) {
        redisAsyncHandleWrite(rc->ac);
    }
}


static void
ngx_hookstream_redis_add_read(void *data)
{
    ngx_hookstream_redis_conn_t *rc = data;

    if (rc->c && !rc->c->read->active) {
        (void) ngx_add_event(rc->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_hookstream_redis_del_read(void *data)
{
    ngx_hookstream_redis_conn_t *rc = data;

    if (rc->c && rc->c->read->active) {
        (void) ngx_del_event(rc->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_hookstream_redis_add_write(void *data)
{
    ngx_hookstream_redis_conn_t *rc = data;

    if (rc->c && !rc->c->write->active) {
        (void) ngx_add_event(rc->c->write, NGX_WRITE_EVENT,
                             NGX_LEVEL_EVENT);
    }
}


static void
ngx_hookstream_redis_del_write(void *data)
{
    ngx_hookstream_redis_conn_t *rc = data;

    if (rc->c && rc->c->write->active) {
        (void) ngx_del_event(rc->c->write, NGX_WRITE_EVENT,
                             NGX_LEVEL_EVENT);
    }
}


/* hiredis lets go of the context: called before the descriptor closes */

static void
ngx_hookstream_redis_cleanup(void *data)
{
    ngx_hookstream_redis_conn_t *rc = data;

    ngx_connection_t        *c;
    ngx_hookstream_redis_t  *rd;

    rd = rc->rd;
    c = rc->c;

    if (c) {
        ngx_hookstream_redis_del_read(rc);
        ngx_hookstream_redis_del_write(rc);

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        ngx_free_connection(c);
        c->fd = (ngx_socket_t) -1;
    }

    if (rc->timeout.timer_set) {
        ngx_del_timer(&rc->timeout);
    }

    if (rc->ready) {
        rc->ready = 0;
        (void) ngx_atomic_fetch_add(&rd->proc->connected, -1);
    }

    rc->c = NULL;
    rc->ac = NULL;

    if (rc->subscriber) {
        if (rd->subscribed) {
            rd->subscribed = 0;
            (void) ngx_atomic_fetch_add(&rd->proc->subscribed, -1);
        }

        /*
         * Until subscribed again and the gap read, this host may miss
         * messages.  Not said by a worker that exits: during a reload
         * the new worker of slot 0 is subscribed already.
         */

        if (!rd->exiting && !ngx_exiting && !ngx_quit && !ngx_terminate) {
            ngx_hookstream_broker_redis_live(rd->sh, NULL, 0);
        }

        ngx_hookstream_redis_drop_held(rd);
        rd->recovering = 0;
        rd->round++;
    }

    ngx_hookstream_redis_schedule(rc);
}


static void
ngx_hookstream_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_hookstream_redis_conn_t  *rc;

    rc = ac->data;

    if (status != REDIS_OK) {
        ngx_hookstream_redis_conn_error(rc, rc->name, ac->errstr,
                                        ngx_strlen(ac->errstr));
        return;
    }

    /* up once AUTH and SELECT went through: see ngx_hookstream_redis_up */

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, rc->rd->log, 0,
                   "hookstream redis %s connected", rc->name);
}


/*
 * The last command queued at connect answered well (SCRIPT LOAD, or
 * the SUBSCRIBE), so AUTH and SELECT did too: the connection is up.
 */

static void
ngx_hookstream_redis_up(ngx_hookstream_redis_conn_t *rc)
{
    if (rc->ready) {
        return;
    }

    if (rc->timeout.timer_set) {
        ngx_del_timer(&rc->timeout);
    }

    rc->ready = 1;
    rc->failing = 0;
    rc->backoff = 0;

    (void) ngx_atomic_fetch_add(&rc->rd->proc->connected, 1);

    ngx_log_error(NGX_LOG_NOTICE, rc->rd->log, 0,
                  "hookstream redis: %s connection to \"%V\" up",
                  rc->name, &rc->rd->conf->display);

    if (!rc->subscriber && rc->rd->recovering == 1) {
        ngx_hookstream_redis_recover(rc->rd);
    }
}


static void
ngx_hookstream_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_hookstream_redis_conn_t  *rc;

    rc = ac->data;

    if (status != REDIS_OK && !rc->rd->exiting) {
        ngx_hookstream_redis_conn_error(rc, rc->name, ac->errstr,
                                        ngx_strlen(ac->errstr));
    }
}


/* AUTH, SELECT: an error closes the connection, which is retried */

static void
ngx_hookstream_redis_check_reply(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                   *reply = r;
    ngx_hookstream_redis_conn_t  *rc;

    rc = ac->data;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    ngx_hookstream_redis_conn_error(rc, data, reply->str, reply->len);

    redisAsyncDisconnect(ac);
}


static void
ngx_hookstream_redis_script_loaded(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply              *reply = r;
    ngx_hookstream_redis_t  *rd = data;

    if (reply == NULL) {
        return;
    }

    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        ngx_hookstream_redis_error(rd, NGX_LOG_ERR, "SCRIPT LOAD",
                                   reply->str ? reply->str : "bad reply",
                                   reply->str ? reply->len : 9);

        /* not up without its script: tried again */
        redisAsyncDisconnect(ac);
        return;
    }

    ngx_memcpy(rd->sha, reply->str, 40);
    rd->sha[40] = '\0';

    ngx_hookstream_redis_up(&rd->cmd);
}


/*
 * A connection's failure: an [error] the first time, [info] while the
 * retries keep failing (the status counts them all).
 */

static void
ngx_hookstream_redis_conn_error(ngx_hookstream_redis_conn_t *rc,
    const char *what, const char *err, size_t len)
{
    ngx_hookstream_redis_error(rc->rd, rc->failing ? NGX_LOG_INFO
                                                   : NGX_LOG_ERR,
                               what, err, len);
    rc->failing = 1;
}


static void
ngx_hookstream_redis_error(ngx_hookstream_redis_t *rd, ngx_uint_t level,
    const char *what, const char *err, size_t len)
{
    u_char                  *p;
    ngx_hookstream_stats_t  *st;

    if (rd->exiting) {
        return;
    }

    ngx_log_error(level, rd->log, 0, "hookstream redis: %s: %*s (\"%V\")",
                  what, len, err, &rd->conf->display);

    st = rd->sh->stats;

    (void) ngx_atomic_fetch_add(&st->redis_errors, 1);

    ngx_shmtx_lock(&rd->sh->shpool->mutex);

    p = ngx_snprintf(st->redis_error, NGX_HOOKSTREAM_REDIS_ERROR_LEN,
                     "%s: %*s", what, len, err);
    st->redis_error_len = p - st->redis_error;
    st->redis_error_time = ngx_time();

    ngx_shmtx_unlock(&rd->sh->shpool->mutex);
}


/* publish */


ngx_int_t
ngx_hookstream_redis_publish(ngx_hookstream_pub_t *pub, ngx_uint_t count,
    ngx_log_t *log)
{
    ngx_hookstream_redis_t  *rd;

    if (!ngx_hookstream_redis_topic(&pub->topic)) {
        return NGX_DECLINED;
    }

    rd = ngx_hookstream_redis;

    if (!ngx_hookstream_redis_open(rd)
        || ngx_hookstream_redis_eval(rd, pub, count, NULL, NULL, NULL, log)
           != NGX_OK)
    {
        ngx_hookstream_stat_add(rd->sh, redis_local, 1);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the command connection is up and takes more */

static ngx_uint_t
ngx_hookstream_redis_open(ngx_hookstream_redis_t *rd)
{
    if (!rd->cmd.ready) {
        return 0;
    }

    if (sdslen(rd->cmd.ac->c.obuf) > NGX_HOOKSTREAM_REDIS_OBUF_MAX) {
        if (rd->refused_log != ngx_time()) {
            rd->refused_log = ngx_time();
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "hookstream redis: more than %uz bytes of "
                          "commands wait to be written, refusing more",
                          (size_t) NGX_HOOKSTREAM_REDIS_OBUF_MAX);
        }

        return 0;
    }

    return 1;
}


/*
 * EVALSHA of the script: the message to its org's stream and out to the
 * hosts, after the event's record to the journal's stream when there is
 * one.  Every argument is copied: after a NOSCRIPT they are sent again.
 */

static ngx_int_t
ngx_hookstream_redis_eval(ngx_hookstream_redis_t *rd,
    ngx_hookstream_pub_t *pub, ngx_uint_t count, ngx_str_t *record,
    u_char *event_id, ngx_hookstream_redis_append_t *append, ngx_log_t *log)
{
    u_char                      *p;
    size_t                       size;
    ngx_str_t                    data;
    ngx_uint_t                   i, argc;
    ngx_hookstream_redis_pub_t  *rp;
    ngx_str_t                    args[NGX_HOOKSTREAM_REDIS_PUB_ARGS];

    if (ngx_hookstream_redis_has_lf(&pub->type)
        || ngx_hookstream_redis_has_lf(&pub->channel)
        || ngx_hookstream_redis_has_lf(&pub->key))
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "hookstream redis: a line feed in a type, channel "
                      "or key");
        return NGX_ERROR;
    }

    data = pub->data;

    if (data.len == 0) {
        ngx_str_set(&data, "null");
    }

    /*
     * EVALSHA sha numkeys stream [journal] count type channel key data
     * bus topic [event_id record]
     */

    argc = record ? 14 : 11;
    i = 3;

    args[i++].len = rd->conf->prefix.len + sizeof("stream:") - 1
                    + pub->topic.len;

    if (record) {
        args[i++] = rd->conf->journal;
    }

    args[i++].len = NGX_INT_T_LEN;
    args[i++] = pub->type;
    args[i++] = pub->channel;
    args[i++] = pub->key;
    args[i++] = data;
    args[i++] = rd->bus;
    args[i++] = pub->topic;

    if (record) {
        args[i].data = event_id;
        args[i++].len = NGX_HOOKSTREAM_EVENT_ID_LEN;
        args[i++] = *record;
    }

    size = sizeof(ngx_hookstream_redis_pub_t);

    for (i = 3; i < argc; i++) {
        size += args[i].len;
    }

    rp = ngx_alloc(size, log);
    if (rp == NULL) {
        return NGX_ERROR;
    }

    rp->argc = argc;
    rp->log = rd->log;
    rp->append = append;

    p = (u_char *) rp + sizeof(ngx_hookstream_redis_pub_t);

    rp->argv[2] = record ? "2" : "1";
    rp->lens[2] = 1;

    rp->argv[3] = (char *) p;
    p = ngx_sprintf(p, "%Vstream:%V", &rd->conf->prefix, &pub->topic);
    rp->lens[3] = p - (u_char *) rp->argv[3];

    i = 4;

    if (record) {
        rp->argv[i] = (char *) p;
        rp->lens[i] = args[i].len;
        p = ngx_cpymem(p, args[i].data, args[i].len);
        i++;
    }

    rp->argv[i] = (char *) p;
    p = ngx_sprintf(p, "%ui", count);
    rp->lens[i] = p - (u_char *) rp->argv[i];

    for (i++; i < argc; i++) {
        rp->argv[i] = (char *) p;
        rp->lens[i] = args[i].len;

        if (args[i].len) {
            /* an empty key may have no data pointer at all */
            p = ngx_cpymem(p, args[i].data, args[i].len);
        }
    }

    if (rd->sha[0]) {
        rp->argv[0] = "EVALSHA";
        rp->lens[0] = 7;
        rp->argv[1] = (char *) rd->sha;
        rp->lens[1] = 40;

    } else {
        rp->argv[0] = "EVAL";
        rp->lens[0] = 4;
        rp->argv[1] = ngx_hookstream_redis_script;
        rp->lens[1] = sizeof(ngx_hookstream_redis_script) - 1;
    }

    if (redisAsyncCommandArgv(rd->cmd.ac, ngx_hookstream_redis_published, rp,
                              (int) argc, rp->argv, rp->lens)
        != REDIS_OK)
    {
        ngx_free(rp);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a line feed would break the channel's message apart */

static ngx_uint_t
ngx_hookstream_redis_has_lf(ngx_str_t *s)
{
    return s->len && ngx_strlchr(s->data, s->data + s->len, '\n') != NULL;
}


static void
ngx_hookstream_redis_published(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                     *reply = r;
    ngx_hookstream_redis_t         *rd;
    ngx_hookstream_redis_pub_t     *rp = data;
    ngx_hookstream_redis_append_t  *a;

    rd = ngx_hookstream_redis;
    a = rp->append;

    if (reply && reply->type == REDIS_REPLY_ERROR && rd
        && reply->len >= 8 && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        /*
         * The script was flushed from Redis.  Sending it again now would
         * put this message behind the commands queued since (a WAIT,
         * the PING an answer waits for): it fails like any error, and
         * the commands from now on carry the script itself (EVAL).
         */
        rd->sha[0] = '\0';
    }

    if (a) {
        /* the journal's answer: settled here or by the WAIT */
        ngx_free(rp);
        ngx_hookstream_redis_appended(ac, r, a);
        return;
    }

    if (reply == NULL) {
        /* the connection went: Redis may or may not have run it */
        ngx_log_error(NGX_LOG_WARN, rp->log, 0,
                      "hookstream redis: a message to \"%*s\" may be lost: "
                      "the connection closed before the answer",
                      rp->lens[10], rp->argv[10]);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (rd) {
            ngx_hookstream_redis_error(rd, NGX_LOG_ERR, "publish",
                                       reply->str, reply->len);
        }

    } else if (rd) {
        ngx_hookstream_stat_add(rd->sh, redis_published, 1);
    }

    ngx_free(rp);
}


/*
 * Calls handler(data) once Redis answered every command this worker sent
 * before: replies on one connection come in order.  NGX_DECLINED: no
 * Redis connection, nothing to wait for.
 */

ngx_int_t
ngx_hookstream_redis_sync(ngx_hookstream_redis_sync_pt handler, void *data,
    ngx_log_t *log)
{
    ngx_hookstream_redis_t       *rd;
    ngx_hookstream_redis_sync_t  *sy;

    rd = ngx_hookstream_redis;

    if (rd == NULL || !ngx_hookstream_redis_open(rd)) {
        return NGX_DECLINED;
    }

    sy = ngx_alloc(sizeof(ngx_hookstream_redis_sync_t), log);
    if (sy == NULL) {
        return NGX_DECLINED;
    }

    sy->handler = handler;
    sy->data = data;

    if (redisAsyncCommand(rd->cmd.ac, ngx_hookstream_redis_synced, sy,
                          "PING")
        != REDIS_OK)
    {
        ngx_free(sy);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_hookstream_redis_synced(redisAsyncContext *ac, void *r, void *data)
{
    ngx_hookstream_redis_sync_t  *sy = data;

    ngx_hookstream_redis_sync_pt   handler;
    void                          *d;

    handler = sy->handler;
    d = sy->data;

    ngx_free(sy);

    handler(d);
}


/* the subscriber */


static void
ngx_hookstream_redis_message(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                   *reply = r;
    ngx_hookstream_redis_t       *rd = data;
    ngx_hookstream_redis_held_t  *h;
    redisReply                   *kind, *payload;

    if (reply == NULL || rd->exiting) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_hookstream_redis_error(rd, NGX_LOG_ERR, "SUBSCRIBE",
                                       reply->str, reply->len);
        }

        return;
    }

    kind = reply->element[0];
    payload = reply->element[2];

    if (kind->type != REDIS_REPLY_STRING) {
        return;
    }

    if (kind->len == 9 && ngx_strncmp(kind->str, "subscribe", 9) == 0) {
        ngx_hookstream_redis_up(&rd->sub);

        if (!rd->subscribed) {
            rd->subscribed = 1;
            (void) ngx_atomic_fetch_add(&rd->proc->subscribed, 1);
        }

        rd->round++;
        rd->recovering = 1;
        rd->overflow = 0;

        if (rd->cmd.ready) {
            ngx_hookstream_redis_recover(rd);
        }

        return;
    }

    if (kind->len != 7 || ngx_strncmp(kind->str, "message", 7) != 0
        || payload->type != REDIS_REPLY_STRING)
    {
        return;
    }

    ngx_hookstream_stat_add(rd->sh, redis_received, 1);

    if (rd->recovering == 0) {
        ngx_hookstream_redis_apply(rd, (u_char *) payload->str, payload->len);
        return;
    }

    /* a gap is being read back: later messages wait for it */

    if (rd->overflow) {
        return;
    }

    if (rd->nheld == NGX_HOOKSTREAM_REDIS_HELD_MAX
        || rd->held_bytes + payload->len > NGX_HOOKSTREAM_REDIS_HELD_BYTES)
    {
        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "hookstream redis: %ui messages (%uz bytes) arrived "
                      "while a gap was read, reading again",
                      rd->nheld, rd->held_bytes);
        ngx_hookstream_redis_drop_held(rd);
        rd->overflow = 1;
        return;
    }

    h = ngx_alloc(offsetof(ngx_hookstream_redis_held_t, data) + payload->len,
                  rd->log);
    if (h == NULL) {
        ngx_hookstream_redis_drop_held(rd);
        rd->overflow = 1;
        return;
    }

    h->len = payload->len;
    ngx_memcpy(h->data, payload->str, payload->len);
    ngx_queue_insert_tail(&rd->held, &h->queue);
    rd->nheld++;
    rd->held_bytes += h->len;
}


/* "topic\nid\ntype\nchannel\nkey\ndata" from the channel into the zone */

static void
ngx_hookstream_redis_apply(ngx_hookstream_redis_t *rd, u_char *p, size_t len)
{
    u_char                *last, *nl;
    ngx_str_t              f[5];
    ngx_uint_t             i;
    ngx_hookstream_rid_t   rid;
    ngx_hookstream_pub_t   pub;

    last = p + len;

    for (i = 0; i < 5; i++) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            goto invalid;
        }

        f[i].data = p;
        f[i].len = nl - p;
        p = nl + 1;
    }

    if (ngx_hookstream_rid_parse(f[1].data, f[1].len, &rid) != NGX_OK) {
        goto invalid;
    }

    pub.topic = f[0];
    pub.type = f[2];
    pub.channel = f[3];
    pub.key = f[4];
    pub.data.data = p;
    pub.data.len = last - p;

    if (!ngx_hookstream_redis_topic(&pub.topic)) {
        goto invalid;
    }

    (void) ngx_hookstream_broker_publish_rid(rd->sh, &pub, &rid,
                                             rd->conf->buffer_count, rd->log);
    return;

invalid:

    ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                  "hookstream redis: a message on \"%V\" that is not ours",
                  &rd->bus);
}


/* a stream entry: [id, [type, T, channel, C, key, K, data, D]] */

static ngx_int_t
ngx_hookstream_redis_entry(redisReply *entry, ngx_hookstream_rid_t *rid,
    ngx_hookstream_pub_t *pub)
{
    size_t       i;
    ngx_str_t    name, value;
    redisReply  *id, *fields;

    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) {
        return NGX_ERROR;
    }

    id = entry->element[0];
    fields = entry->element[1];

    if (id->type != REDIS_REPLY_STRING
        || fields->type != REDIS_REPLY_ARRAY
        || ngx_hookstream_rid_parse((u_char *) id->str, id->len, rid)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_null(&pub->type);
    ngx_str_null(&pub->channel);
    ngx_str_null(&pub->key);
    ngx_str_null(&pub->data);

    for (i = 0; i + 1 < fields->elements; i += 2) {
        if (fields->element[i]->type != REDIS_REPLY_STRING
            || fields->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            return NGX_ERROR;
        }

        name.data = (u_char *) fields->element[i]->str;
        name.len = fields->element[i]->len;
        value.data = (u_char *) fields->element[i + 1]->str;
        value.len = fields->element[i + 1]->len;

        if (name.len == 4 && ngx_strncmp(name.data, "type", 4) == 0) {
            pub->type = value;

        } else if (name.len == 7 && ngx_strncmp(name.data, "channel", 7) == 0)
        {
            pub->channel = value;

        } else if (name.len == 3 && ngx_strncmp(name.data, "key", 3) == 0) {
            pub->key = value;

        } else if (name.len == 4 && ngx_strncmp(name.data, "data", 4) == 0) {
            pub->data = value;
        }
    }

    if (pub->type.len == 0 || pub->channel.len == 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_redis_store(ngx_hookstream_redis_t *rd, ngx_str_t *topic,
    redisReply *entry)
{
    ngx_hookstream_rid_t  rid;
    ngx_hookstream_pub_t  pub;

    if (ngx_hookstream_redis_entry(entry, &rid, &pub) != NGX_OK) {
        return NGX_ERROR;
    }

    pub.topic = *topic;

    if (ngx_hookstream_broker_publish_rid(rd->sh, &pub, &rid,
                                          rd->conf->buffer_count, rd->log)
        == NGX_OK)
    {
        ngx_hookstream_stat_add(rd->sh, redis_recovered, 1);
    }

    return NGX_OK;
}


/*
 * Subscribed (again): the messages published while this host was not
 * subscribed are read back from the streams of the orgs that have
 * subscribers here, from the last id the zone has of each, with one
 * XREAD; the channel's messages wait until then.  TIME, sent first,
 * gives the new floor: every message after it reaches this host.
 */

static void
ngx_hookstream_redis_recover(ngx_hookstream_redis_t *rd)
{
    u_char                        *p;
    size_t                        *lens;
    ngx_uint_t                     i, n;
    ngx_pool_t                    *pool;
    ngx_array_t                    topics;
    const char                   **argv;
    ngx_hookstream_redis_topic_t  *rt;

    rd->recovering = 2;

    if (redisAsyncCommand(rd->cmd.ac, ngx_hookstream_redis_recover_time,
                          (void *) rd->round, "TIME")
        != REDIS_OK)
    {
        rd->recovering = 1;
        return;
    }

    pool = ngx_create_pool(4096, rd->log);
    if (pool == NULL) {
        goto failed;
    }

    if (ngx_array_init(&topics, pool, 16,
                       sizeof(ngx_hookstream_redis_topic_t))
        != NGX_OK
        || ngx_hookstream_broker_redis_topics(rd->sh, &topics, pool)
           != NGX_OK)
    {
        goto failed;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, rd->log, 0,
                   "hookstream redis recover %ui topics", topics.nelts);

    if (topics.nelts == 0) {
        ngx_destroy_pool(pool);
        return;
    }

    n = 2 + topics.nelts * 2;

    argv = ngx_palloc(pool, n * sizeof(char *));
    lens = ngx_palloc(pool, n * sizeof(size_t));
    if (argv == NULL || lens == NULL) {
        goto failed;
    }

    argv[0] = "XREAD";
    lens[0] = 5;
    argv[1] = "STREAMS";
    lens[1] = 7;

    rt = topics.elts;

    for (i = 0; i < topics.nelts; i++) {
        p = ngx_pnalloc(pool, rd->conf->prefix.len + sizeof("stream:") - 1
                              + rt[i].topic.len);
        if (p == NULL) {
            goto failed;
        }

        argv[2 + i] = (char *) p;
        p = ngx_sprintf(p, "%Vstream:%V", &rd->conf->prefix, &rt[i].topic);
        lens[2 + i] = p - (u_char *) argv[2 + i];

        p = ngx_pnalloc(pool, NGX_HOOKSTREAM_CURSOR_LEN);
        if (p == NULL) {
            goto failed;
        }

        argv[2 + topics.nelts + i] = (char *) p;
        p = ngx_sprintf(p, "%uL-%uL", rt[i].from.ms, rt[i].from.seq);
        lens[2 + topics.nelts + i] = p - (u_char *) argv[2 + topics.nelts + i];
    }

    if (redisAsyncCommandArgv(rd->cmd.ac, ngx_hookstream_redis_recover_read,
                              (void *) rd->round, (int) n, argv, lens)
        != REDIS_OK)
    {
        goto failed;
    }

    /* the TIME answer comes first and sees this */
    rd->recovering = 3;

    ngx_destroy_pool(pool);

    return;

failed:

    if (pool) {
        ngx_destroy_pool(pool);
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "hookstream redis: cannot read back what was missed");

    /* retried with the next connection */
    if (rd->sub.ac) {
        redisAsyncDisconnect(rd->sub.ac);
    }
}


static void
ngx_hookstream_redis_recover_time(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply              *reply = r;
    ngx_int_t                sec, usec;
    ngx_time_t              *tp;
    ngx_hookstream_redis_t  *rd;

    rd = ngx_hookstream_redis;

    if (rd == NULL || rd->round != (uintptr_t) data || rd->recovering < 2) {
        return;
    }

    if (reply == NULL) {
        /* the command connection went: again when it is back */
        rd->recovering = 1;
        return;
    }

    sec = NGX_ERROR;
    usec = NGX_ERROR;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        sec = ngx_atoi((u_char *) reply->element[0]->str,
                       reply->element[0]->len);
        usec = ngx_atoi((u_char *) reply->element[1]->str,
                        reply->element[1]->len);
    }

    if (sec == NGX_ERROR || usec == NGX_ERROR) {
        /* not to stay without a floor: this host's clock */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "hookstream redis: unexpected answer to TIME");

        tp = ngx_timeofday();
        sec = tp->sec;
        usec = tp->msec * 1000;
    }

    rd->floor.ms = (uint64_t) sec * 1000 + usec / 1000;
    rd->floor.seq = 0;

    if (rd->recovering == 2) {
        /* nothing to read back */
        ngx_hookstream_redis_recover_done(rd);
    }
}


static void
ngx_hookstream_redis_recover_read(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply              *reply = r;
    size_t                   i, j;
    ngx_str_t                topic;
    redisReply              *stream, *key, *entries;
    ngx_hookstream_redis_t  *rd;

    rd = ngx_hookstream_redis;

    if (rd == NULL || rd->round != (uintptr_t) data || rd->recovering != 3) {
        return;
    }

    if (reply == NULL) {
        /* the command connection went: again when it is back */
        rd->recovering = 1;
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /*
         * Not a connection's failure, so reading again would fail again
         * (a key that is not a stream, say): what was missed is lost,
         * but the host goes live rather than holding every message.
         */
        ngx_hookstream_redis_error(rd, NGX_LOG_ERR,
                                   "XREAD, messages missed are lost",
                                   reply->str, reply->len);
        ngx_hookstream_redis_recover_done(rd);
        return;
    }

    if (reply->type == REDIS_REPLY_ARRAY) {

        for (i = 0; i < reply->elements; i++) {
            stream = reply->element[i];

            if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) {
                continue;
            }

            key = stream->element[0];
            entries = stream->element[1];

            if (key->type != REDIS_REPLY_STRING
                || key->len <= rd->conf->prefix.len + 7
                || entries->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            topic.data = (u_char *) key->str + rd->conf->prefix.len + 7;
            topic.len = key->len - rd->conf->prefix.len - 7;

            for (j = 0; j < entries->elements; j++) {
                (void) ngx_hookstream_redis_store(rd, &topic,
                                                  entries->element[j]);
            }
        }
    }

    ngx_hookstream_redis_recover_done(rd);
}


static void
ngx_hookstream_redis_recover_done(ngx_hookstream_redis_t *rd)
{
    ngx_queue_t                  *q;
    ngx_hookstream_redis_held_t  *h;

    while (!ngx_queue_empty(&rd->held)) {
        q = ngx_queue_head(&rd->held);
        ngx_queue_remove(q);
        h = ngx_queue_data(q, ngx_hookstream_redis_held_t, queue);

        ngx_hookstream_redis_apply(rd, h->data, h->len);
        ngx_free(h);
    }

    rd->nheld = 0;
    rd->held_bytes = 0;

    if (rd->overflow) {
        /* some were dropped: read again from where the zone is now */
        rd->overflow = 0;
        rd->recovering = 1;
        ngx_hookstream_redis_recover(rd);
        return;
    }

    rd->recovering = 0;

    ngx_hookstream_broker_redis_live(rd->sh, &rd->floor, 1);

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "hookstream redis: subscribed to \"%V\", live",
                  &rd->bus);
}


static void
ngx_hookstream_redis_drop_held(ngx_hookstream_redis_t *rd)
{
    ngx_queue_t  *q;

    while (!ngx_queue_empty(&rd->held)) {
        q = ngx_queue_head(&rd->held);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_hookstream_redis_held_t, queue));
    }

    rd->nheld = 0;
    rd->held_bytes = 0;
}


/* resuming from a cursor */


ngx_int_t
ngx_hookstream_redis_resume(ngx_hookstream_sub_t *sub, ngx_str_t *topic,
    ngx_hookstream_rid_t *from, ngx_uint_t replay)
{
    ngx_str_t                     channel;
    ngx_hookstream_redis_t       *rd;
    ngx_hookstream_redis_read_t  *rr;

    rd = ngx_hookstream_redis;

    if (rd == NULL || !ngx_hookstream_redis_open(rd)) {
        return NGX_DECLINED;
    }

    ngx_str_null(&channel);

    if (replay && sub->replay_channel) {
        channel = *sub->replay_channel;
    }

    rr = ngx_alloc(sizeof(ngx_hookstream_redis_read_t) + topic->len
                   + channel.len, sub->log);
    if (rr == NULL) {
        return NGX_ERROR;
    }

    rr->channel.data = (u_char *) rr + sizeof(ngx_hookstream_redis_read_t)
                       + topic->len;
    rr->channel.len = channel.len;
    if (channel.len) {
        ngx_memcpy(rr->channel.data, channel.data, channel.len);
    }

    rr->sub = sub;
    rr->from = *from;
    rr->replay = replay;
    rr->topic.data = (u_char *) rr + sizeof(ngx_hookstream_redis_read_t);
    rr->topic.len = topic->len;
    ngx_memcpy(rr->topic.data, topic->data, topic->len);

    rr->next = sub->redis;
    sub->redis = rr;

    if (ngx_hookstream_redis_read(rr) != NGX_OK) {
        sub->redis = rr->next;
        ngx_free(rr);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * MULTI, XRANGE after the cursor, XINFO STREAM, EXEC: the entries and,
 * from the same instant, whether the stream ever dropped one after the
 * cursor (max-deleted-entry-id) or is behind it (last-generated-id).
 */

static ngx_int_t
ngx_hookstream_redis_read(ngx_hookstream_redis_read_t *rr)
{
    redisAsyncContext       *ac;
    ngx_hookstream_redis_t  *rd;
    u_char                   key[512];
    u_char                   start[1 + NGX_HOOKSTREAM_CURSOR_LEN + 1];

    rd = ngx_hookstream_redis;
    ac = rd->cmd.ac;

    if (rd->conf->prefix.len + rr->topic.len > 400) {
        return NGX_ERROR;
    }

    ngx_hookstream_broker_redis_state(rd->sh, NULL, &rr->gen, NULL);

    (void) ngx_sprintf(key, "%Vstream:%V%Z", &rd->conf->prefix, &rr->topic);
    (void) ngx_sprintf(start, "(%uL-%uL%Z", rr->from.ms, rr->from.seq);

    if (redisAsyncCommand(ac, NULL, NULL, "MULTI") != REDIS_OK
        || redisAsyncCommand(ac, NULL, NULL, "XRANGE %s %s +", key, start)
           != REDIS_OK
        || redisAsyncCommand(ac, NULL, NULL, "XINFO STREAM %s", key)
           != REDIS_OK
        || redisAsyncCommand(ac, ngx_hookstream_redis_read_done, rr, "EXEC")
           != REDIS_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_hookstream_redis_read_done(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                   *reply = r;
    ngx_hookstream_redis_read_t  *rr = data;

    size_t                   i;
    ngx_int_t                rc;
    redisReply              *entries;
    ngx_hookstream_rid_t     rid;
    ngx_hookstream_pub_t     pub;
    ngx_hookstream_sub_t    *sub;
    ngx_hookstream_redis_t  *rd;

    sub = rr->sub;
    rd = ngx_hookstream_redis;

    if (sub == NULL || rd == NULL) {
        ngx_hookstream_redis_read_free(rr);
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_ARRAY)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_hookstream_redis_error(rd, NGX_LOG_ERR, "XRANGE",
                                       reply->str, reply->len);
        }

        goto reset;
    }

    if (ngx_hookstream_redis_read_check(reply->element[1], &rr->from)
        != NGX_OK)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_CORE, sub->log, 0,
                       "hookstream redis resume: cursor out of reach");
        goto reset;
    }

    entries = reply->element[0];

    ngx_log_debug3(NGX_LOG_DEBUG_CORE, sub->log, 0,
                   "hookstream redis resume from %uL-%uL: %uz entries",
                   rr->from.ms, rr->from.seq, entries->elements);

    for (i = 0; i < entries->elements; i++) {
        if (ngx_hookstream_redis_entry(entries->element[i], &rid, &pub)
            != NGX_OK)
        {
            continue;
        }

        pub.topic = rr->topic;

        if (rr->replay) {
            /* newer ones come live, in order */
            if (ngx_hookstream_rid_cmp(&rid, &sub->rid) > 0) {
                break;
            }

        } else {
            sub->rid = rid;
        }

        if (ngx_hookstream_redis_deliver(sub, &pub, &rid,
                                         rr->replay ? &rr->channel : NULL)
            != NGX_OK)
        {
            break;
        }

        if (rr->sub == NULL) {
            /* deliver() closed the subscriber */
            ngx_hookstream_redis_read_free(rr);
            return;
        }
    }

    if (rr->replay) {
        ngx_hookstream_redis_read_free(rr);
        return;
    }

    rc = ngx_hookstream_broker_catch_up(rd->sh, sub, rr->gen);

    if (rc == NGX_ERROR) {
        goto reset;
    }

    if (rc == NGX_AGAIN) {
        /* the ring may have missed some after what Redis gave: again */
        rr->from = sub->rid;

        if (rd->cmd.ready && ngx_hookstream_redis_read(rr) == NGX_OK) {
            return;
        }

        goto reset;
    }

    ngx_hookstream_redis_read_free(rr);
    return;

reset:

    sub = rr->sub;
    ngx_hookstream_redis_read_free(rr);

    if (sub == NULL) {
        return;
    }

    if (sub->pending) {
        ngx_hookstream_broker_go_live(rd->sh, sub);
    }

    if (sub->reset) {
        sub->reset(sub);
    }
}


/*
 * Can the stream give everything after the cursor?  Not when the cursor
 * is ahead of it (last-generated-id), when an entry after it was
 * deleted (max-deleted-entry-id, XDEL), nor when entries were trimmed
 * (entries-added above length) and the cursor is older than the oldest
 * one kept: what was between them is unknown, so the cursor of the
 * newest trimmed entry itself is refused too.
 */

static ngx_int_t
ngx_hookstream_redis_read_check(redisReply *info, ngx_hookstream_rid_t *from)
{
    size_t                i;
    long long             length, added;
    redisReply           *name, *value;
    ngx_hookstream_rid_t  rid, last, first, deleted;

    if (info->type == REDIS_REPLY_ERROR) {
        /* no such stream: nothing was ever published there */
        return NGX_OK;
    }

    if (info->type != REDIS_REPLY_ARRAY) {
        return NGX_ERROR;
    }

    length = 0;
    added = 0;
    ngx_memzero(&last, sizeof(ngx_hookstream_rid_t));
    ngx_memzero(&first, sizeof(ngx_hookstream_rid_t));
    ngx_memzero(&deleted, sizeof(ngx_hookstream_rid_t));

    for (i = 0; i + 1 < info->elements; i += 2) {
        name = info->element[i];
        value = info->element[i + 1];

        if (name->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (value->type == REDIS_REPLY_INTEGER) {
            if (name->len == 6 && ngx_strncmp(name->str, "length", 6) == 0) {
                length = value->integer;

            } else if (name->len == 13
                       && ngx_strncmp(name->str, "entries-added", 13) == 0)
            {
                added = value->integer;
            }

            continue;
        }

        if (value->type != REDIS_REPLY_STRING
            || ngx_hookstream_rid_parse((u_char *) value->str, value->len,
                                        &rid)
               != NGX_OK)
        {
            continue;
        }

        if (name->len == sizeof("last-generated-id") - 1
            && ngx_strncmp(name->str, "last-generated-id", name->len) == 0)
        {
            last = rid;

        } else if (name->len == sizeof("max-deleted-entry-id") - 1
                   && ngx_strncmp(name->str, "max-deleted-entry-id",
                                  name->len) == 0)
        {
            deleted = rid;

        } else if (name->len == sizeof("recorded-first-entry-id") - 1
                   && ngx_strncmp(name->str, "recorded-first-entry-id",
                                  name->len) == 0)
        {
            first = rid;
        }
    }

    if (!ngx_hookstream_rid_null(&last)
        && ngx_hookstream_rid_cmp(&last, from) < 0)
    {
        return NGX_DECLINED;
    }

    if (ngx_hookstream_rid_cmp(&deleted, from) > 0) {
        return NGX_DECLINED;
    }

    if (added > length) {
        if (length == 0) {
            return (ngx_hookstream_rid_cmp(from, &last) < 0) ? NGX_DECLINED
                                                              : NGX_OK;
        }

        if (ngx_hookstream_rid_cmp(from, &first) < 0) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static void
ngx_hookstream_redis_read_free(ngx_hookstream_redis_read_t *rr)
{
    ngx_hookstream_redis_read_t  **pp;

    if (rr->sub) {
        for (pp = (ngx_hookstream_redis_read_t **) &rr->sub->redis;
             *pp;
             pp = &(*pp)->next)
        {
            if (*pp == rr) {
                *pp = rr->next;
                break;
            }
        }
    }

    ngx_free(rr);
}


void
ngx_hookstream_redis_forget(ngx_hookstream_sub_t *sub)
{
    ngx_hookstream_redis_read_t  *rr;

    for (rr = sub->redis; rr; rr = rr->next) {
        rr->sub = NULL;
    }

    sub->redis = NULL;
}


/* one entry of a stream to one subscriber, the envelope built here */

static ngx_int_t
ngx_hookstream_redis_deliver(ngx_hookstream_sub_t *sub,
    ngx_hookstream_pub_t *pub, ngx_hookstream_rid_t *rid, ngx_str_t *replay)
{
    u_char                *p;
    size_t                 len;
    ngx_hookstream_msg_t   msg;
    ngx_hookstream_buf_t  *buf;
    u_char                 cursor[NGX_HOOKSTREAM_CURSOR_LEN];
    size_t                 clen;

    clen = ngx_sprintf(cursor, "%uL-%uL", rid->ms, rid->seq) - cursor;

    if (pub->data.len == 0) {
        ngx_str_set(&pub->data, "null");
    }

    len = sizeof("{\"type\":\"\",\"channel\":\"\",\"cursor\":\"\","
                 "\"data\":}") - 1
          + pub->type.len + pub->channel.len + clen + pub->data.len;

    buf = ngx_hookstream_buf_alloc(len + pub->key.len, sub->log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = buf->start;

    p = ngx_cpymem(p, "{\"type\":\"", sizeof("{\"type\":\"") - 1);
    msg.type.data = p;
    msg.type.len = pub->type.len;
    p = ngx_cpymem(p, pub->type.data, pub->type.len);
    p = ngx_cpymem(p, "\",\"channel\":\"", sizeof("\",\"channel\":\"") - 1);
    msg.channel.data = p;
    msg.channel.len = pub->channel.len;
    p = ngx_cpymem(p, pub->channel.data, pub->channel.len);
    p = ngx_cpymem(p, "\",\"cursor\":\"", sizeof("\",\"cursor\":\"") - 1);
    p = ngx_cpymem(p, cursor, clen);
    p = ngx_cpymem(p, "\",\"data\":", sizeof("\",\"data\":") - 1);
    p = ngx_cpymem(p, pub->data.data, pub->data.len);
    *p++ = '}';

    buf->last = p;

    msg.key.data = p;
    msg.key.len = pub->key.len;

    if (pub->key.len) {
        ngx_memcpy(p, pub->key.data, pub->key.len);
    }

    msg.seq = 0;
    msg.rid = *rid;
    msg.buf = buf;
    msg.replay_channel = replay;
    msg.replay = replay ? 1 : 0;

    sub->deliver(sub, &msg);

    ngx_hookstream_buf_unref(buf);

    return NGX_OK;
}


/* the journal on Redis */


ngx_int_t
ngx_hookstream_redis_append(ngx_str_t *record, u_char *event_id,
    ngx_hookstream_pub_t *pub, ngx_uint_t count,
    ngx_hookstream_journal_req_t *req, ngx_log_t *log)
{
    u_char                          n[NGX_INT_T_LEN], t[NGX_INT_T_LEN];
    const char                     *argv[7];
    size_t                          lens[7];
    ngx_hookstream_redis_t         *rd;
    ngx_hookstream_redis_conf_t    *rcf;
    ngx_hookstream_redis_append_t  *a;

    rd = ngx_hookstream_redis;

    if (rd == NULL || !ngx_hookstream_redis_open(rd)) {
        if (rd && rd->refused_log != ngx_time()) {
            rd->refused_log = ngx_time();
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "hookstream redis: not connected to \"%V\", "
                          "event not stored",
                          rd ? &rd->conf->display : NULL);
        }

        return NGX_ERROR;
    }

    rcf = rd->conf;

    a = ngx_alloc(sizeof(ngx_hookstream_redis_append_t), log);
    if (a == NULL) {
        return NGX_ERROR;
    }

    a->req = req;
    a->rc = NGX_ERROR;
    a->wait = 0;

    if (pub && ngx_hookstream_redis_topic(&pub->topic)) {
        /* stored and published in one step */

        if (ngx_hookstream_redis_eval(rd, pub, count, record, event_id, a,
                                      log)
            != NGX_OK)
        {
            ngx_free(a);
            return NGX_ERROR;
        }

    } else {
        argv[0] = "XADD";
        lens[0] = 4;
        argv[1] = (char *) rcf->journal.data;
        lens[1] = rcf->journal.len;
        argv[2] = "*";
        lens[2] = 1;
        argv[3] = "id";
        lens[3] = 2;
        argv[4] = (char *) event_id;
        lens[4] = NGX_HOOKSTREAM_EVENT_ID_LEN;
        argv[5] = "record";
        lens[5] = 6;
        argv[6] = (char *) record->data;
        lens[6] = record->len;

        if (redisAsyncCommandArgv(rd->cmd.ac, ngx_hookstream_redis_appended,
                                  a, 7, argv, lens)
            != REDIS_OK)
        {
            ngx_free(a);
            return NGX_ERROR;
        }
    }

    if (rcf->journal_wait) {
        argv[0] = "WAIT";
        lens[0] = 4;
        argv[1] = (char *) n;
        lens[1] = ngx_sprintf(n, "%ui", rcf->journal_wait) - n;
        argv[2] = (char *) t;
        lens[2] = ngx_sprintf(t, "%M", rcf->journal_wait_timeout) - t;

        /* not queued: the XADD's answer settles it */
        a->wait = (redisAsyncCommandArgv(rd->cmd.ac,
                                         ngx_hookstream_redis_waited,
                                         a, 3, argv, lens)
                   == REDIS_OK);
    }

    return NGX_OK;
}


static void
ngx_hookstream_redis_appended(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                     *reply = r;
    ngx_hookstream_redis_t         *rd;
    ngx_hookstream_redis_append_t  *a = data;

    rd = ngx_hookstream_redis;

    if (reply && reply->type == REDIS_REPLY_STRING) {
        a->rc = NGX_OK;

        if (rd) {
            ngx_hookstream_stat_add(rd->sh, redis_published, 1);
        }

    } else if (reply && reply->type == REDIS_REPLY_ERROR && rd) {
        ngx_hookstream_redis_error(rd, NGX_LOG_ERR, "journal", reply->str,
                                   reply->len);
    }

    if (a->wait) {
        /* the WAIT's answer settles it, or its NULL if the connection
         * goes */
        return;
    }

    ngx_hookstream_redis_append_done(a);
}


static void
ngx_hookstream_redis_waited(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                     *reply = r;
    ngx_hookstream_redis_t         *rd;
    ngx_hookstream_redis_append_t  *a = data;

    rd = ngx_hookstream_redis;

    if (reply == NULL) {
        a->rc = NGX_ERROR;

    } else if (reply->type != REDIS_REPLY_INTEGER
        || (rd && reply->integer < (long long) rd->conf->journal_wait))
    {
        if (a->rc == NGX_OK && rd) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "hookstream redis: %lld replica(s) of %ui "
                          "acknowledged in time, event not acked",
                          reply->type == REDIS_REPLY_INTEGER
                          ? reply->integer : 0LL,
                          rd->conf->journal_wait);
        }

        a->rc = NGX_ERROR;
    }

    ngx_hookstream_redis_append_done(a);
}


static void
ngx_hookstream_redis_append_done(ngx_hookstream_redis_append_t *a)
{
    ngx_hookstream_redis_t        *rd;
    ngx_hookstream_journal_req_t  *req;

    rd = ngx_hookstream_redis;

    req = a->req;

    if (a->rc == NGX_OK && rd) {
        ngx_hookstream_stat_add(rd->sh, redis_journal, 1);
    }

    req->rc = a->rc;

    ngx_free(a);

    req->handler(req);
}


/* health */


void
ngx_hookstream_redis_health(ngx_hookstream_shctx_t *sh,
    ngx_hookstream_redis_health_t *h, u_char *buf, size_t size)
{
    ngx_uint_t                    i;
    ngx_hookstream_stats_t       *st;
    ngx_hookstream_redis_proc_t  *pr;

    st = sh->stats;

    h->configured = (ngx_hookstream_redis != NULL);
    h->connected = 0;
    h->subscribed = 0;

    for (i = 0; i < NGX_HOOKSTREAM_REDIS_PROCS; i++) {
        pr = &st->redis_procs[i];

        if (pr->pid && ngx_hookstream_redis_proc_alive((ngx_pid_t) pr->pid))
        {
            h->connected += pr->connected;
            h->subscribed += pr->subscribed;
        }
    }

    h->reconnects = st->redis_reconnects;
    h->errors = st->redis_errors;
    h->published = st->redis_published;
    h->received = st->redis_received;
    h->recovered = st->redis_recovered;
    h->local = st->redis_local;
    h->journal = st->redis_journal;

    ngx_shmtx_lock(&sh->shpool->mutex);

    h->error_time = st->redis_error_time;
    h->error.len = ngx_min(size, st->redis_error_len);
    h->error.data = buf;
    ngx_memcpy(buf, st->redis_error, h->error.len);

    ngx_shmtx_unlock(&sh->shpool->mutex);
}
