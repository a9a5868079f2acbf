#!/usr/bin/env bash
# bench/run.sh: ngx_hookstream against nchan, on one machine, same nginx
# binary, same worker_processes, same load from bench/hsload, runs
# alternating between the two. Prints a table and writes
# bench/results/<date>.md (see docs/benchmarks.md).
#
# Environment (all optional):
#   BENCH_DURATION=8    seconds of load per run
#   BENCH_REPS=3        runs of each scenario on each server (median shown)
#   BENCH_SCENARIOS="fanout1000 fanout5000 orgs5000 rate5000 rate5000-10
#                    rate1000 churn idle10000 ingest"  (rateN-R: N
#                    subscribers, R msg/s, 50 by default; orgsN: N
#                    subscribers on N orgs or channels)
#                    Not in the default list: xhostN, N subscribers
#                    spread over two hosts on one Redis (needs
#                    redis-server; run.sh starts its own)
#   BENCH_CHURN_CONNECTORS=50  churn: connections being opened at once
#   BENCH_CHURN_KEYS=1000      churn: API keys resolved by the authority
#   BENCH_ORGS_WINDOW=1000     orgs: messages the publisher may be ahead
#                              of the deliveries
#   BENCH_NOISE=0.25    a run during which other jobs used more than this
#   BENCH_RETRIES=1     share of one CPU is run again, at most this often
#   BENCH_QUIET_WAIT=3  seconds to wait at most for other jobs to calm down
#                       before each run
#   BENCH_OUT=FILE      where to write the report
#   BENCH_WORK=DIR      server prefixes and logs (build/bench)
#   BENCH_PORT_HS=18080 BENCH_PORT_NCHAN=18081
#   xhost: BENCH_PORT_HS2=18083 BENCH_PORT_NCHAN2=18084
#          BENCH_PORT_AUTH2=18085 BENCH_PORT_REDIS=18379, REDIS_SERVER
#   NGINX_BIN, HOOKSTREAM_MODULE, NCHAN_MODULE
#   BENCH_REPORT_ONLY=1 no runs: rewrite the report (and the plots) from
#                       the last run's $BENCH_WORK/results.tsv
#   BENCH_PLOTS=DIR     where the PNG plots go (bench/results; none
#                       without gnuplot)

set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")

nginx_bin=${NGINX_BIN:-/usr/sbin/nginx}
module=${HOOKSTREAM_MODULE:-$root/build/nginx/ngx_hookstream_module.so}
nchan_module=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
work=${BENCH_WORK:-$root/build/bench}
dur=${BENCH_DURATION:-8}
reps=${BENCH_REPS:-3}
scenarios=${BENCH_SCENARIOS:-fanout1000 fanout5000 orgs5000 rate5000
                             rate5000-10 rate1000 churn idle10000 ingest}
scenarios=$(echo $scenarios)
quiet_wait=${BENCH_QUIET_WAIT:-3}
noise=${BENCH_NOISE:-0.25}
retries=${BENCH_RETRIES:-1}
port_hs=${BENCH_PORT_HS:-18080}
port_nc=${BENCH_PORT_NCHAN:-18081}
port_auth=${BENCH_PORT_AUTH:-18082}
port_hs2=${BENCH_PORT_HS2:-18083}
port_nc2=${BENCH_PORT_NCHAN2:-18084}
port_auth2=${BENCH_PORT_AUTH2:-18085}
port_redis=${BENCH_PORT_REDIS:-18379}
redis_server=${REDIS_SERVER:-redis-server}
redis_pid=""
churn_conc=${BENCH_CHURN_CONNECTORS:-50}
churn_keys=${BENCH_CHURN_KEYS:-1000}
orgs_window=${BENCH_ORGS_WINDOW:-1000}
hsload=$bench/hsload

directory=$root/examples/directory.json
key=$(cat "$root/examples/demo-key.txt")
org=$(grep -o 'org_[0-9a-f]\{32\}' "$directory" | head -1)
src=$(grep -o 'src_[0-9a-f]\{32\}' "$directory" | head -1)

stamp=$(date +%Y-%m-%d)
out=${BENCH_OUT:-$bench/results/$stamp.md}
if [ -z "${BENCH_OUT:-}" ] && [ -e "$out" ]; then
    out=$bench/results/$stamp-$(date +%H%M).md
fi

results=$work/results.tsv
started=$(date +%s)

die() { echo "bench: $*" >&2; exit 1; }

[ -x "$nginx_bin" ] || die "no nginx at $nginx_bin"
[ -f "$module" ] || die "no module at $module (make module)"
[ -f "$nchan_module" ] || die "no nchan at $nchan_module" \
    "(apt-get install libnginx-mod-nchan)"
module=$(readlink -f "$module")

make -s -C "$bench" hsload

# 10,000 idle connections need about as many descriptors in one worker
nofile=$(ulimit -Hn)
idle_n=10000
if [ "$nofile" != unlimited ] && [ "$nofile" -lt 10200 ]; then
    idle_n=$((nofile - 200))
    echo "bench: ulimit -Hn is $nofile: idle runs use $idle_n connections"
fi

report_only=${BENCH_REPORT_ONLY:-}

if [ -n "$report_only" ]; then
    [ -s "$results" ] || die "no $results to report on"
else
    rm -rf "$work"
    mkdir -p "$work/logs"
    : > "$results"
    echo "$scenarios" > "$work/scenarios"
    echo "$reps" > "$work/reps"
    # every run loads the same build, even if the tree is rebuilt meanwhile
    cp -p "$module" "$work/ngx_hookstream_module.so"
fi
module=$work/ngx_hookstream_module.so
mkdir -p "$(dirname "$out")"

if [ -n "$report_only" ] && [ -s "$work/scenarios" ]; then
    scenarios=$(cat "$work/scenarios")
    reps=$(cat "$work/reps" 2>/dev/null || echo "$reps")
