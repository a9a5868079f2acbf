
/*
 * Copyright (C) hookstream
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <cjson/cJSON.h>
#include <openssl/sha.h>
#include "ngx_hookstream.h"


#define NGX_HOOKSTREAM_HASH_PREFIX      "sha256:"
#define NGX_HOOKSTREAM_HASH_PREFIX_LEN  (sizeof("sha256:") - 1)
#define NGX_HOOKSTREAM_HASH_HEX_LEN     (2 * NGX_HOOKSTREAM_SHA256_LEN)
#define NGX_HOOKSTREAM_ID_RAW_LEN       (NGX_HOOKSTREAM_HEX_ID_LEN / 2)

/* how much of an offending value an error message quotes */
#define NGX_HOOKSTREAM_QUOTE_LEN        48

/* the byte that replaces each byte of a ?token= value */
#define NGX_HOOKSTREAM_MASK_CHAR        '*'

#define NGX_HOOKSTREAM_ORG_LEN          (sizeof("org_") - 1                    \
                                         + NGX_HOOKSTREAM_HEX_ID_LEN)

/* a waiting request looks at the shared cache again after 5 to 50 ms */
#define NGX_HOOKSTREAM_AUTH_POLL_MIN    5
#define NGX_HOOKSTREAM_AUTH_POLL_MAX    50

/* seconds in a row over hookstream_client_rate before the close */
#define NGX_HOOKSTREAM_RATE_STRIKES     5
#define NGX_HOOKSTREAM_CLOSE_POLICY     1008

/* the broker topic of revocations: not an org id, so not a client's */
#define NGX_HOOKSTREAM_REVOKE_TOPIC     "_revoke"


typedef enum {
    NGX_HOOKSTREAM_CRED_NONE = 0,
    NGX_HOOKSTREAM_CRED_QUERY,
    NGX_HOOKSTREAM_CRED_HEADER,
    NGX_HOOKSTREAM_CRED_COOKIE
} ngx_hookstream_cred_e;


/* how far a request's credential got */
typedef enum {
    NGX_HOOKSTREAM_AUTH_NEW = 0,
    NGX_HOOKSTREAM_AUTH_LOOKUP,     /* in the shared cache */
    NGX_HOOKSTREAM_AUTH_WAIT,       /* for another request's answer */
    NGX_HOOKSTREAM_AUTH_ASK,        /* the authority subrequest runs */
    NGX_HOOKSTREAM_AUTH_DONE
} ngx_hookstream_auth_phase_e;


/*
 * A request's credential state.  It lives in the request pool, not in the
 * module's request context: the token is masked (and so destroyed) in
 * the rewrite phase while it is resolved in the access phase and used in
 * the content phase, possibly after an internal redirect, which clears
 * module contexts.  The asynchronous resolution (waiting on the shared
 * cache, the authority subrequest) keeps its progress here too.  Once
 * upgraded, a connection's credential moves to its WebSocket, which
 * outlives the request (ngx_http_hookstream_auth_attach()).
 */
typedef struct {
    ngx_http_request_t             *request;
    ngx_hookstream_shctx_t         *sh;

    ngx_hookstream_cred_e           source;
    u_char                          hash[NGX_HOOKSTREAM_SHA256_LEN];
    u_char                          query_hash[NGX_HOOKSTREAM_SHA256_LEN];

    ngx_hookstream_auth_phase_e     phase;
    ngx_uint_t                      allow;      /* resolved for this mask */
    ngx_int_t                       status;     /* NGX_OK or HTTP status */
    const char                     *message;
    time_t                          retry_after;

    ngx_str_t                       org;
    u_char                          org_data[NGX_HOOKSTREAM_ORG_LEN];
    ngx_uint_t                      sources;    /* NGX_HOOKSTREAM_SOURCES_* */

    ngx_hookstream_authkey_t        key;
    ngx_hookstream_authres_t        res;
    ngx_uint_t                      sub_status;

    ngx_event_t                     wait;
    ngx_msec_t                      wait_start;
    ngx_msec_t                      wait_delay;
    ngx_queue_t                     waiting;    /* the worker's waiters */

    unsigned                        has_query:1;
    unsigned                        query_done:1;
    unsigned                        waited:1;
    unsigned                        sub_done:1;
    unsigned                        sub_org:1;  /* a valid X-Hookstream-Org */
    unsigned                        retried:1;
    unsigned                        authority:1;
    unsigned                        in_waiting:1;
    unsigned                        resolved:1; /* allowed, with an org */
} ngx_http_hookstream_auth_ctx_t;


/*
 * The worker's own: its authenticated WebSockets (ws->live), for
 * revocations, and its requests waiting on another's answer.
 */
typedef struct {
    ngx_hookstream_shctx_t         *sh;
    ngx_queue_t                     live;
    ngx_queue_t                     waiters;
    ngx_hookstream_sub_t            sub;
    unsigned                        subscribed:1;
} ngx_http_hookstream_auth_worker_t;


static u_char *ngx_hookstream_directory_read(ngx_conf_t *cf, ngx_str_t *path,
    size_t *size);
static cJSON *ngx_hookstream_directory_parse(ngx_conf_t *cf, ngx_str_t *path,
    u_char *text, size_t size);
static ngx_hookstream_directory_t *ngx_hookstream_directory_build(
    ngx_conf_t *cf, ngx_str_t *path, cJSON *root);
static ngx_int_t ngx_hookstream_directory_add_hashes(ngx_conf_t *cf,
    ngx_str_t *path, ngx_str_t *org_id, cJSON *org, const char *field,
    ngx_hookstream_dir_hash_t *hashes, ngx_uint_t *n);
static ngx_int_t ngx_hookstream_directory_add_sources(ngx_conf_t *cf,
    ngx_str_t *path, ngx_str_t *org_id, cJSON *org,
    ngx_hookstream_dir_source_t *sources, ngx_uint_t *n);
static ngx_int_t ngx_hookstream_directory_unique_orgs(ngx_conf_t *cf,
    ngx_str_t *path, ngx_hookstream_directory_t *d);
static ngx_int_t ngx_hookstream_directory_sort_hashes(ngx_conf_t *cf,
    ngx_str_t *path, const char *what, ngx_hookstream_dir_hash_t *hashes,
    ngx_uint_t *n);
static ngx_int_t ngx_hookstream_directory_sort_sources(ngx_conf_t *cf,
    ngx_str_t *path, ngx_hookstream_dir_source_t *sources, ngx_uint_t *n);
static int ngx_libc_cdecl ngx_hookstream_cmp_hashes(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_hookstream_cmp_sources(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_hookstream_cmp_org_ptrs(const void *one,
    const void *two);
static size_t ngx_hookstream_quote(u_char *dst, size_t size, const char *src);

static ngx_int_t ngx_hookstream_decode_hex(u_char *dst, u_char *src,
    size_t len, ngx_uint_t lowercase);
static ngx_int_t ngx_hookstream_decode_id(u_char *dst, u_char *src,
    size_t len, const char *prefix);

static ngx_http_hookstream_auth_ctx_t *ngx_http_hookstream_auth_find(
    ngx_http_request_t *r);
static ngx_http_hookstream_auth_ctx_t *ngx_http_hookstream_auth_ctx(
    ngx_http_request_t *r);
static void ngx_http_hookstream_auth_cleanup(void *data);
static void ngx_http_hookstream_take_token(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx);
static void ngx_http_hookstream_mask_query(u_char *p, u_char *last,
    ngx_uint_t stop_at_space);
static ngx_table_elt_t *ngx_http_hookstream_find_header(ngx_list_t *headers,
    u_char *name, size_t len, ngx_uint_t *count);
static ngx_int_t ngx_http_hookstream_check_origin(ngx_http_request_t *r,
    ngx_http_hookstream_loc_conf_t *hlcf);
static ngx_int_t ngx_http_hookstream_same_origin(ngx_http_request_t *r,
    ngx_str_t *origin);
static void ngx_http_hookstream_strip_default_port(ngx_str_t *authority,
    ngx_str_t *scheme);
static ngx_int_t ngx_http_hookstream_auth_rewrite_handler(
    ngx_http_request_t *r);

static ngx_int_t ngx_http_hookstream_auth_access_handler(
    ngx_http_request_t *r);
static void ngx_http_hookstream_auth_hide_version(ngx_http_request_t *r);
static ngx_int_t ngx_http_hookstream_auth_run(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_uint_t nowait);
static ngx_int_t ngx_http_hookstream_auth_credential(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx);
static void ngx_http_hookstream_auth_key(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx);
static ngx_int_t ngx_http_hookstream_auth_cached(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_uint_t state);
static void ngx_http_hookstream_auth_finish(ngx_http_hookstream_auth_ctx_t *ctx,
    ngx_int_t status, const char *message);
static void ngx_http_hookstream_auth_allowed(
    ngx_http_hookstream_auth_ctx_t *ctx, u_char *org);
static void ngx_http_hookstream_auth_denied(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_uint_t status);
static void ngx_http_hookstream_auth_unavailable(
    ngx_http_hookstream_auth_ctx_t *ctx);
static ngx_int_t ngx_http_hookstream_auth_client_addr(ngx_http_request_t *r,
    ngx_str_t *addr);
static ngx_int_t ngx_http_hookstream_auth_ask(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx);
static ngx_int_t ngx_http_hookstream_auth_push_header(ngx_http_request_t *sr,
    char *name, u_char *value, size_t len);
static ngx_int_t ngx_http_hookstream_auth_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static ngx_table_elt_t *ngx_http_hookstream_auth_answer_header(
    ngx_http_request_t *sr, char *name, size_t len, ngx_uint_t *count);
static ngx_uint_t ngx_http_hookstream_auth_sources(
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_http_request_t *sr);
static ngx_int_t ngx_http_hookstream_auth_answer(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx);
static void ngx_http_hookstream_auth_wait(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx);
static void ngx_http_hookstream_auth_stop_waiting(
    ngx_http_hookstream_auth_ctx_t *ctx);
static void ngx_http_hookstream_auth_wait_handler(ngx_event_t *ev);
static void ngx_http_hookstream_auth_wake(void);

static void ngx_http_hookstream_auth_revoke_deliver(ngx_hookstream_sub_t *sub,
    ngx_hookstream_msg_t *msg);
static void ngx_http_hookstream_auth_worker_exit(void *data);


static const char  *ngx_http_hookstream_cred_names[] = {
    "no credential",
    "API key (token argument)",
    "API key (X-API-Key header)",
    "session cookie"
};


static ngx_str_t  ngx_http_hookstream_revoke_topic =
    ngx_string(NGX_HOOKSTREAM_REVOKE_TOPIC);


/*
 * The worker's list of connections and waiters.  Like the broker's
 * worker state this is per-process state, as nginx keeps ngx_worker: a
 * worker serves the one cycle it was started with.  It is set in
 * init_process, points into that cycle's pool and is cleared by the
 * pool's cleanup when the worker exits; the master never sets it.
 */
static ngx_http_hookstream_auth_worker_t  *ngx_http_hookstream_auth_worker;


/* the directory file */


ngx_hookstream_directory_t *
ngx_hookstream_directory_load(ngx_conf_t *cf, ngx_str_t *path)
{
    u_char                      *text;
    size_t                       size;
    cJSON                       *root;
    ngx_hookstream_directory_t  *d;

    text = ngx_hookstream_directory_read(cf, path, &size);
    if (text == NULL) {
        return NULL;
    }

    root = ngx_hookstream_directory_parse(cf, path, text, size);

    ngx_pfree(cf->temp_pool, text);

    if (root == NULL) {
        return NULL;
    }

    /*
     * The tree is freed right here, on every path: the directory keeps
     * copies of what it needs in the configuration pool.
     */

    d = ngx_hookstream_directory_build(cf, path, root);

    cJSON_Delete(root);

    if (d == NULL) {
        return NULL;
    }

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, cf->log, 0,
                   "hookstream directory \"%V\": %ui orgs, %ui api keys, "
                   "%ui sessions, %ui sources",
                   path, d->norgs, d->napi_keys, d->nsessions, d->nsources);

    return d;
}


/* returns the file's bytes in cf->temp_pool, NUL-terminated */

static u_char *
ngx_hookstream_directory_read(ngx_conf_t *cf, ngx_str_t *path, size_t *size)
{
    u_char           *buf, *name;
    off_t             len, off;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_err_t         err;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    name = ngx_pnalloc(cf->temp_pool, path->len + 1);
    if (name == NULL) {
        return NULL;
    }

    ngx_cpystrn(name, path->data, path->len + 1);

    fd = ngx_open_file(name, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "hookstream_directory: " ngx_open_file_n
                           " \"%s\" failed", name);
        return NULL;
    }

    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "hookstream_directory: " ngx_fd_info_n
                           " \"%s\" failed", name);
        goto done;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hookstream_directory: \"%s\" is not a regular "
                           "file", name);
        goto done;
    }

    len = ngx_file_size(&fi);

    if (len < 0 || (uint64_t) len >= (uint64_t) NGX_MAX_SIZE_T_VALUE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hookstream_directory: \"%s\" is too large", name);
        goto done;
    }

    buf = ngx_pnalloc(cf->temp_pool, (size_t) len + 1);
    if (buf == NULL) {
        goto done;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.fd = fd;
    file.name.len = path->len;
    file.name.data = name;
    file.log = cf->log;

    for (off = 0; off < len; off += n) {
        n = ngx_read_file(&file, buf + off, (size_t) (len - off), off);

        if (n == NGX_ERROR) {
            /* ngx_read_file() has logged the reason */
            ngx_pfree(cf->temp_pool, buf);
            buf = NULL;
            goto done;
        }

        if (n == 0) {
            /* the file shrank while it was read: take what is there */
            len = off;
            break;
        }
    }

    buf[len] = '\0';
    *size = (size_t) len;

done:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        err = ngx_errno;
        ngx_conf_log_error(NGX_LOG_ALERT, cf, err,
                           ngx_close_file_n " \"%s\" failed", name);
    }

    return buf;
}


