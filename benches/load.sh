#!/usr/bin/env bash
# Load test of the warm-cache hot path (issues 4 and 12).
#
# Starts, on 127.0.0.1 only: a throwaway redis-server, the mock upstream with
# short delays, release percache servers (in-process store, Redis store, and,
# when the server has `--l1-ttl`, Redis with the near-cache off) and, as the
# peer a user would otherwise pick, nginx (Debian's package) with a per-user
# proxy_cache keyed on the session cookie in front of the same mock. Signs
# one user in on each, warms its widgets until `Cache-Status` says hit, then
# runs oha against:
#   (a) GET /healthz          memory server (baseline: HTTP stack only)
#   (b) GET /widgets/1        memory server (session + cache hit + card)
#   (c) GET /widgets/1        Redis server (L1 hit)
#   (d) GET /api/widgets/1    Redis server (JSON)
#   (e) GET /widgets/1        Redis server with --l1-ttl 0 (a Redis read per request)
#   (f) GET /dashboard        memory server, all five widgets inline
#   (g) GET /api/widgets/1    memory server (JSON)
#   (n) GET /api/widgets/1    nginx proxy_cache hit (the peer)
#   (p) GET /api/widgets/1    memory server, at an offered rate both can serve
#   (q) GET /api/widgets/1    nginx, at the same offered rate
#   (r) GET /healthz          memory server, one worker pinned to CPU 1
#   (s) GET /api/widgets/1    the same pinned server
#   (t) GET /api/widgets/1    nginx, one worker pinned to CPU 1
# (r to t only with 2 CPUs or more: oha runs pinned to CPU 0 for them)
# and prints one table: requests/s, p50, p99, ratio to (a), non-2xx count,
# Redis commands per request, plus the mock's call count during the runs (a
# warm cache makes none), each server's peak RSS and the log volume it wrote,
# then the ratios of issue 12, all from this one run: warm hit / healthz,
# warm dashboard / healthz, percache / nginx on a warm JSON hit (and p99s).
#
# Rows (a) to (n) are closed loops at saturation: each connection sends its
# next request as soon as the last one is answered, so the client and the
# server share the 2 cores, and the faster server leaves the client more
# work, and each more runnable threads: a p99 there says as much about the
# scheduler as about the server. Rows (p) and (q) compare tails the usual
# way, at one offered load: both servers get EQUAL_LOAD (default 0.8) of the
# slower one's saturated rate, paced by oha (`-q`), latency counted from
# when each request was due (`--latency-correction`, so a stall that
# delays the requests behind it counts against the server). Rows (r) to (t)
# take the scheduler out of a saturated run instead: the client alone on one
# CPU, each server one worker alone on the other, so that no runnable thread
# waits for a core another holds, and a p99 measures the server's queue.
#
# A run with any non-2xx response, any client-side error or any upstream
# call during the load is void: the script says so and exits 1.
# Everything it starts is stopped on exit.
#
# Environment:
#   DURATION     duration of each oha run, `oha -z` (default 5s)
#   ROUNDS       rounds (default 3): each round runs every scenario once, so
#                a ratio compares runs spread over the same minutes, not two
#                10-second windows of a shared, drifting machine
#   CONNECTIONS  concurrent connections (default 64)
#   DELAYS_MS    mock delays (default 50,50,50,50,50)
#   RUST_LOG     passed to the servers (default: their own, info)
#   EQUAL_LOAD   share of the slower saturated rate for (p) and (q) (default 0.8)
#   KEEP_LOGS=1  keep the temporary directory with the server logs
#   BURST=1      also run the burst row after the table: benches/burst.sh
#                (3,000 sign-ins at full speed, per allocator; its own
#                environment applies)
set -euo pipefail

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
DELAYS_MS=${DELAYS_MS:-50,50,50,50,50}
EQUAL_LOAD=${EQUAL_LOAD:-0.8}
HOST=127.0.0.1
USERNAME=loadtest
# A fixed 64-byte key (128 hex chars): both servers and every run agree.
SESSION_KEY=$(printf '5e55'%.0s {1..32})
export SESSION_KEY

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '[load] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in curl python3 redis-server; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: apt-get install $tool)"
done
if ! command -v oha >/dev/null; then
    if [[ -x "$HOME/.cargo/bin/oha" ]]; then
        PATH="$HOME/.cargo/bin:$PATH"
    else
        log "oha not found: cargo install oha --locked"
        cargo install oha --locked
        PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    log "nginx not found: installing Debian's package (without starting it)"
    bash scripts/apt-install.sh nginx || die "nginx is required for the peer row"
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

