
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


typedef enum {
    NGX_HOOKSTREAM_CRED_NONE = 0,
    NGX_HOOKSTREAM_CRED_QUERY,
    NGX_HOOKSTREAM_CRED_HEADER,
    NGX_HOOKSTREAM_CRED_COOKIE
} ngx_hookstream_cred_e;


/*
 * A request's credential state.  It lives in the request pool, not in the
 * module's request context: the token is masked (and so destroyed) in
 * the rewrite phase while it is resolved in the content phase, possibly
 * after an internal redirect, which clears module contexts.  An
 * asynchronous lookup (an authority subrequest) will keep its progress
 * here too.
 */
typedef struct {
    ngx_http_request_t             *request;
    ngx_hookstream_cred_e           source;
    u_char                          hash[NGX_HOOKSTREAM_SHA256_LEN];
    unsigned                        query_done:1;
} ngx_http_hookstream_auth_ctx_t;


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

static ngx_http_hookstream_auth_ctx_t *ngx_http_hookstream_auth_ctx(
    ngx_http_request_t *r);
static void ngx_http_hookstream_auth_cleanup(void *data);
static void ngx_http_hookstream_take_token(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx);
static void ngx_http_hookstream_mask_query(u_char *p, u_char *last,
    ngx_uint_t stop_at_space);
static ngx_table_elt_t *ngx_http_hookstream_find_header(ngx_http_request_t *r,
    u_char *name, size_t len, ngx_uint_t *count);
static ngx_int_t ngx_http_hookstream_check_origin(ngx_http_request_t *r,
    ngx_http_hookstream_loc_conf_t *hlcf);
static ngx_int_t ngx_http_hookstream_same_origin(ngx_http_request_t *r,
    ngx_str_t *origin);
static void ngx_http_hookstream_strip_default_port(ngx_str_t *authority,
    ngx_str_t *scheme);
static ngx_int_t ngx_http_hookstream_auth_resolve(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_str_t *org_id);
static ngx_int_t ngx_http_hookstream_auth_rewrite_handler(
    ngx_http_request_t *r);


static const char  *ngx_http_hookstream_cred_names[] = {
    "no credential",
    "API key (token argument)",
    "API key (X-API-Key header)",
    "session cookie"
};


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
    u_char                       quote[NGX_HOOKSTREAM_QUOTE_LEN];
    size_t                       len;
    cJSON                       *array, *item;
    ngx_uint_t                   i;
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
    ngx_int_t                        rc;
    ngx_uint_t                       count;
    ngx_table_elt_t                 *h;
    ngx_http_variable_value_t       *vv;
    ngx_http_hookstream_auth_ctx_t  *ctx;
    ngx_http_hookstream_loc_conf_t  *hlcf;

    ctx = ngx_http_hookstream_auth_ctx(r);

    /* first of all, before anything can log the request line */

    ngx_http_hookstream_take_token(r, ctx);

    if (ctx == NULL) {
        *message = "Internal server error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_hookstream_module);

    if (!(allow & NGX_HOOKSTREAM_AUTH_KEY)
        && (ctx->source == NGX_HOOKSTREAM_CRED_QUERY
            || ctx->source == NGX_HOOKSTREAM_CRED_HEADER))
    {
        ctx->source = NGX_HOOKSTREAM_CRED_NONE;
    }

    if (ctx->source == NGX_HOOKSTREAM_CRED_NONE
        && (allow & NGX_HOOKSTREAM_AUTH_KEY))
    {
        h = ngx_http_hookstream_find_header(r, (u_char *) "X-API-Key",
                                            sizeof("X-API-Key") - 1, &count);
        if (h && h->value.len) {
            SHA256(h->value.data, h->value.len, ctx->hash);
            ctx->source = NGX_HOOKSTREAM_CRED_HEADER;
        }
    }

    if (ctx->source == NGX_HOOKSTREAM_CRED_NONE
        && (allow & NGX_HOOKSTREAM_AUTH_COOKIE)
        && hlcf->cookie_index != NGX_CONF_UNSET)
    {
        vv = ngx_http_get_indexed_variable(r, hlcf->cookie_index);

        if (vv == NULL) {
            *message = "Internal server error";
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (!vv->not_found && vv->len) {

            /*
             * The Origin is checked before the session is looked up, so
             * that a foreign page cannot even learn whether a session is
             * valid.
             */

            if (ngx_http_hookstream_check_origin(r, hlcf) != NGX_OK) {
                *message = "Origin not allowed";
                return NGX_HTTP_FORBIDDEN;
            }

            SHA256(vv->data, vv->len, ctx->hash);
            ctx->source = NGX_HOOKSTREAM_CRED_COOKIE;
        }
    }

    if (ctx->source == NGX_HOOKSTREAM_CRED_NONE) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent no %s",
                      (allow & NGX_HOOKSTREAM_AUTH_COOKIE)
                      ? "API key or session cookie" : "API key");

        *message = "Missing API key";
        return NGX_HTTP_UNAUTHORIZED;
    }

    rc = ngx_http_hookstream_auth_resolve(r, ctx, org_id);

    if (rc == NGX_OK) {
        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "hookstream auth: %s sha256:%*xs... is org \"%V\"",
                       ngx_http_hookstream_cred_names[ctx->source],
                       (size_t) 4, ctx->hash, org_id);
        return NGX_OK;
    }

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "client sent an unknown %s, sha256:%*xs...",
                      ngx_http_hookstream_cred_names[ctx->source],
                      (size_t) 4, ctx->hash);

        *message = (ctx->source == NGX_HOOKSTREAM_CRED_COOKIE)
                   ? "Invalid session" : "Invalid API key";
        return NGX_HTTP_UNAUTHORIZED;
    }

    *message = "Internal server error";
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/*
 * The credential's hash -> org.  Only the directory for now; an authority
 * subrequest and the shared cache will sit here, and may then return
 * NGX_AGAIN to have the caller come back when the answer is in.
 */

static ngx_int_t
ngx_http_hookstream_auth_resolve(ngx_http_request_t *r,
    ngx_http_hookstream_auth_ctx_t *ctx, ngx_str_t *org_id)
{
    ngx_uint_t                        kind;
    ngx_http_hookstream_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_hookstream_module);

    if (hmcf->directory == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hookstream: a credential cannot be resolved without "
                      "\"hookstream_directory\"");
        return NGX_DECLINED;
    }

    kind = (ctx->source == NGX_HOOKSTREAM_CRED_COOKIE)
           ? NGX_HOOKSTREAM_AUTH_COOKIE : NGX_HOOKSTREAM_AUTH_KEY;

    return ngx_hookstream_directory_lookup(hmcf->directory, kind, ctx->hash,
                                           org_id);
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

        SHA256(value.data, dst - value.data, ctx->hash);

        ctx->source = NGX_HOOKSTREAM_CRED_QUERY;
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


static ngx_http_hookstream_auth_ctx_t *
ngx_http_hookstream_auth_ctx(ngx_http_request_t *r)
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

    ngx_explicit_memzero(ctx->hash, NGX_HOOKSTREAM_SHA256_LEN);
}


/* the first header of that name, and how many there are */

static ngx_table_elt_t *
ngx_http_hookstream_find_header(ngx_http_request_t *r, u_char *name,
    size_t len, ngx_uint_t *count)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    found = NULL;
    *count = 0;

    part = &r->headers_in.headers.part;
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

    h = ngx_http_hookstream_find_header(r, (u_char *) "Origin",
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
