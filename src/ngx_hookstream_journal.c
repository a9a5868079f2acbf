
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <sys/file.h>
#include "ngx_hookstream.h"


/*
 * The embedded pipeline.  Records are copied into a pending buffer and
 * written in batches: while one batch is being written (and, with
 * fsync=on, fdatasync()ed) by a thread of nginx's "default" thread pool,
 * the event loop keeps appending to the next one, so one sync covers
 * every record that arrived during the previous one (group commit).
 *
 * Segment files are DIR/<slot>-<sequence>.ndjson, slot being the worker
 * slot (ngx_worker) and sequence a 16-digit number.  Every segment is
 * created under a private name, locked with flock(LOCK_EX) and only then
 * linked to its public name, which must not exist yet: a segment has
 * exactly one writer ever, and a reader can tell a finished segment by
 * taking the lock (docs/journal.md).
 */


/* pending records beyond this are refused: the disk is not keeping up */
#define NGX_HOOKSTREAM_JOURNAL_MAX_PENDING  (64 * 1024 * 1024)

/* a batch buffer up to this size is kept for the next batch */
#define NGX_HOOKSTREAM_JOURNAL_KEEP_BUF     (4 * 1024 * 1024)

#define NGX_HOOKSTREAM_JOURNAL_MIN_BUF      (64 * 1024)

#define NGX_HOOKSTREAM_JOURNAL_SEQ_LEN      16
#define NGX_HOOKSTREAM_JOURNAL_MAX_SEQ      9999999999999999ULL
#define NGX_HOOKSTREAM_JOURNAL_SUFFIX       ".ndjson"
#define NGX_HOOKSTREAM_JOURNAL_LINK_TRIES   1000

/* how long a worker exit waits for a write still running in a thread */
#define NGX_HOOKSTREAM_JOURNAL_EXIT_WAIT    60000

/* at most one error line a second; the others are counted */
#define NGX_HOOKSTREAM_JOURNAL_LOG_EVERY    1


#if (NGX_LINUX)
#define ngx_hookstream_journal_datasync(fd)  fdatasync(fd)
#define ngx_hookstream_journal_datasync_n    "fdatasync()"
#else
#define ngx_hookstream_journal_datasync(fd)  fsync(fd)
#define ngx_hookstream_journal_datasync_n    "fsync()"
#endif


typedef struct {
    ngx_hookstream_journal_req_t   *head;
    ngx_hookstream_journal_req_t   *tail;
} ngx_hookstream_journal_list_t;


/*
 * Everything a write needs.  While a batch is in flight the thread owns
 * this structure and the event loop does not touch it; between batches
 * it belongs to the event loop.  The names and settings are fixed by
 * init_process.
 */

typedef struct {
    u_char                         *dir;        /* NUL-terminated */
    u_char                         *name;       /* the current segment */
    u_char                         *seq_pos;    /* its sequence digits */
    u_char                         *tmp;        /* where segments are born */
    u_char                         *prefix;     /* "<slot>-" */
    size_t                          prefix_len;
    off_t                           segment;
    ngx_uint_t                      fsync;

    /* the batch */
    u_char                         *data;
    size_t                          len;

    /* the segment, carried from batch to batch */
    ngx_fd_t                        fd;
    off_t                           size;       /* bytes known complete */
    uint64_t                        seq;
    ngx_uint_t                      dir_unsynced;

    /* the outcome */
    uint64_t                        usec;       /* write and sync took */
    ngx_err_t                       err;
    ngx_err_t                       trunc_err;
    const char                     *failed;     /* the call that failed */
    u_char                         *failed_name;
    volatile ngx_uint_t             done;
} ngx_hookstream_journal_io_t;


struct ngx_hookstream_journal_s {
    ngx_str_t                        path;      /* NUL-terminated */
    ngx_http_hookstream_main_conf_t *hmcf;
    ngx_log_t                       *log;
    ngx_hookstream_journal_io_t     *io;
#if (NGX_THREADS)
    ngx_thread_pool_t               *thread_pool;
    ngx_thread_task_t               *task;
#endif

    /* records not yet handed to a batch */
    u_char                          *buf;
    size_t                           len;
    size_t                           cap;
    ngx_hookstream_journal_list_t    pending;

    /* the batch in flight */
    u_char                          *batch_buf;
    size_t                           batch_cap;
    ngx_hookstream_journal_list_t    batch;

    u_char                          *spare;
    size_t                           spare_cap;

    ngx_event_t                      start;

