#!/usr/bin/env bash
# Install the Debian packages named on the command line that are missing.
# "build", "test" and "bench" name the sets the Makefile uses.
set -euo pipefail

build_pkgs="nginx-dev libcjson-dev libssl-dev libpcre2-dev zlib1g-dev
            libhiredis-dev gcc make"
test_pkgs="nginx-core libtest-base-perl libprotocol-websocket-perl
           libio-socket-ssl-perl openssl curl python3-websockets
           clang libclang-rt-14-dev chromium redis-server"
bench_pkgs="libnginx-mod-nchan gnuplot-nox perl"

want=""
for set in "$@"; do
    case $set in
        build) want="$want $build_pkgs" ;;
        test)  want="$want $test_pkgs"
               command -v npm >/dev/null 2>&1 || want="$want nodejs npm" ;;
        bench) want="$want $bench_pkgs" ;;
        *)     want="$want $set" ;;
    esac
done

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
        || missing="$missing $p"
done

if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
fi