static cJSON *
ngx_hookstream_directory_parse(ngx_conf_t *cf, ngx_str_t *path, u_char *text,
    size_t size)
{
    u_char      *p, *pos, *last, quote[NGX_HOOKSTREAM_QUOTE_LEN];
    size_t       n;
    cJSON       *root;
    ngx_uint_t   line, column;
    const char  *end;

    pos = ngx_strlchr(text, text + size, '\0');

    if (pos == NULL) {
        end = NULL;

        /*
         * size + 1 takes in the terminating NUL, which is what cJSON wants
         * to see after the value when it is told to refuse trailing bytes
         */

        root = cJSON_ParseWithLengthOpts((const char *) text, size + 1, &end,
                                         1);
        if (root) {
            return root;
        }

        pos = end ? (u_char *) end : text;

        if (pos < text || pos > text + size) {
            pos = text + size;
        }
    }

    line = 1;
    column = 1;

    for (p = text; p < pos; p++) {
        if (*p == '\n') {
            line++;
            column = 1;

        } else if ((*p & 0xc0) != 0x80) {
            /* counts characters, not the continuation bytes of UTF-8 */
            column++;
        }
    }

    if (*pos == '\0') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid JSON in hookstream_directory %V:%ui:%ui: "
                           "%s", path, line, column,
                           pos == text + size ? "unexpected end of file"
                                              : "unexpected NUL byte");
        return NULL;
    }

    /* quote the printable text that follows the error, up to the line end */

    last = text + size;
    n = 0;

    for (p = pos; p < last && n < sizeof(quote); p++) {
        if (*p < 0x20 || *p >= 0x7f) {
            break;
        }

        quote[n++] = *p;
    }

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid JSON in hookstream_directory %V:%ui:%ui: "
                           "unexpected byte 0x%02xui", path, line, column,
                           (ngx_uint_t) *pos);
        return NULL;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid JSON in hookstream_directory %V:%ui:%ui "
                       "near \"%*s\"", path, line, column, n, quote);

    return NULL;
}


static ngx_hookstream_directory_t *
ngx_hookstream_directory_build(ngx_conf_t *cf, ngx_str_t *path, cJSON *root)
{
    u_char                      *p, quote[NGX_HOOKSTREAM_QUOTE_LEN];
    size_t                       len, n;
    cJSON                       *orgs, *org, *field;
    ngx_str_t                   *org_id;
    ngx_uint_t                   norgs, nkeys, nsessions, nsources;
    ngx_hookstream_directory_t  *d;

    if (!cJSON_IsObject(root)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hookstream_directory %V: the top level is not "
                           "a JSON object", path);
        return NULL;
    }

    orgs = cJSON_GetObjectItemCaseSensitive(root, "orgs");

    if (orgs == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hookstream_directory %V: no \"orgs\" object",
                           path);
        return NULL;
    }

    if (!cJSON_IsObject(orgs)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hookstream_directory %V: \"orgs\" is not an "
                           "object", path);
        return NULL;
    }

    /* count first, so that each table is allocated once at its size */

    norgs = 0;
    nkeys = 0;
    nsessions = 0;
    nsources = 0;

    cJSON_ArrayForEach(org, orgs) {
        norgs++;

        field = cJSON_GetObjectItemCaseSensitive(org, "api_keys");
        if (cJSON_IsArray(field)) {
            nkeys += cJSON_GetArraySize(field);
        }

        field = cJSON_GetObjectItemCaseSensitive(org, "sessions");
        if (cJSON_IsArray(field)) {
            nsessions += cJSON_GetArraySize(field);
        }

        field = cJSON_GetObjectItemCaseSensitive(org, "sources");
        if (cJSON_IsArray(field)) {
            nsources += cJSON_GetArraySize(field);
        }
    }

    d = ngx_pcalloc(cf->pool, sizeof(ngx_hookstream_directory_t));
    if (d == NULL) {
        return NULL;
    }

    d->file = *path;

    if (norgs) {
        len = norgs * sizeof(ngx_str_t);

        d->orgs = ngx_palloc(cf->pool, len);
        if (d->orgs == NULL) {
            return NULL;
        }
    }

    if (nkeys) {
        len = nkeys * sizeof(ngx_hookstream_dir_hash_t);

        d->api_keys = ngx_palloc(cf->pool, len);
        if (d->api_keys == NULL) {
            return NULL;
        }
    }

    if (nsessions) {
        len = nsessions * sizeof(ngx_hookstream_dir_hash_t);

        d->sessions = ngx_palloc(cf->pool, len);
        if (d->sessions == NULL) {
            return NULL;
        }
    }

    if (nsources) {
        len = nsources * sizeof(ngx_hookstream_dir_source_t);

        d->sources = ngx_palloc(cf->pool, len);
        if (d->sources == NULL) {
            return NULL;
        }
    }

    cJSON_ArrayForEach(org, orgs) {

        p = (u_char *) org->string;
        len = ngx_strlen(p);

        if (ngx_hookstream_decode_id(NULL, p, len, "org_") != NGX_OK) {
            n = ngx_hookstream_quote(quote, sizeof(quote), org->string);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: invalid org id "
                               "\"%*s\", expected \"org_\" and %d lowercase "
                               "hex digits", path, n, quote,
                               NGX_HOOKSTREAM_HEX_ID_LEN);
            return NULL;
        }

        org_id = &d->orgs[d->norgs++];

        org_id->len = len;
        org_id->data = ngx_pnalloc(cf->pool, len);
        if (org_id->data == NULL) {
            return NULL;
        }

        ngx_memcpy(org_id->data, p, len);

        if (!cJSON_IsObject(org)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: org \"%V\" is not "
                               "an object", path, org_id);
            return NULL;
        }

        if (ngx_hookstream_directory_add_hashes(cf, path, org_id, org,
                                                "api_keys", d->api_keys,
                                                &d->napi_keys)
            != NGX_OK)
        {
            return NULL;
        }

        if (ngx_hookstream_directory_add_hashes(cf, path, org_id, org,
                                                "sessions", d->sessions,
                                                &d->nsessions)
            != NGX_OK)
        {
            return NULL;
        }

        if (ngx_hookstream_directory_add_sources(cf, path, org_id, org,
                                                 d->sources, &d->nsources)
            != NGX_OK)
        {
            return NULL;
        }
    }

    if (ngx_hookstream_directory_unique_orgs(cf, path, d) != NGX_OK) {
        return NULL;
    }

    if (ngx_hookstream_directory_sort_hashes(cf, path, "API key",
                                             d->api_keys, &d->napi_keys)
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_hookstream_directory_sort_hashes(cf, path, "session",
                                             d->sessions, &d->nsessions)
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_hookstream_directory_sort_sources(cf, path, d->sources,
                                              &d->nsources)
        != NGX_OK)
    {
        return NULL;
    }

    return d;
}