    time_t                           error_time;
    ngx_uint_t                       lost;      /* not stored, not logged */
    time_t                           full_time;
    ngx_uint_t                       full_lost;
    uint64_t                         seq;       /* last segment logged */

    unsigned                         ready:1;
    unsigned                         busy:1;
    unsigned                         failing:1;
};


static void ngx_hookstream_journal_start_handler(ngx_event_t *ev);
static void ngx_hookstream_journal_start(ngx_hookstream_journal_t *j);
#if (NGX_THREADS)
static void ngx_hookstream_journal_thread_handler(void *data, ngx_log_t *log);
static void ngx_hookstream_journal_thread_event_handler(ngx_event_t *ev);
static ngx_int_t ngx_hookstream_journal_wait(ngx_hookstream_journal_t *j);
#endif
static void ngx_hookstream_journal_done(ngx_hookstream_journal_t *j);
static void ngx_hookstream_journal_report(ngx_hookstream_journal_t *j,
    ngx_uint_t n, ngx_uint_t force);
static ngx_uint_t ngx_hookstream_journal_count(
    ngx_hookstream_journal_list_t *list);
static ngx_int_t ngx_hookstream_journal_grow(ngx_hookstream_journal_t *j,
    size_t need);
static ngx_int_t ngx_hookstream_journal_names(ngx_cycle_t *cycle,
    ngx_hookstream_journal_t *j, ngx_hookstream_journal_io_t *io);
static ngx_err_t ngx_hookstream_journal_mkdir(ngx_pool_t *pool,
    ngx_str_t *path);

static void ngx_hookstream_journal_write(ngx_hookstream_journal_io_t *io);
static uint64_t ngx_hookstream_journal_usec(void);
static ngx_int_t ngx_hookstream_journal_create(
    ngx_hookstream_journal_io_t *io);
static ngx_int_t ngx_hookstream_journal_sync_dir(
    ngx_hookstream_journal_io_t *io);
static ngx_int_t ngx_hookstream_journal_scan(ngx_hookstream_journal_io_t *io,
    uint64_t *max);
static void ngx_hookstream_journal_close(ngx_hookstream_journal_io_t *io);
static void ngx_hookstream_journal_fail(ngx_hookstream_journal_io_t *io,
    ngx_err_t err, const char *failed, u_char *name);


ngx_int_t
ngx_hookstream_journal_conf(ngx_conf_t *cf,
    ngx_http_hookstream_main_conf_t *hmcf)
{
    size_t                     len;
    ngx_path_t                *path;
    ngx_hookstream_journal_t  *j;

    j = ngx_pcalloc(cf->pool, sizeof(ngx_hookstream_journal_t));
    if (j == NULL) {
        return NGX_ERROR;
    }

    len = hmcf->journal_path.len;

    while (len > 1 && hmcf->journal_path.data[len - 1] == '/') {
        len--;
    }

    j->path.len = len;
    j->path.data = ngx_pnalloc(cf->pool, len + 1);
    if (j->path.data == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(j->path.data, hmcf->journal_path.data, len + 1);

    /*
     * The master makes the directory and its parents (0755: a delivery
     * worker running as another user reads them) and, as with nginx's
     * temp paths, ngx_create_paths() then gives the directory to the
     * worker user, so a parent only root may write to is fine.  A
     * failure is reported there.
     */

    if (!ngx_test_config && ngx_process != NGX_PROCESS_SIGNALLER) {
        ngx_hookstream_journal_mkdir(cf->pool, &j->path);
    }

    path = ngx_pcalloc(cf->pool, sizeof(ngx_path_t));
    if (path == NULL) {
        return NGX_ERROR;
    }

    path->name = j->path;
    path->data = j;
    path->conf_file = cf->conf_file->file.name.data;
    path->line = cf->conf_file->line;

    if (ngx_add_path(cf, &path) != NGX_OK) {
        return NGX_ERROR;
    }

    /* fsync and segment are read in init_process, once merged */
    j->hmcf = hmcf;

#if (NGX_THREADS)

    /*
     * The "default" pool: it always exists (32 threads unless the
     * operator declares "thread_pool default threads=N;").  A worker
     * keeps at most one journal task in it at a time.
     */

    j->thread_pool = ngx_thread_pool_add(cf, NULL);
    if (j->thread_pool == NULL) {
        return NGX_ERROR;
    }

#else

    /* unset means the default, which is on */

    if (hmcf->journal_fsync != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hookstream_journal\" with fsync=on needs "
                           "nginx built with threads (--with-threads) "
                           "to sync off the event loop; "
                           "use \"fsync=off\" or rebuild nginx");
        return NGX_ERROR;
    }

#endif

    hmcf->journal = j;

    return NGX_OK;
}