fi

# -- the orgs and keys of the orgs and churn scenarios ----------------------

# make_keys FILE N TAG: N lines "ORG KEY" of made-up orgs and API keys,
# the same on every run (ids and keys are hashes of TAG and the line)
make_keys() {
    perl -MDigest::SHA=sha256_hex -MDigest::MD5=md5_hex -e '
        my ($n, $tag) = @ARGV;
        for my $i (0 .. $n - 1) {
            printf "org_%s hs_live_%s\n", md5_hex("$tag-org-$i"),
                sha256_hex("$tag-key-$i");
        }' "$2" "$3" > "$1"
}

# make_directory KEYS OUT: the demo directory plus one org a line of KEYS,
# each with its one API key
make_directory() {
    perl -MDigest::SHA=sha256_hex -e '
        my ($keys, $demo) = @ARGV;
        open my $d, "<", $demo or die "$demo: $!";
        my $json = do { local $/; <$d> };
        $json =~ s/\}\s*\}\s*$//s or die "$demo: not the expected shape";
        open my $k, "<", $keys or die "$keys: $!";
        print $json;
        while (<$k>) {
            my ($org, $key) = split;
            printf qq(,\n        "%s": {\n            "api_keys": )
                . qq(["sha256:%s"]\n        }), $org, sha256_hex($key);
        }
        print "\n    }\n}\n";' "$1" "$directory" > "$2"
}

# -- servers ---------------------------------------------------------------

running=""

# start NAME: hs-on, hs-off (hookstream, journal fsync on/off) or nchan
start() {
    local name=$1 prefix=$work/$1 port fsync dir i auth redis

    rm -rf "$prefix"
    mkdir -p "$prefix"/{conf,logs,tmp,journal}

    case $name in
    hs-*)
        port=$port_hs
        auth=$port_auth
        fsync=${name#hs-}
        dir=$directory
        redis=""
        if [ "$name" = hs-orgs ]; then
            # the orgs scenario's directory: the demo org and 5,000 more
            fsync=off
            dir=$work/orgs-directory.json
        fi
        case $name in
        hs-ra|hs-rb)
            # two hosts on one Redis (xhost): host B has its own ports
            fsync=off
            redis="    hookstream_redis redis://127.0.0.1:$port_redis;"
            if [ "$name" = hs-rb ]; then
                port=$port_hs2
                auth=$port_auth2
            fi
            ;;
        esac
        sed -e "s|@MODULE@|$module|" -e "s|@PREFIX@|$prefix|" \
            -e "s|@PORT@|$port|" -e "s|@DIRECTORY@|$dir|" \
            -e "s|@FSYNC@|$fsync|" -e "s|@AUTH_PORT@|$auth|" \
            -e "s|@ORG@|$org|" \
            "$bench/conf/hookstream.conf" > "$prefix/conf/nginx.conf"
        if [ -n "$redis" ]; then
            sed -i "/^    hookstream_journal /a\\
$redis" "$prefix/conf/nginx.conf"
        fi
        ;;
    nchan-ra|nchan-rb)
        port=$port_nc
        [ "$name" = nchan-rb ] && port=$port_nc2
        sed -e "s|@NCHAN_MODULE@|$nchan_module|" -e "s|@PREFIX@|$prefix|" \
            -e "s|@PORT@|$port|" -e "s|@REDIS@|127.0.0.1:$port_redis|" \
            "$bench/conf/nchan-redis.conf" > "$prefix/conf/nginx.conf"
        ;;
    nchan)
        port=$port_nc
        sed -e "s|@NCHAN_MODULE@|$nchan_module|" -e "s|@PREFIX@|$prefix|" \
            -e "s|@PORT@|$port|" \
            "$bench/conf/nchan.conf" > "$prefix/conf/nginx.conf"
        ;;
    esac

    "$nginx_bin" -q -t -p "$prefix/" -c conf/nginx.conf \
        > "$prefix/logs/test.log" 2>&1 \
        || die "nginx -t failed for $name: $(cat "$prefix/logs/test.log")"
    "$nginx_bin" -p "$prefix/" -c conf/nginx.conf || die "$name: no start"
    running="$running $name"

    for i in $(seq 100); do
        if [ -s "$prefix/logs/nginx.pid" ] \
           && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
        then
            return 0
        fi
        sleep 0.1
    done

    die "$name did not start: $(tail -3 "$prefix/logs/error.log")"
}

stop() {
    local name=$1 prefix=$work/$1 pid i

    running=$(echo "$running" | sed "s/ $name\b//")
    [ -s "$prefix/logs/nginx.pid" ] || return 0
    pid=$(cat "$prefix/logs/nginx.pid")

    kill -QUIT "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        sleep 1
    fi

    # the error log's complaints are part of the result
    grep -E '\[(emerg|alert|crit|error)\]' "$prefix/logs/error.log" \
        | sed "s/^/$name: /" >> "$work/server-errors.log" || true
    cp "$prefix/logs/error.log" "$work/logs/error-$name-$(date +%s%N).log"
    rm -rf "$prefix/journal"
}

# Redis for the xhost scenarios: our own, on a loopback port, no
# persistence, emptied before every run
redis_start() {
    local i

    command -v "$redis_server" > /dev/null \
        || die "no $redis_server (apt-get install redis-server)"
    if redis-cli -h 127.0.0.1 -p "$port_redis" ping > /dev/null 2>&1; then
        die "127.0.0.1:$port_redis is taken (BENCH_PORT_REDIS)"
    fi

    mkdir -p "$work/redis"
    "$redis_server" --bind 127.0.0.1 --port "$port_redis" --save '' \
        --appendonly no --dir "$work/redis" --daemonize no \
        --logfile "$work/redis/redis.log" &
    redis_pid=$!

    for i in $(seq 100); do
        if redis-cli -h 127.0.0.1 -p "$port_redis" ping 2>/dev/null \
           | grep -q PONG
        then
            return 0
        fi
        sleep 0.1
    done

    die "redis-server did not start: $(tail -3 "$work/redis/redis.log")"
}

