
/*
 * Copyright (C) hookstream
 */


/*
 * libFuzzer target for the JSON walker of src/ngx_hookstream_json.c:
 * ngx_hookstream_json_member(), ngx_hookstream_json_skip_value() and
 * ngx_hookstream_json_skip_space(), which find members in clients' JSON
 * after cJSON has validated it (a publish line's "data" is spliced from
 * the original text, never re-serialised).
 *
 *   1. on any input, each of them stays inside the buffer (the input is
 *      copied into an allocation of exactly its size, so ASan sees a
 *      read one byte past the end) and returns a pointer inside it;
 *   2. when cJSON parses the input into an object, json_member finds,
 *      for each member name that needs no escaping, a value whose text
 *      cJSON parses back into the very value cJSON found first under
 *      that name.  When the input holds a backslash, a key written with
 *      escapes may name the same member, so the value found must be the
 *      one of some member of that name; without a backslash it must be
 *      the first one, and it must be found.
 *
 * Property 2 is checked on text in RFC 8259's alphabet only: cJSON also
 * takes any byte below 0x20 as whitespace and in strings, and skips a
 * UTF-8 byte order mark before the value; the walker (like the RFC) does
 * neither.  That difference is known and harmless: the member is then
 * not found and the message is refused.
 *
 * The rest of ngx_hookstream_json.c (error bodies, time, random ids)
 * needs a running nginx; the symbols it uses are stubbed below and abort
 * if they are ever reached.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/rand.h>
#include "ngx_hookstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define fuzz_fail(what)                                                      \
    do {                                                                     \
        fprintf(stderr, "fuzz_json: %s (line %d)\n", what, __LINE__);       \
        abort();                                                             \
    } while (0)

/* offsets at which the walkers are started on the raw input */
#define FUZZ_JSON_STARTS  256


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_walkers(u_char *buf, size_t size);
static void fuzz_members(u_char *buf, size_t size);
static ngx_uint_t fuzz_plain_name(const char *name);
static ngx_uint_t fuzz_strict(u_char *buf, size_t size);
static ngx_uint_t fuzz_some_member(cJSON *root, const char *name,
    cJSON *value);
static ngx_uint_t fuzz_same(cJSON *a, cJSON *b);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *buf;

    /* exactly sized: a read past the end is a heap overflow for ASan */

    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }

    if (size) {
        memcpy(buf, data, size);
    }

    fuzz_walkers(buf, size);
    fuzz_members(buf, size);

    free(buf);

    return 0;
}


static void
fuzz_walkers(u_char *buf, size_t size)
{
    u_char      *last, *p;
    size_t       i;
    ngx_str_t    json, value;
    ngx_uint_t   n;

    static const char  *names[] = {
        "type", "data", "channel", "cursor", "org_id", "", "a", NULL
    };
    const char        **name;

    last = buf + size;

    for (i = 0, n = 0; i < size && n < FUZZ_JSON_STARTS; i++) {

        if (i > 8 && buf[i] != '"' && buf[i] != '{' && buf[i] != '['
            && buf[i] != ',' && buf[i] != ':' && buf[i] != '\\')
        {
            continue;
        }

        n++;

        p = ngx_hookstream_json_skip_value(buf + i, last);

        if (p != NULL && (p < buf + i || p > last)) {
            fuzz_fail("skip_value ended outside the text");
        }

        p = ngx_hookstream_json_skip_space(buf + i, last);

        if (p < buf + i || p > last) {
            fuzz_fail("skip_space ended outside the text");
        }
    }

    /* an empty range */

    if (ngx_hookstream_json_skip_value(last, last) != NULL) {
        fuzz_fail("skip_value found a value in nothing");
    }

    json.data = buf;
    json.len = size;

    for (name = names; *name; name++) {
        if (ngx_hookstream_json_member(&json, *name, &value) != NGX_OK) {
            continue;
        }

        if (value.data < buf || value.data + value.len > last) {
            fuzz_fail("json_member returned a value outside the text");
        }
    }
}