ngx_int_t
ngx_hookstream_journal_init_process(ngx_cycle_t *cycle,
    ngx_hookstream_journal_t *j)
{
    uint64_t                      max;
    ngx_err_t                     err;
    ngx_hookstream_journal_io_t  *io;
#if (NGX_THREADS)
    ngx_thread_task_t            *task;
#endif

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    j->log = cycle->log;

#if (NGX_THREADS)

    task = ngx_thread_task_alloc(cycle->pool,
                                 sizeof(ngx_hookstream_journal_io_t));
    if (task == NULL) {
        return NGX_ERROR;
    }

    task->handler = ngx_hookstream_journal_thread_handler;
    task->event.handler = ngx_hookstream_journal_thread_event_handler;
    task->event.data = j;
    task->event.log = cycle->log;

    j->task = task;
    io = task->ctx;

#else

    io = ngx_pcalloc(cycle->pool, sizeof(ngx_hookstream_journal_io_t));
    if (io == NULL) {
        return NGX_ERROR;
    }

#endif

    j->io = io;

    io->fd = NGX_INVALID_FILE;
    io->fsync = (j->hmcf->journal_fsync != 0);
    io->segment = (off_t) j->hmcf->journal_segment;

    if (ngx_hookstream_journal_names(cycle, j, io) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * A directory that cannot be made or read now is not fatal: every
     * batch tries again, so the worker serves (refusing events with
     * not_stored) and recovers once the operator fixes it.
     */

    err = ngx_hookstream_journal_mkdir(cycle->pool, &j->path);

    if (err == 0) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "hookstream journal: created \"%V\"", &j->path);

    } else if (err != NGX_EEXIST) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, err,
                      "hookstream journal: " ngx_create_dir_n " \"%V\" "
                      "failed", &j->path);
    }

    if (ngx_hookstream_journal_scan(io, &max) == NGX_OK) {
        io->seq = max;

    } else {
        ngx_log_error(NGX_LOG_ERR, cycle->log, io->err,
                      "hookstream journal: " ngx_open_dir_n " \"%s\" failed, "
                      "events will not be stored until it can be written",
                      io->dir);
    }

    j->seq = io->seq;

    j->start.handler = ngx_hookstream_journal_start_handler;
    j->start.data = j;
    j->start.log = cycle->log;

    j->ready = 1;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "hookstream journal: \"%s\" slot %ui after %uL fsync:%ui",
                   io->dir, ngx_worker, io->seq, io->fsync);

    return NGX_OK;
}


void
ngx_hookstream_journal_exit_process(ngx_cycle_t *cycle,
    ngx_hookstream_journal_t *j)
{
    ngx_int_t                      batch_rc, pending_rc;
    ngx_uint_t                     n;
    ngx_hookstream_journal_io_t   *io;
    ngx_hookstream_journal_req_t  *req;

    if (!j->ready) {
        return;
    }

    j->ready = 0;
    io = j->io;

    if (j->start.posted) {
        ngx_delete_posted_event(&j->start);
    }

    /*
     * What is still queued is written (and synced) here, synchronously:
     * the event loop is gone.  The handlers run afterwards, with the
     * outcome, so their owners can release what they hold; appends they
     * make now are refused.
     */

    batch_rc = NGX_OK;

    if (j->busy) {

#if (NGX_THREADS)
        if (ngx_hookstream_journal_wait(j) != NGX_OK) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "hookstream journal: a write into \"%s\" is still "
                          "running at exit", io->dir);
            return;
        }
#endif

        j->busy = 0;

        if (io->failed) {
            batch_rc = NGX_ERROR;
            ngx_hookstream_journal_report(j,
                                 ngx_hookstream_journal_count(&j->batch), 0);
        }

        ngx_free(j->batch_buf);
        j->batch_buf = NULL;
    }

    pending_rc = NGX_OK;

    if (j->len) {
        n = ngx_hookstream_journal_count(&j->pending);

        io->data = j->buf;
        io->len = j->len;

        ngx_hookstream_journal_write(io);

        if (io->failed) {
            pending_rc = NGX_ERROR;
            ngx_hookstream_journal_report(j, n, 1);

        } else {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                           "hookstream journal: %ui records, %uz bytes "
                           "written at exit", n, j->len);
        }
    }

    if (j->lost) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "hookstream journal: %ui more event(s) were not "
                      "stored in \"%s\"", j->lost, io->dir);
        j->lost = 0;
    }

    ngx_hookstream_journal_close(io);

    if (j->buf) {
        ngx_free(j->buf);
    }

    if (j->spare) {
        ngx_free(j->spare);
    }

    j->buf = NULL;
    j->len = 0;
    j->cap = 0;
    j->spare = NULL;
    j->spare_cap = 0;

    while (j->batch.head || j->pending.head) {

        if (j->batch.head) {
            req = j->batch.head;
            j->batch.head = req->next;
            req->rc = batch_rc;

        } else {
            req = j->pending.head;
            j->pending.head = req->next;
            req->rc = pending_rc;
        }

        if (req->next) {
            req->next->prev = NULL;
        }

        req->next = NULL;
        req->prev = NULL;

        req->handler(req);
    }

    j->batch.tail = NULL;
    j->pending.tail = NULL;
}