redis_stop() {
    local i

    [ -n "$redis_pid" ] || return 0
    kill -TERM "$redis_pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
}

redis_flush() {
    redis-cli -h 127.0.0.1 -p "$port_redis" flushall > /dev/null \
        || die "redis flushall failed"
}

cleanup() {
    local n
    for n in $running; do
        stop "$n"
    done
    redis_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

workers() {
    pgrep -P "$(cat "$work/$1/logs/nginx.pid")" | paste -sd, -
}

# memory of a server: Pss of master and workers (shared zones counted
# once), and VmRSS of the workers, both in kB
mem_pss() {
    local m p s=0 v
    m=$(cat "$work/$1/logs/nginx.pid")
    for p in $m $(pgrep -P "$m"); do
        v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup")
        s=$((s + v))
    done
    echo $s
}

mem_rss() {
    local m p s=0 v
    m=$(cat "$work/$1/logs/nginx.pid")
    for p in $(pgrep -P "$m"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status")
        s=$((s + v))
    done
    echo $s
}

# waits (a bounded time) until the machine's other jobs leave a core idle
settle() {
    local i a b c d busy
    for i in $(seq "$quiet_wait"); do
        read -r _ a b c d _ < /proc/stat
        sleep 1
        read -r _ e f g h _ < /proc/stat
        busy=$(( (e + f + g - a - b - c) * 100
                 / (e + f + g + h - a - b - c - d + 1) ))
        [ "$busy" -lt 50 ] && return 0
        [ "$i" = 1 ] && printf '  (machine %d%% busy: waiting)\n' "$busy"
    done
    return 0
}

# -- runs ------------------------------------------------------------------

nruns=0
total_runs=0

count_runs() {
    local s
    for s in $scenarios; do
        case $s in
        ingest) total_runs=$((total_runs + 4 * reps)) ;;
        churn)  total_runs=$((total_runs + 3 * reps)) ;;
        idle*)  total_runs=$((total_runs + 2 * reps + 1)) ;;
        xhost*) total_runs=$((total_runs + 3 * reps)) ;;
        *)      total_runs=$((total_runs + 2 * reps)) ;;
        esac
    done
}

field() {
    # field KEY "RESULT ..." -> value
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1
}

record() {
    # record SCENARIO SERVER REP "key=value ..."
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$results"
}

# hsload SCENARIO SERVER REP LOGNAME ARGS...: one run, its RESULT recorded
# A run during which other jobs took more than $noise of a CPU is done
# again, at most $retries times: the machine may be shared.
load() {
    local scen=$1 name=$2 rep=$3 log=$work/logs/$4.log res other wall
    local try=0
    shift 4

    for (( ; ; )); do
        "$hsload" "$@" -Q > "$log" 2>&1 || true
        res=$(grep '^RESULT ' "$log" | tail -1)
        if [ -z "$res" ]; then
            echo "  no result, see $log" >&2
            res="RESULT failed=1"
            break
        fi

        other=$(field other_cpu_s "$res")
        wall=$(field wall_s "$res")
        [ "$try" -lt "$retries" ] || break
        awk -v o="${other:-0}" -v w="${wall:-1}" -v n="$noise" \
            'BEGIN { exit !(o > n * w) }' || break

        try=$((try + 1))
        echo "$scen $name $rep $other $wall" >> "$work/retries"
        printf '  (other jobs took %s CPU-s in %s s: again)\n' \
            "$other" "$wall" >&2
        settle >&2
    done

    record "$scen" "$name" "$rep" "${res#RESULT } tries=$((try + 1))"
    echo "$res"
}

progress() {
    local el
    nruns=$((nruns + 1))
    el=$(( $(date +%s) - started ))
    printf '[%2d/%d %3ds] %s\n' "$nruns" "$total_runs" "$el" "$*"
}

fmt() {
    # fmt NUMBER: thousands separators
    printf "%'.0f" "$1" 2>/dev/null || printf '%s' "$1"
}

# run_fanout SCENARIO SUBSCRIBERS fanout|rate SERVER REP [RATE]
run_fanout() {
    local scen=$1 n=$2 mode=$3 name=$4 rep=$5 rate=${6:-50} args res

    if [ "$name" = nchan ]; then
        start nchan
        args=(-K nchan -a "127.0.0.1:$port_nc")
    else
        start hs-off
        args=(-a "127.0.0.1:$port_hs" -k "$key" -o "$org")
    fi

    settle
    res=$(load "$scen" "$name" "$rep" "$scen-$name-$rep" "$mode" \
          "${args[@]}" -n "$n" -d "$dur" -r "$rate" -c 500 \
          -W "$(workers "${name/hookstream/hs-off}")")
    stop "${name/hookstream/hs-off}"

    progress "$scen $name #$rep:" \
        "$(fmt "$(field msgs_per_s "$res")") msg/s," \
        "p50 $(field p50_us "$res") us, p99 $(field p99_us "$res") us," \
        "lost $(field lost "$res"), closes $(field close_codes "$res")"
}

# run_orgs SCENARIO SUBSCRIBERS SERVER REP: N subscribers on N orgs
# (nchan: N channels), one publisher going round robin over them
run_orgs() {
    local scen=$1 n=$2 name=$3 rep=$4 args res srv

    if [ "$name" = nchan ]; then
        srv=nchan
        args=(-K nchan -a "127.0.0.1:$port_nc")
    else
        srv=hs-orgs
        args=(-a "127.0.0.1:$port_hs" -F "$work/orgs-keys.txt")
    fi

    start "$srv"
    settle
    res=$(load "$scen" "$name" "$rep" "$scen-$name-$rep" orgs \
          "${args[@]}" -n "$n" -d "$dur" -w "$orgs_window" -c 500 \
          -W "$(workers "$srv")")
    stop "$srv"

    progress "$scen $name #$rep:" \
        "$(fmt "$(field msgs_per_s "$res")") msg/s," \
        "p50 $(field p50_us "$res") us, p99 $(field p99_us "$res") us," \
        "lost $(field lost "$res"), closes $(field close_codes "$res")"
}

