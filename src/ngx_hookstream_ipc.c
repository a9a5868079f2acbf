
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_hookstream.h"

#if (NGX_HAVE_EVENTFD && NGX_HAVE_SYS_EVENTFD_H)
#include <sys/eventfd.h>
#define NGX_HOOKSTREAM_IPC_EVENTFD  1
#else
#define NGX_HOOKSTREAM_IPC_EVENTFD  0
#endif


/*
 * Cross-worker wakeup.  The master makes one eventfd (or a pipe) per
 * worker slot before it forks, so every worker of the cycle holds every
 * slot's descriptor.  A publisher raises the target's "pending" flag and
 * writes to its descriptor only when the flag goes from 0 to 1: a burst
 * of messages costs one write per worker.  The woken worker lowers its
 * flag, drains the descriptor and posts the broker's fan-out.
 *
 * The flags live in a small anonymous shared mapping made with the
 * descriptors, one per cycle: the workers of an old cycle that are still
 * draining after a reload keep theirs, and slot numbers of the old and
 * the new cycle never share a flag.
 */


typedef struct {
    ngx_atomic_t                  pending;
    u_char                        pad[NGX_CPU_CACHE_LINE
                                      - sizeof(ngx_atomic_t)];
} ngx_hookstream_ipc_slot_t;


typedef struct {
    ngx_cycle_t                  *cycle;
    ngx_uint_t                    n;
    ngx_fd_t                     *rfd;       /* per slot */
    ngx_fd_t                     *wfd;       /* the same with eventfd */
    ngx_hookstream_ipc_slot_t    *slots;     /* in the shared mapping */
    ngx_shm_t                     shm;
} ngx_hookstream_ipc_t;


static ngx_int_t ngx_hookstream_ipc_open(ngx_hookstream_ipc_t *ipc,
    ngx_uint_t i, ngx_log_t *log);
static void ngx_hookstream_ipc_cleanup(void *data);
static void ngx_hookstream_ipc_read_handler(ngx_event_t *rev);
static void ngx_hookstream_ipc_write(ngx_hookstream_ipc_t *ipc, ngx_uint_t i);


/*
 * The wakeup channel of the cycle this process runs.  Per-process state
 * like ngx_channel: the master points it at each new cycle's channel in
 * init_module, which is the point of no return of ngx_init_cycle(), and
 * a worker inherits the one of the cycle it was forked for.  The channel
 * itself hangs off that cycle's pool.
 */
static ngx_hookstream_ipc_t  *ngx_hookstream_ipc;


ngx_int_t
ngx_hookstream_ipc_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i;
    ngx_core_conf_t                  *ccf;
    ngx_pool_cleanup_t               *cln;
    ngx_hookstream_ipc_t             *ipc;
    ngx_http_hookstream_main_conf_t  *hmcf;

    ngx_hookstream_ipc = NULL;

    if (ngx_test_config) {
        return NGX_OK;
    }

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_hookstream_module);

    if (hmcf == NULL || hmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    ipc = ngx_pcalloc(cycle->pool, sizeof(ngx_hookstream_ipc_t));
    if (ipc == NULL) {
        return NGX_ERROR;
    }

    ipc->cycle = cycle;
    ipc->n = (ccf->worker_processes > 0) ? ccf->worker_processes : 1;

    ipc->rfd = ngx_palloc(cycle->pool, 2 * ipc->n * sizeof(ngx_fd_t));
    if (ipc->rfd == NULL) {
        return NGX_ERROR;
    }

    ipc->wfd = ipc->rfd + ipc->n;

    for (i = 0; i < 2 * ipc->n; i++) {
        ipc->rfd[i] = NGX_INVALID_FILE;
    }

    ipc->shm.size = ipc->n * sizeof(ngx_hookstream_ipc_slot_t);
    ngx_str_set(&ipc->shm.name, "hookstream_wakeup");
    ipc->shm.log = cycle->log;

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    if (ngx_shm_alloc(&ipc->shm) != NGX_OK) {
        return NGX_ERROR;
    }

    cln->handler = ngx_hookstream_ipc_cleanup;
    cln->data = ipc;

    ipc->slots = (ngx_hookstream_ipc_slot_t *) ipc->shm.addr;
    ngx_memzero(ipc->slots, ipc->shm.size);

    for (i = 0; i < ipc->n; i++) {
        if (ngx_hookstream_ipc_open(ipc, i, cycle->log) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_hookstream_ipc = ipc;

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_ipc_open(ngx_hookstream_ipc_t *ipc, ngx_uint_t i,
    ngx_log_t *log)
{
#if (NGX_HOOKSTREAM_IPC_EVENTFD)

    ipc->rfd[i] = eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC);

    if (ipc->rfd[i] == -1) {
        ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                      "hookstream: eventfd() failed");
        return NGX_ERROR;
    }

    ipc->wfd[i] = ipc->rfd[i];

#else

    int  fds[2], k;

    if (pipe(fds) == -1) {
        ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                      "hookstream: pipe() failed");
        return NGX_ERROR;
    }

    ipc->rfd[i] = fds[0];
    ipc->wfd[i] = fds[1];

    for (k = 0; k < 2; k++) {
        if (ngx_nonblocking(fds[k]) == -1) {
            ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                          "hookstream: " ngx_nonblocking_n " failed");
            return NGX_ERROR;
        }

        if (fcntl(fds[k], F_SETFD, FD_CLOEXEC) == -1) {
            ngx_log_error(NGX_LOG_EMERG, log, ngx_errno,
                          "hookstream: fcntl(FD_CLOEXEC) failed");
            return NGX_ERROR;
        }
    }

#endif

    return NGX_OK;
}


