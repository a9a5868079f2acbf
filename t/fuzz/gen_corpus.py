#!/usr/bin/env python3
# Writes the seed corpus of fuzz_ws_parse into corpus/: a 4-byte prefix
# (flags, max_message material, piece seed) and then client frames.

import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus")


def frame(b0, payload, key=b"\x00\x00\x00\x00", masked=True, form=None):
    n = len(payload)
    if form == 64 or (form is None and n > 0xffff):
        h = bytes([b0, 127]) + struct.pack(">Q", n)
    elif form == 16 or (form is None and n > 125):
        h = bytes([b0, 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, n])
    if not masked:
        return h + payload
    h = h[:1] + bytes([h[1] | 0x80]) + h[2:] + key
    return h + bytes(c ^ key[i & 3] for i, c in enumerate(payload))


def close(code, reason=b"", key=b"\x00\x00\x00\x00"):
    return frame(0x88, struct.pack(">H", code) + reason, key)


K = b"\x37\xfa\x21\x3d"
PLAIN = b"\x00\x00\x00\x00"
NONE = b"\x00\x00\x00\x01"       # no limit, no deflate, seed 1
DEFL = b"\x01\x00\x00\x02"       # deflate
MAX16 = b"\x02\x10\x00\x03"      # max_message 16

seeds = {
    "text-hello": NONE + frame(0x81, b"Hello", K),
    "text-plain": NONE + frame(0x81, b"plain text", PLAIN),
    "fragments-ping": NONE + frame(0x01, b"Hel", K) + frame(0x89, b"x", K)
                      + frame(0x80, b"lo", K),
    "utf8-split": NONE + frame(0x01, "a\u20ac".encode()[:3], PLAIN)
                  + frame(0x80, "\u20acb".encode()[2:], PLAIN),
    "binary-16bit": NONE + frame(0x82, bytes(range(256)) * 2, K),
    "binary-64bit": NONE + frame(0x82, b"sixty-four", K, form=64),
    "empty-messages": NONE + frame(0x81, b"", K) + frame(0x02, b"", K)
                      + frame(0x80, b"", K),
    "close-reason": NONE + frame(0x8a, b"pong", K) + close(1000, b"bye", K),
    "close-empty": NONE + frame(0x88, b"", K),
    "deflate": DEFL + frame(0x41, b"\xf2\x48\xcd\xc9\xc9\x07\x00", K)
               + frame(0x80, b"\x00", K),
    "max-exact": MAX16 + frame(0x01, b"0123456789", PLAIN)
                 + frame(0x80, b"abcdef", PLAIN),
    "bad-max-over": MAX16 + frame(0x82, b"0123456789abcdefg", PLAIN),
    "bad-unmasked": NONE + frame(0x81, b"Hello", masked=False),
    "bad-opcode": NONE + frame(0x83, b"x", K),
    "bad-rsv": NONE + frame(0xa1, b"x", K),
    "bad-close-code": NONE + close(1005, b"", K),
    "bad-close-1byte": NONE + frame(0x88, b"\x03", K),
    "bad-close-utf8": NONE + close(1000, b"\xff", PLAIN),
    "bad-utf8": NONE + frame(0x81, b"ok\xed\xa0\x80", PLAIN),
    "bad-control-long": NONE + frame(0x89, b"p" * 126, K),
    "bad-control-frag": NONE + frame(0x09, b"p", K),
    "bad-cont": NONE + frame(0x80, b"c", K),
    "bad-len-msb": NONE + b"\x82\xff\x80" + b"\x00" * 7 + K,
}

os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
sys.exit(0)