static ngx_int_t
ngx_hookstream_directory_add_hashes(ngx_conf_t *cf, ngx_str_t *path,
    ngx_str_t *org_id, cJSON *org, const char *field,
    ngx_hookstream_dir_hash_t *hashes, ngx_uint_t *n)
{
    u_char                     *p;
    size_t                      len;
    cJSON                      *array, *item;
    ngx_uint_t                  i;
    ngx_hookstream_dir_hash_t  *h;

    array = cJSON_GetObjectItemCaseSensitive(org, field);

    if (array == NULL) {
        return NGX_OK;
    }

    if (!cJSON_IsArray(array)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hookstream_directory %V: org \"%V\": \"%s\" is "
                           "not an array", path, org_id, field);
        return NGX_ERROR;
    }

    i = 0;

    cJSON_ArrayForEach(item, array) {

        if (!cJSON_IsString(item)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: org \"%V\": "
                               "\"%s\"[%ui] is not a string",
                               path, org_id, field, i);
            return NGX_ERROR;
        }

        p = (u_char *) item->valuestring;
        len = ngx_strlen(p);

        /*
         * The value is never quoted: a mistake here is most likely a raw
         * key or token pasted in place of its hash, a secret.
         */

        if (ngx_strncmp(p, "hs_live_", 8) == 0
            || ngx_strncmp(p, "hs_test_", 8) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: org \"%V\": "
                               "\"%s\"[%ui] holds a raw API key; the file "
                               "takes \"sha256:\" and the hex SHA-256 of "
                               "the key", path, org_id, field, i);
            return NGX_ERROR;
        }

        h = &hashes[*n];

        if (len != NGX_HOOKSTREAM_HASH_PREFIX_LEN + NGX_HOOKSTREAM_HASH_HEX_LEN
            || ngx_strncmp(p, NGX_HOOKSTREAM_HASH_PREFIX,
                           NGX_HOOKSTREAM_HASH_PREFIX_LEN)
               != 0
            || ngx_hookstream_decode_hex(h->hash,
                                         p + NGX_HOOKSTREAM_HASH_PREFIX_LEN,
                                         NGX_HOOKSTREAM_HASH_HEX_LEN, 0)
               != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: org \"%V\": "
                               "\"%s\"[%ui] is not \"sha256:\" followed by "
                               "%d hex digits", path, org_id, field, i,
                               NGX_HOOKSTREAM_HASH_HEX_LEN);
            return NGX_ERROR;
        }

        h->org_id = org_id;

        (*n)++;
        i++;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_directory_add_sources(ngx_conf_t *cf, ngx_str_t *path,
    ngx_str_t *org_id, cJSON *org, ngx_hookstream_dir_source_t *sources,
    ngx_uint_t *n)
{
    u_char                        quote[NGX_HOOKSTREAM_QUOTE_LEN];
    size_t                        len;
    cJSON                        *array, *item;
    ngx_uint_t                    i;
    ngx_hookstream_dir_source_t  *s;

    array = cJSON_GetObjectItemCaseSensitive(org, "sources");

    if (array == NULL) {
        return NGX_OK;
    }

    if (!cJSON_IsArray(array)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "hookstream_directory %V: org \"%V\": "
                           "\"sources\" is not an array", path, org_id);
        return NGX_ERROR;
    }

    i = 0;

    cJSON_ArrayForEach(item, array) {

        if (!cJSON_IsString(item)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: org \"%V\": "
                               "\"sources\"[%ui] is not a string",
                               path, org_id, i);
            return NGX_ERROR;
        }

        s = &sources[*n];

        if (ngx_hookstream_decode_id(s->id, (u_char *) item->valuestring,
                                     ngx_strlen(item->valuestring), "src_")
            != NGX_OK)
        {
            len = ngx_hookstream_quote(quote, sizeof(quote),
                                       item->valuestring);
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: org \"%V\": "
                               "\"sources\"[%ui] \"%*s\" is not \"src_\" and "
                               "%d lowercase hex digits", path, org_id, i,
                               len, quote, NGX_HOOKSTREAM_HEX_ID_LEN);
            return NGX_ERROR;
        }

        s->org_id = org_id;

        (*n)++;
        i++;
    }

    return NGX_OK;
}


/* cJSON keeps both members of a repeated key: refuse a repeated org */

static ngx_int_t
ngx_hookstream_directory_unique_orgs(ngx_conf_t *cf, ngx_str_t *path,
    ngx_hookstream_directory_t *d)
{
    ngx_str_t   **sorted;
    ngx_uint_t    i;

    if (d->norgs < 2) {
        return NGX_OK;
    }

    sorted = ngx_palloc(cf->temp_pool, d->norgs * sizeof(ngx_str_t *));
    if (sorted == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < d->norgs; i++) {
        sorted[i] = &d->orgs[i];
    }

    ngx_qsort(sorted, d->norgs, sizeof(ngx_str_t *),
              ngx_hookstream_cmp_org_ptrs);

    for (i = 1; i < d->norgs; i++) {
        if (ngx_hookstream_cmp_org_ptrs(&sorted[i - 1], &sorted[i]) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: org \"%V\" is "
                               "listed twice", path, sorted[i]);
            ngx_pfree(cf->temp_pool, sorted);
            return NGX_ERROR;
        }
    }

    ngx_pfree(cf->temp_pool, sorted);

    return NGX_OK;
}


/*
 * Sorts a table for binary search.  A hash listed twice by one org is
 * kept once; a hash listed by two orgs could resolve to either of them
 * and is refused.
 */

static ngx_int_t
ngx_hookstream_directory_sort_hashes(ngx_conf_t *cf, ngx_str_t *path,
    const char *what, ngx_hookstream_dir_hash_t *hashes, ngx_uint_t *n)
{
    ngx_uint_t  i, j;

    if (*n < 2) {
        return NGX_OK;
    }

    ngx_qsort(hashes, *n, sizeof(ngx_hookstream_dir_hash_t),
              ngx_hookstream_cmp_hashes);

    for (i = 0, j = 1; j < *n; j++) {

        if (ngx_memcmp(hashes[i].hash, hashes[j].hash,
                       NGX_HOOKSTREAM_SHA256_LEN)
            != 0)
        {
            hashes[++i] = hashes[j];
            continue;
        }

        if (hashes[i].org_id != hashes[j].org_id) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: %s sha256:%*xs... "
                               "is listed by both org \"%V\" and org \"%V\"",
                               path, what, (size_t) 4, hashes[j].hash,
                               hashes[i].org_id, hashes[j].org_id);
            return NGX_ERROR;
        }
    }

    *n = i + 1;

    return NGX_OK;
}


static ngx_int_t
ngx_hookstream_directory_sort_sources(ngx_conf_t *cf, ngx_str_t *path,
    ngx_hookstream_dir_source_t *sources, ngx_uint_t *n)
{
    ngx_uint_t  i, j;

    if (*n < 2) {
        return NGX_OK;
    }

    ngx_qsort(sources, *n, sizeof(ngx_hookstream_dir_source_t),
              ngx_hookstream_cmp_sources);

    for (i = 0, j = 1; j < *n; j++) {

        if (ngx_memcmp(sources[i].id, sources[j].id,
                       NGX_HOOKSTREAM_ID_RAW_LEN)
            != 0)
        {
            sources[++i] = sources[j];
            continue;
        }

        if (sources[i].org_id != sources[j].org_id) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "hookstream_directory %V: source src_%*xs "
                               "is listed by both org \"%V\" and org \"%V\"",
                               path, (size_t) NGX_HOOKSTREAM_ID_RAW_LEN,
                               sources[j].id, sources[i].org_id,
                               sources[j].org_id);
            return NGX_ERROR;
        }
    }

    *n = i + 1;

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_hookstream_cmp_hashes(const void *one, const void *two)
{
    const ngx_hookstream_dir_hash_t  *a = one;
    const ngx_hookstream_dir_hash_t  *b = two;

    return ngx_memcmp(a->hash, b->hash, NGX_HOOKSTREAM_SHA256_LEN);
}


static int ngx_libc_cdecl
ngx_hookstream_cmp_sources(const void *one, const void *two)
{
    const ngx_hookstream_dir_source_t  *a = one;
    const ngx_hookstream_dir_source_t  *b = two;

    return ngx_memcmp(a->id, b->id, NGX_HOOKSTREAM_ID_RAW_LEN);
}


static int ngx_libc_cdecl
ngx_hookstream_cmp_org_ptrs(const void *one, const void *two)
{
    ngx_str_t  *a = *(ngx_str_t **) one;
    ngx_str_t  *b = *(ngx_str_t **) two;

    /* valid org ids all have the same length */

    return ngx_memcmp(a->data, b->data, a->len);
}


/* copies a printable prefix of a C string for an error message */

static size_t
ngx_hookstream_quote(u_char *dst, size_t size, const char *src)
{
    u_char  *p;
    size_t   n;

    p = (u_char *) src;

    for (n = 0; n < size && p[n] != '\0'; n++) {
        dst[n] = (p[n] < 0x20 || p[n] >= 0x7f || p[n] == '"') ? '?' : p[n];
    }

    return n;
}