ngx_int_t
ngx_hookstream_journal_append(ngx_hookstream_journal_t *j,
    ngx_str_t *record, ngx_hookstream_journal_req_t *req)
{
    u_char  *p, *nl, *last, *dst;
    size_t   need;
    time_t   now;

    if (!j->ready) {
        if (j->io == NULL) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "hookstream journal: append outside a worker");
            return NGX_ERROR;
        }

        ngx_log_error(NGX_LOG_ERR, j->log, 0,
                      "hookstream journal: the worker is exiting, "
                      "event not stored");
        return NGX_ERROR;
    }

    need = j->len + record->len + 1;

    if (need > NGX_HOOKSTREAM_JOURNAL_MAX_PENDING) {
        now = ngx_time();
        j->full_lost++;

        if (now - j->full_time >= NGX_HOOKSTREAM_JOURNAL_LOG_EVERY) {
            ngx_log_error(NGX_LOG_ERR, j->log, 0,
                          "hookstream journal: %uz bytes are waiting for "
                          "\"%V\", %ui event(s) not stored",
                          j->len, &j->path, j->full_lost);

            j->full_time = now;
            j->full_lost = 0;
        }

        return NGX_ERROR;
    }

    if (need > j->cap) {
        if (ngx_hookstream_journal_grow(j, need) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    /*
     * A record is one line.  A line feed can only appear in valid JSON
     * as whitespace between tokens (inside strings it is escaped), so
     * turning it into a space keeps the JSON's meaning and the framing.
     */

    p = record->data;
    last = p + record->len;
    dst = j->buf + j->len;

    while (p < last) {
        nl = memchr(p, '\n', last - p);

        if (nl == NULL) {
            dst = ngx_cpymem(dst, p, last - p);
            break;
        }

        dst = ngx_cpymem(dst, p, nl - p);
        *dst++ = ' ';
        p = nl + 1;
    }

    *dst = '\n';
    j->len = need;

    req->next = NULL;
    req->prev = j->pending.tail;

    if (j->pending.tail) {
        j->pending.tail->next = req;

    } else {
        j->pending.head = req;
    }

    j->pending.tail = req;

    if (!j->busy && !j->start.posted) {
        ngx_post_event(&j->start, &ngx_posted_events);
    }

    return NGX_OK;
}


void
ngx_hookstream_journal_cancel(ngx_hookstream_journal_t *j,
    ngx_hookstream_journal_req_t *req)
{
    if (req->prev) {
        req->prev->next = req->next;

    } else if (j->pending.head == req) {
        j->pending.head = req->next;

    } else if (j->batch.head == req) {
        j->batch.head = req->next;

    } else {
        /* not queued: already handled, or never appended */
        return;
    }

    if (req->next) {
        req->next->prev = req->prev;

    } else if (j->pending.tail == req) {
        j->pending.tail = req->prev;

    } else if (j->batch.tail == req) {
        j->batch.tail = req->prev;
    }

    req->next = NULL;
    req->prev = NULL;
}


static void
ngx_hookstream_journal_start_handler(ngx_event_t *ev)
{
    ngx_hookstream_journal_start(ev->data);
}


static void
ngx_hookstream_journal_start(ngx_hookstream_journal_t *j)
{
    ngx_hookstream_journal_io_t  *io;

    if (j->busy || j->len == 0 || !j->ready) {
        return;
    }

    io = j->io;

    /* the pending records become the batch; appends go to the spare */

    j->batch = j->pending;
    j->pending.head = NULL;
    j->pending.tail = NULL;

    j->batch_buf = j->buf;
    j->batch_cap = j->cap;

    io->data = j->buf;
    io->len = j->len;

    j->buf = j->spare;
    j->cap = j->spare_cap;
    j->len = 0;
    j->spare = NULL;
    j->spare_cap = 0;

    j->busy = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, j->log, 0,
                   "hookstream journal: batch of %uz bytes into \"%s\"",
                   io->len, io->dir);

#if (NGX_THREADS)

    io->done = 0;

    if (ngx_thread_task_post(j->thread_pool, j->task) != NGX_OK) {
        ngx_hookstream_journal_fail(io, 0, "ngx_thread_task_post() for",
                                    io->dir);
        ngx_hookstream_journal_done(j);
    }

#else

    /* fsync=off only (checked at configuration time): page cache */

    ngx_hookstream_journal_write(io);
    ngx_hookstream_journal_done(j);

#endif
}


