#!/usr/bin/env bash
# Builds the image from the repository's Dockerfile with buildah (no daemon)
# and runs it against a real redis-server and the mock upstream, all on
# 127.0.0.1, then checks what the image promises: /healthz and /readyz, a
# sign-in, a widget served warm from Redis, the non-root user, the image's
# size, no shell or package manager in it, and its HEALTHCHECK command.
# Each check prints PASS or FAIL; the exit status is 1 if any failed.
#
# Usage: bash scripts/container-check.sh         (as root, on Debian)
#
# Where the base images cannot be pulled (no registry reachable), it makes
# local stand-ins for them with mmdebstrap from Debian's mirror and says so.
# It takes several minutes (a release build); CI does not run it.
#
# Settings (environment):
#   IMAGE              tag of the built image       (localhost/percache:check)
#   DOCKERFILE         the file built                (Dockerfile)
#   MAX_IMAGE_MB       largest accepted image, MB    (150; MB = 10^6 bytes, as buildah prints)
#   BUILDAH_ISOLATION  chroot, or oci where a container engine runs (auto)
#   DEBIAN_MIRROR      for the stand-ins             (http://deb.debian.org/debian)
set -euo pipefail

# Relative paths (Dockerfile, scripts/) are from the repository's root.
cd "$(dirname "$0")/.."
started=$SECONDS

IMAGE=${IMAGE:-localhost/percache:check}
DOCKERFILE=${DOCKERFILE:-Dockerfile}
MAX_IMAGE_MB=${MAX_IMAGE_MB:-150}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
# Marks the images this script made, so a later run can tell them apart.
STANDIN_LABEL=percache.container-check.stand-in

# Messages go to stderr, with the seconds since the start.
say() { echo "container-check [+$((SECONDS - started))s]: $*" >&2; }
die() {
  say "error: $*"
  exit 2
}

# ---------------------------------------------------------------- tools

# buildah builds and runs the image without a daemon; mmdebstrap makes the
# stand-in base images; redis-server is the real store the server is run
# against (redis-cli, from redis-tools, looks into it); curl drives the
# server, ss finds its process. Missing ones are installed from Debian.
[ "$(id -u)" = 0 ] || die "run as root: buildah's chroot builds and mmdebstrap need it here"
need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  bash scripts/apt-install.sh "${need[@]}"
fi

# Without a running container engine (no Docker or Podman daemon, no user
# namespaces to spare), buildah's chroot isolation is what works: RUN steps
# and the test processes run chrooted into the image's file system, sharing
# the host's network (so the servers below must listen on 127.0.0.1 only).
if [ -z "${BUILDAH_ISOLATION:-}" ]; then
  if { command -v docker >/dev/null && timeout 10 docker info; } >/dev/null 2>&1 ||
    { command -v podman >/dev/null && timeout 10 podman info; } >/dev/null 2>&1; then
    BUILDAH_ISOLATION=oci
  else
    BUILDAH_ISOLATION=chroot
  fi
fi
export BUILDAH_ISOLATION
say "buildah $(buildah --version | awk '{print $3}'), isolation $BUILDAH_ISOLATION"

# ---------------------------------------------------------------- clean-up