ngx_int_t
ngx_hookstream_directory_source(ngx_hookstream_directory_t *d,
    ngx_str_t *source_id, ngx_str_t *org_id)
{
    u_char                        id[NGX_HOOKSTREAM_ID_RAW_LEN];
    ngx_int_t                     rc;
    ngx_uint_t                    lo, hi, mid;
    ngx_hookstream_dir_source_t  *s;

    if (d == NULL
        || ngx_hookstream_decode_id(id, source_id->data, source_id->len,
                                    "src_")
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    lo = 0;
    hi = d->nsources;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        s = &d->sources[mid];

        rc = ngx_memcmp(id, s->id, NGX_HOOKSTREAM_ID_RAW_LEN);

        if (rc == 0) {
            *org_id = *s->org_id;
            return NGX_OK;
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_hookstream_directory_lookup(ngx_hookstream_directory_t *d,
    ngx_uint_t kind, u_char *hash, ngx_str_t *org_id)
{
    ngx_int_t                   rc;
    ngx_uint_t                  lo, hi, mid;
    ngx_hookstream_dir_hash_t  *table, *h;

    if (d == NULL) {
        return NGX_DECLINED;
    }

    if (kind == NGX_HOOKSTREAM_AUTH_COOKIE) {
        table = d->sessions;
        hi = d->nsessions;

    } else {
        table = d->api_keys;
        hi = d->napi_keys;
    }

    lo = 0;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        h = &table[mid];

        rc = ngx_memcmp(hash, h->hash, NGX_HOOKSTREAM_SHA256_LEN);

        if (rc == 0) {
            *org_id = *h->org_id;
            return NGX_OK;
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NGX_DECLINED;
}


/*
 * Decodes 2 * n hex digits into n bytes (dst may be NULL to validate
 * only); "lowercase" refuses the digits A-F.
 */

static ngx_int_t
ngx_hookstream_decode_hex(u_char *dst, u_char *src, size_t len,
    ngx_uint_t lowercase)
{
    u_char      c, byte;
    ngx_uint_t  i;

    if (len % 2) {
        return NGX_ERROR;
    }

    byte = 0;

    for (i = 0; i < len; i++) {
        c = src[i];

        if (c >= '0' && c <= '9') {
            c -= '0';

        } else if (c >= 'a' && c <= 'f') {
            c -= 'a' - 10;

        } else if (!lowercase && c >= 'A' && c <= 'F') {
            c -= 'A' - 10;

        } else {
            return NGX_ERROR;
        }

        byte = (u_char) ((byte << 4) | c);

        if (i % 2 && dst) {
            *dst++ = byte;
        }
    }

    return NGX_OK;
}


/* "prefix" and 32 lowercase hex digits, into 16 bytes when dst is set */

static ngx_int_t
ngx_hookstream_decode_id(u_char *dst, u_char *src, size_t len,
    const char *prefix)
{
    size_t  n;

    n = ngx_strlen(prefix);

    if (len != n + NGX_HOOKSTREAM_HEX_ID_LEN
        || ngx_strncmp(src, prefix, n) != 0)
    {
        return NGX_ERROR;
    }

    return ngx_hookstream_decode_hex(dst, src + n, NGX_HOOKSTREAM_HEX_ID_LEN,
                                     1);
}


/* the session cookie */


ngx_int_t
ngx_http_hookstream_cookie_index(ngx_conf_t *cf, ngx_str_t *name)
{
    u_char      *p;
    ngx_str_t    var;
    ngx_uint_t   i;

    if (name->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty session cookie name");
        return NGX_ERROR;
    }

    /* RFC 6265: a cookie name is an RFC 2616 token */

    for (i = 0; i < name->len; i++) {
        if (name->data[i] <= 0x20 || name->data[i] >= 0x7f
            || ngx_strchr("()<>@,;:\\\"/[]?={}", name->data[i]) != NULL)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid session cookie name \"%V\"", name);
            return NGX_ERROR;
        }
    }

    var.len = sizeof("cookie_") - 1 + name->len;
    var.data = ngx_pnalloc(cf->pool, var.len);
    if (var.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(var.data, "cookie_", sizeof("cookie_") - 1);
    ngx_memcpy(p, name->data, name->len);

    return ngx_http_get_variable_index(cf, &var);
}


/* requests */


ngx_int_t
ngx_http_hookstream_authenticate(ngx_http_request_t *r, ngx_uint_t allow,
    ngx_str_t *org_id, const char **message)
{
    u_char                          *p;
    ngx_table_elt_t                 *h;
    ngx_http_hookstream_auth_ctx_t  *ctx;

    ctx = ngx_http_hookstream_auth_ctx(r);

    /* first of all, before anything can log the request line */

    ngx_http_hookstream_take_token(r, ctx);

    if (ctx == NULL) {
        *message = "Internal server error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->phase != NGX_HOOKSTREAM_AUTH_DONE || ctx->allow != allow) {

        /*
         * The access phase did not resolve this credential (another
         * module ended the phase first): what needs no waiting is done
         * here, the authority cannot be asked any more.
         */

        ngx_http_hookstream_auth_stop_waiting(ctx);

        ctx->phase = NGX_HOOKSTREAM_AUTH_NEW;
        ctx->allow = allow;

        (void) ngx_http_hookstream_auth_run(r, ctx, 1);
    }

    if (ctx->phase == NGX_HOOKSTREAM_AUTH_DONE
        && ctx->status == NGX_OK
        && ctx->org.len)
    {
        *org_id = ctx->org;

        /* an upgrade after this takes the credential along */
        ctx->resolved = 1;

        return NGX_OK;
    }

    if (ctx->status == NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "hookstream: a credential was left unresolved");

        *message = "Internal server error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->status == NGX_HTTP_TOO_MANY_REQUESTS) {
        h = ngx_list_push(&r->headers_out.headers);
        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);

        if (h == NULL || p == NULL) {
            *message = "Internal server error";
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "%T", ctx->retry_after) - p;
    }

    *message = ctx->message;

    return ctx->status;
}


/*
 * The access phase of hookstream_stream and hookstream_source: resolves
 * the credential, waiting for the shared cache or the authority when it
 * must, and leaves the answer in the request's credential state for the
 * content handler, which still answers a bad handshake first.
 */

static ngx_int_t
ngx_http_hookstream_auth_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    const char                      *msg;
    ngx_http_hookstream_auth_ctx_t  *ctx;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    if (hlcf->endpoint != NGX_HOOKSTREAM_EP_STREAM
        && hlcf->endpoint != NGX_HOOKSTREAM_EP_SOURCE)
    {
        return NGX_DECLINED;
    }

    ctx = ngx_http_hookstream_auth_ctx(r);

    ngx_http_hookstream_take_token(r, ctx);

    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->phase == NGX_HOOKSTREAM_AUTH_NEW) {

        /* a bad handshake is answered with 400 or 426, unresolved */

        rc = ngx_http_hookstream_ws_check(r, &msg);

        if (rc != NGX_OK) {
            ngx_http_hookstream_auth_hide_version(r);
            return NGX_DECLINED;
        }

        ctx->allow = (hlcf->endpoint == NGX_HOOKSTREAM_EP_STREAM)
                     ? (NGX_HOOKSTREAM_AUTH_KEY|NGX_HOOKSTREAM_AUTH_COOKIE)
                     : NGX_HOOKSTREAM_AUTH_KEY;
    }

    rc = ngx_http_hookstream_auth_run(r, ctx, 0);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return NGX_DECLINED;
}


/*
 * The content handler checks the handshake again and adds the 426's
 * Sec-WebSocket-Version header then: the access phase's one is dropped.
 */

static void
ngx_http_hookstream_auth_hide_version(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Sec-WebSocket-Version") - 1
            && ngx_strncasecmp(h[i].key.data,
                               (u_char *) "Sec-WebSocket-Version",
                               sizeof("Sec-WebSocket-Version") - 1)
               == 0)
        {
            h[i].hash = 0;
        }
    }
}


/*
 * Moves the resolution on as far as it goes: NGX_AGAIN while it waits
 * (for the cache or the authority), NGX_OK when the answer is in ctx.
 * With "nowait" it never waits: what would is answered with 503.
 */

static ngx_int_t
ngx_http_hookstream_auth_run(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_uint_t nowait)
{
    time_t                            retry;
    ngx_int_t                         rc;
    ngx_str_t                         addr;
    ngx_uint_t                        state, flags, kind;
    ngx_msec_t                        elapsed;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    for ( ;; ) {

        switch (ctx->phase) {

        case NGX_HOOKSTREAM_AUTH_NEW:

            /* nothing is allowed until an answer says so */
            ctx->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
            ctx->message = "Internal server error";

            ctx->sh = hmcf->shm_zone ? hmcf->shm_zone->data : NULL;
            ctx->authority = 0;
            ctx->retried = 0;
            ctx->waited = 0;

            rc = ngx_http_hookstream_auth_credential(r, ctx);

            if (rc != NGX_OK) {
                return NGX_OK;
            }

            /* an address past its failures is not let near the key */

            if (hlcf->auth_fail_limit
                && ctx->sh
                && ngx_http_hookstream_auth_client_addr(r, &addr) == NGX_OK
                && ngx_hookstream_authcache_fail_check(ctx->sh, &addr,
                                                       hlcf->auth_fail_limit,
                                                       &retry)
                   == NGX_BUSY)
            {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "client sent more than %ui bad credentials a "
                              "minute, refused for %T s",
                              hlcf->auth_fail_limit, retry);

                ctx->retry_after = retry;
                ngx_http_hookstream_auth_finish(ctx,
                                                NGX_HTTP_TOO_MANY_REQUESTS,
                                                "Too many failed credentials");
                return NGX_OK;
            }

            kind = (ctx->source == NGX_HOOKSTREAM_CRED_COOKIE)
                   ? NGX_HOOKSTREAM_AUTH_COOKIE : NGX_HOOKSTREAM_AUTH_KEY;

            if (ngx_hookstream_directory_lookup(hmcf->directory, kind,
                                                ctx->hash, &ctx->org)
                == NGX_OK)
            {
                ngx_http_hookstream_auth_finish(ctx, NGX_OK, NULL);
                return NGX_OK;
            }

            if (hlcf->auth_request.len == 0) {

                if (hmcf->directory == NULL) {
                    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                                  "hookstream: a credential cannot be "
                                  "resolved without \"hookstream_directory\" "
                                  "or \"hookstream_auth_request\"");
                }

                ngx_http_hookstream_auth_denied(r, ctx,
                                                NGX_HTTP_UNAUTHORIZED);
                return NGX_OK;
            }

            if (ctx->sh == NULL) {
                ngx_http_hookstream_auth_unavailable(ctx);
                return NGX_OK;
            }

            ngx_http_hookstream_auth_key(r, ctx);

            ctx->phase = NGX_HOOKSTREAM_AUTH_LOOKUP;

            /* fall through */

        case NGX_HOOKSTREAM_AUTH_LOOKUP:

            flags = nowait ? 0 : NGX_HOOKSTREAM_AUTHCACHE_CREATE;

            if (ctx->waited) {
                flags |= NGX_HOOKSTREAM_AUTHCACHE_WAITED;
            }

            state = ngx_hookstream_authcache_lookup(ctx->sh, &ctx->key, flags,
                                                    hlcf->auth_timeout,
                                                    hmcf->auth_cache_max,
                                                    &ctx->res);

            if (state != NGX_HOOKSTREAM_AUTHCACHE_MISS
                && state != NGX_HOOKSTREAM_AUTHCACHE_PENDING)
            {
                return ngx_http_hookstream_auth_cached(r, ctx, state);
            }

            if (nowait) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "hookstream: the credential sha256:%*xs... "
                              "needs \"hookstream_auth_request\", which "
                              "runs in the access phase, and the phase "
                              "ended before it",
                              (size_t) 4, ctx->hash);
                ngx_http_hookstream_auth_unavailable(ctx);
                return NGX_OK;
            }

            if (state == NGX_HOOKSTREAM_AUTHCACHE_MISS) {

                if (ngx_http_hookstream_auth_ask(r, ctx) != NGX_OK) {

                    if (ctx->res.owner) {
                        ctx->res.state = NGX_HOOKSTREAM_AUTHCACHE_ERROR;
                        (void) ngx_hookstream_authcache_store(ctx->sh,
                                                  &ctx->key, &ctx->res, 0,
                                                  hmcf->auth_cache_max);
                        ngx_http_hookstream_auth_wake();
                    }

                    ngx_http_hookstream_auth_finish(ctx,
                                              NGX_HTTP_INTERNAL_SERVER_ERROR,
                                              "Internal server error");
                    return NGX_OK;
                }

                ctx->phase = NGX_HOOKSTREAM_AUTH_ASK;
                return NGX_AGAIN;
            }

            /* another request asks the authority: its answer is ours */

            if (!ctx->waited) {
                ctx->waited = 1;
                ctx->wait_start = ngx_current_msec;
                ctx->wait_delay = NGX_HOOKSTREAM_AUTH_POLL_MIN;
            }

            elapsed = ngx_current_msec - ctx->wait_start;

            if (elapsed >= hlcf->auth_timeout) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "hookstream: no answer of the authority on "
                              "sha256:%*xs... in %Mms, refusing it",
                              (size_t) 4, ctx->hash, elapsed);
                ngx_http_hookstream_auth_unavailable(ctx);
                return NGX_OK;
            }

            ngx_http_hookstream_auth_wait(r, ctx);

            ctx->phase = NGX_HOOKSTREAM_AUTH_WAIT;
            return NGX_AGAIN;

        case NGX_HOOKSTREAM_AUTH_WAIT:

            if (ctx->wait.timer_set || ctx->wait.posted) {
                return NGX_AGAIN;
            }

            ngx_http_hookstream_auth_stop_waiting(ctx);

            ctx->phase = NGX_HOOKSTREAM_AUTH_LOOKUP;
            break;

        case NGX_HOOKSTREAM_AUTH_ASK:

            if (!ctx->sub_done) {
                return NGX_AGAIN;
            }

            if (ngx_http_hookstream_auth_answer(r, ctx) == NGX_AGAIN) {
                /* a revocation came meanwhile: ask once more */
                ctx->phase = NGX_HOOKSTREAM_AUTH_LOOKUP;
                break;
            }

            return NGX_OK;

        default: /* NGX_HOOKSTREAM_AUTH_DONE */
            return NGX_OK;
        }
    }
}