#if (NGX_THREADS)

static void
ngx_hookstream_journal_thread_handler(void *data, ngx_log_t *log)
{
    ngx_hookstream_journal_io_t  *io = data;

    ngx_hookstream_journal_write(io);

    ngx_memory_barrier();

    io->done = 1;
}


static void
ngx_hookstream_journal_thread_event_handler(ngx_event_t *ev)
{
    ngx_hookstream_journal_t  *j = ev->data;

    if (!j->ready) {
        return;
    }

    ngx_hookstream_journal_done(j);
}


static ngx_int_t
ngx_hookstream_journal_wait(ngx_hookstream_journal_t *j)
{
    ngx_uint_t  i;

    /*
     * The thread pool module exits before this one and finishes every
     * queued task first, so this normally returns at once.
     */

    for (i = 0; i < NGX_HOOKSTREAM_JOURNAL_EXIT_WAIT; i++) {
        if (j->io->done) {
            ngx_memory_barrier();
            return NGX_OK;
        }

        ngx_msleep(1);
    }

    return NGX_ERROR;
}

#endif


static void
ngx_hookstream_journal_done(ngx_hookstream_journal_t *j)
{
    ngx_int_t                      rc;
    ngx_hookstream_shctx_t        *sh;
    ngx_hookstream_journal_io_t   *io;
    ngx_hookstream_journal_req_t  *req;

    io = j->io;
    j->busy = 0;

    if (j->batch_cap <= NGX_HOOKSTREAM_JOURNAL_KEEP_BUF && j->spare == NULL) {
        j->spare = j->batch_buf;
        j->spare_cap = j->batch_cap;

    } else {
        ngx_free(j->batch_buf);
    }

    j->batch_buf = NULL;
    j->batch_cap = 0;

    sh = j->hmcf->shm_zone ? j->hmcf->shm_zone->data : NULL;

    if (io->failed) {
        ngx_hookstream_stat_add(sh, journal_errors, 1);

        rc = NGX_ERROR;
        ngx_hookstream_journal_report(j,
                                      ngx_hookstream_journal_count(&j->batch),
                                      0);

    } else {
        rc = NGX_OK;

        ngx_hookstream_stats_fsync(sh, io->usec,
                                   ngx_hookstream_journal_count(&j->batch));

        if (j->failing) {
            if (j->lost) {
                ngx_log_error(NGX_LOG_NOTICE, j->log, 0,
                              "hookstream journal: writing to \"%s\" "
                              "again, %ui more event(s) were not stored",
                              io->name, j->lost);

            } else {
                ngx_log_error(NGX_LOG_NOTICE, j->log, 0,
                              "hookstream journal: writing to \"%s\" "
                              "again", io->name);
            }

            j->failing = 0;
            j->lost = 0;
        }

        if (io->seq != j->seq) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, j->log, 0,
                           "hookstream journal: segment \"%s\"", io->name);
            j->seq = io->seq;
        }
    }

    /*
     * The head is taken afresh each time: a handler may cancel other
     * requests of this batch.
     */

    while (j->batch.head) {
        req = j->batch.head;
        j->batch.head = req->next;

        if (j->batch.head) {
            j->batch.head->prev = NULL;

        } else {
            j->batch.tail = NULL;
        }

        req->next = NULL;
        req->prev = NULL;
        req->rc = rc;

        req->handler(req);
    }

    if (j->len && !j->start.posted) {
        ngx_post_event(&j->start, &ngx_posted_events);
    }
}