# Everything started or created below is recorded here and undone on any
# exit (success, failure, Ctrl-C), so nothing is left running or mounted.
work=$(mktemp -d /tmp/percache-container-check.XXXXXX)
pids=()
containers=()
cleanup() {
  local status=$?
  set +e
  # Every process this script started, by its own pid: redis-server, the
  # buildah run processes (which pass the signal on) and the servers they
  # run (found by their listening ports, in case one does not).
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  for c in "${containers[@]}"; do
    buildah umount "$c" >/dev/null 2>&1
    buildah rm "$c" >/dev/null 2>&1
  done
  rm -rf "$work"
  say "done in $((SECONDS - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- base images

# The Dockerfile's bases: every FROM that is not an earlier stage or
# scratch, with the ARG defaults declared before the first FROM filled in
# (`FROM rust:${RUST_VERSION}-bookworm` with `ARG RUST_VERSION=1`).
declare -A arg_default=()
stage_names=()
bases=()
seen_from=
while read -ra words; do
  case "${words[0]^^}" in
  ARG)
    if [ -z "$seen_from" ] && [[ ${words[1]} == *=* ]]; then
      arg_default[${words[1]%%=*}]=${words[1]#*=}
    fi
    ;;
  FROM)
    seen_from=1
    image=
    for w in "${words[@]:1}"; do
      [[ $w == --* ]] || { image=$w && break; }
    done
    for name in "${!arg_default[@]}"; do
      image=${image//"\${$name}"/${arg_default[$name]}}
      image=${image//"\$$name"/${arg_default[$name]}}
    done
    # `FROM x AS name`: the last word names the stage.
    if [ "${#words[@]}" -ge 4 ] && [ "${words[-2]^^}" = AS ]; then
      stage_names+=("${words[-1]}")
    fi
    if [ "$image" != scratch ] && ! printf '%s\n' "${stage_names[@]}" | grep -qxF -- "$image"; then
      bases+=("$image")
    fi
    ;;
  esac
done < <(grep -iE '^[[:space:]]*(ARG|FROM)[[:space:]]' "$DOCKERFILE")
[ ${#bases[@]} -gt 0 ] || die "no base image found in $DOCKERFILE"

# A short name (`rust:1-bookworm`) as buildah resolves it with no search
# registries configured: Docker Hub's library. Tagging a local image with
# this full name makes the Dockerfile's FROM find it without any pull.
qualify() {
  local first=${1%%/*}
  if [[ $1 != */* ]]; then
    echo "docker.io/library/$1"
  elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then
    echo "$1"
  else
    echo "docker.io/$1"
  fi
}

# The three Debian sources the official images use, for mmdebstrap.
debian_sources() {
  local suite=$1
  printf '%s\n' "deb $DEBIAN_MIRROR $suite main" \
    "deb $DEBIAN_MIRROR $suite-updates main" \
    "deb $DEBIAN_SECURITY $suite-security main"
}

# A tarball of a minimal Debian (`--variant=minbase`, as the official
# images), with merged /usr (usr-is-merged, not the usrmerge converter that
# drags in perl) and the extra packages asked for.
debootstrap_tar() {
  local suite=$1 out=$2
  shift 2
  local sources=()
  mapfile -t sources < <(debian_sources "$suite")
  # Its chatter goes to a log, shown only if it fails.
  if ! mmdebstrap --variant=minbase --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "$@" \
    "$suite" "$out" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1; then
    tail -n 40 "$work/mmdebstrap.log" >&2
    die "mmdebstrap could not make a Debian $suite file system"
  fi
}

# A working container ($ctr) holding the tarball's files and the host's CA
# bundle: the way out to crates.io may be through a TLS-inspecting proxy
# whose CA only the host's bundle has. (Sets a global, not echoed: a
# $(...) subshell would lose the clean-up's record of the container.)
import_tar() {
  local tar=$1
  ctr=$(buildah from scratch)
  containers+=("$ctr")
  buildah add --quiet "$ctr" "$tar" / >/dev/null
  buildah run "$ctr" -- mkdir -p /etc/ssl/certs
  buildah copy --quiet "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
}

# debian:SUITE-slim (or debian:SUITE): minbase without documentation,
# manuals and translations, as the official slim images are made.
make_debian_standin() {
  local name=$1 suite=$2 c
  debootstrap_tar "$suite" "$work/debian.tar" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*'
  import_tar "$work/debian.tar"
  c=$ctr
  buildah config --label "$STANDIN_LABEL=debian minbase $suite" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["bash"]' "$c"
  buildah commit --quiet --rm "$c" "$name" >/dev/null
  rm -f "$work/debian.tar"
}

# rust:VERSION-SUITE: Debian with a C toolchain (build scripts compile C:
# ring, zstd, SQLite), pkg-config and git, plus the host's own Rust
# toolchain laid out as the official image lays it out: rustup and its
# proxies in /usr/local/cargo/bin, toolchains in /usr/local/rustup.
make_rust_standin() {
  local name=$1 want=$2 suite=$3 c root sysroot version host toolchain rustup_bin
  command -v rustc >/dev/null || die "no rustc on this host to put in a stand-in for $name"
  version=$(rustc --version | awk '{print $2}')
  host=$(rustc -vV | sed -n 's/^host: //p')
  sysroot=$(rustc --print sysroot)
  # rust:1-bookworm is "the newest 1.x"; the host's 1.95.0 stands in for it,
  # but not for a pinned version it is not (RUST_VERSION=1.80 wants 1.80.x).
  case "$version" in
  "$want" | "$want".*) ;;
  *) die "$name wants Rust $want, the host has $version: install it (rustup) or pass another RUST_VERSION" ;;
  esac
  toolchain=$version-$host
  debootstrap_tar "$suite" "$work/rust.tar" \
    --include=build-essential,pkg-config,ca-certificates,git \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*'
  import_tar "$work/rust.tar"
  c=$ctr
  rm -f "$work/rust.tar"
  root=$(buildah mount "$c")
  mkdir -p "$root/usr/local/rustup/toolchains/$toolchain" "$root/usr/local/cargo/bin"
  # The toolchain without its HTML documentation (most of its size).
  tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$root/usr/local/rustup/toolchains/$toolchain" -xf -
  rustup_bin=$(command -v rustup || true)
  if [ -n "$rustup_bin" ]; then
    install -m 0755 "$(readlink -f "$rustup_bin")" "$root/usr/local/cargo/bin/rustup"
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" \
      >"$root/usr/local/rustup/settings.toml"
    for tool in "$root/usr/local/rustup/toolchains/$toolchain"/bin/*; do
      ln -sf rustup "$root/usr/local/cargo/bin/$(basename "$tool")"
    done
  else
    # No rustup on the host: the toolchain's own programs, directly.
    for tool in "$root/usr/local/rustup/toolchains/$toolchain"/bin/*; do
      ln -sf "/usr/local/rustup/toolchains/$toolchain/bin/$(basename "$tool")" \
        "$root/usr/local/cargo/bin/$(basename "$tool")"
    done
  fi
  buildah umount "$c" >/dev/null
  buildah config --label "$STANDIN_LABEL=debian $suite + host Rust $toolchain" \
    --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$version" --cmd '["bash"]' "$c"
  # The stand-in must compile before the build relies on it.
  buildah run "$c" -- cargo --version >&2
  buildah commit --quiet --rm "$c" "$name" >/dev/null
}

# For each base: use it if it is already here (pulled or made earlier), else
# try a quick pull, else make a stand-in, saying so.
for base in "${bases[@]}"; do
  full=$(qualify "$base")
  if buildah inspect --type image "$full" >/dev/null 2>&1; then
    made=$(buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$STANDIN_LABEL\"}}" "$full")
    say "base $full: present${made:+ (a stand-in made earlier: $made)}"
    continue
  fi
  if timeout 60 buildah pull --quiet "$full" >/dev/null 2>"$work/pull.err"; then
    say "base $full: pulled"
    continue
  fi
  say "base $full cannot be pulled ($(tail -n1 "$work/pull.err" | cut -c1-160))"
  repo=${base%%:*}
  tag=${base#*:}
  [ "$tag" != "$base" ] || tag=latest
  case "$repo:$tag" in
  rust:*-bookworm | rust:*-bullseye | rust:*-trixie)
    suite=${tag##*-}
    say "STAND-IN: making $full from Debian $suite (mmdebstrap) and this host's Rust toolchain"
    make_rust_standin "$full" "${tag%-"$suite"}" "$suite"
    ;;
  debian:bookworm-slim | debian:bullseye-slim | debian:trixie-slim | debian:bookworm | debian:bullseye | debian:trixie)
    suite=${tag%-slim}
    say "STAND-IN: making $full from Debian $suite minbase (mmdebstrap)"
    make_debian_standin "$full" "$suite"
    ;;
  *) die "no stand-in recipe for $base: make it reachable or add one here" ;;
  esac
  say "base $full: stand-in ready"
done

# ---------------------------------------------------------------- build

# Exactly the repository's Dockerfile and context. Docker format, not OCI:
# OCI image configs have no HEALTHCHECK, and it is checked below. No
# --layers: each step's image would be kept (a GB for the builder stage, a
# new one per change of the sources); the Dockerfile's RUN --mount=type=cache
# keeps cargo's registry and target between builds, so a second build
# compiles only what changed.
say "building $IMAGE from $DOCKERFILE (a release build: several minutes the first time)"
build_started=$SECONDS
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }
previous=$(image_id "$IMAGE")
buildah bud --isolation "$BUILDAH_ISOLATION" --format docker \
  -f "$DOCKERFILE" -t "$IMAGE" . >&2
say "built in $((SECONDS - build_started)) s"
# The image this tag named before is left untagged by the build: removed,
# unless something else still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(image_id "$IMAGE")" ]; then
  buildah rmi "$previous" >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------- run

# Ports: free ones on 127.0.0.1, drawn at random, never the same twice.
taken=()
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    printf '%s\n' "${taken[@]}" | grep -qx "$p" && continue
    [ -z "$(ss -Htln "sport = :$p")" ] || continue
    taken+=("$p")
    echo "$p"
    return
  done
  die "no free port found"
}
redis_port=$(free_port)
mock_port=$(free_port)
port=$(free_port)
base_url=http://127.0.0.1:$port

# Waits (bounded) until command "$@" succeeds.
wait_for() {
  local what=$1 tries=$2
  shift 2
  for _ in $(seq "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  say "gave up waiting for $what"
  return 1
}

# A real Redis on loopback only, nothing written to disk.
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --protected-mode yes >"$work/redis.log" 2>&1 &
pids+=($!)
redis() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }
redis_up() { [ "$(redis ping 2>/dev/null)" = PONG ]; }
wait_for "redis-server on $redis_port" 40 redis_up

# The image's own program and user, from its config (the ENTRYPOINT is
# what `docker run IMAGE` starts; buildah run starts only what it is told).
mapfile -t entrypoint < <(buildah inspect --type image --format '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
image_user=$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")
[ ${#entrypoint[@]} -gt 0 ] || die "$IMAGE has no ENTRYPOINT"

# One working container per process: the mock upstream (from the image, as
# compose runs it) and the server. Host network, loopback addresses only.
new_container() {
  ctr=$(buildah from --quiet --name "percache-check-$1-$$" "$IMAGE")
  containers+=("$ctr")
  # Mounted, to look at its files below (unmounted by the clean-up).
  buildah mount "$ctr" >/dev/null
}
new_container mock
mock_ctr=$ctr
new_container server
server_ctr=$ctr
# run_cmd CONTAINER [buildah run options] -- COMMAND... puts into the array
# $run the command line that runs COMMAND in the container (buildah wants its
# options before the container's name). The caller runs "${run[@]}" itself:
# started with & that way, $! is buildah's own pid, which the clean-up can
# signal (buildah passes it on); a function started with & would give the pid
# of a subshell, and killing that leaves buildah and the server running.
run_cmd() {
  local c=$1 opts=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    opts+=("$1")
    shift
  done
  shift
  run=(buildah run --isolation "$BUILDAH_ISOLATION" --network host "${opts[@]}" "$c" -- "$@")
}

# The mock answers each widget in 50 ms (its defaults reach 15 s).
run_cmd "$mock_ctr" --env MOCK_BIND="127.0.0.1:$mock_port" --env MOCK_DELAYS_MS=50,50,50,50,50 \
  -- mock-upstream
"${run[@]}" >"$work/mock.log" 2>&1 &
pids+=($!)
if ! wait_for "the mock upstream on $mock_port" 120 curl -fsS "http://127.0.0.1:$mock_port/healthz"; then
  tail -n 30 "$work/mock.log" >&2
  exit 1
fi
# The pid of the process listening on a port (ss shows it to root).
listener_pid() { ss -Htlnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2; }
pids+=("$(listener_pid "$mock_port")")

# The server: Redis, the mock, a fixed session key, loopback. L1_TTL=0 turns
# the in-process near-cache off, so a hit below can only come from Redis.
session_key=$(od -An -tx1 -N64 /dev/urandom | tr -d ' \n')
run_cmd "$server_ctr" \
  --env PERCACHE_BIND="127.0.0.1:$port" \
  --env REDIS_URL="redis://127.0.0.1:$redis_port/0" \
  --env UPSTREAM_URL="http://127.0.0.1:$mock_port" \
  --env SESSION_KEY="$session_key" \
  --env L1_TTL=0 \
  -- "${entrypoint[@]}"
"${run[@]}" >"$work/server.log" 2>&1 &
pids+=($!)
if ! wait_for "percache on $port" 120 curl -fsS "$base_url/healthz"; then
  tail -n 30 "$work/server.log" >&2
  exit 1
fi
pid=$(listener_pid "$port")
pids+=("$pid")

# ---------------------------------------------------------------- checks

passed=0
failed=0
check() {
  local name=$1 ok=$2 detail=$3
  if [ "$ok" = 1 ]; then
    echo "PASS $name: $detail"
    passed=$((passed + 1))
  else
    echo "FAIL $name: $detail"
    failed=$((failed + 1))
  fi
}
# An HTTP status from curl ("000" if no answer).
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@" || true; }

# 1. Liveness.
code=$(status_of "$base_url/healthz")
check healthz "$([ "$code" = 200 ] && echo 1)" "GET /healthz -> $code"

# 2. Readiness with the store reached: Redis, and it answers.
code=$(curl -s -o "$work/readyz" -w '%{http_code}' "$base_url/readyz" || true)
body=$(tr -d ' \n' <"$work/readyz")
ok=
[ "$code" = 200 ] && [[ $body == *'"status":"ok"'* && $body == *'"kind":"redis"'* ]] && ok=1
check readyz "$ok" "GET /readyz -> $code $body"

# 3. Sign-in: a 303 to the dashboard, with a session cookie.
code=$(curl -s -o /dev/null -D "$work/login.headers" -c "$work/jar" -w '%{http_code}' \
  -d username=alice "$base_url/login" || true)
cookie=$(grep -i '^set-cookie:' "$work/login.headers" | head -n1 | cut -d= -f1 | cut -d' ' -f2)
ok=
[ "$code" = 303 ] && [ -n "$cookie" ] && ok=1
check sign-in "$ok" "POST /login username=alice -> $code, cookie ${cookie:-none}"

# 4. A widget warm from Redis. The sign-in started a prewarm of alice's
# widgets; the first GET answers (from the prewarmed entry or by joining its
# fetch), the entry is then in Redis under alice's key (SHA-256 of the user
# id, first 128 bits), and a second GET is a hit, which with the
# near-cache off is served from Redis.
code=$(curl -s -o /dev/null -b "$work/jar" -w '%{http_code}' "$base_url/api/widgets/1" || true)
tag=$(printf %s alice | sha256sum | cut -c1-32)
key="percache:v1:{u:$tag}:w:1"
# The write to Redis may land just after the answer: wait for it (bounded).
key_in_redis() { [ "$(redis --scan --pattern "$key")" = "$key" ]; }
found=
wait_for "$key in Redis" 40 key_in_redis && found="$key (expires in $(redis ttl "$key") s)"
curl -s -o /dev/null -D "$work/widget.headers" -b "$work/jar" "$base_url/api/widgets/1" || true
cache_status=$(grep -i '^cache-status:' "$work/widget.headers" | cut -d: -f2- | tr -d '\r' | sed 's/^ //')
ok=
[ "$code" = 200 ] && [ -n "$found" ] && [[ $cache_status == *hit* ]] && ok=1
check widget-from-redis "$ok" "GET /api/widgets/1 -> $code; redis --scan: ${found:-no key}; again: Cache-Status: ${cache_status:-none}"

# 5. The server's process runs as the image's user (10001), not root: its
# real, effective, saved and file-system uids and gids as the kernel sees
# them, read on the host (the image has no shell to ask `id`); and it is
# the image's binary, chrooted (its root is not the host's /).
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status" 2>/dev/null || true)
gids=$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/$pid/status" 2>/dev/null || true)
exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
proc_root=$(readlink "/proc/$pid/root" 2>/dev/null || true)
ok=
[ "$uids" = "10001 10001 10001 10001" ] && [ "$gids" = "10001 10001 10001 10001" ] &&
  [ "$image_user" = 10001:10001 ] && [ -n "$proc_root" ] && [ "$proc_root" != / ] &&
  [[ $exe == "$proc_root"/* ]] && ok=1
check non-root "$ok" "USER $image_user; pid ${pid:-?} ${exe#"$proc_root"} (root ${proc_root:-?}): uid $uids, gid $gids"

# 6. The image's size: its layers, uncompressed, as buildah counts them.
manifest=$(buildah inspect --type image --format '{{.Manifest}}' "$IMAGE")
bytes=$(grep -o '"size":[0-9]*' <<<"${manifest#*\"layers\"}" | awk -F: '{s += $2} END {print s}')
mb=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1e6}')
ok=
[ "$bytes" -le $((MAX_IMAGE_MB * 1000000)) ] && ok=1
check image-size "$ok" "$IMAGE is $mb MB ($bytes bytes; bound $MAX_IMAGE_MB MB; buildah images: $(buildah images --format '{{.Size}}' "$IMAGE"))"

# 7. No shell and no package manager in the image (the runtime stage is
# FROM scratch), but the CA bundle for https upstreams is there.
root=$(buildah inspect --type container --format '{{.MountPoint}}' "$server_ctr")
present=()
for f in bin/sh bin/bash bin/dash usr/bin/sh usr/bin/bash usr/bin/apt-get usr/bin/dpkg usr/bin/busybox; do
  [ -e "$root/$f" ] || [ -L "$root/$f" ] && present+=("/$f")
done
ok=
[ ${#present[@]} = 0 ] && [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] && ok=1
check no-shell "$ok" "found: ${present[*]:-no shell, no apt-get/dpkg}; CA bundle: $(wc -c <"$root/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || echo missing) bytes"

# 8. The HEALTHCHECK, run as the image's config says, inside the container,
# with the port of its URL moved to where this server listens (8080 in the
# image): exit 0 while it serves. And, so that a check that always exits 0
# cannot pass, non-zero against a port where nothing listens.
mapfile -t health < <(buildah inspect --type image --format '{{if .Docker.Config.Healthcheck}}{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}{{end}}' "$IMAGE" | sed '/^$/d')
# with_port PORT WORD...: the words, with any http://HOST:N/... URL's port set to PORT.
with_port() {
  local to=$1 w
  shift
  moved=()
  for w in "$@"; do
    if [[ $w =~ ^(http://[^/]+:)[0-9]+(/.*)?$ ]]; then
      w=${BASH_REMATCH[1]}$to${BASH_REMATCH[2]}
    fi
    moved+=("$w")
  done
}
if [ "${health[0]:-}" = CMD ] && [ ${#health[@]} -gt 1 ]; then
  with_port "$port" "${health[@]:1}"
  live=("${moved[@]}")
  with_port "$(free_port)" "${health[@]:1}"
  dead=("${moved[@]}")
  live_status=0
  run_cmd "$server_ctr" -- "${live[@]}"
  "${run[@]}" >"$work/health.out" 2>&1 || live_status=$?
  dead_status=0
  run_cmd "$server_ctr" -- "${dead[@]}"
  "${run[@]}" >>"$work/health.out" 2>&1 || dead_status=$?
  ok=
  [ "$live_status" = 0 ] && [ "$dead_status" != 0 ] && ok=1
  check healthcheck "$ok" "${live[*]} -> exit $live_status; with nothing listening -> exit $dead_status"
else
  check healthcheck "" "HEALTHCHECK is ${health[*]:-missing} (an exec-form CMD is expected: there is no shell)"
fi

if [ "$failed" -gt 0 ]; then
  say "the server's log (last lines):"
  tail -n 30 "$work/server.log" >&2
fi
# The last line says what was measured: the checks, the image's size, the time.
echo "container-check: $passed passed, $failed failed; image $IMAGE ${mb:-?} MB; $((SECONDS - started)) s"
[ "$failed" = 0 ]