# run_churn SERVER REP: connect, handshake, first frame, close, again.
#   hookstream:     API keys the directory does not know, resolved by the
#                   authority once each (a warm-up) and then from the cache
#   hookstream-dir: the demo key, which the directory file knows
#   nchan:          a WebSocket subscriber on one channel, done at the 101
run_churn() {
    local name=$1 rep=$2 args res srv

    case $name in
    nchan)
        srv=nchan
        args=(-K nchan -a "127.0.0.1:$port_nc" -y)
        ;;
    hookstream)
        srv=hs-off
        args=(-a "127.0.0.1:$port_hs" -F "$work/churn-keys.txt")
        ;;
    hookstream-dir)
        srv=hs-off
        args=(-a "127.0.0.1:$port_hs" -k "$key")
        ;;
    esac

    start "$srv"
    settle
    res=$(load churn "$name" "$rep" "churn-$name-$rep" churn \
          "${args[@]}" -n "$churn_conc" -d "$dur" -D 2 \
          -W "$(workers "$srv")")
    stop "$srv"

    progress "churn $name #$rep:" \
        "$(fmt "$(field connects_per_s "$res")") connects/s," \
        "p50 $(field p50_us "$res") us, p99 $(field p99_us "$res") us," \
        "errors $(field errors "$res")"
}

run_idle() {
    local scen=$1 n=$2 name=$3 rep=$4 srv args pid res pb rb pa ra i open
    local ready=$work/ready log=$work/logs/$scen-$name-$rep.log

    srv=$name
    case $name in
    hookstream|keepalive) srv=hs-off ;;
    esac

    case $name in
    nchan)      args=(-K nchan -a "127.0.0.1:$port_nc") ;;
    hookstream) args=(-a "127.0.0.1:$port_hs" -k "$key") ;;
    keepalive)  args=(-x -a "127.0.0.1:$port_hs" -S /ka) ;;
    esac

    start "$srv"
    settle
    sleep 1
    pb=$(mem_pss "$srv")
    rb=$(mem_rss "$srv")

    rm -f "$ready"
    "$hsload" idle "${args[@]}" -n "$n" -c 500 -H 120 -R "$ready" -Q \
        > "$log" 2>&1 &
    pid=$!

    for i in $(seq 1200); do
        [ -s "$ready" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done

    # let the server finish whatever it does after the handshakes
    sleep 2
    pa=$(mem_pss "$srv")
    ra=$(mem_rss "$srv")
    open=$(cat "$ready" 2>/dev/null || echo 0)

    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    stop "$srv"

    res=$(grep '^RESULT ' "$log" | tail -1)
    [ "$open" -gt 0 ] || open=1
    record "$scen" "$name" "$rep" "${res#RESULT } pss_before_kb=$pb"`
        `" pss_after_kb=$pa rss_before_kb=$rb rss_after_kb=$ra"`
        `" pss_per_conn=$(( (pa - pb) * 1024 / open ))"`
        `" rss_per_conn=$(( (ra - rb) * 1024 / open ))"

    progress "$scen $name #$rep: $open connections," \
        "$(( (pa - pb) * 1024 / open )) B/conn (Pss)," \
        "$(( (ra - rb) * 1024 / open )) B/conn (worker RSS)"
}

# run_xhost SCENARIO SUBSCRIBERS SERVER REP: fan-out to N subscribers
#   hookstream-redis: two hookstream hosts on one Redis, subscribers
#                     split between them, the publisher on host A
#   hookstream:       one host without Redis, all N subscribers on it
#   nchan-redis:      two nchan hosts with Redis storage, split the same
# The server CPU of the two-host runs includes redis-server's.
run_xhost() {
    local scen=$1 n=$2 name=$3 rep=$4 args res srv w s

    redis_flush

    case $name in
    hookstream-redis)
        srv="hs-ra hs-rb"
        args=(-a "127.0.0.1:$port_hs" -B "127.0.0.1:$port_hs2"
              -k "$key" -o "$org")
        ;;
    hookstream)
        srv=hs-off
        args=(-a "127.0.0.1:$port_hs" -k "$key" -o "$org")
        ;;
    nchan-redis)
        srv="nchan-ra nchan-rb"
        args=(-K nchan -a "127.0.0.1:$port_nc" -B "127.0.0.1:$port_nc2")
        ;;
    esac

    w=""
    for s in $srv; do
        start "$s"
        w="$w,$(workers "$s")"
    done
    w=${w#,}
    if [ "$name" != hookstream ]; then
        w="$w,$redis_pid"
        # every host subscribed to Redis before the first message
        sleep 1
    fi

    settle
    res=$(load "$scen" "$name" "$rep" "$scen-$name-$rep" fanout \
          "${args[@]}" -n "$n" -d "$dur" -c 500 -W "$w")
    for s in $srv; do
        stop "$s"
    done

    progress "$scen $name #$rep:" \
        "$(fmt "$(field msgs_per_s "$res")") msg/s," \
        "p50 $(field p50_us "$res") us, p99 $(field p99_us "$res") us," \
        "lost $(field lost "$res"), closes $(field close_codes "$res")"
}

