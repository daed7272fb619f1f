#!/usr/bin/env bash
# The morning burst (issue 26): SIGNINS sign-ins at full speed, with the
# default flags except LOGIN_RATE=0 (the burst comes from one address), the
# mock at 5/300/300/300/5 ms, the in-process store. For each allocator
# (ALLOCATORS: system = glibc, mimalloc, jemalloc; cargo features of the
# binary) it reports:
#   - prewarmed entries out of SIGNINS x 5, and prewarms skipped;
#   - seconds from the first sign-in until the prewarm queue and the fetches
#     in flight are both empty (the drain);
#   - RSS before the burst, at its peak (VmHWM), and 15 s after the drain;
#   - RSS per entry: (RSS after - RSS before) / entries;
#   - the warm hit (GET /api/widgets/1, one user, wrk for WARM seconds with
#     64 connections): requests/s, and non-2xx answers (a run with any is void).
# Everything runs on 127.0.0.1 and is stopped on exit. benches/load.sh runs
# it as its burst row with BURST=1.
#
# Environment: ALLOCATORS, SIGNINS (default 3000), DELAYS_MS (default
# 5,300,300,300,5), SETTLE (seconds after the drain, default 15), WARM
# (seconds of the warm-hit run, default 5), CONCURRENCY (sign-ins in flight,
# default 64), REUSE=1 (run the binaries of target/burst/ without building).
set -euo pipefail

ALLOCATORS=${ALLOCATORS:-"system mimalloc jemalloc"}
SIGNINS=${SIGNINS:-3000}
DELAYS_MS=${DELAYS_MS:-5,300,300,300,5}
SETTLE=${SETTLE:-15}
WARM=${WARM:-5}
CONCURRENCY=${CONCURRENCY:-64}

cd "$(dirname "$0")/.."
log() { echo "burst: $*" >&2; }
die() { log "$*"; exit 1; }
for tool in curl python3 wrk; do
    command -v "$tool" >/dev/null || die "$tool is required (Debian: apt-get install $tool)"
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# The whole page is read (awk leaving early would fail curl under pipefail).
metric() { curl -fsS "$1/metrics" | awk -v name="$2" '$1 == name {v = $2} END {print v}'; }
wait_up() {
    for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1/healthz" 2>/dev/null && return 0; sleep 0.05; done
    die "$1 never answered /healthz"
}

# The binaries are kept in target/burst/ (REUSE=1 runs them again unbuilt);
# cargo's CARGO_TARGET_DIR, if set, stands for target/.
target=${CARGO_TARGET_DIR:-target}
bins=$target/burst
mkdir -p "$bins"
if [[ ${REUSE:-0} != 1 || ! -x $bins/mock-upstream ]]; then
    log "building the mock (release)"
    cargo build --release -q -p mock_upstream
    cp "$target/release/mock-upstream" "$bins/mock-upstream"
fi
cp "$bins/mock-upstream" "$work/mock-upstream"
for alloc in $ALLOCATORS; do
    if [[ ${REUSE:-0} != 1 || ! -x $bins/percache-$alloc ]]; then
        features=(--no-default-features)
        [[ $alloc != system ]] && features+=(--features "$alloc")
        log "building percache with the $alloc allocator (release)"
        cargo build --release -q -p percache "${features[@]}"
        cp "$target/release/percache" "$bins/percache-$alloc"
    fi
    cp "$bins/percache-$alloc" "$work/percache-$alloc"
done

mock_port=$(free_port)
MOCK_BIND=127.0.0.1:$mock_port MOCK_DELAYS_MS=$DELAYS_MS "$work/mock-upstream" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$mock_port"