/* the request's credential into ctx->hash; the HTTP status if none */

static ngx_int_t
ngx_http_hookstream_auth_credential(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx)
{
    ngx_uint_t                       count;
    ngx_table_elt_t                 *h;
    ngx_http_variable_value_t       *vv;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    ctx->source = NGX_HOOKSTREAM_CRED_NONE;

    if (ctx->allow & NGX_HOOKSTREAM_AUTH_KEY) {

        if (ctx->has_query) {
            ngx_memcpy(ctx->hash, ctx->query_hash,
                       NGX_HOOKSTREAM_SHA256_LEN);
            ctx->source = NGX_HOOKSTREAM_CRED_QUERY;

        } else {
            h = ngx_http_hookstream_find_header(&r->headers_in.headers,
                                                (u_char *) "X-API-Key",
                                                sizeof("X-API-Key") - 1,
                                                &count);
            if (h && h->value.len) {
                SHA256(h->value.data, h->value.len, ctx->hash);
                ctx->source = NGX_HOOKSTREAM_CRED_HEADER;
            }
        }
    }

    if (ctx->source == NGX_HOOKSTREAM_CRED_NONE
        && (ctx->allow & NGX_HOOKSTREAM_AUTH_COOKIE)
        && hlcf->cookie_index != NGX_CONF_UNSET)
    {
        vv = ngx_http_get_indexed_variable(r, hlcf->cookie_index);

        if (vv == NULL) {
            ngx_http_hookstream_auth_finish(ctx,
                                            NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "Internal server error");
            return NGX_ERROR;
        }

        if (!vv->not_found && vv->len) {

            /*
             * The Origin is checked before the session is looked up, so
             * that a foreign page cannot even learn whether a session is
             * valid.
             */

            if (ngx_http_hookstream_check_origin(r, hlcf) != NGX_OK) {
                ngx_http_hookstream_auth_finish(ctx, NGX_HTTP_FORBIDDEN,
                                                "Origin not allowed");
                return NGX_ERROR;
            }

            SHA256(vv->data, vv->len, ctx->hash);
            ctx->source = NGX_HOOKSTREAM_CRED_COOKIE;
        }
    }

    if (ctx->source == NGX_HOOKSTREAM_CRED_NONE) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent no %s",
                      (ctx->allow & NGX_HOOKSTREAM_AUTH_COOKIE)
                      ? "API key or session cookie" : "API key");

        ngx_http_hookstream_auth_finish(ctx, NGX_HTTP_UNAUTHORIZED,
                                        "Missing API key");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the cache key: the hash, its kind, and the source on hookstream_source */

static void
ngx_http_hookstream_auth_key(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx)
{
    ngx_str_t                        id;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    ngx_memzero(&ctx->key, sizeof(ngx_hookstream_authkey_t));
    ngx_memcpy(ctx->key.hash, ctx->hash, NGX_HOOKSTREAM_SHA256_LEN);

    ctx->key.kind = (ctx->source == NGX_HOOKSTREAM_CRED_COOKIE)
                    ? NGX_HOOKSTREAM_AUTH_COOKIE : NGX_HOOKSTREAM_AUTH_KEY;

    if (hlcf->endpoint == NGX_HOOKSTREAM_EP_SOURCE
        && ngx_http_hookstream_get_id(r, hlcf, &id) == NGX_OK
        && ngx_hookstream_decode_id(ctx->key.source, id.data, id.len, "src_")
           == NGX_OK)
    {
        ctx->key.has_source = 1;
    }
}


/* an answer found in the shared cache */

static ngx_int_t
ngx_http_hookstream_auth_cached(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_uint_t state)
{
    switch (state) {

    case NGX_HOOKSTREAM_AUTHCACHE_ALLOW:
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "hookstream auth: sha256:%*xs... cached as allowed",
                       (size_t) 4, ctx->hash);

        ngx_http_hookstream_auth_allowed(ctx, ctx->res.org);
        break;

    case NGX_HOOKSTREAM_AUTHCACHE_DENY:
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "hookstream auth: sha256:%*xs... cached as refused",
                       (size_t) 4, ctx->hash);

        ngx_http_hookstream_auth_denied(r, ctx, ctx->res.status);
        break;

    default: /* NGX_HOOKSTREAM_AUTHCACHE_ERROR */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hookstream: the authority's answer on sha256:%*xs... "
                      "that this request waited for failed, refusing it",
                      (size_t) 4, ctx->hash);

        ngx_http_hookstream_auth_unavailable(ctx);
        break;
    }

    return NGX_OK;
}


static void
ngx_http_hookstream_auth_finish(ngx_http_hookstream_auth_ctx_t *ctx,
    ngx_int_t status, const char *message)
{
    ngx_http_hookstream_auth_stop_waiting(ctx);

    ctx->status = status;
    ctx->message = message;
    ctx->phase = NGX_HOOKSTREAM_AUTH_DONE;

    if (status == NGX_OK) {
        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                       "hookstream auth: %s sha256:%*xs... is org \"%V\"",
                       ngx_http_hookstream_cred_names[ctx->source],
                       (size_t) 4, ctx->hash, &ctx->org);
    }
}


/* the authority's (or the cache's) allow, with the org's 16 bytes */

static void
ngx_http_hookstream_auth_allowed(ngx_http_hookstream_auth_ctx_t *ctx,
    u_char *org)
{
    u_char  *p;

    p = ngx_cpymem(ctx->org_data, "org_", sizeof("org_") - 1);
    p = ngx_hex_dump(p, org, NGX_HOOKSTREAM_HEX_ID_LEN / 2);

    ctx->org.data = ctx->org_data;
    ctx->org.len = p - ctx->org_data;

    ctx->sources = ctx->res.sources;
    ctx->authority = 1;

    ngx_http_hookstream_auth_finish(ctx, NGX_OK, NULL);
}


/* an unknown credential (401, counted per address) or a refused one */

static void
ngx_http_hookstream_auth_denied(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_uint_t status)
{
    ngx_str_t                         addr;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    if (status == NGX_HTTP_FORBIDDEN) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent a %s that the authority refused here, "
                      "sha256:%*xs...",
                      ngx_http_hookstream_cred_names[ctx->source],
                      (size_t) 4, ctx->hash);

        ngx_http_hookstream_auth_finish(ctx, NGX_HTTP_FORBIDDEN,
                                        "Credential not allowed here");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "client sent an unknown %s, sha256:%*xs...",
                  ngx_http_hookstream_cred_names[ctx->source],
                  (size_t) 4, ctx->hash);

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (hlcf->auth_fail_limit
        && ctx->sh
        && ngx_http_hookstream_auth_client_addr(r, &addr) == NGX_OK)
    {
        ngx_hookstream_authcache_fail_add(ctx->sh, &addr,
                                          hlcf->auth_fail_limit,
                                          hmcf->auth_cache_max);
    }

    ngx_http_hookstream_auth_finish(ctx, NGX_HTTP_UNAUTHORIZED,
                                    (ctx->source == NGX_HOOKSTREAM_CRED_COOKIE)
                                    ? "Invalid session" : "Invalid API key");
}


/* the authority could not be asked or did not answer: fail closed */

static void
ngx_http_hookstream_auth_unavailable(ngx_http_hookstream_auth_ctx_t *ctx)
{
    ngx_http_hookstream_auth_finish(ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "Credentials cannot be checked now");
}


/* the binary client address, as $binary_remote_addr */

static ngx_int_t
ngx_http_hookstream_auth_client_addr(ngx_http_request_t *r, ngx_str_t *addr)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    switch (r->connection->sockaddr->sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;

        addr->data = sin6->sin6_addr.s6_addr;
        addr->len = sizeof(struct in6_addr);

        return NGX_OK;
#endif

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;

        addr->data = (u_char *) &sin->sin_addr;
        addr->len = sizeof(in_addr_t);

        return NGX_OK;

    default:
        /* unix sockets: all clients look the same, so none is limited */
        return NGX_DECLINED;
    }
}


/*
 * The authority subrequest.  It carries the credential's hash, never the
 * credential: its headers are a new list, not the client's, so neither
 * X-API-Key nor Cookie reaches the backend or its logs.
 */