run_ingest() {
    local fsync=$1 rep=$2 res

    start "hs-$fsync"
    settle
    res=$(load "ingest-ws-$fsync" hookstream "$rep" "ingest-ws-$fsync-$rep" \
          ingest -a "127.0.0.1:$port_hs" -k "$key" -s "$src" -n 50 -q 100 \
          -d "$dur" -W "$(workers "hs-$fsync")")
    progress "ingest WebSocket 50x100 fsync=$fsync #$rep:" \
        "$(fmt "$(field acks_per_s "$res")") acks/s," \
        "p99 $(field p99_us "$res") us, errors $(field errors "$res")"

    settle
    res=$(load "ingest-http-$fsync" hookstream "$rep" \
          "ingest-http-$fsync-$rep" \
          ingest -x -a "127.0.0.1:$port_hs" -s "$src" -n 50 -q 1 \
          -d "$dur" -W "$(workers "hs-$fsync")")
    stop "hs-$fsync"
    progress "ingest HTTP POST 50 keep-alive fsync=$fsync #$rep:" \
        "$(fmt "$(field acks_per_s "$res")") requests/s," \
        "p99 $(field p99_us "$res") us, errors $(field errors "$res")"
}

count_runs

if [ -z "$report_only" ]; then

echo "bench: $total_runs runs of ${dur}s, $reps of each, alternating" \
     "hookstream (127.0.0.1:$port_hs) and nchan (127.0.0.1:$port_nc)"

for scen in $scenarios; do
    case $scen in
    orgs*)
        make_keys "$work/orgs-keys.txt" "${scen#orgs}" bench
        make_directory "$work/orgs-keys.txt" "$work/orgs-directory.json"
        ;;
    churn)
        make_keys "$work/churn-keys.txt" "$churn_keys" churn
        ;;
    xhost*)
        [ -n "$redis_pid" ] || redis_start
        ;;
    esac
done

for rep in $(seq "$reps"); do
    # alternate which server goes first
    if [ $((rep % 2)) = 1 ]; then
        order="hookstream nchan"
    else
        order="nchan hookstream"
    fi

    for scen in $scenarios; do
        case $scen in
        fanout*)
            for s in $order; do
                run_fanout "$scen" "${scen#fanout}" fanout "$s" "$rep"
            done
            ;;
        orgs*)
            for s in $order; do
                run_orgs "$scen" "${scen#orgs}" "$s" "$rep"
            done
            ;;
        churn)
            for s in $order; do
                run_churn "$s" "$rep"
                if [ "$s" = hookstream ]; then
                    run_churn hookstream-dir "$rep"
                fi
            done
            ;;
        rate*)
            # rateN: N subscribers, 50 msg/s; rateN-R: R msg/s
            n=${scen#rate}
            r=50
            case $n in *-*) r=${n#*-}; n=${n%-*} ;; esac
            for s in $order; do
                run_fanout "$scen" "$n" rate "$s" "$rep" "$r"
            done
            ;;
        idle*)
            for s in $order; do
                run_idle "$scen" "$idle_n" "$s" "$rep"
            done
            if [ "$rep" = 1 ]; then
                run_idle "$scen" "$idle_n" keepalive "$rep"
            fi
            ;;
        ingest)
            run_ingest on "$rep"
            run_ingest off "$rep"
            ;;
        xhost*)
            if [ $((rep % 2)) = 1 ]; then
                xorder="hookstream-redis hookstream nchan-redis"
            else
                xorder="nchan-redis hookstream hookstream-redis"
            fi
            for s in $xorder; do
                run_xhost "$scen" "${scen#xhost}" "$s" "$rep"
            done
            ;;
        *)
            die "unknown scenario $scen"
            ;;
        esac
    done
done

redis_stop
echo $(( $(date +%s) - started )) > "$work/elapsed"

fi

elapsed=$(cat "$work/elapsed" 2>/dev/null || echo '?')
retried=$(cat "$work/retries" 2>/dev/null || true)
retried=$(printf "%s" "$retried" | grep -c . || true)

# -- the report -------------------------------------------------------------

# agg SCENARIO SERVER KEY -> "median min max" over the reps
agg() {
    awk -F'\t' -v s="$1" -v k="$2" -v f="$3" '
        $1 == s && $2 == k {
            n = split($4, kv, /[ \n]+/)
            for (i = 1; i <= n; i++) {
                if (index(kv[i], f "=") == 1) {
                    v[c++] = substr(kv[i], length(f) + 2) + 0
                }
            }
        }
        END {
            if (c == 0) { print "- - -"; exit }
            for (i = 0; i < c; i++)
                for (j = i + 1; j < c; j++)
                    if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            m = c % 2 ? v[(c - 1) / 2] : (v[c / 2 - 1] + v[c / 2]) / 2
            printf "%s %s %s\n", m, v[0], v[c - 1]
        }' "$results"
}

sum() {
    awk -F'\t' -v s="$1" -v k="$2" -v f="$3" '
        $1 == s && $2 == k {
            n = split($4, kv, /[ \n]+/)
            for (i = 1; i <= n; i++)
                if (index(kv[i], f "=") == 1)
                    t += substr(kv[i], length(f) + 2)
        }
        END { print t + 0 }' "$results"
}

codes() {
    awk -F'\t' -v s="$1" -v k="$2" '
        $1 == s && $2 == k {
            n = split($4, kv, /[ \n]+/)
            for (i = 1; i <= n; i++)
                if (kv[i] ~ /^close_codes=/ && kv[i] != "close_codes=-")
                    c = c (c ? "," : "") substr(kv[i], 13)
        }
        END { print c ? c : "none" }' "$results"
}

# num VALUE SCALE DECIMALS
num() {
    awk -v v="$1" -v s="$2" -v d="$3" 'BEGIN {
        if (v == "-") { print "-"; exit }
        printf "%.*f\n", d, v / s }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "-" || b == "-" || b == 0) { print "-"; exit }
        printf "%.2f\n", a / b }'
}