# SIGNINS sign-ins, CONCURRENCY at a time; prints how many got their 303.
sign_ins() {
    python3 - "$1" "$SIGNINS" "$CONCURRENCY" "$2" <<'PY'
import http.client, sys, threading
port, n, conc, prefix = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ok, lock, next_i = [0], threading.Lock(), [0]
def worker():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while True:
        with lock:
            i = next_i[0]; next_i[0] += 1
        if i >= n:
            return
        body = f"username={prefix}-{i}"
        conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse(); resp.read()
        if resp.status == 303:
            with lock:
                ok[0] += 1
threads = [threading.Thread(target=worker) for _ in range(conc)]
for t in threads: t.start()
for t in threads: t.join()
print(ok[0])
PY
}

rows=()
for alloc in $ALLOCATORS; do
    port=$(free_port)
    base="http://127.0.0.1:$port"
    PERCACHE_BIND=127.0.0.1:$port UPSTREAM_URL=http://127.0.0.1:$mock_port LOGIN_RATE=0 RUST_LOG=warn \
        "$work/percache-$alloc" >"$work/percache-$alloc.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_up "$base"
    before=$(rss_kb "$pid")
    log "$alloc: $SIGNINS sign-ins"
    t0=$(date +%s.%N)
    signed=$(sign_ins "$port" "burst-$alloc")
    t_signed=$(date +%s.%N)
    # The drain: nothing queued, nothing in flight (two readings in a row).
    quiet=0
    for _ in $(seq 1 3000); do
        q=$(metric "$base" percache_prewarm_queue)
        f=$(metric "$base" percache_fetches_in_flight)
        if [[ ${q%.*} == 0 && ${f%.*} == 0 ]]; then
            quiet=$((quiet + 1)); [[ $quiet -ge 2 ]] && break
        else
            quiet=0
        fi
        sleep 0.1
    done
    t_drained=$(date +%s.%N)
    entries=$(metric "$base" percache_cache_entries)
    skipped=$(curl -fsS "$base/metrics" | awk '$1 ~ /^percache_upstream_capped_total/ && /prewarm_skipped/ {print $2}')
    peak=$(hwm_kb "$pid")
    sleep "$SETTLE"
    after=$(rss_kb "$pid")
    # The warm hit, on one user's warm widget.
    cookie=$(curl -fsS -o /dev/null -c - -d username=warm "$base/login" | awk '/percache_session/ {print $6 "=" $7}')
    for _ in $(seq 1 100); do
        curl -fsS -H "Cookie: $cookie" -D - -o /dev/null "$base/api/widgets/1" | grep -qi '^cache-status: percache; hit' && break
        sleep 0.05
    done
    out=$(wrk -t1 -c64 -d"${WARM}s" -H "Cookie: $cookie" "$base/api/widgets/1" 2>&1)
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses/ {print $NF}' <<<"$out")
    [[ -n $non2xx ]] && log "$alloc: the warm-hit run had $non2xx non-2xx answers: void"
    kill "$pid"
    rows+=("$(python3 -c "
import sys
alloc, signed, n, entries, skipped, t0, ts, td, before, peak, after, rps = sys.argv[1:]
entries = float(entries or 0)
per = (float(after) - float(before)) * 1024 / entries if entries else float('nan')
print(f'{alloc:<9} {int(signed):>6}/{n:<6} {int(entries):>6}/{int(n) * 5:<6} {float(skipped or 0):>7.0f} '
      f'{float(ts) - float(t0):>8.1f} {float(td) - float(t0):>8.1f} '
      f'{int(before) / 1024:>7.1f} {int(peak) / 1024:>7.1f} {int(after) / 1024:>7.1f} {per:>8.0f} {float(rps or 0):>10.0f}')
" "$alloc" "$signed" "$SIGNINS" "$entries" "$skipped" "$t0" "$t_signed" "$t_drained" "$before" "$peak" "$after" "$rps")")
done

echo
echo "burst: $SIGNINS sign-ins, mock $DELAYS_MS ms, RSS after = $SETTLE s after the drain"
printf '%-9s %13s %13s %7s %8s %8s %7s %7s %7s %8s %10s\n' \
    allocator signed-in entries skipped signin-s drain-s rss-MB peak-MB after-MB B/entry warm-rps
for row in "${rows[@]}"; do echo "$row"; done