static void
ngx_hookstream_ipc_cleanup(void *data)
{
    ngx_hookstream_ipc_t *ipc = data;

    ngx_uint_t  i;

    for (i = 0; i < ipc->n; i++) {
        if (ipc->rfd[i] != NGX_INVALID_FILE) {
            (void) close(ipc->rfd[i]);
        }

        if (ipc->wfd[i] != NGX_INVALID_FILE && ipc->wfd[i] != ipc->rfd[i]) {
            (void) close(ipc->wfd[i]);
        }

        ipc->rfd[i] = NGX_INVALID_FILE;
        ipc->wfd[i] = NGX_INVALID_FILE;
    }

    ngx_shm_free(&ipc->shm);

    if (ngx_hookstream_ipc == ipc) {
        ngx_hookstream_ipc = NULL;
    }
}


ngx_int_t
ngx_hookstream_ipc_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t                      *rev;
    ngx_connection_t                 *c;
    ngx_hookstream_ipc_t             *ipc;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_hookstream_module);

    if (hmcf == NULL || hmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    if (ngx_hookstream_broker_init_process(cycle, hmcf->shm_zone->data)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ipc = ngx_hookstream_ipc;

    if (ngx_process != NGX_PROCESS_WORKER) {
        /* one process: the broker's own posted event is enough */
        return NGX_OK;
    }

    if (ipc == NULL || ipc->cycle != cycle || ngx_worker >= ipc->n) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "hookstream: no wakeup channel for worker %ui",
                      ngx_worker);
        return NGX_OK;
    }

    /* a worker respawned after a crash may find its flag left raised */
    ipc->slots[ngx_worker].pending = 0;

    c = ngx_get_connection(ipc->rfd[ngx_worker], cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->pool = cycle->pool;

    rev = c->read;
    rev->log = cycle->log;
    rev->handler = ngx_hookstream_ipc_read_handler;
    c->write->log = cycle->log;

    /*
     * Like nginx's own channel, this descriptor stays open until the
     * process exits; marked so a graceful exit does not report it.
     */
    rev->channel = 1;
    c->write->channel = 1;

    if (ngx_add_event(rev, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_free_connection(c);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_hookstream_ipc_read_handler(ngx_event_t *rev)
{
    u_char                 buf[64];
    ssize_t                n;
    ngx_err_t              err;
    ngx_connection_t      *c;
    ngx_hookstream_ipc_t  *ipc;

    c = rev->data;
    ipc = ngx_hookstream_ipc;

    for ( ;; ) {
        n = read(c->fd, buf, sizeof(buf));

        if (n > 0) {
#if (NGX_HOOKSTREAM_IPC_EVENTFD)
            break;
#else
            continue;
#endif
        }

        if (n == 0) {
            ngx_log_error(NGX_LOG_ALERT, rev->log, 0,
                          "hookstream: wakeup channel closed");
            (void) ngx_del_event(rev, NGX_READ_EVENT, 0);
            break;
        }

        err = ngx_errno;

        if (err == NGX_EINTR) {
            continue;
        }

        if (err != NGX_EAGAIN) {
            ngx_log_error(NGX_LOG_ALERT, rev->log, err,
                          "hookstream: wakeup channel read() failed");
        }

        break;
    }

    /*
     * Lower the flag only after the descriptor is drained, then fan out.
     * Lowered before the read, a publisher could raise it and write in
     * between, the read would swallow that write, and the flag would stay
     * raised with nothing left to read: every later publisher would skip
     * its write and this worker would hear nothing until its safety poll.
     * Lowered here, a publisher that still finds it raised published
     * before the fan-out below, which reads its message.
     */

    if (ipc && ngx_worker < ipc->n) {
        (void) ngx_atomic_cmp_set(&ipc->slots[ngx_worker].pending, 1, 0);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, rev->log, 0,
                   "hookstream wakeup in worker %ui", ngx_worker);

    ngx_hookstream_broker_wakeup();
}


void
ngx_hookstream_ipc_wake_all(ngx_hookstream_shctx_t *sh)
{
    ngx_uint_t             i;
    ngx_hookstream_ipc_t  *ipc;

    /* this worker's own subscribers, through a posted event */
    ngx_hookstream_broker_wakeup();

    ipc = ngx_hookstream_ipc;

    if (ipc == NULL || ngx_process != NGX_PROCESS_WORKER) {
        return;
    }

    for (i = 0; i < ipc->n; i++) {

        if (i == ngx_worker) {
            continue;
        }

        /* test before the locked instruction: bursts only read */

        if (ipc->slots[i].pending
            || !ngx_atomic_cmp_set(&ipc->slots[i].pending, 0, 1))
        {
            continue;
        }

        ngx_hookstream_ipc_write(ipc, i);
    }
}


static void
ngx_hookstream_ipc_write(ngx_hookstream_ipc_t *ipc, ngx_uint_t i)
{
    ssize_t    n;
    ngx_err_t  err;
#if (NGX_HOOKSTREAM_IPC_EVENTFD)
    uint64_t   one = 1;
#else
    u_char     one = 1;
#endif

    for ( ;; ) {
        n = write(ipc->wfd[i], &one, sizeof(one));

        if (n == (ssize_t) sizeof(one)) {
            return;
        }

        err = (n == -1) ? ngx_errno : 0;

        if (err == NGX_EINTR) {
            continue;
        }

        break;
    }

    if (err == NGX_EAGAIN) {
        /* the descriptor is full of wakeups the worker has yet to read */
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, err,
                  "hookstream: wakeup of worker %ui failed", i);

    /* let the next publish try again */
    ipc->slots[i].pending = 0;
}
