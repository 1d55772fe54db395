#!/usr/bin/env bash
# The main job on one machine: a local etcd (unless --etcd-addr is given), a deckhand
# manager and two agents in one namespace, with two fake GPUs in the cluster config.
# Prints `deckhand nodes` and leaves everything running until Ctrl-C, then stops it all and
# removes what it made (processes, temp dirs, the namespace's etcd keys).
#
#   scripts/demo.sh [--etcd-addr HOST:PORT] [--namespace NS] [--once]
#
# --once prints the nodes and cleans up at once (for scripts).
set -euo pipefail
cd "$(dirname "$0")/.."

ETCD_ADDR=""; NS="demo"; ONCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --etcd-addr) ETCD_ADDR="$2"; shift 2 ;;
    --namespace) NS="$2"; shift 2 ;;
    --once) ONCE=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument $1" >&2; exit 2 ;;
  esac
done

scripts/deps.sh
cargo build --release --locked
BIN="$PWD/target/release/deckhand"

WORK=$(mktemp -d /tmp/deckhand-demo.XXXXXX)
PIDS=()
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  trap - EXIT INT TERM
  echo; echo "demo: stopping"
  # Agents and manager first (they deregister on SIGTERM), etcd last.
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null || true
    wait "${PIDS[$i]}" 2>/dev/null || true
  done
  # The demo's kernels (containers labelled with its namespace).
  ids=$(docker ps -aq --filter "label=io.deckhand.namespace=$NS" 2>/dev/null || true)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
  # A shared etcd keeps running: remove this namespace's keys from it.
  if [ -z "${OWN_ETCD:-}" ]; then
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ADDR" del --prefix "/deckhand/$NS/" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if [ -z "$ETCD_ADDR" ]; then
  OWN_ETCD=1
  port=$(free_port); peer=$(free_port)
  ETCD_ADDR="127.0.0.1:$port"
  etcd --name demo --data-dir "$WORK/etcd" \
    --listen-client-urls "http://$ETCD_ADDR" --advertise-client-urls "http://$ETCD_ADDR" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "demo=http://127.0.0.1:$peer" >"$WORK/etcd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ADDR" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "demo: etcd on $ETCD_ADDR"
fi
export DECKHAND_ETCD_ADDR="$ETCD_ADDR" DECKHAND_NAMESPACE="$NS"

cat >"$WORK/cluster.toml" <<'TOML'
[agent]
heartbeat_interval = "2s"
region = "local"

[docker]
# The demo image is built locally and no registry has it: use it as it is.
cache_usage = "cache_first"

[[docker.fake_gpus]]
id = "GPU-0d6d1a2a-0000-4000-8000-000000000001"
name = "Fake A100 (demo)"
ram_total = "40GiB"

[[docker.fake_gpus]]
id = "GPU-0d6d1a2a-0000-4000-8000-000000000002"
name = "Fake A100 (demo)"
ram_total = "40GiB"
TOML
"$BIN" config put "$WORK/cluster.toml"

mport=$(free_port)
"$BIN" manager --manager-id demo-manager --listen "127.0.0.1:$mport" >"$WORK/manager.log" 2>&1 &
PIDS+=($!)
for i in 1 2; do
  aport=$(free_port)
  "$BIN" agent --agent-id "demo-agent-$i" --rpc-listen-addr "127.0.0.1:$aport" \
    --scratch-root "$WORK/scratch-$i" >"$WORK/agent-$i.log" 2>&1 &
  PIDS+=($!)
done

for _ in $(seq 100); do
  n=$("$BIN" nodes --json 2>/dev/null | grep -c '"state": "ALIVE"' || true)
  [ "$n" = 2 ] && break
  sleep 0.1
done
"$BIN" nodes
echo "demo: a kernel on one fake GPU, placed by the manager, output followed:"
"$BIN" run --name demo --gpus 1 --cpus 0.5 --memory 64MiB deckhand-test/busybox:latest \
  sh -c 'echo "hello from kernel $DECKHAND_KERNEL_ID as $(id -un), GPU $NVIDIA_VISIBLE_DEVICES"; cat /home/config/resource.txt' \
  || echo "demo: the kernel failed (exit $?)"
echo "demo: a job array of 4 tasks, 2 at a time:"
array=$("$BIN" run --array 1-4%2 deckhand-test/busybox:latest sh -c 'echo task $DECKHAND_TASK_INDEX; sleep 1')
for _ in $(seq 100); do
  [ "$("$BIN" ps --json | grep -c '"state": "DONE"')" -ge 4 ] && break
  sleep 0.2
done
"$BIN" ps
echo "demo: logs in $WORK; try: DECKHAND_ETCD_ADDR=$ETCD_ADDR DECKHAND_NAMESPACE=$NS $BIN ps"
if [ "$ONCE" = 1 ]; then exit 0; fi
echo "demo: running; Ctrl-C stops and cleans up"
wait
