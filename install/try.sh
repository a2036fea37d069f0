#!/usr/bin/env bash
# The try-out: on a fresh Debian machine, as root. Installs what is missing, builds ds01-runtime,
# and runs a few containers as demo users of different groups through the shim in front of the
# real runc, showing where each landed and what it carries. Everything it makes lives in one
# temp directory and is removed at the end; the machine's own Docker and /etc are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "try.sh: run as root (it starts containers)"; exit 1; }

need=()
command -v runc >/dev/null || need+=(runc)
command -v jq >/dev/null || need+=(jq)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "== building"
cargo build --release --quiet
SHIM=$PWD/target/release/ds01-runtime

T=$(mktemp -d /tmp/ds01-try.XXXXXX)
ROOT=$T/runc-root
cleanup() {
  for c in $(runc --root "$ROOT" list -q 2>/dev/null); do runc --root "$ROOT" delete --force "$c" >/dev/null 2>&1 || true; done
  rm -rf "$T"
}
trap cleanup EXIT

echo "== settings and policy in $T (demo users: alice and bob are students, rita is a researcher)"
mkdir -p "$T/etc/groups"
cp runtime-config/resource-limits.yaml "$T/etc/"
printf 'alice\nbob\n' > "$T/etc/groups/student.members"
printf 'rita\n' > "$T/etc/groups/researcher.members"
cat > "$T/etc/runtime.yaml" <<YAML
low_level_runtime: runc
policy: resource-limits.yaml
state_dir: $T/state
audit_log: $T/events.jsonl
identity:
  unattributed: refuse
YAML
export DS01_RUNTIME_CONFIG=$T/etc/runtime.yaml

mkdir -p "$T/rootfs/bin" && cp /bin/busybox "$T/rootfs/bin/" && ln -s busybox "$T/rootfs/bin/sh" && ln -s busybox "$T/rootfs/bin/grep"
(cd "$T" && runc spec)
jq '.process.terminal = false | .process.args = ["sh", "-c", "grep memory /proc/self/cgroup"]' \
  "$T/config.json" > "$T/pristine.json"

bundle_for() { # user (empty: no owner)
  if [ -n "$1" ]; then
    jq --arg u "$1" '.annotations = {"ds01.user": $u}' "$T/pristine.json" > "$T/config.json"
  else
    cp "$T/pristine.json" "$T/config.json"
  fi
}
run_as() { # user container-id
  bundle_for "$1"
  "$SHIM" --root "$ROOT" run --bundle "$T" "$2"
}

for u in alice rita bob; do
  echo
  echo "== $u: ds01-runtime run (annotation ds01.user=$u)"
  echo -n "   inside the container: " && run_as "$u" "try-$u"
done
echo
echo "== a container nobody owns is refused with one line:"
run_as "" try-nobody || true
echo
echo "== annotations runc keeps for a container (runc state):"
bundle_for rita
"$SHIM" --root "$ROOT" create --bundle "$T" try-state </dev/null >/dev/null 2>&1
"$SHIM" --root "$ROOT" state try-state | grep -A6 '"annotations"'
echo
echo "== done; cleaning up"