static void
ngx_hookstream_journal_report(ngx_hookstream_journal_t *j, ngx_uint_t n,
    ngx_uint_t force)
{
    time_t                        now;
    ngx_hookstream_journal_io_t  *io;

    io = j->io;
    now = ngx_time();

    j->lost += n;

    if (io->trunc_err) {
        ngx_log_error(NGX_LOG_ERR, j->log, io->trunc_err,
                      "hookstream journal: ftruncate() \"%s\" failed, "
                      "a partial line may remain at its end", io->name);
    }

    if (j->failing && !force
        && now - j->error_time < NGX_HOOKSTREAM_JOURNAL_LOG_EVERY)
    {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, j->log, io->err,
                  "hookstream journal: %s \"%s\" failed, "
                  "%ui event(s) not stored",
                  io->failed, io->failed_name, j->lost);

    j->failing = 1;
    j->error_time = now;
    j->lost = 0;
}


static ngx_uint_t
ngx_hookstream_journal_count(ngx_hookstream_journal_list_t *list)
{
    ngx_uint_t                     n;
    ngx_hookstream_journal_req_t  *req;

    n = 0;

    for (req = list->head; req; req = req->next) {
        n++;
    }

    return n;
}


static ngx_int_t
ngx_hookstream_journal_grow(ngx_hookstream_journal_t *j, size_t need)
{
    u_char  *buf;
    size_t   cap;

    cap = j->cap ? j->cap : NGX_HOOKSTREAM_JOURNAL_MIN_BUF;

    while (cap < need) {
        cap *= 2;
    }

    if (cap > NGX_HOOKSTREAM_JOURNAL_MAX_PENDING) {
        cap = NGX_HOOKSTREAM_JOURNAL_MAX_PENDING;
    }

    buf = ngx_alloc(cap, j->log);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    if (j->len) {
        ngx_memcpy(buf, j->buf, j->len);
    }

    if (j->buf) {
        ngx_free(j->buf);
    }

    j->buf = buf;
    j->cap = cap;

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_journal_names(ngx_cycle_t *cycle, ngx_hookstream_journal_t *j,
    ngx_hookstream_journal_io_t *io)
{
    u_char  *p;
    size_t   len;

    io->dir = j->path.data;

    len = sizeof("-") - 1 + NGX_INT_T_LEN;

    io->prefix = ngx_pnalloc(cycle->pool, len);
    if (io->prefix == NULL) {
        return NGX_ERROR;
    }

    /* 4 digits keep the names of slots 0-9999 the same length */
    p = ngx_sprintf(io->prefix, "%04ui-", ngx_worker);
    io->prefix_len = p - io->prefix;

    len = j->path.len + sizeof("/") - 1 + io->prefix_len
          + NGX_HOOKSTREAM_JOURNAL_SEQ_LEN
          + sizeof(NGX_HOOKSTREAM_JOURNAL_SUFFIX);

    io->name = ngx_pnalloc(cycle->pool, len);
    if (io->name == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(io->name, "%V/", &j->path);
    p = ngx_cpymem(p, io->prefix, io->prefix_len);
    io->seq_pos = p;
    ngx_sprintf(p, "%016uL" NGX_HOOKSTREAM_JOURNAL_SUFFIX "%Z", (uint64_t) 0);

    len = j->path.len + sizeof("/.") - 1 + io->prefix_len + NGX_INT64_LEN
          + sizeof(".tmp");

    io->tmp = ngx_pnalloc(cycle->pool, len);
    if (io->tmp == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(io->tmp, "%V/.%*s%P.tmp%Z",
                &j->path, io->prefix_len, io->prefix, ngx_pid);

    return NGX_OK;
}


static ngx_err_t
ngx_hookstream_journal_mkdir(ngx_pool_t *pool, ngx_str_t *path)
{
    u_char     *copy;
    ngx_err_t   err;

    if (ngx_create_dir(path->data, 0755) != NGX_FILE_ERROR) {
        return 0;
    }

    err = ngx_errno;

    if (err != NGX_ENOENT) {
        return err;
    }

    /* ngx_create_full_path() may leave its argument cut short */

    copy = ngx_pnalloc(pool, path->len + 1);
    if (copy == NULL) {
        return NGX_ENOMEM;
    }

    ngx_cpystrn(copy, path->data, path->len + 1);

    err = ngx_create_full_path(copy, 0755);
    if (err) {
        return err;
    }

    if (ngx_create_dir(path->data, 0755) == NGX_FILE_ERROR) {
        return ngx_errno;
    }

    return 0;
}


/*
 * The functions below run in a thread of the pool (or, at exit and in
 * builds without threads, in the worker itself).  They touch only the io
 * structure and the files; errors are recorded there and logged by the
 * event loop.
 */

/* a monotonic clock in microseconds, safe to read in a thread */

static uint64_t
ngx_hookstream_journal_usec(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


static void
ngx_hookstream_journal_write(ngx_hookstream_journal_io_t *io)
{
    off_t            offset;
    size_t           n;
    u_char          *p;
    ssize_t          rc;
    uint64_t         start;
    ngx_err_t        err;
    ngx_uint_t       removed;
    ngx_file_info_t  fi;

    start = ngx_hookstream_journal_usec();
    io->usec = 0;
    io->err = 0;
    io->trunc_err = 0;
    io->failed = NULL;
    io->failed_name = NULL;

    removed = 0;

again:

    if (io->fd == NGX_INVALID_FILE) {
        if (ngx_hookstream_journal_create(io) != NGX_OK) {
            return;
        }
    }

    if (io->fsync && io->dir_unsynced) {
        if (ngx_hookstream_journal_sync_dir(io) != NGX_OK) {
            /* the segment is kept: the next batch syncs again */
            return;
        }
    }

    if (ngx_fd_info(io->fd, &fi) == NGX_FILE_ERROR) {
        ngx_hookstream_journal_fail(io, ngx_errno, ngx_fd_info_n, io->name);
        ngx_hookstream_journal_close(io);
        return;
    }

    if (fi.st_nlink == 0) {

        /*
         * Unlinked under us: records written there would reach no
         * reader.  A new segment is started at once; if the directory
         * is gone as well, that fails and the batch with it.
         */

        ngx_hookstream_journal_close(io);

        if (removed++) {
            ngx_hookstream_journal_fail(io, NGX_ENOENT,
                                        "write to removed segment",
                                        io->name);
            return;
        }

        goto again;
    }

    if (ngx_file_size(&fi) > io->size) {

        /* a failed batch that could not be cut off at the time */

        if (ftruncate(io->fd, io->size) == -1) {
            ngx_hookstream_journal_fail(io, ngx_errno, "ftruncate()",
                                        io->name);
            return;
        }

    } else if (ngx_file_size(&fi) < io->size) {

        /* shortened by someone else: go on at its end, leave no hole */
        io->size = ngx_file_size(&fi);
    }

    p = io->data;
    n = io->len;
    offset = io->size;

    while (n) {
        rc = pwrite(io->fd, p, n, offset);

        if (rc == -1) {
            err = ngx_errno;

            if (err == NGX_EINTR) {
                continue;
            }

            ngx_hookstream_journal_fail(io, err, "pwrite()", io->name);
            goto failed;
        }

        if (rc == 0) {
            ngx_hookstream_journal_fail(io, NGX_ENOSPC, "pwrite()", io->name);
            goto failed;
        }

        p += rc;
        n -= rc;
        offset += rc;
    }

    if (io->fsync && ngx_hookstream_journal_datasync(io->fd) == -1) {
        ngx_hookstream_journal_fail(io, ngx_errno,
                                    ngx_hookstream_journal_datasync_n,
                                    io->name);
        goto failed;
    }

    io->usec = ngx_hookstream_journal_usec() - start;
    io->size = offset;

    if (io->size >= io->segment) {

        /* synced (with fsync=on) before any of its records is acked */

        ngx_hookstream_journal_close(io);
    }

    return;

failed:

    /*
     * Cut the batch off so no half record stays in the segment: readers
     * see complete lines only, and the records the clients were told
     * "not_stored" are not there either.
     */

    if (ftruncate(io->fd, io->size) == -1) {
        io->trunc_err = ngx_errno;
    }

    /*
     * Out of space the segment is kept, its lock too, and the next batch
     * tries it again.  After any other error it is given up for a new
     * one: unlocked, it is finished for readers, so it is never written
     * again.
     */

    if (io->err == NGX_ENOSPC
#ifdef EDQUOT
        || io->err == EDQUOT
#endif
       )
    {
        return;
    }

    ngx_hookstream_journal_close(io);
}


static ngx_int_t
ngx_hookstream_journal_create(ngx_hookstream_journal_io_t *io)
{
    uint64_t    seq, max;
    ngx_fd_t    fd;
    ngx_err_t   err;
    ngx_uint_t  i;

    if (ngx_hookstream_journal_scan(io, &max) != NGX_OK) {
        ngx_hookstream_journal_fail(io, io->err, ngx_open_dir_n, io->dir);
        return NGX_ERROR;
    }

    /* after every segment of this slot, ours and earlier processes' */
    seq = ngx_max(max, io->seq) + 1;

    /* a name left by a crash may still be linked to a segment: unlink */
    (void) ngx_delete_file(io->tmp);

    fd = ngx_open_file(io->tmp, NGX_FILE_WRONLY, O_CREAT|O_EXCL,
                       NGX_FILE_DEFAULT_ACCESS);

    if (fd == NGX_INVALID_FILE) {
        ngx_hookstream_journal_fail(io, ngx_errno, ngx_open_file_n, io->tmp);
        return NGX_ERROR;
    }

    /* locked before anyone can see it: unlocked means finished */

    if (flock(fd, LOCK_EX|LOCK_NB) == -1) {
        ngx_hookstream_journal_fail(io, ngx_errno, "flock()", io->tmp);
        goto failed;
    }

    for (i = 0; /* void */ ; i++, seq++) {

        if (seq > NGX_HOOKSTREAM_JOURNAL_MAX_SEQ) {
            ngx_hookstream_journal_fail(io, ERANGE, "numbering after",
                                        io->name);
            goto failed;
        }

        /* NGX_HOOKSTREAM_JOURNAL_SEQ_LEN digits */
        ngx_sprintf(io->seq_pos, "%016uL" NGX_HOOKSTREAM_JOURNAL_SUFFIX "%Z",
                    seq);

        if (link((char *) io->tmp, (char *) io->name) == 0) {
            break;
        }

        err = ngx_errno;

        if (err != NGX_EEXIST || i == NGX_HOOKSTREAM_JOURNAL_LINK_TRIES) {
            ngx_hookstream_journal_fail(io, err, "link()", io->name);
            goto failed;
        }
    }

    (void) ngx_delete_file(io->tmp);

    io->fd = fd;
    io->size = 0;
    io->seq = seq;
    io->dir_unsynced = 1;

    return NGX_OK;

failed:

    (void) ngx_close_file(fd);
    (void) ngx_delete_file(io->tmp);

    return NGX_ERROR;
}


static ngx_int_t
ngx_hookstream_journal_sync_dir(ngx_hookstream_journal_io_t *io)
{
    ngx_fd_t  fd;

    /* a new segment's name must be as durable as the records in it */

    fd = ngx_open_file(io->dir, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_hookstream_journal_fail(io, ngx_errno, ngx_open_file_n, io->dir);
        return NGX_ERROR;
    }

    if (fsync(fd) == -1) {
        ngx_hookstream_journal_fail(io, ngx_errno, "fsync()", io->dir);
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    (void) ngx_close_file(fd);

    io->dir_unsynced = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_journal_scan(ngx_hookstream_journal_io_t *io, uint64_t *max)
{
    off_t       seq;
    size_t      len, suffix;
    u_char     *name;
    ngx_err_t   err;
    ngx_str_t   path;
    ngx_dir_t   dir;

    path.data = io->dir;
    path.len = ngx_strlen(io->dir);

    if (ngx_open_dir(&path, &dir) == NGX_ERROR) {
        io->err = ngx_errno;
        return NGX_ERROR;
    }

    suffix = sizeof(NGX_HOOKSTREAM_JOURNAL_SUFFIX) - 1;
    *max = 0;

    for ( ;; ) {
        ngx_set_errno(0);

        if (ngx_read_dir(&dir) == NGX_ERROR) {
            err = ngx_errno;

            if (err == NGX_ENOMOREFILES) {
                break;
            }

            io->err = err;
            (void) ngx_close_dir(&dir);
            return NGX_ERROR;
        }

        name = ngx_de_name(&dir);
        len = ngx_de_namelen(&dir);

        if (len != io->prefix_len + NGX_HOOKSTREAM_JOURNAL_SEQ_LEN + suffix
            || ngx_strncmp(name, io->prefix, io->prefix_len) != 0
            || ngx_strncmp(name + len - suffix,
                           NGX_HOOKSTREAM_JOURNAL_SUFFIX, suffix)
               != 0)
        {
            continue;
        }

        seq = ngx_atoof(name + io->prefix_len,
                        NGX_HOOKSTREAM_JOURNAL_SEQ_LEN);

        if (seq != NGX_ERROR && (uint64_t) seq > *max) {
            *max = (uint64_t) seq;
        }
    }

    (void) ngx_close_dir(&dir);

    return NGX_OK;
}


static void
ngx_hookstream_journal_close(ngx_hookstream_journal_io_t *io)
{
    /* closing the last descriptor drops the flock() too */

    if (io->fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(io->fd);
        io->fd = NGX_INVALID_FILE;
    }
}


static void
ngx_hookstream_journal_fail(ngx_hookstream_journal_io_t *io, ngx_err_t err,
    const char *failed, u_char *name)
{
    io->err = err;
    io->failed = failed;
    io->failed_name = name;
}