# oha's JSON switch changed name across versions.
if oha --help 2>&1 | grep -q -- '--output-format'; then
    OHA_JSON=(--output-format json)
else
    OHA_JSON=(-j)
fi
# Let requests in flight at the deadline finish instead of counting them as errors.
OHA_WAIT=()
if oha --help 2>&1 | grep -q -- '--wait-ongoing-requests-after-deadline'; then
    OHA_WAIT=(--wait-ongoing-requests-after-deadline)
fi
oha --help 2>&1 | grep -q -- '--latency-correction' ||
    die "this oha has no --latency-correction (the equal-load rows need it): cargo install oha --locked"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/percache-load.XXXXXX")
PIDS=()
cleanup() {
    local status=$?
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each process 5 s, then force it.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP_LOGS:-0}" == 1 || $status -ne 0 ]]; then
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for NAME PID CMD...: retries CMD for 30 s while PID lives.
wait_for() {
    local name=$1 pid=$2
    shift 2
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (see $WORK)"
        sleep 0.1
    done
    die "$name did not become ready in 30 s (see $WORK)"
}

log "building release binaries"
cargo build --release -p percache -p mock_upstream >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PERCACHE_BIN="$TARGET_DIR/release/percache"
MOCK_BIN="$TARGET_DIR/release/mock-upstream"
REDIS_PORT=$(free_port)
redis-server --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no \
    --protected-mode yes --dir "$WORK" >"$WORK/redis-server.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_for redis-server "$REDIS_PID" redis-cli -h "$HOST" -p "$REDIS_PORT" ping
REDIS_URL="redis://$HOST:$REDIS_PORT/0"
redis_cmds() {
    redis-cli -h "$HOST" -p "$REDIS_PORT" info stats |
        tr -d '\r' | awk -F: '$1 == "total_commands_processed" { print $2 }'
}

MOCK_PORT=$(free_port)
MOCK_URL="http://$HOST:$MOCK_PORT"
"$MOCK_BIN" --bind "$HOST:$MOCK_PORT" --delays-ms "$DELAYS_MS" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_for mock-upstream "$MOCK_PID" curl -sf "$MOCK_URL/stats"

declare -A URL PID COOKIE
SERVERS=()
# start_server NAME [EXTRA FLAGS...]: a percache on a free port, logging to
# $WORK/NAME.log; run under ${LAUNCH[@]} when set (taskset for the pinned rows).
LAUNCH=()
start_server() {
    local name=$1 port
    shift
    port=$(free_port)
    # A long freshness window keeps every measured request a fresh hit however
    # long DURATION is (with the default 60 s, runs past it would refresh).
    # Every client here is 127.0.0.1: no sign-in rate limit (LOGIN_RATE=0).
    LOGIN_RATE=0 "${LAUNCH[@]}" "$PERCACHE_BIN" --bind "$HOST:$port" --upstream-url "$MOCK_URL" \
        --fresh 1h --ttl 2h "$@" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("$!")
    URL[$name]="http://$HOST:$port"
    SERVERS+=("$name")
    wait_for "percache ($name)" "${PID[$name]}" curl -sf "${URL[$name]}/healthz"
}

start_server memory
start_server redis --redis-url "$REDIS_URL"
if "$PERCACHE_BIN" --help 2>/dev/null | grep -q -- '--l1-ttl'; then
    start_server redis-nol1 --redis-url "$REDIS_URL" --l1-ttl 0
