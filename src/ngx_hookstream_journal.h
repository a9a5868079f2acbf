
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_JOURNAL_H_INCLUDED_
#define _NGX_HOOKSTREAM_JOURNAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * The embedded event pipeline: NDJSON records appended to per-worker
 * segment files.  An append is acknowledged through the request's
 * handler, always asynchronously and in the order of the appends, once
 * the record is written (fsync=off) or synced (fsync=on: records are
 * grouped and fdatasync()ed on nginx's thread pool).  At worker exit the
 * queued records are written at once and the handlers run from
 * exit_process.  See docs/journal.md.
 */

typedef struct ngx_hookstream_journal_req_s  ngx_hookstream_journal_req_t;

typedef void (*ngx_hookstream_journal_done_pt)(
    ngx_hookstream_journal_req_t *req);

struct ngx_hookstream_journal_req_s {
    ngx_hookstream_journal_done_pt   handler;
    void                            *data;
    ngx_int_t                        rc;     /* NGX_OK: stored;
                                                NGX_ERROR: not stored */
    ngx_hookstream_journal_req_t    *next;   /* journal-private */
    ngx_hookstream_journal_req_t    *prev;   /* journal-private */
};


/* parses nothing: called by the hookstream_journal directive after it has
 * set hmcf->journal_path/fsync/segment; creates hmcf->journal and adds
 * the thread pool it needs */
ngx_int_t ngx_hookstream_journal_conf(ngx_conf_t *cf,
    ngx_http_hookstream_main_conf_t *hmcf);
ngx_int_t ngx_hookstream_journal_init_process(ngx_cycle_t *cycle,
    ngx_hookstream_journal_t *j);
void ngx_hookstream_journal_exit_process(ngx_cycle_t *cycle,
    ngx_hookstream_journal_t *j);

/*
 * Appends one record (the bytes are copied; a newline is added).  Returns
 * NGX_OK when queued: req->handler runs later with req->rc set.  Returns
 * NGX_ERROR when the record cannot be taken now (logged); the handler is
 * not called then.
 */
ngx_int_t ngx_hookstream_journal_append(ngx_hookstream_journal_t *j,
    ngx_str_t *record, ngx_hookstream_journal_req_t *req);

/*
 * Forgets a queued request (its owner is going away, e.g. the connection
 * closes before the ack): its handler is never called and the journal no
 * longer refers to it.  The record itself is still written.  O(1).  A
 * request already handled is left alone; one never appended must have
 * been zeroed.
 */
void ngx_hookstream_journal_cancel(ngx_hookstream_journal_t *j,
    ngx_hookstream_journal_req_t *req);


#endif /* _NGX_HOOKSTREAM_JOURNAL_H_INCLUDED_ */
