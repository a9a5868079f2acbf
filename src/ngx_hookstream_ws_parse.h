
/*
 * Copyright (C) hookstream
 */


#ifndef _NGX_HOOKSTREAM_WS_PARSE_H_INCLUDED_
#define _NGX_HOOKSTREAM_WS_PARSE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * The RFC 6455 frame codec.  It knows nothing of nginx requests or
 * connections and calls no nginx function, so that the unit tests and the
 * fuzz target can link ngx_hookstream_ws_parse.c alone.
 */


#define NGX_HOOKSTREAM_WS_OP_CONT            0x0
#define NGX_HOOKSTREAM_WS_OP_TEXT            0x1
#define NGX_HOOKSTREAM_WS_OP_BINARY          0x2
#define NGX_HOOKSTREAM_WS_OP_CLOSE           0x8
#define NGX_HOOKSTREAM_WS_OP_PING            0x9
#define NGX_HOOKSTREAM_WS_OP_PONG            0xa

#define NGX_HOOKSTREAM_WS_CLOSE_NORMAL       1000
#define NGX_HOOKSTREAM_WS_CLOSE_PROTOCOL     1002
#define NGX_HOOKSTREAM_WS_CLOSE_INVALID      1007
#define NGX_HOOKSTREAM_WS_CLOSE_TOO_BIG      1009

/* control frame payload bound (RFC 6455 5.5) */
#define NGX_HOOKSTREAM_WS_MAX_CONTROL        125

/* a server frame header: 2 + 8 bytes of extended length, no mask */
#define NGX_HOOKSTREAM_WS_MAX_HEADER         10

/* a client frame header: 2 + 8 + 4 bytes of masking key */
#define NGX_HOOKSTREAM_WS_MAX_CLIENT_HEADER  14

/* a whole server close frame: header + code + reason */
#define NGX_HOOKSTREAM_WS_CLOSE_FRAME_MAX                                    \
    (2 + NGX_HOOKSTREAM_WS_MAX_CONTROL)


typedef struct {
    /* private: the parser's state, not to be touched by callers */
    ngx_uint_t    state;
    ngx_uint_t    hdr_len;       /* header bytes collected so far */
    ngx_uint_t    hdr_need;      /* header bytes needed (2 until known) */
    ngx_uint_t    opcode;        /* opcode of the frame being read */
    uint64_t      remaining;     /* payload bytes left in this frame */
    ngx_uint_t    mask_off;      /* position in the masking key */
    ngx_uint_t    msg_opcode;    /* TEXT/BINARY; CONT: no data message */
    uint64_t      msg_size;      /* declared payload of the message */
    uint32_t      utf8;          /* ngx_hookstream_utf8_validate() state */
    size_t        ctl_len;       /* control payload bytes buffered */
    u_char        hdr[NGX_HOOKSTREAM_WS_MAX_CLIENT_HEADER];
    u_char        mask[4];
    u_char        ctl[NGX_HOOKSTREAM_WS_MAX_CONTROL];
    unsigned      fin:1;         /* FIN of the frame being read */
    unsigned      in_message:1;  /* a data message is in progress */
    unsigned      msg_compressed:1;
    unsigned      msg_utf8:1;    /* the message is checked for UTF-8 */

    /* public */
    uint64_t      max_message;   /* set by caller after init; 0 = no limit;
                                    whole message (all fragments) bound */
    unsigned      deflate:1;     /* set by caller: RSV1 allowed on the first
                                    frame of a data message (RFC 7692) */
    ngx_uint_t    close_code;    /* on NGX_ERROR: 1002, 1007 or 1009 */
    const char   *close_reason;  /* on NGX_ERROR: short static text */
} ngx_hookstream_ws_parser_t;


typedef struct {
    ngx_uint_t    opcode;      /* TEXT/BINARY for data; CLOSE/PING/PONG */
    u_char       *data;        /* data: slice of the caller's input buffer,
                                  unmasked in place; control: the whole
                                  payload (in the parser's own buffer,
                                  valid until the next call) */
    size_t        len;
    unsigned      fin:1;       /* data: this slice ends the message */
    unsigned      compressed:1; /* data: message had RSV1 set */
    ngx_uint_t    close_code;  /* CLOSE: 0 when the frame had no payload */
    u_char       *reason;      /* CLOSE: reason bytes (validated UTF-8) */
    size_t        reason_len;
} ngx_hookstream_ws_event_t;


void ngx_hookstream_ws_parser_init(ngx_hookstream_ws_parser_t *p);

/*
 * Consumes bytes from *pos up to last.  Returns
 * NGX_OK    - ev filled, *pos advanced past what was consumed (at least one
 *             byte; call again with the rest);
 * NGX_AGAIN - every byte consumed, nothing to report, need more input;
 * NGX_ERROR - protocol violation: p->close_code / p->close_reason set; the
 *             caller sends that close and drops the connection.  The
 *             parser stays in error.
 */
ngx_int_t ngx_hookstream_ws_parse(ngx_hookstream_ws_parser_t *p,
    u_char **pos, u_char *last, ngx_hookstream_ws_event_t *ev);

/*
 * Writes a server (unmasked) frame header into buf (>= 10 bytes); returns
 * its length.
 */
size_t ngx_hookstream_ws_frame_header(u_char *buf, ngx_uint_t opcode,
    ngx_uint_t fin, ngx_uint_t rsv1, uint64_t len);

/*
 * Writes a whole server close frame into buf (>= 127 bytes): the code (none
 * if code is 0) and the reason, cut to 123 bytes on a character boundary.
 * Returns its length.
 */
size_t ngx_hookstream_ws_close_frame(u_char *buf, ngx_uint_t code,
    const u_char *reason, size_t reason_len);

/*
 * XORs len bytes at data with the masking key, starting at key[offset & 3];
 * returns the offset for the byte that follows.  Masking and unmasking are
 * the same operation.
 */
ngx_uint_t ngx_hookstream_ws_mask(u_char *data, size_t len,
    const u_char *key, ngx_uint_t offset);

/*
 * Streaming UTF-8 check (used by the parser for text messages and close
 * reasons, and by callers on inflated permessage-deflate output).
 * *state starts at 0.  NGX_OK: input ends on a character boundary;
 * NGX_AGAIN: valid so far but mid-character; NGX_ERROR: invalid (and
 * every later call with that state fails too).
 */
ngx_int_t ngx_hookstream_utf8_validate(uint32_t *state, const u_char *p,
    size_t n);

/*
 * 1 if a close code may be sent by a peer in a close frame (RFC 6455 7.4:
 * 1000-1003, 1007-1011 (1012-1014 accepted too), 3000-4999); 0 otherwise
 * (0-999, 1004, 1005, 1006, 1015, 1016-2999 unassigned, >= 5000).
 */
ngx_uint_t ngx_hookstream_ws_close_code_valid(ngx_uint_t code);


#endif /* _NGX_HOOKSTREAM_WS_PARSE_H_INCLUDED_ */