static ngx_int_t
ngx_http_hookstream_auth_ask(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx)
{
    u_char                          *p, hex[2 * NGX_HOOKSTREAM_SHA256_LEN];
    ngx_str_t                        uri, args, id;
    ngx_http_request_t              *sr;
    ngx_http_post_subrequest_t      *ps;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_hookstream_auth_done;
    ps->data = ctx;

    uri = hlcf->auth_request;
    ngx_str_null(&args);

    p = ngx_strlchr(uri.data, uri.data + uri.len, '?');

    if (p) {
        args.data = p + 1;
        args.len = uri.data + uri.len - args.data;
        uri.len = p - uri.data;
    }

    ctx->sub_done = 0;
    ctx->sub_org = 0;
    ctx->sub_status = 0;

    if (ngx_http_subrequest(r, &uri, args.len ? &args : NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* as auth_request: no body is read for it, none is sent back */

    sr->request_body = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (sr->request_body == NULL) {
        return NGX_ERROR;
    }

    sr->header_only = 1;

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 4,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sr->headers_in.server = r->headers_in.server;
    sr->headers_in.content_length_n = -1;
    sr->headers_in.keep_alive_n = -1;

    ngx_hex_dump(hex, ctx->hash, NGX_HOOKSTREAM_SHA256_LEN);

    if (ngx_http_hookstream_auth_push_header(sr,
                                             "X-Hookstream-Credential-Hash",
                                             hex, sizeof(hex))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->key.kind == NGX_HOOKSTREAM_AUTH_COOKIE) {
        p = (u_char *) "session";

    } else {
        p = (u_char *) "api_key";
    }

    if (ngx_http_hookstream_auth_push_header(sr,
                                             "X-Hookstream-Credential-Kind",
                                             p, ngx_strlen(p))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->key.has_source) {
        id.len = sizeof("src_") - 1 + NGX_HOOKSTREAM_HEX_ID_LEN;
        id.data = ngx_pnalloc(r->pool, id.len);
        if (id.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(id.data, "src_", sizeof("src_") - 1);
        ngx_hex_dump(p, ctx->key.source, NGX_HOOKSTREAM_HEX_ID_LEN / 2);

        if (ngx_http_hookstream_auth_push_header(sr, "X-Hookstream-Source",
                                                 id.data, id.len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "hookstream auth: asking \"%V\" about sha256:%*xs...",
                   &hlcf->auth_request, (size_t) 4, ctx->hash);

    return NGX_OK;
}


static ngx_int_t
ngx_http_hookstream_auth_push_header(ngx_http_request_t *sr, char *name,
    u_char *value, size_t len)
{
    u_char           *p;
    size_t            n;
    ngx_table_elt_t  *h;

    n = ngx_strlen(name);

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(sr->pool, n + len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h->key.len = n;
    h->key.data = (u_char *) name;

    h->lowcase_key = p;
    ngx_strlow(h->lowcase_key, (u_char *) name, n);
    h->hash = ngx_hash_strlow(h->lowcase_key, (u_char *) name, n);

    h->value.len = len;
    h->value.data = ngx_cpymem(p + n, value, len) - len;

    return NGX_OK;
}


/* the subrequest is over: what it said, before its state goes away */

static ngx_int_t
ngx_http_hookstream_auth_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_hookstream_auth_ctx_t *ctx = data;

    ngx_uint_t        count;
    ngx_table_elt_t  *h;

    ctx->sub_done = 1;
    ctx->sub_status = sr->headers_out.status;

    if (rc == NGX_ERROR) {
        ctx->sub_status = 0;

    } else if (rc >= NGX_HTTP_SPECIAL_RESPONSE
               && ctx->sub_status < NGX_HTTP_SPECIAL_RESPONSE)
    {
        ctx->sub_status = rc;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "hookstream auth: the authority answered %ui, rc:%i",
                   ctx->sub_status, rc);

    ngx_memzero(ctx->res.org, sizeof(ctx->res.org));
    ctx->res.sources = NGX_HOOKSTREAM_SOURCES_UNKNOWN;

    if (ctx->sub_status < NGX_HTTP_OK
        || ctx->sub_status >= NGX_HTTP_SPECIAL_RESPONSE)
    {
        return rc;
    }

    h = ngx_http_hookstream_auth_answer_header(sr, "X-Hookstream-Org",
                                               sizeof("X-Hookstream-Org") - 1,
                                               &count);

    if (h && count == 1
        && ngx_hookstream_decode_id(ctx->res.org, h->value.data,
                                    h->value.len, "org_")
           == NGX_OK)
    {
        ctx->sub_org = 1;
    }

    ctx->res.sources = ngx_http_hookstream_auth_sources(ctx, sr);

    return rc;
}


/* a header of the authority's answer: the upstream's, else the response's */

static ngx_table_elt_t *
ngx_http_hookstream_auth_answer_header(ngx_http_request_t *sr, char *name,
    size_t len, ngx_uint_t *count)
{
    ngx_table_elt_t  *h;

    h = NULL;
    *count = 0;

    if (sr->upstream) {
        h = ngx_http_hookstream_find_header(&sr->upstream->headers_in.headers,
                                            (u_char *) name, len, count);
    }

    if (h == NULL) {
        h = ngx_http_hookstream_find_header(&sr->headers_out.headers,
                                            (u_char *) name, len, count);
    }

    return h;
}


/* is the source asked about in X-Hookstream-Sources, "src_a, src_b"? */

static ngx_uint_t
ngx_http_hookstream_auth_sources(ngx_http_hookstream_auth_ctx_t *ctx,
    ngx_http_request_t *sr)
{
    u_char            *p, *last, *start, *end;
    u_char             id[NGX_HOOKSTREAM_HEX_ID_LEN / 2];
    ngx_uint_t         i, found;
    ngx_list_t        *list;
    ngx_list_part_t   *part;
    ngx_table_elt_t   *h;

    if (!ctx->key.has_source) {
        return NGX_HOOKSTREAM_SOURCES_UNKNOWN;
    }

    list = sr->upstream ? &sr->upstream->headers_in.headers
                        : &sr->headers_out.headers;

    found = 0;
    part = &list->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != sizeof("X-Hookstream-Sources") - 1
            || ngx_strncasecmp(h[i].key.data,
                               (u_char *) "X-Hookstream-Sources",
                               sizeof("X-Hookstream-Sources") - 1)
               != 0)
        {
            continue;
        }

        found = 1;

        p = h[i].value.data;
        last = p + h[i].value.len;

        while (p < last) {

            while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
                p++;
            }

            start = p;

            while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
                p++;
            }

            end = p;

            if (end > start
                && ngx_hookstream_decode_id(id, start, end - start, "src_")
                   == NGX_OK
                && ngx_memcmp(id, ctx->key.source, sizeof(id)) == 0)
            {
                return NGX_HOOKSTREAM_SOURCES_LISTED;
            }
        }
    }

    return found ? NGX_HOOKSTREAM_SOURCES_NOT_LISTED
                 : NGX_HOOKSTREAM_SOURCES_UNKNOWN;
}


/*
 * The authority's answer: 2xx with X-Hookstream-Org allows, 401 and 403
 * refuse, anything else fails closed.  It goes to the shared cache for
 * the other requests.  NGX_AGAIN when it must be asked again.
 */

static ngx_int_t
ngx_http_hookstream_auth_answer(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx)
{
    ngx_int_t                         rc;
    ngx_uint_t                        status;
    ngx_msec_t                        ttl;
    ngx_http_hookstream_loc_conf_t   *hlcf;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    status = ctx->sub_status;
    ttl = 0;

    if (status >= NGX_HTTP_OK && status < NGX_HTTP_SPECIAL_RESPONSE
        && ctx->sub_org)
    {
        ctx->res.state = NGX_HOOKSTREAM_AUTHCACHE_ALLOW;
        ttl = (ngx_msec_t) hlcf->auth_valid * 1000;

    } else if (status == NGX_HTTP_UNAUTHORIZED
               || status == NGX_HTTP_FORBIDDEN)
    {
        ctx->res.state = NGX_HOOKSTREAM_AUTHCACHE_DENY;
        ctx->res.status = status;
        ttl = (ngx_msec_t) hlcf->auth_invalid * 1000;

    } else {

        if (status >= NGX_HTTP_OK && status < NGX_HTTP_SPECIAL_RESPONSE) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "hookstream_auth_request \"%V\" answered %ui "
                          "without a valid X-Hookstream-Org for "
                          "sha256:%*xs..., refusing the credential",
                          &hlcf->auth_request, status,
                          (size_t) 4, ctx->hash);

        } else {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "hookstream_auth_request \"%V\" answered %ui for "
                          "sha256:%*xs..., refusing the credential",
                          &hlcf->auth_request, status,
                          (size_t) 4, ctx->hash);
        }

        ctx->res.state = NGX_HOOKSTREAM_AUTHCACHE_ERROR;
    }

    rc = ngx_hookstream_authcache_store(ctx->sh, &ctx->key, &ctx->res, ttl,
                                        hmcf->auth_cache_max);

    ngx_http_hookstream_auth_wake();

    if (rc == NGX_DECLINED) {

        if (!ctx->retried) {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "hookstream auth: a revocation came while asking "
                           "about sha256:%*xs..., asking again",
                           (size_t) 4, ctx->hash);

            ctx->retried = 1;
            ctx->waited = 0;
            return NGX_AGAIN;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hookstream: revocations kept coming while asking "
                      "about sha256:%*xs..., refusing it",
                      (size_t) 4, ctx->hash);

        ngx_http_hookstream_auth_unavailable(ctx);
        return NGX_OK;
    }

    switch (ctx->res.state) {

    case NGX_HOOKSTREAM_AUTHCACHE_ALLOW:
        ngx_http_hookstream_auth_allowed(ctx, ctx->res.org);
        break;

    case NGX_HOOKSTREAM_AUTHCACHE_DENY:
        ngx_http_hookstream_auth_denied(r, ctx, status);
        break;

    default:
        ngx_http_hookstream_auth_unavailable(ctx);
        break;
    }

    return NGX_OK;
}


/* polls the shared cache, sooner when this worker's own answer comes */

static void
ngx_http_hookstream_auth_wait(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx)
{
    ctx->wait.handler = ngx_http_hookstream_auth_wait_handler;
    ctx->wait.data = ctx;
    ctx->wait.log = r->connection->log;

    ngx_add_timer(&ctx->wait, ctx->wait_delay);

    ctx->wait_delay = ngx_min(ctx->wait_delay * 2,
                              NGX_HOOKSTREAM_AUTH_POLL_MAX);

    if (!ctx->in_waiting && ngx_http_hookstream_auth_worker) {
        ngx_queue_insert_tail(&ngx_http_hookstream_auth_worker->waiters,
                              &ctx->waiting);
        ctx->in_waiting = 1;
    }
}


static void
ngx_http_hookstream_auth_stop_waiting(ngx_http_hookstream_auth_ctx_t *ctx)
{
    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }

    if (ctx->wait.posted) {
        ngx_delete_posted_event(&ctx->wait);
    }

    if (ctx->in_waiting) {
        ngx_queue_remove(&ctx->waiting);
        ctx->in_waiting = 0;
    }
}


static void
ngx_http_hookstream_auth_wait_handler(ngx_event_t *ev)
{
    ngx_connection_t                *c;
    ngx_http_request_t              *r;
    ngx_http_hookstream_auth_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "hookstream auth: looking at the cache again");

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* this worker stored an answer: its waiters look right away */

static void
ngx_http_hookstream_auth_wake(void)
{
    ngx_queue_t                     *q;
    ngx_http_hookstream_auth_ctx_t  *ctx;

    if (ngx_http_hookstream_auth_worker == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_http_hookstream_auth_worker->waiters);
         q != ngx_queue_sentinel(&ngx_http_hookstream_auth_worker->waiters);
         q = ngx_queue_next(q))
    {
        ctx = ngx_queue_data(q, ngx_http_hookstream_auth_ctx_t, waiting);

        if (ctx->wait.timer_set) {
            ngx_del_timer(&ctx->wait);
            ngx_post_event(&ctx->wait, &ngx_posted_events);
        }
    }
}