# span MEDIAN MIN MAX SCALE DECIMALS -> "median (min–max)"
span() {
    if [ "$reps" -gt 1 ] && [ "$1" != - ]; then
        printf '%s (%s–%s)\n' "$(num "$1" "$4" "$5")" \
            "$(num "$2" "$4" "$5")" "$(num "$3" "$4" "$5")"
    else
        num "$1" "$4" "$5"
    fi
}

# one table row: LABEL SCEN KEY SCALE DECIMALS TARGET_TEXT TARGET_CHECK
#   [SERVER]
#   TARGET_CHECK: an awk condition on r (ours/nchan), or "" for none
#   SERVER: the runs of ours to show (hookstream)
#   THEIRS: the runs to compare with (nchan)
row() {
    local label=$1 scen=$2 key=$3 scale=$4 dec=$5 target=$6 check=$7
    local ours_name=${8:-hookstream} theirs_name=${9:-nchan}
    local a b r met ours theirs

    read -r a amin amax <<< "$(agg "$scen" "$ours_name" "$key")"
    read -r b bmin bmax <<< "$(agg "$scen" "$theirs_name" "$key")"
    r=$(ratio "$a" "$b")

    ours=$(span "$a" "$amin" "$amax" "$scale" "$dec")
    theirs=$(span "$b" "$bmin" "$bmax" "$scale" "$dec")

    met=""
    if [ -n "$check" ] && [ "$r" != - ]; then
        met=$(awk -v r="$r" "BEGIN { print ($check) ? \"yes\" : \"**no**\" }")
    fi

    printf '| %s | %s | %s | %s | %s | %s |\n' \
        "$label" "$ours" "$theirs" "$r" "$target" "$met"
}

# a row for hookstream alone: LABEL SCEN KEY SCALE DEC TARGET MET
solo() {
    local a amin amax v
    read -r a amin amax <<< "$(agg "$2" hookstream "$3")"
    v=$(span "$a" "$amin" "$amax" "$4" "$5")
    printf '| %s | %s | — | — | %s | %s |\n' "$1" "$v" "$6" "$7"
}

has() {
    case " $scenarios " in *" $1 "*) return 0 ;; esac
    return 1
}

table() {
    local ws_on http_on ws_off http_off a

    echo "| scenario (median of $reps, min–max) | hookstream | nchan |" \
         "ours/nchan | target | met |"
    echo "| --- | ---: | ---: | ---: | --- | --- |"

    for scen in fanout1000 fanout5000; do
        has "$scen" || continue
        row "fan-out ${scen#fanout} subs, delivered msg/s" "$scen" \
            msgs_per_s 1 0 "≥ 2x nchan" "r >= 2"
        row "fan-out ${scen#fanout} subs, server CPU ns/msg" "$scen" \
            server_ns_per_msg 1 0 "(lower is better)" ""
    done

    for scen in $scenarios; do
        case $scen in orgs*) ;; *) continue ;; esac
        n=$(fmt "${scen#orgs}")
        row "$n subs on $n orgs (nchan: channels), delivered msg/s" \
            "$scen" msgs_per_s 1 0 "" ""
        row "$n subs on $n orgs, p50 latency ms" "$scen" p50_us 1000 2 \
            "" ""
        row "$n subs on $n orgs, p99 latency ms" "$scen" p99_us 1000 2 \
            "" ""
        row "$n subs on $n orgs, server CPU µs/msg" "$scen" \
            server_ns_per_msg 1000 1 "(lower is better)" ""
    done

    for scen in $scenarios; do
        case $scen in xhost*) ;; *) continue ;; esac
        n=$(fmt "${scen#xhost}")
        label="2 hosts on Redis, $n subs (nchan: Redis storage)"
        row "$label, delivered msg/s" "$scen" msgs_per_s 1 0 "" "" \
            hookstream-redis nchan-redis
        row "$label, p50 latency ms" "$scen" p50_us 1000 2 "" "" \
            hookstream-redis nchan-redis
        row "$label, p99 latency ms" "$scen" p99_us 1000 2 "" "" \
            hookstream-redis nchan-redis
        row "$label, CPU ns/msg (workers of both + Redis)" "$scen" \
            server_ns_per_msg 1 0 "(lower is better)" "" \
            hookstream-redis nchan-redis
        label="hookstream 2 hosts on Redis vs 1 host, $n subs"
        echo "| $label | 2 hosts | 1 host | 2 hosts / 1 host | | |"
        row "$label, delivered msg/s" "$scen" msgs_per_s 1 0 "" "" \
            hookstream-redis hookstream
        row "$label, p50 latency ms" "$scen" p50_us 1000 2 "" "" \
            hookstream-redis hookstream
        row "$label, p99 latency ms" "$scen" p99_us 1000 2 "" "" \
            hookstream-redis hookstream
        row "$label, CPU ns/msg (1 host: no Redis)" "$scen" \
            server_ns_per_msg 1 0 "(lower is better)" "" \
            hookstream-redis hookstream
    done

    for scen in $scenarios; do
        case $scen in rate*) ;; *) continue ;; esac
        n=${scen#rate}
        r=50
        case $n in *-*) r=${n#*-}; n=${n%-*} ;; esac
        label="$n subs at $r msg/s"
        row "$label, p50 latency ms" "$scen" p50_us 1000 1 "" ""
        row "$label, p99 latency ms" "$scen" p99_us 1000 1 "≤ nchan's" \
            "r <= 1"
        row "$label, max latency ms" "$scen" max_us 1000 1 "" ""
        row "$label, delivered msg/s" "$scen" msgs_per_s 1 0 \
            "(offered: $(fmt $((n * r))))" ""
    done

    if has churn; then
        row "churn, $churn_conc connectors, connects/s (key: auth cache)" \
            churn connects_per_s 1 0 "" ""
        row "churn, connects/s (key: directory file)" churn \
            connects_per_s 1 0 "" "" hookstream-dir
        row "churn, handshake p50 ms (key: auth cache)" churn p50_us \
            1000 2 "" ""
        row "churn, handshake p99 ms (key: auth cache)" churn p99_us \
            1000 2 "" ""
        row "churn, handshake p99 ms (key: directory file)" churn p99_us \
            1000 2 "" "" hookstream-dir
        row "churn, server CPU µs/connect (key: auth cache)" churn \
            server_ns_per_msg 1000 1 "(lower is better)" ""
        row "churn, server CPU µs/connect (key: directory file)" churn \
            server_ns_per_msg 1000 1 "(lower is better)" "" hookstream-dir
    fi

    if has idle10000; then
        row "idle $idle_n WebSockets, bytes/conn (Pss)" idle10000 \
            pss_per_conn 1 0 "≤ 1/4 nchan's" "r <= 0.25"
        row "idle $idle_n WebSockets, bytes/conn (worker RSS)" idle10000 \
            rss_per_conn 1 0 "" ""
        read -r a _ _ <<< "$(agg idle10000 keepalive pss_per_conn)"
        printf '| %s | %s | | | | |\n' \
            "nginx's own idle keep-alive connection, bytes/conn (Pss)" "$a"
    fi

    if has ingest; then
        read -r ws_on _ _ <<< "$(agg ingest-ws-on hookstream acks_per_s)"
        read -r http_on _ _ <<< "$(agg ingest-http-on hookstream acks_per_s)"
        read -r ws_off _ _ <<< "$(agg ingest-ws-off hookstream acks_per_s)"
        read -r http_off _ _ <<< \
            "$(agg ingest-http-off hookstream acks_per_s)"

        solo "ingest WebSocket 50 conns x 100 in flight, fsync on, acks/s" \
            ingest-ws-on acks_per_s 1 0 "≥ 100,000" \
            "$(awk -v v="$ws_on" \
               'BEGIN { print (v >= 100000 ? "yes" : "**no**") }')"
        solo "ingest HTTP POST 50 keep-alive conns, fsync on, req/s" \
            ingest-http-on acks_per_s 1 0 "" ""
        printf '| WebSocket / HTTP ingest, fsync on | %s | — | — |' \
            "$(ratio "$ws_on" "$http_on")x"
        printf ' ≥ 5x | %s |\n' \
            "$(awk -v a="$ws_on" -v b="$http_on" \
               'BEGIN { print (b > 0 && a / b >= 5 ? "yes" : "**no**") }')"
        solo "ingest WebSocket, fsync off, acks/s" ingest-ws-off \
            acks_per_s 1 0 "" ""
        solo "ingest HTTP POST, fsync off, req/s" ingest-http-off \
            acks_per_s 1 0 "" ""
        printf '| WebSocket / HTTP ingest, fsync off | %s | — | — |' \
            "$(ratio "$ws_off" "$http_off")x"
        printf ' | |\n'
        solo "ingest WebSocket fsync on, ack p99 ms" ingest-ws-on p99_us \
            1000 1 "" ""
    fi
}

