#!/usr/bin/env bash
# The try-out. On a fresh Debian machine, as root:
#   install/try.sh
# installs what is missing, builds ds01-runtime, starts a private Docker engine (its own data
# root, exec root, socket and daemon.json) with the runtime registered as the default, and the
# front door in front of it on a socket of its own; runs plain docker commands as two demo users
# (alice and bob, created with useradd when missing and removed again), shows where each
# container landed, a claim for someone else and a cross-user `docker rm` refused; then, as root
# on the engine's own socket, the claims root is trusted with; and stops everything it started.
# The machine's own Docker and its settings are never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "try.sh: run as root (it starts a Docker engine)"; exit 1; }

need=()
for p in runc:runc dockerd:docker.io containerd:containerd jq:jq tar:tar; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "== building ds01-runtime"
install/build.sh   # the static musl shim and ds01ctl, in target/install, as install.sh installs them
SHIM=$PWD/target/install/ds01-runtime
DOOR=$PWD/target/install/ds01-front-door

T=$(mktemp -d /tmp/ds01try.XXXXXX)
chmod 755 "$T"
SOCK=$T/dockerd.sock      # dockerd's own: root only
USERS=$T/docker.sock      # the front door's: group docker
docker_() { docker -H "unix://$SOCK" "$@"; }
as_() { # user, docker args...: the docker CLI run by that user, on the front door's socket
  local u=$1; shift
  runuser -u "$u" -g docker -- env HOME="$T/home-$u" DOCKER_HOST="unix://$USERS" DOCKER_BUILDKIT=0 docker "$@"
}
CREATED_USERS=()
cleanup() {
  set +e
  echo "== stopping the private engine and removing $T"
  for c in $(docker_ ps -aq 2>/dev/null); do docker_ rm -f "$c" >/dev/null 2>&1 || true; done
  [ -n "${DOOR_PID:-}" ] && kill "$DOOR_PID" 2>/dev/null
  if [ -n "${DOCKERD_PID:-}" ]; then
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$DOCKERD_PID" 2>/dev/null || true
  fi
  { grep -o " $T[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done; } 2>/dev/null
  rm -rf "$T" 2>/dev/null || { sleep 1; rm -rf "$T"; }
  for u in "${CREATED_USERS[@]}"; do userdel "$u" 2>/dev/null; done
}
trap cleanup EXIT

echo "== policy: alice and bob are students, rita is a researcher, datasciencelab is an admin"
mkdir -p "$T/etc/groups"
cp runtime-config/resource-limits.yaml runtime-config/user-overrides.yaml "$T/etc/"
cp runtime-config/groups/*.members "$T/etc/groups/"
printf 'alice\nbob\n' >> "$T/etc/groups/student.members"
printf 'rita\n' >> "$T/etc/groups/researcher.members"
cat > "$T/etc/runtime.yaml" <<YAML
low_level_runtime: runc
policy: resource-limits.yaml
state_dir: $T/state
audit_log: $T/events.jsonl
docker_root: $T/data
identity:
  unattributed: refuse
front_door:
  verified_dir: $T/verified
YAML
jq -n --arg shim "$SHIM" '{runtimes: {ds01: {path: $shim}}, "default-runtime": "ds01"}' > "$T/daemon.json"
echo "   daemon.json:"; sed 's/^/     /' "$T/daemon.json"
echo "   (settings from DS01_RUNTIME_CONFIG=$T/etc/runtime.yaml in dockerd's environment)"

echo "== starting a private dockerd (socket $SOCK)"
DS01_RUNTIME_CONFIG="$T/etc/runtime.yaml" dockerd --data-root "$T/data" --exec-root "$T/exec" -H "unix://$SOCK" --pidfile "$T/docker.pid" \
  --config-file "$T/daemon.json" --bridge=none --iptables=false --ip6tables=false >"$T/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 100); do docker_ info >/dev/null 2>&1 && break; sleep 0.3; done
docker_ info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 "$T/dockerd.log"; exit 1; }
chmod 600 "$SOCK"

echo "== starting the front door: users reach it on $USERS (group docker); only root reaches $SOCK"
getent group docker >/dev/null || groupadd docker
for u in alice bob; do
  id "$u" >/dev/null 2>&1 || { useradd -M -s /usr/sbin/nologin "$u"; CREATED_USERS+=("$u"); }
  mkdir -p "$T/home-$u" && chown "$u:docker" "$T/home-$u"
done
DS01_RUNTIME_CONFIG="$T/etc/runtime.yaml" "$DOOR" --listen "$USERS" --upstream "$SOCK" >"$T/door.log" 2>&1 &
DOOR_PID=$!
for _ in $(seq 50); do [ -S "$USERS" ] && break; sleep 0.1; done

mkdir -p "$T/img/bin" && cp /bin/busybox "$T/img/bin/"
for t in sh cat grep sleep; do ln -s busybox "$T/img/bin/$t"; done
tar -C "$T/img" -c . | docker_ import - ds01-demo:busybox >/dev/null
echo "   image ds01-demo:busybox imported from busybox-static"

echo
echo "== through the front door, as the users themselves, with no labels and no names:"
for u in alice bob; do
  echo "   $u\$ docker run --rm ds01-demo:busybox grep memory /proc/self/cgroup"
  as_ "$u" run --rm ds01-demo:busybox grep memory /proc/self/cgroup 2>&1 | sed 's/^/     /'
done
echo "   the audit log says who, and how it knows: $(grep -h '"event":"create"' "$T/events.jsonl" | tail -1 | jq -c '{owner, identity_source, slice}')"
echo
echo "== a claim for someone else is refused before dockerd sees it:"
echo "   alice\$ docker run --label ds01.user=bob ds01-demo:busybox true"
as_ alice run --rm --label ds01.user=bob ds01-demo:busybox true 2>&1 | sed 's/^/     /' || true
echo
echo "== and so is touching someone else's container:"
as_ alice run -d --name notebook ds01-demo:busybox sleep 60 >/dev/null
echo "   bob\$ docker ps --format '{{.Names}} {{.Label \"ds01.user\"}}'"
as_ bob ps --format '{{.Names}} {{.Label "ds01.user"}}' 2>&1 | sed 's/^/     /'
echo "   bob\$ docker rm -f notebook"
as_ bob rm -f notebook 2>&1 | sed 's/^/     /' || true
echo
echo "== docker build through the front door: the RUN steps run in the caller's slice"
mkdir -p "$T/home-bob/ctx" && printf 'FROM ds01-demo:busybox\nRUN grep memory /proc/self/cgroup\n' > "$T/home-bob/ctx/Dockerfile"
as_ bob build --no-cache "$T/home-bob/ctx" 2>&1 | grep 'memory' | sed 's/^/     /' || true
as_ alice rm -f notebook >/dev/null

echo
echo "== root, on dockerd's own socket, is trusted: there the owner is what the container claims"
show() { # how, docker run args...
  local how=$1; shift
  echo
  echo "== $how"
  echo "   \$ docker run $*"
  local id
  id=$(docker_ run -d "$@" ds01-demo:busybox sleep 60) || return 0
  echo -n "   inside: " && docker_ exec "$id" grep memory /proc/1/cgroup
  echo -n "   annotations: "
  runc --root "$T/exec/runtime-runc/moby" state "$id" | jq -c '.annotations | with_entries(select(.key | startswith("ds01.")))'
  docker_ rm -f "$id" >/dev/null
}
show "alice, by DS01's name convention <name>._.<user>" --name "notebook._.alice"
show "rita, by label" --label ds01.user=rita
show "a uid in the name, resolved through the user database (65534 is 'nobody')" --name "train._.65534"
echo
echo "== a container nobody owns is refused, and docker run says why:"
echo "   \$ docker run ds01-demo:busybox true"
docker_ run --rm ds01-demo:busybox true 2>&1 | sed 's/^/   /' || true
echo
echo "== a label that contradicts the name is refused too:"
echo "   \$ docker run --label ds01.user=alice --name x._.bob ds01-demo:busybox true"
docker_ run --rm --label ds01.user=alice --name x._.bob ds01-demo:busybox true 2>&1 | sed 's/^/   /' || true
echo
echo "== nothing beyond an ordinary container: an extra capability is refused, in one line:"
echo "   \$ docker run --label ds01.user=alice --cap-add SYS_ADMIN ds01-demo:busybox true"
docker_ run --rm --label ds01.user=alice --cap-add SYS_ADMIN ds01-demo:busybox true 2>&1 | sed 's/^/   /' || true
echo
echo "== and so is raising a running container above its caps:"
id=$(docker_ run -d --label ds01.user=alice ds01-demo:busybox sleep 60)
echo "   \$ docker update --memory 100g --memory-swap 100g <alice's container>"
docker_ update --memory 100g --memory-swap 100g "$id" 2>&1 | sed 's/^/   /' || true
docker_ rm -f "$id" >/dev/null
echo
echo "== root's docker build needs no labels: its steps run in ds01-build.slice"
mkdir -p "$T/ctx" && printf 'FROM ds01-demo:busybox\nRUN grep memory /proc/self/cgroup\n' > "$T/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker_ build -q --no-cache "$T/ctx" >/dev/null 2>&1 && echo "   built" || echo "   build failed"
echo "   the audit log's last build step: $(grep -h '"event":"create".*"slice":"ds01-build.slice"' "$T/events.jsonl" 2>/dev/null | tail -1 | jq -c '{event, outcome, slice}')"
echo