ngx_int_t
ngx_http_hookstream_auth_source(ngx_http_request_t *r, ngx_str_t *source_id,
    ngx_str_t *owner)
{
    u_char                            id[NGX_HOOKSTREAM_HEX_ID_LEN / 2];
    ngx_http_hookstream_auth_ctx_t   *ctx;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (ngx_hookstream_directory_source(hmcf->directory, source_id, owner)
        == NGX_OK)
    {
        return NGX_OK;
    }

    ctx = ngx_http_hookstream_auth_ctx(r);

    if (ctx == NULL
        || ctx->phase != NGX_HOOKSTREAM_AUTH_DONE
        || ctx->status != NGX_OK
        || !ctx->authority
        || !ctx->key.has_source
        || ngx_hookstream_decode_id(id, source_id->data, source_id->len,
                                    "src_")
           != NGX_OK
        || ngx_memcmp(id, ctx->key.source, sizeof(id)) != 0)
    {
        return NGX_DECLINED;
    }

    switch (ctx->sources) {

    case NGX_HOOKSTREAM_SOURCES_LISTED:
        *owner = ctx->org;
        return NGX_OK;

    case NGX_HOOKSTREAM_SOURCES_NOT_LISTED:
        ngx_str_set(owner, "");
        return NGX_OK;

    default:
        return NGX_DECLINED;
    }
}


/* revocations */


const char *
ngx_http_hookstream_auth_revoke(ngx_http_request_t *r, cJSON *json)
{
    u_char                           *p, hash[NGX_HOOKSTREAM_SHA256_LEN];
    u_char                            hex[2 * NGX_HOOKSTREAM_SHA256_LEN];
    size_t                            len;
    cJSON                            *item;
    ngx_uint_t                        n;
    ngx_hookstream_pub_t              pub;
    ngx_hookstream_shctx_t           *sh;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    item = cJSON_GetObjectItemCaseSensitive(json, "key_hash");

    if (item == NULL) {
        item = cJSON_GetObjectItemCaseSensitive(json, "session_hash");
    }

    if (!cJSON_IsString(item)) {
        return "key_hash or session_hash is missing";
    }

    p = (u_char *) item->valuestring;
    len = ngx_strlen(p);

    if (len > NGX_HOOKSTREAM_HASH_PREFIX_LEN
        && ngx_strncmp(p, NGX_HOOKSTREAM_HASH_PREFIX,
                       NGX_HOOKSTREAM_HASH_PREFIX_LEN)
           == 0)
    {
        p += NGX_HOOKSTREAM_HASH_PREFIX_LEN;
        len -= NGX_HOOKSTREAM_HASH_PREFIX_LEN;
    }

    if (len != NGX_HOOKSTREAM_HASH_HEX_LEN
        || ngx_hookstream_decode_hex(hash, p, len, 0) != NGX_OK)
    {
        return "the hash is not 64 hex digits";
    }

    if (hmcf->shm_zone == NULL) {
        return "not stored: no zone";
    }

    sh = hmcf->shm_zone->data;

    n = ngx_hookstream_authcache_revoke(sh, hash);

    ngx_hex_dump(hex, hash, NGX_HOOKSTREAM_SHA256_LEN);

    ngx_memzero(&pub, sizeof(ngx_hookstream_pub_t));

    pub.topic = ngx_http_hookstream_revoke_topic;
    ngx_str_set(&pub.type, "revoke");
    ngx_str_set(&pub.channel, "revoke");
    pub.key.data = hex;
    pub.key.len = sizeof(hex);

    if (ngx_hookstream_broker_publish(sh, &pub, 16, 60, NULL,
                                      r->connection->log)
        != NGX_OK)
    {
        return "not stored: the zone is full";
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "hookstream: credential sha256:%*xs... revoked, %ui cached "
                  "answers dropped", (size_t) 4, hash, n);

    return NULL;
}


/* in every worker: close the connections that used a revoked credential */

static void
ngx_http_hookstream_auth_revoke_deliver(ngx_hookstream_sub_t *sub,
    ngx_hookstream_msg_t *msg)
{
    u_char                              hash[NGX_HOOKSTREAM_SHA256_LEN];
    ngx_uint_t                          n;
    ngx_queue_t                        *q;
    ngx_http_hookstream_ws_t           *ws;
    ngx_http_hookstream_auth_worker_t  *w;

    w = sub->data;

    if (msg->key.len != NGX_HOOKSTREAM_HASH_HEX_LEN
        || ngx_hookstream_decode_hex(hash, msg->key.data, msg->key.len, 0)
           != NGX_OK)
    {
        return;
    }

    n = 0;

    for (q = ngx_queue_head(&w->live);
         q != ngx_queue_sentinel(&w->live);
         q = ngx_queue_next(q))
    {
        ws = ngx_queue_data(q, ngx_http_hookstream_ws_t, live);

        if (ngx_memcmp(ws->credential, hash, NGX_HOOKSTREAM_SHA256_LEN) != 0
            || ws->finalized || ws->close_sent)
        {
            continue;
        }

        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "hookstream: the credential sha256:%*xs... of this "
                      "connection was revoked, closing",
                      (size_t) 4, hash);

        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_REVOKED,
                                     "credential revoked");
        n++;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, sub->log, 0,
                   "hookstream auth: revocation of sha256:%*xs... closed "
                   "%ui connections", (size_t) 4, hash, n);

    (void) n;
}


ngx_int_t
ngx_http_hookstream_auth_init_process(ngx_cycle_t *cycle)
{
    ngx_pool_cleanup_t                 *cln;
    ngx_http_hookstream_auth_worker_t  *w;
    ngx_http_hookstream_main_conf_t    *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_hookstream_module);

    if (hmcf == NULL || hmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_hookstream_auth_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    w->sh = hmcf->shm_zone->data;

    ngx_queue_init(&w->live);
    ngx_queue_init(&w->waiters);

    w->sub.deliver = ngx_http_hookstream_auth_revoke_deliver;
    w->sub.data = w;
    w->sub.log = cycle->log;

    if (ngx_hookstream_broker_subscribe(w->sh, &w->sub,
                                        &ngx_http_hookstream_revoke_topic,
                                        NULL)
        == NGX_OK)
    {
        w->subscribed = 1;

    } else {
        /* the worker still serves; only its connections outlive revokes */
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "hookstream: no room in the zone to follow "
                      "revocations; revoked credentials keep their "
                      "connections in this worker");
    }

    cln->handler = ngx_http_hookstream_auth_worker_exit;
    cln->data = w;

    ngx_http_hookstream_auth_worker = w;

    return NGX_OK;
}


static void
ngx_http_hookstream_auth_worker_exit(void *data)
{
    ngx_http_hookstream_auth_worker_t  *w = data;

    /* before the broker's own cleanup, which was added earlier */

    if (w->subscribed) {
        ngx_hookstream_broker_unsubscribe(&w->sub);
        w->subscribed = 0;
    }

    if (ngx_http_hookstream_auth_worker == w) {
        ngx_http_hookstream_auth_worker = NULL;
    }
}


/* hookstream_client_rate */


ngx_int_t
ngx_http_hookstream_client_rate(ngx_http_hookstream_ws_t *ws)
{
    u_char      *p, buf[160];
    ngx_uint_t   rate;
    ngx_msec_t   now, elapsed;

    /*
     * An inbound source is answered in order, one reply per message: it
     * is bounded by its in-flight limit, not by dropping messages.
     */

    if (ws->conf->endpoint == NGX_HOOKSTREAM_EP_SOURCE) {
        return NGX_OK;
    }

    rate = ws->conf->client_rate;

    if (rate == NGX_CONF_UNSET_UINT) {
        rate = NGX_HOOKSTREAM_CLIENT_RATE_DEFAULT;
    }

    if (rate == 0) {
        return NGX_OK;
    }

    now = ngx_current_msec;
    elapsed = now - ws->rate_start;

    if (elapsed >= 1000) {

        if (ws->rate_count <= rate || elapsed >= 2000) {
            /* the last second was within the rate */
            ws->rate_strikes = 0;
        }

        ws->rate_start = now;
        ws->rate_count = 0;
    }

    if (++ws->rate_count <= rate) {
        return NGX_OK;
    }

    if (ws->rate_count > rate + 1) {
        /* told once a second */
        return NGX_DECLINED;
    }

    if (++ws->rate_strikes >= NGX_HOOKSTREAM_RATE_STRIKES) {
        ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                      "client sent more than %ui messages a second for %ui "
                      "seconds, closing", rate, ws->rate_strikes);

        ngx_http_hookstream_ws_close(ws, NGX_HOOKSTREAM_CLOSE_POLICY,
                                     "message rate exceeded");
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_INFO, ws->connection->log, 0,
                  "client sent more than %ui messages a second, dropping",
                  rate);

    p = ngx_snprintf(buf, sizeof(buf),
                     "{\"type\":\"error\",\"data\":{\"code\":\"rate_limited\","
                     "\"message\":\"more than %ui messages a second: "
                     "messages dropped\"}}", rate);

    (void) ngx_http_hookstream_ws_send_text(ws, buf, p - buf);

    return NGX_DECLINED;
}


/* the directives */


char *
ngx_http_hookstream_auth_request_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    ngx_str_t  *value;

    if (hlcf->auth_request.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ngx_str_set(&hlcf->auth_request, "");
        return NGX_CONF_OK;
    }

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URI \"%V\": the authority is a location "
                           "of this server, such as \"/_auth\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    hlcf->auth_request = value[1];

    return NGX_CONF_OK;
}


char *
ngx_http_hookstream_auth_cache_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hookstream_loc_conf_t *hlcf = conf;

    time_t      valid, invalid;
    ngx_str_t  *value;

    if (hlcf->auth_valid != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    valid = ngx_parse_time(&value[1], 1);

    if (valid == (time_t) NGX_ERROR || valid < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid time \"%V\" for allowed credentials "
                           "(at least 1s)", &value[1]);
        return NGX_CONF_ERROR;
    }

    invalid = ngx_parse_time(&value[2], 1);

    if (invalid == (time_t) NGX_ERROR || invalid < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid time \"%V\" for refused credentials "
                           "(at least 1s)", &value[2]);
        return NGX_CONF_ERROR;
    }

    hlcf->auth_valid = valid;
    hlcf->auth_invalid = invalid;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_hookstream_auth_mask(ngx_http_request_t *r)
{
    ngx_http_hookstream_auth_ctx_t  *ctx;

    ctx = ngx_http_hookstream_auth_ctx(r);

    ngx_http_hookstream_take_token(r, ctx);

    return ctx ? NGX_OK : NGX_ERROR;
}


/*
 * Hashes the first ?token= into the context (if there is one), then masks
 * every token argument whatever happens.
 */