fi

# The peer: nginx caching the mock's JSON per session cookie, as one would
# put it in front of a per-user API without percache. No access log
# (percache logs a hit at debug, so neither writes a line per request).
# start_nginx NAME WORKERS: on a free port, its files under $WORK/NAME,
# run under ${LAUNCH[@]} when set.
nginx_user=
[[ "$(id -u)" == 0 ]] && nginx_user="user root root;"
start_nginx() {
    local name=$1 workers=$2 port dir
    port=$(free_port)
    dir="$WORK/$name"
    mkdir -p "$dir/cache" "$dir/logs"
    cat >"$dir/nginx.conf" <<CONF
$nginx_user
daemon off;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    proxy_cache_path $dir/cache levels=1:2 keys_zone=peruser:10m max_size=64m inactive=2h use_temp_path=off;
    upstream mock { server $HOST:$MOCK_PORT; keepalive 16; }
    server {
        listen $HOST:$port;
        location = /healthz { return 200 "ok\n"; }
        location /api/widgets/ {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache peruser;
            proxy_cache_key "\$cookie_percache_session\$request_uri";
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            add_header Cache-Status "nginx; \$upstream_cache_status" always;
        }
    }
}
CONF
    "${LAUNCH[@]}" "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" >"$dir/logs/stdout.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("$!")
    URL[$name]="http://$HOST:$port"
    wait_for "$name" "${PID[$name]}" curl -sf "${URL[$name]}/healthz"
}
# One worker per core, like percache.
start_nginx nginx auto

# The pinned pair, for a saturated p99 that is the server's and not the
# scheduler's: one percache worker and one nginx worker, each alone on CPU 1,
# while oha runs on CPU 0 (see rows r to t). Only with 2 CPUs or more.
PINNED=0
if [[ "$(nproc)" -ge 2 ]] && command -v taskset >/dev/null; then
    PINNED=1
    LAUNCH=(taskset -c 1)
    start_server memory-1cpu --workers 1
    start_nginx nginx-1cpu 1
    LAUNCH=()
fi

# sign_in NAME: signs USERNAME in on server NAME, prints the Cookie header value.
sign_in() {
    local name=$1 jar="$WORK/$1.jar" cookie
    curl -s -o /dev/null -c "$jar" -d "username=$USERNAME" "${URL[$name]}/login"
    # Netscape jar: HttpOnly cookies are prefixed "#HttpOnly_"; name and value are fields 6, 7.
    cookie=$(awk -F'\t' 'NF >= 7 { printf "%s%s=%s", sep, $6, $7; sep = "; " }' "$jar")
    [[ -n "$cookie" ]] || die "sign-in on $name set no cookie"
    printf '%s' "$cookie"
}

