#!/usr/bin/env bash
# Starts nginx with the built module on 127.0.0.1:8080 in the foreground.
set -euo pipefail

nginx_bin=${1:-/usr/sbin/nginx}
module=$(readlink -f "${2:-build/nginx/ngx_hookstream_module.so}")
examples=$(cd "$(dirname "$0")" && pwd)
prefix=$(readlink -f "${HOOKSTREAM_PREFIX:-build/run}")

mkdir -p "$prefix"/{conf,logs,tmp,journal}

session=$(cat "$examples/demo-session.txt")

sed -e "s|@MODULE@|$module|" -e "s|@PREFIX@|$prefix|" \
    -e "s|@EXAMPLES@|$examples|" -e "s|@SESSION@|$session|" \
    "$examples/nginx.conf" > "$prefix/conf/nginx.conf"

"$nginx_bin" -t -q -p "$prefix/" -c conf/nginx.conf

key=$(cat "$examples/demo-key.txt")
source=$(grep -o 'src_[0-9a-f]\{32\}' "$examples/directory.json" | head -1)

cat <<MSG

hookstream is listening on http://127.0.0.1:8080 (2 workers)
  config:  $prefix/conf/nginx.conf
  logs:    $prefix/logs/
  journal: $prefix/journal/

Demo API key: $key
Demo source:  $source

Watch the org's dashboard stream:
  /usr/bin/python3 -m websockets 'ws://127.0.0.1:8080/v1/ws?token=$key'

Send events over the inbound socket (type a JSON object per line):
  /usr/bin/python3 -m websockets 'ws://127.0.0.1:8080/v1/ws/source/$source?token=$key'
  {"type":"order.created","data":{"id":42}}

Post a webhook:
  curl -s -d '{"type":"order.paid","data":{"id":42}}' \\
      -H 'Content-Type: application/json' \\
      http://127.0.0.1:8080/v1/ingest/$source

Inspect webhooks in a test session (no key needed):
  http://127.0.0.1:8080/inspector/

The org's dashboard in the browser (the demo sign-in sets its session
cookie, then shows events, deliveries and issues live):
  http://127.0.0.1:8080/demo/sign-in

Press Ctrl-C to stop.

MSG

exec "$nginx_bin" -p "$prefix/" -c conf/nginx.conf