losses() {
    local scen s
    for scen in $scenarios; do
        case $scen in fanout*|rate*|orgs*) ;; *) continue ;; esac
        for s in hookstream nchan; do
            printf -- '- %s %s: %s messages lost, %s publish errors,' \
                "$scen" "$s" "$(sum "$scen" "$s" lost)" \
                "$(sum "$scen" "$s" pub_errors)"
            printf ' subscriber closes: %s; other jobs used %s CPU-s' \
                "$(codes "$scen" "$s")" \
                "$(sum "$scen" "$s" other_cpu_s)"
            printf ' while these runs lasted\n'
        done
    done
    for scen in $scenarios; do
        case $scen in xhost*) ;; *) continue ;; esac
        for s in hookstream-redis hookstream nchan-redis; do
            printf -- '- %s %s: %s messages lost, %s publish errors,' \
                "$scen" "$s" "$(sum "$scen" "$s" lost)" \
                "$(sum "$scen" "$s" pub_errors)"
            printf ' subscriber closes: %s; other jobs used %s CPU-s' \
                "$(codes "$scen" "$s")" \
                "$(sum "$scen" "$s" other_cpu_s)"
            printf ' while these runs lasted\n'
        done
    done
    if has churn; then
        for s in hookstream hookstream-dir nchan; do
            printf -- '- churn %s: %s failed handshakes or connections,' \
                "$s" "$(sum churn "$s" errors)"
            printf ' unexpected closes: %s; other jobs used %s CPU-s\n' \
                "$(codes churn "$s")" "$(sum churn "$s" other_cpu_s)"
        done
    fi
    for scen in ingest-ws-on ingest-ws-off ingest-http-on ingest-http-off; do
        has ingest || continue
        printf -- '- %s: %s errors (nacks or non-2xx), other jobs %s CPU-s\n' \
            "$scen" "$(sum "$scen" hookstream errors)" \
            "$(sum "$scen" hookstream other_cpu_s)"
    done
}

machine() {
    echo "- $(nproc) CPUs: $(sed -n 's/^model name[[:space:]]*: //p' \
        /proc/cpuinfo | head -1)," \
        "$(awk '/MemTotal/ { printf "%.0f GB RAM", $2 / 1048576 }' \
        /proc/meminfo)"
    echo "- kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')," \
        "nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan \
        2>/dev/null || echo '?'), worker_processes 2 for both"
    echo "- hookstream at $(git -C "$root" rev-parse --short HEAD \
        2>/dev/null || echo '?')$(git -C "$root" status --porcelain -uno \
        2>/dev/null | grep -q . && echo ' (with uncommitted changes)')"
    echo "- module $(sha256sum "$module" | cut -c1-12)," \
        "built $(date -r "$module" '+%Y-%m-%d %H:%M')"
    case " $scenarios " in
    *" xhost"*)
        echo "- $("$redis_server" --version | cut -d' ' -f1-3)," \
            "127.0.0.1:$port_redis, --save '' --appendonly no," \
            "emptied (FLUSHALL) before every run"
        ;;
    esac
    echo "- journal on $(df -T "$work" | awk 'NR == 2 { print $2 }')" \
        "($(df "$work" | awk 'NR == 2 { print $1 }'))"
}