static void
fuzz_members(u_char *buf, size_t size)
{
    cJSON       *root, *item, *parsed;
    ngx_int_t    rc;
    ngx_str_t    json, value;
    ngx_uint_t   backslash;

    if (!fuzz_strict(buf, size)) {
        return;
    }

    root = cJSON_ParseWithLength((const char *) buf, size);

    if (root == NULL) {
        return;
    }

    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }

    backslash = (memchr(buf, '\\', size) != NULL);

    json.data = buf;
    json.len = size;

    for (item = root->child; item; item = item->next) {

        if (item->string == NULL || !fuzz_plain_name(item->string)) {
            continue;
        }

        /* the first member of that name is cJSON's answer */

        if (cJSON_GetObjectItemCaseSensitive(root, item->string) != item) {
            continue;
        }

        rc = ngx_hookstream_json_member(&json, item->string, &value);

        if (rc != NGX_OK) {
            if (!backslash) {
                fuzz_fail("json_member did not find a member cJSON found");
            }

            continue;
        }

        if (value.data < buf || value.data + value.len > buf + size) {
            fuzz_fail("json_member returned a value outside the text");
        }

        parsed = cJSON_ParseWithLength((const char *) value.data, value.len);

        if (parsed == NULL) {
            fuzz_fail("the text json_member found is not a JSON value");
        }

        if (!backslash) {
            if (!fuzz_same(parsed, item)) {
                fuzz_fail("json_member found another value than cJSON");
            }

            if (cJSON_IsString(item)
                && strcmp(parsed->valuestring, item->valuestring) != 0)
            {
                fuzz_fail("json_member found another string than cJSON");
            }

        } else if (!fuzz_some_member(root, item->string, parsed)) {
            fuzz_fail("json_member found a value no member has");
        }

        cJSON_Delete(parsed);
    }

    cJSON_Delete(root);
}


/* a name that is written as it is: no quote, backslash or control byte */

static ngx_uint_t
fuzz_plain_name(const char *name)
{
    const u_char  *p;

    for (p = (const u_char *) name; *p; p++) {
        if (*p < 0x20 || *p == '"' || *p == '\\') {
            return 0;
        }
    }

    return 1;
}


/* no byte order mark, no byte below 0x20 but RFC 8259's whitespace */

static ngx_uint_t
fuzz_strict(u_char *buf, size_t size)
{
    size_t  i;

    if (size >= 3 && buf[0] == 0xef && buf[1] == 0xbb && buf[2] == 0xbf) {
        return 0;
    }

    for (i = 0; i < size; i++) {
        if (buf[i] < 0x20
            && buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\n'
            && buf[i] != '\r')
        {
            return 0;
        }
    }

    return 1;
}


static ngx_uint_t
fuzz_some_member(cJSON *root, const char *name, cJSON *value)
{
    cJSON  *item;

    for (item = root->child; item; item = item->next) {
        if (item->string && strcmp(item->string, name) == 0
            && fuzz_same(item, value))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Two values are the same when cJSON prints them the same: its own
 * compare says no to two infinite numbers (1e999), which both sides
 * parse alike.
 */

static ngx_uint_t
fuzz_same(cJSON *a, cJSON *b)
{
    char        *pa, *pb;
    ngx_uint_t   same;

    pa = cJSON_PrintUnformatted(a);
    pb = cJSON_PrintUnformatted(b);

    if (pa == NULL || pb == NULL) {
        fuzz_fail("cJSON_PrintUnformatted() failed");
    }

    same = (strcmp(pa, pb) == 0);

    cJSON_free(pa);
    cJSON_free(pb);

    return same;
}


/*
 * What the rest of ngx_hookstream_json.c links against.  None of it is
 * reached from the walkers.
 */

volatile ngx_cycle_t  *ngx_cycle;


void
ngx_gmtime(time_t t, ngx_tm_t *tp)
{
    fuzz_fail("ngx_gmtime() reached");
}


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    fuzz_fail("ngx_hex_dump() reached");
}


u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    fuzz_fail("ngx_sprintf() reached");
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    fuzz_fail("ngx_pnalloc() reached");
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    fuzz_fail("ngx_pcalloc() reached");
}


void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    fuzz_fail("ngx_log_error_core() reached");
}


ngx_int_t
ngx_http_send_header(ngx_http_request_t *r)
{
    fuzz_fail("ngx_http_send_header() reached");
}


ngx_int_t
ngx_http_output_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    fuzz_fail("ngx_http_output_filter() reached");
}


int
RAND_bytes(unsigned char *buf, int num)
{
    fuzz_fail("RAND_bytes() reached");
}
