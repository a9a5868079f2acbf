#!/usr/bin/env bash
# bench/profile.sh: where hookstream's workers spend a max-rate fan-out.
#
# Starts hookstream as bench/run.sh does, opens N subscribers with
# bench/hsload, and samples the two workers with `perf record -e cpu-clock`
# (a software clock: it works in VMs without hardware counters) while the
# publisher runs. Prints the split between the kernel, nginx, the module
# and libc, the hottest symbols, and, from a second run, the workers'
# system calls (how many messages go out per writev).
#
#   bash bench/profile.sh [SUBSCRIBERS] [SECONDS]     (1000, 10)

set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
n=${1:-1000}
secs=${2:-10}

nginx_bin=${NGINX_BIN:-/usr/sbin/nginx}
module=${HOOKSTREAM_MODULE:-$root/build/nginx/ngx_hookstream_module.so}
module=$(readlink -f "$module")
prefix=${BENCH_WORK:-$root/build/bench}/profile
port=${BENCH_PORT_HS:-18080}
directory=$root/examples/directory.json
key=$(cat "$root/examples/demo-key.txt")
org=$(grep -o 'org_[0-9a-f]\{32\}' "$directory" | head -1)

command -v perf > /dev/null || { echo "profile: no perf" >&2; exit 1; }
make -s -C "$bench" hsload

rm -rf "$prefix"
mkdir -p "$prefix"/{conf,logs,tmp,journal}
sed -e "s|@MODULE@|$module|" -e "s|@PREFIX@|$prefix|" -e "s|@PORT@|$port|" \
    -e "s|@DIRECTORY@|$directory|" -e "s|@FSYNC@|off|" \
    -e "s|@AUTH_PORT@|${BENCH_PORT_AUTH:-18082}|" -e "s|@ORG@|$org|" \
    "$bench/conf/hookstream.conf" > "$prefix/conf/nginx.conf"

"$nginx_bin" -p "$prefix/" -c conf/nginx.conf
master=""
for i in $(seq 50); do
    [ -s "$prefix/logs/nginx.pid" ] && master=$(cat "$prefix/logs/nginx.pid")
    [ -n "$master" ] && [ -n "$(pgrep -P "$master")" ] && break
    sleep 0.1
done

stop() {
    [ -n "$master" ] && kill -QUIT "$master" 2>/dev/null || true
}
trap stop EXIT

workers=$(pgrep -P "$master" | paste -sd, -)

"$bench/hsload" fanout -a "127.0.0.1:$port" -k "$key" -o "$org" -n "$n" \
    -d "$secs" -Q -W "$workers" > "$prefix/hsload.out" 2>&1 &
load=$!

# subscribers connect and settle for about a second before publishing
sleep 1.5
perf record -q -e cpu-clock -F 2000 -g -p "$workers" \
    -o "$prefix/perf.data" -- sleep $((secs - 1)) 2> /dev/null
wait "$load" || true

grep '^RESULT' "$prefix/hsload.out"
echo
echo "== where the workers' time goes (by object) =="
perf report -i "$prefix/perf.data" --no-children --sort dso --stdio -g none \
    2> /dev/null | grep -v '^#' | grep -v '^$' | head -8
echo
echo "== hottest symbols (self time) =="
perf report -i "$prefix/perf.data" --no-children --sort dso,symbol \
    --stdio -g none --percent-limit 0.7 2> /dev/null \
    | grep -v '^#' | grep -v '^$' | head -40

# the same load again, counting the workers' system calls
"$bench/hsload" fanout -a "127.0.0.1:$port" -k "$key" -o "$org" -n "$n" \
    -d "$secs" -Q -W "$workers" > "$prefix/hsload2.out" 2>&1 &
load=$!
sleep 1.5
perf stat -x, -e syscalls:sys_enter_writev,syscalls:sys_enter_write \
    -e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read \
    -e syscalls:sys_enter_recvfrom -p "$workers" \
    -o "$prefix/stat.out" -- sleep $((secs - 2)) 2> /dev/null || true
wait "$load" || true

echo
echo "== system calls of the workers, $((secs - 2)) s of the second run =="
rate=$(grep -o 'msgs_per_s=[0-9]*' "$prefix/hsload2.out" | cut -d= -f2)
awk -F, -v rate="${rate:-0}" -v secs=$((secs - 2)) '
    /syscalls:/ {
        sub(/syscalls:sys_enter_/, "", $3)
        printf "    %-12s %10d", $3, $1
        if ($3 == "writev" && $1 > 0 && rate > 0)
            printf "   (%.2f messages per writev at %d msg/s)", \
                rate * secs / $1, rate
        printf "\n"
    }' "$prefix/stat.out"