# -- the plots -------------------------------------------------------------

# dat LABEL SCEN KEY SERVER...: a line of plots.gp's data, "-" for none
dat() {
    local label=$1 scen=$2 key=$3 s v
    shift 3
    printf '"%s"' "$label"
    for s in "$@"; do
        v=$(agg "$scen" "$s" "$key")
        [ "$v" = "- - -" ] && v="0 0 0"
        printf ' %s' "$v"
    done
    echo
}

plots() {
    local d=$work/plots prefix=${out%.md} scen n r p ka

    command -v gnuplot > /dev/null || {
        echo "bench: no gnuplot (apt-get install gnuplot-nox): no plots"
        return 0
    }

    rm -rf "$d"
    mkdir -p "$d"

    for scen in $scenarios; do
        case $scen in
        fanout*)
            dat "fan-out\\n$(fmt "${scen#fanout}") subs\\none org" \
                "$scen" msgs_per_s hookstream nchan
            ;;
        orgs*)
            n=$(fmt "${scen#orgs}")
            dat "many orgs\\n$n subs\\n$n orgs" "$scen" \
                msgs_per_s hookstream nchan
            ;;
        xhost*)
            n=$(fmt "${scen#xhost}")
            dat "2 hosts, Redis\\n$n subs\\none org" "$scen" \
                msgs_per_s hookstream-redis nchan-redis
            ;;
        esac
    done > "$d/throughput.dat"

    if has churn; then
        dat "$churn_conc connectors" churn connects_per_s hookstream \
            hookstream-dir nchan > "$d/churn.dat"
    else
        echo '"no churn run" 0 0 0 0 0 0 0 0 0' > "$d/churn.dat"
    fi

    # the fixed rates this machine keeps up with (5,000 x 50/s it does
    # not: that latency is a backlog), then the orgs and the handshakes
    {
        for scen in $scenarios; do
            case $scen in rate*) ;; *) continue ;; esac
            n=${scen#rate}
            r=50
            case $n in *-*) r=${n#*-}; n=${n%-*} ;; esac
            [ $((n * r)) -gt 50000 ] && continue
            for p in 50 99; do
                dat "$(fmt "$n") subs\\n$r msg/s\\np$p" "$scen" \
                    "p${p}_us" hookstream nchan
            done
        done
        for scen in $scenarios; do
            case $scen in orgs*) ;; *) continue ;; esac
            for p in 50 99; do
                dat "$(fmt "${scen#orgs}") orgs\\nmax rate\\np$p" "$scen" \
                    "p${p}_us" hookstream nchan
            done
        done
        if has churn; then
            for p in 50 99; do
                dat "churn\\nhandshake\\np$p" churn "p${p}_us" \
                    hookstream nchan
            done
        fi
    } > "$d/latency.dat"

    if has idle10000; then
        read -r ka _ _ <<< "$(agg idle10000 keepalive pss_per_conn)"
        printf '%s %s\n' \
            "$(dat "$(fmt "$idle_n") idle WebSockets" idle10000 \
               pss_per_conn hookstream nchan)" "${ka/-/0}" \
            > "$d/memory.dat"
    else
        echo '"no idle run" 0 0 0 0 0 0 0' > "$d/memory.dat"
    fi

    # a plot with nothing of this run in it is left out
    rm -f "$prefix"-{throughput,latency,memory}.png
    gnuplot -e "data='$d'; out='$prefix'" \
        -e "title='hookstream vs nchan, $(date -r "$results" '+%Y-%m-%d')'" \
        -e "lat=$([ -s "$d/latency.dat" ] && echo 1 || echo 0)" \
        -e "mem=$(has idle10000 && echo 1 || echo 0)" \
        "$bench/plots.gp" \
        || echo "bench: gnuplot failed"

    for p in throughput latency memory; do
        if [ -f "$prefix-$p.png" ]; then
            made_plots="$made_plots $(basename "$prefix-$p.png")"
        fi
    done
    made_plots=${made_plots# }
    echo "bench: plots: ${made_plots:-none}"
}

made_plots=""
plots

{
    echo "# hookstream vs nchan, $(date -r "$results" '+%Y-%m-%d %H:%M %Z')"
    echo
    machine
    echo
    echo "\`bench/run.sh\`: $reps runs of each scenario," \
         "${dur}s of load each, alternating the two servers;" \
         "$elapsed s in all. Runs done again because other jobs took" \
         "more than $noise of a CPU meanwhile (BENCH_NOISE): $retried."
    echo
    table
    echo
    echo "Losses and noise:"
    echo
    losses
    echo
    if [ -s "$work/server-errors.log" ]; then
        echo "Server error log lines (\[error\] and worse), first 20 of" \
             "$(wc -l < "$work/server-errors.log"):"
        echo
        echo '```'
        head -20 "$work/server-errors.log"
        echo '```'
    else
        echo "No \[error\], \[crit\], \[alert\] or \[emerg\] in either" \
             "server's error log."
    fi
    echo
    if [ -n "$made_plots" ]; then
        echo "Plots: $made_plots."
        echo
    fi
    echo "Every run (hsload's RESULT line; idle runs add the memory):"
    echo
    echo '```'
    tr '\t' ' ' < "$results"
    echo '```'
} > "$out"

echo
table
echo
losses
echo
echo "bench: $elapsed s; report in ${out#$root/}"