# warm NAME PATH: requests PATH until Cache-Status says hit (15 s max).
warm() {
    local name=$1 path=$2 status=""
    for _ in $(seq 150); do
        status=$(curl -s -o /dev/null -D - -H "Cookie: ${COOKIE[$name]}" "${URL[$name]}$path" |
            tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" { print $2 }')
        # percache says "hit", nginx "HIT".
        if [[ "${status,,}" == *"; hit"* ]]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name: $path never became a hit (last Cache-Status: ${status:-none})"
}

for name in "${SERVERS[@]}"; do
    COOKIE[$name]=$(sign_in "$name")
    for w in 1 2 3 4 5; do warm "$name" "/widgets/$w"; done
    warm "$name" /api/widgets/1
done
# nginx gets the same session cookie as the memory server; the mock needs the
# user in the query (behind percache, the user comes from the session).
COOKIE[nginx]=${COOKIE[memory]}
NGINX_PATH="/api/widgets/1?userId=$USERNAME"
warm nginx "$NGINX_PATH"
if ((PINNED)); then
    COOKIE[nginx-1cpu]=${COOKIE[memory-1cpu]}
    warm nginx-1cpu "$NGINX_PATH"
fi
log "caches warm; resetting the mock's stats"
curl -sf -X POST "$MOCK_URL/stats/reset" >/dev/null

# run LABEL SERVER PATH DESCRIPTION [OHA FLAGS...]: one oha run (round
# $ROUND); one row of $WORK/rows.tsv.
: >"$WORK/rows.tsv"
OHA_LAUNCH=()
run() {
    local label=$1 name=$2 path=$3 what=$4 headers=() cmds0 log0 out
    shift 4
    out="$WORK/$label.$ROUND"
    [[ "$path" != /healthz ]] && headers=(-H "Cookie: ${COOKIE[$name]}")
    log "round $ROUND/$ROUNDS ($label) $name ${URL[$name]}$path for $DURATION with $CONNECTIONS connections"
    cmds0=$(redis_cmds)
    log0=$(stat -c %s "$WORK/$name.log" 2>/dev/null || echo 0)
    "${OHA_LAUNCH[@]}" oha -z "$DURATION" -c "$CONNECTIONS" --no-tui "${OHA_JSON[@]}" "${OHA_WAIT[@]}" \
        "$@" "${headers[@]}" "${URL[$name]}$path" >"$out.json" 2>"$out.oha.err" ||
        die "oha failed for ($label): $(cat "$out.oha.err")"
    # The INFO call that takes the second reading counts itself: minus one.
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$ROUND" "$name" "$what" \
        $(($(redis_cmds) - cmds0 - 1)) $(($(stat -c %s "$WORK/$name.log" 2>/dev/null || echo 0) - log0)) \
        >>"$WORK/rows.tsv"
}

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    run a memory /healthz "GET /healthz (baseline)"
    run b memory /widgets/1 "GET /widgets/1"
    run c redis /widgets/1 "GET /widgets/1"
    run d redis /api/widgets/1 "GET /api/widgets/1"
    if [[ -n "${URL[redis-nol1]:-}" ]]; then
        run e redis-nol1 /widgets/1 "GET /widgets/1 (L1 off)"
    fi
    run f memory /dashboard "GET /dashboard (5 inline)"
    run g memory /api/widgets/1 "GET /api/widgets/1"
    run n nginx "$NGINX_PATH" "GET /api/widgets/1 (peer)"
done
# The equal offered load: EQUAL_LOAD of the slower of (g) and (n), each
# over all its rounds.
RATE=$(WORK="$WORK" EQUAL_LOAD="$EQUAL_LOAD" python3 -c '
import glob, json, os
def rps(label):
    runs = [json.load(open(p)) for p in glob.glob(os.path.join(os.environ["WORK"], label + ".*.json"))]
    return sum(j["summary"]["requestsPerSec"] * j["summary"]["total"] for j in runs) / sum(j["summary"]["total"] for j in runs)
print(max(1, int(float(os.environ["EQUAL_LOAD"]) * min(rps("g"), rps("n")))))')
echo "$RATE" >"$WORK/rate"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    run p memory /api/widgets/1 "GET /api/widgets/1 @ rate" -q "$RATE" --latency-correction
    run q nginx "$NGINX_PATH" "GET /api/widgets/1 @ rate" -q "$RATE" --latency-correction
done
# The pinned rows: saturated again, but oha alone on CPU 0 and each server
# one worker alone on CPU 1, so that no thread waits for a core another
# holds and a p99 is queueing in the server.
if ((PINNED)); then
    OHA_LAUNCH=(taskset -c 0)
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        run r memory-1cpu /healthz "GET /healthz (pinned)"
        run s memory-1cpu /api/widgets/1 "GET /api/widgets/1 (pinned)"
        run t nginx-1cpu "$NGINX_PATH" "GET /api/widgets/1 (pinned)"
    done
    OHA_LAUNCH=()
fi

curl -sf "$MOCK_URL/stats" >"$WORK/mock-stats.json"
: >"$WORK/servers.tsv"
for name in "${SERVERS[@]}" nginx $( ((PINNED)) && echo nginx-1cpu); do
    printf '%s\t%s\n' "$name" \
        "$(awk '/^VmHWM/ { print $2 }' "/proc/${PID[$name]}/status" 2>/dev/null || echo 0)" \
        >>"$WORK/servers.tsv"
done

WORK="$WORK" DURATION="$DURATION" ROUNDS="$ROUNDS" CONNECTIONS="$CONNECTIONS" \
    OHA_VERSION="$(oha --version 2>/dev/null | head -1)" \
    RUST_LOG_SHOWN="${RUST_LOG:-unset (info)}" python3 - <<'PY'
import json
import os

work = os.environ["WORK"]


def load(label, round_):
    with open(os.path.join(work, f"{label}.{round_}.json")) as f:
        j = json.load(f)
    codes = {int(k): int(v) for k, v in (j.get("statusCodeDistribution") or {}).items()}
    pct = j.get("latencyPercentiles") or {}
    return {
        "seconds": float(j["summary"]["total"]),
        "rps": float(j["summary"]["requestsPerSec"]),
        "p50": float(pct.get("p50") or 0.0) * 1000.0,
        "p99": float(pct.get("p99") or 0.0) * 1000.0,
        "ok": sum(n for c, n in codes.items() if 200 <= c < 300),
        "non2xx": sum(n for c, n in codes.items() if not 200 <= c < 300),
        "errors": j.get("errorDistribution") or {},
    }


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


# One row per scenario, over its rounds: requests/s is all its requests over
# all its time; p50 and p99 are the medians of the rounds' (percentiles of
# separate runs do not add up); counts are sums.
rows, by_label = [], {}
with open(os.path.join(work, "rows.tsv")) as f:
    for line in f:
        label, round_, server, what, cmds, log_bytes = line.rstrip("\n").split("\t")
        r = load(label, round_)
        r.update(cmds=int(cmds), log=int(log_bytes))
        if label not in by_label:
            by_label[label] = dict(label=label, server=server, what=what, runs=[])
            rows.append(by_label[label])
        by_label[label]["runs"].append(r)
for row in rows:
    runs = row["runs"]
    errors = {}
    for r in runs:
        for kind, count in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    row.update(
        rps=sum(r["rps"] * r["seconds"] for r in runs) / (sum(r["seconds"] for r in runs) or 1.0),
        p50=median([r["p50"] for r in runs]),
        p99=median([r["p99"] for r in runs]),
        ok=sum(r["ok"] for r in runs),
        non2xx=sum(r["non2xx"] for r in runs),
        errors=errors,
        cmds=sum(r["cmds"] for r in runs),
        log=sum(r["log"] for r in runs),
        per_round=[r["rps"] for r in runs],
    )
    row["n"] = row["ok"] + row["non2xx"]
base = rows[0]["rps"] or 1.0

print()
print(
    f"percache load test: {os.environ['ROUNDS']} rounds of oha -z {os.environ['DURATION']} "
    f"-c {os.environ['CONNECTIONS']} per scenario, "
    f"127.0.0.1, warm cache, RUST_LOG={os.environ['RUST_LOG_SHOWN']} "
    f"({os.environ['OHA_VERSION']}, {os.cpu_count()} CPUs)"
)
head = (
    f"{'':4}{'server':12}{'request':26}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'vs (a)':>8}"
    f"{'2xx':>9}{'non-2xx':>8}{'errors':>7}{'redis/req':>10}{'log B/req':>10}"
)
print(head)
print("-" * len(head))
for r in rows:
    n = max(r["n"], 1)
    print(
        f"({r['label']}) {r['server']:12}{r['what']:26}{r['rps']:>9.0f}{r['p50']:>8.2f}"
        f"{r['p99']:>8.2f}{r['rps'] / base:>8.2f}{r['ok']:>9}{r['non2xx']:>8}"
        f"{sum(r['errors'].values()):>7}{r['cmds'] / n:>10.2f}{r['log'] / n:>10.0f}"
    )
print("-" * len(head))
for r in rows:
    for kind, count in r["errors"].items():
        print(f"({r['label']}) client-side error: {kind}: {count}")

with open(os.path.join(work, "mock-stats.json")) as f:
    mock = json.load(f)
total = mock.get("total")
by_key = mock.get("byKey") or {}
print(
    f"mock upstream calls during the runs: {total}"
    + (f" {json.dumps(by_key)}" if by_key else "")
    + ("  (expected 0 with a warm cache)" if total else "  (none, as a warm cache should)")
)
with open(os.path.join(work, "servers.tsv")) as f:
    rss = [line.rstrip("\n").split("\t") for line in f]
print("peak RSS (VmHWM, nginx: its master): " + ", ".join(f"{name} {int(kb) / 1024:.1f} MiB" for name, kb in rss))

by = {r["label"]: r for r in rows}


def ratio(a, b):
    if a in by and b in by and by[b]["rps"]:
        return by[a]["rps"] / by[b]["rps"]
    return float("nan")


print()
print("issue 12 ratios (this run):")
print(f"  warm hit /widgets/1, memory / healthz:   {ratio('b', 'a'):.2f}  (target >= 0.9)")
print(f"  warm hit /widgets/1, Redis+L1 / healthz: {ratio('c', 'a'):.2f}")
print(f"  warm dashboard / healthz:                {ratio('f', 'a'):.2f}  (target >= 0.75)")
if "n" in by:
    for label, name in (("g", "memory"), ("d", "Redis+L1")):
        if label in by:
            print(
                f"  percache ({name}) / nginx, warm JSON hit: {ratio(label, 'n'):.2f} req/s  "
                f"(target >= 1.0); p99 {by[label]['p99']:.2f} ms vs nginx {by['n']['p99']:.2f} ms "
                "(each at saturation)"
            )
if "s" in by and "t" in by:
    print(
        f"  pinned (one worker each on CPU 1, oha on CPU 0), warm JSON hit: percache / nginx "
        f"{ratio('s', 't'):.2f} req/s; p99 {by['s']['p99']:.2f} ms vs nginx {by['t']['p99']:.2f} ms "
        f"(p50 {by['s']['p50']:.2f} vs {by['t']['p50']:.2f}); hit / healthz {ratio('s', 'r'):.2f}"
    )
if "p" in by and "q" in by:
    rate = open(os.path.join(work, "rate")).read().strip()
    print(
        f"  p99 at one offered load, {rate} req/s (oha -q, --latency-correction): "
        f"percache (memory) {by['p']['p99']:.2f} ms vs nginx {by['q']['p99']:.2f} ms "
        f"(p50 {by['p']['p50']:.2f} vs {by['q']['p50']:.2f})"
    )


def per_round(a, b):
    if a in by and b in by:
        return ", ".join(f"{x / y:.2f}" for x, y in zip(by[a]["per_round"], by[b]["per_round"]) if y)
    return "-"


print(
    f"  each round: hit / healthz {per_round('b', 'a')}; dashboard / healthz {per_round('f', 'a')}; "
    f"percache (memory) / nginx {per_round('g', 'n')}"
)
void = [r["label"] for r in rows if r["non2xx"] or r["errors"] or not r["ok"]]
if void:
    print(f"VOID: non-2xx responses or client errors in ({', '.join(void)}): no figure of this run counts")
if total:
    print("VOID: the upstream was called during the load: not a warm-cache run")
open(os.path.join(work, "verdict"), "w").write("void" if void or total else "ok")
PY
[[ "$(cat "$WORK/verdict")" == ok ]] || die "the run is void (see above)"

# The burst row (issue 26): the morning's sign-ins, prewarm, memory after.
if [[ ${BURST:-0} == 1 ]]; then
    log "the burst row: benches/burst.sh"
    bash "$ROOT/benches/burst.sh"
fi