static void
ngx_http_hookstream_take_token(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx)
{
    u_char     *dst, *src, *p, *last;
    ngx_str_t   value;

    if (ctx
        && !ctx->query_done
        && ngx_http_arg(r, (u_char *) "token", sizeof("token") - 1, &value)
           == NGX_OK
        && value.len)
    {
        /*
         * Unescaped in place: the bytes are overwritten by the mask just
         * below, and so no copy of the token is left in memory.
         */

        dst = value.data;
        src = value.data;

        ngx_unescape_uri(&dst, &src, value.len, 0);

        SHA256(value.data, dst - value.data, ctx->query_hash);

        ctx->has_query = 1;
        ctx->query_done = 1;
    }

    /*
     * $args, $request_uri and $request share one buffer for a request
     * read from a client over HTTP/1, but the arguments may have been
     * rewritten into new memory, and HTTP/2 builds its request line
     * apart: each is masked on its own.  Masking twice is harmless.
     */

    if (r->args.len) {
        ngx_http_hookstream_mask_query(r->args.data,
                                       r->args.data + r->args.len, 0);
    }

    if (r->unparsed_uri.len) {
        p = r->unparsed_uri.data;
        last = p + r->unparsed_uri.len;

        p = ngx_strlchr(p, last, '?');
        if (p) {
            ngx_http_hookstream_mask_query(p + 1, last, 0);
        }
    }

    if (r->request_line.len) {
        p = r->request_line.data;
        last = p + r->request_line.len;

        p = ngx_strlchr(p, last, '?');
        if (p) {
            ngx_http_hookstream_mask_query(p + 1, last, 1);
        }
    }
}


/* overwrites the value of every "token" argument of a query string */

static void
ngx_http_hookstream_mask_query(u_char *p, u_char *last,
    ngx_uint_t stop_at_space)
{
    u_char  *start;

    start = p;

    while (p < last) {

        /* as ngx_http_arg(): a name starts the string or follows '&' */

        if ((p == start || p[-1] == '&')
            && last - p > (ssize_t) (sizeof("token") - 1)
            && ngx_strncasecmp(p, (u_char *) "token", sizeof("token") - 1)
               == 0
            && p[sizeof("token") - 1] == '=')
        {
            p += sizeof("token=") - 1;

            while (p < last && *p != '&') {
                if (stop_at_space && *p == ' ') {
                    return;
                }

                *p++ = NGX_HOOKSTREAM_MASK_CHAR;
            }

            continue;
        }

        if (stop_at_space && *p == ' ') {
            return;
        }

        p++;
    }
}


/*
 * Called on the upgrade: the WebSocket takes the request's credential
 * over, and stays listed by it for revocations until it closes.
 */

void
ngx_http_hookstream_auth_attach(ngx_http_request_t *r,
    ngx_http_hookstream_ws_t *ws)
{
    ngx_http_hookstream_auth_ctx_t  *ctx;

    ctx = ngx_http_hookstream_auth_find(r);

    if (ctx == NULL || !ctx->resolved || ws->listed
        || ngx_http_hookstream_auth_worker == NULL)
    {
        return;
    }

    ngx_memcpy(ws->credential, ctx->hash, NGX_HOOKSTREAM_SHA256_LEN);
    ngx_queue_insert_tail(&ngx_http_hookstream_auth_worker->live, &ws->live);
    ws->listed = 1;
}


void
ngx_http_hookstream_auth_detach(ngx_http_hookstream_ws_t *ws)
{
    if (ws->listed) {
        ngx_queue_remove(&ws->live);
        ws->listed = 0;
    }
}


static ngx_http_hookstream_auth_ctx_t *
ngx_http_hookstream_auth_find(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t              *cln;
    ngx_http_hookstream_auth_ctx_t  *ctx;

    /* the same lookup by handler as ngx_pool_run_cleanup_file() does */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_hookstream_auth_cleanup) {
            ctx = cln->data;

            if (ctx->request == r) {
                return ctx;
            }
        }
    }

    return NULL;
}


static ngx_http_hookstream_auth_ctx_t *
ngx_http_hookstream_auth_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t              *cln;
    ngx_http_hookstream_auth_ctx_t  *ctx;

    ctx = ngx_http_hookstream_auth_find(r);
    if (ctx) {
        return ctx;
    }

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_hookstream_auth_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;

    ngx_memzero(ctx, sizeof(ngx_http_hookstream_auth_ctx_t));
    ctx->request = r;

    cln->handler = ngx_http_hookstream_auth_cleanup;

    return ctx;
}


static void
ngx_http_hookstream_auth_cleanup(void *data)
{
    ngx_http_hookstream_auth_ctx_t  *ctx = data;

    ngx_http_hookstream_main_conf_t  *hmcf;

    ngx_http_hookstream_auth_stop_waiting(ctx);

    if (ctx->phase == NGX_HOOKSTREAM_AUTH_ASK && ctx->res.owner) {

        /* the request went away while asking: its waiters ask again */

        hmcf = ngx_http_get_module_main_conf(ctx->request,
                                             ngx_hookstream_module);

        ctx->res.state = NGX_HOOKSTREAM_AUTHCACHE_ERROR;
        (void) ngx_hookstream_authcache_store(ctx->sh, &ctx->key, &ctx->res,
                                              0, hmcf->auth_cache_max);
        ngx_http_hookstream_auth_wake();
    }

    ngx_explicit_memzero(ctx->hash, NGX_HOOKSTREAM_SHA256_LEN);
    ngx_explicit_memzero(ctx->query_hash, NGX_HOOKSTREAM_SHA256_LEN);
    ngx_explicit_memzero(&ctx->key, sizeof(ngx_hookstream_authkey_t));
}


/* the first header of that name, and how many there are */

static ngx_table_elt_t *
ngx_http_hookstream_find_header(ngx_list_t *headers, u_char *name,
    size_t len, ngx_uint_t *count)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    found = NULL;
    *count = 0;

    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != len
            || ngx_strncasecmp(h[i].key.data, name, len) != 0)
        {
            continue;
        }

        if (found == NULL) {
            found = &h[i];
        }

        (*count)++;
    }

    return found;
}


/*
 * A cookie rides along with any request a browser makes, whichever page
 * asked for it; the Origin says which page did (cross-site WebSocket
 * hijacking).
 */

static ngx_int_t
ngx_http_hookstream_check_origin(ngx_http_request_t *r,
    ngx_http_hookstream_loc_conf_t *hlcf)
{
    ngx_uint_t                     i, count;
    ngx_table_elt_t               *h;
    ngx_http_hookstream_origin_t  *o;
#if (NGX_PCRE)
    ngx_int_t                      rc;
#endif

    h = ngx_http_hookstream_find_header(&r->headers_in.headers,
                                        (u_char *) "Origin",
                                        sizeof("Origin") - 1, &count);

    if (h == NULL || h->value.len == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent a session cookie without Origin");
        return NGX_DECLINED;
    }

    if (count > 1) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent a session cookie with %ui Origin headers",
                      count);
        return NGX_DECLINED;
    }

    if (hlcf->allowed_origins == NULL
        || hlcf->allowed_origins == NGX_CONF_UNSET_PTR)
    {
        if (ngx_http_hookstream_same_origin(r, &h->value) == NGX_OK) {
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent a session cookie from Origin \"%V\", "
                      "not the Host's own and no "
                      "\"hookstream_allowed_origins\"", &h->value);
        return NGX_DECLINED;
    }

    o = hlcf->allowed_origins->elts;

    for (i = 0; i < hlcf->allowed_origins->nelts; i++) {

#if (NGX_PCRE)
        if (o[i].regex) {
            rc = ngx_regex_exec(o[i].regex, &h->value, NULL, 0);

            if (rc >= 0) {
                return NGX_OK;
            }

            if (rc != NGX_REGEX_NO_MATCHED) {
                ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                              ngx_regex_exec_n " failed: %i on \"%V\" "
                              "using \"%V\"", rc, &h->value, &o[i].value);
            }

            continue;
        }
#endif

        if (o[i].value.len == h->value.len
            && ngx_strncasecmp(o[i].value.data, h->value.data,
                               h->value.len)
               == 0)
        {
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "client sent a session cookie from Origin \"%V\", which "
                  "\"hookstream_allowed_origins\" does not allow",
                  &h->value);

    return NGX_DECLINED;
}


/*
 * With no hookstream_allowed_origins, an Origin is allowed when its host
 * and port are the Host's: the page came from this very server name.
 * The scheme is not compared, as TLS often ends in front of nginx.
 */

static ngx_int_t
ngx_http_hookstream_same_origin(ngx_http_request_t *r, ngx_str_t *origin)
{
    u_char     *p, *last;
    ngx_str_t   scheme, authority, host;

    if (r->headers_in.host == NULL || r->headers_in.host->value.len == 0) {
        return NGX_DECLINED;
    }

    p = origin->data;
    last = p + origin->len;

    p = ngx_strlchr(p, last, ':');

    if (p == NULL || last - p < 4 || p[1] != '/' || p[2] != '/') {
        return NGX_DECLINED;
    }

    scheme.data = origin->data;
    scheme.len = p - origin->data;

    authority.data = p + 3;
    authority.len = last - authority.data;

    if (authority.len == 0
        || ngx_strlchr(authority.data, last, '/') != NULL
        || ngx_strlchr(authority.data, last, '@') != NULL)
    {
        return NGX_DECLINED;
    }

    host = r->headers_in.host->value;

    ngx_http_hookstream_strip_default_port(&authority, &scheme);
    ngx_http_hookstream_strip_default_port(&host, &scheme);

    if (authority.len == host.len
        && ngx_strncasecmp(authority.data, host.data, host.len) == 0)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static void
ngx_http_hookstream_strip_default_port(ngx_str_t *authority,
    ngx_str_t *scheme)
{
    size_t  n;

    if (scheme->len == 4
        && ngx_strncasecmp(scheme->data, (u_char *) "http", 4) == 0)
    {
        n = sizeof(":80") - 1;

        if (authority->len > n
            && ngx_strncmp(authority->data + authority->len - n, ":80", n)
               == 0)
        {
            authority->len -= n;
        }

        return;
    }

    if (scheme->len == 5
        && ngx_strncasecmp(scheme->data, (u_char *) "https", 5) == 0)
    {
        n = sizeof(":443") - 1;

        if (authority->len > n
            && ngx_strncmp(authority->data + authority->len - n, ":443", n)
               == 0)
        {
            authority->len -= n;
        }
    }
}


/* the rewrite phase: mask before access and preaccess can log */


ngx_int_t
ngx_http_hookstream_auth_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_hookstream_auth_rewrite_handler;

    /* as auth_request: the credential is resolved in the access phase */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_hookstream_auth_access_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hookstream_auth_rewrite_handler(ngx_http_request_t *r)
{
    ngx_http_hookstream_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    if (hlcf->endpoint != NGX_HOOKSTREAM_EP_STREAM
        && hlcf->endpoint != NGX_HOOKSTREAM_EP_SOURCE)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_hookstream_auth_mask(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}
