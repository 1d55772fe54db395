#!/bin/bash
# Probe for the next step of cluster kernels (README, "Across agents"): two Docker engines
# owned by this script, each in a network namespace of its own joined by a veth pair, form
# one swarm; a container on engine B reaches one on engine A by name over an attachable
# overlay network. Prints CROSS-ENGINE-OK when it works, and removes everything it made
# (engines, namespaces, mounts) on exit. Needs root and the local test image
# (scripts/deps.sh). The machine's own engine is not touched.
set -u
R=/tmp/swp
cleanup() {
  for n in A B; do
    [ -f $R/$n/pid ] && kill $(cat $R/$n/pid) 2>/dev/null
  done
  sleep 5
  for n in A B; do
    pkill -f "containerd --config $R/$n" 2>/dev/null
    for m in $(mount | awk -v r="$R/$n" '$3 ~ r {print $3}' | sort -r); do umount -l $m 2>/dev/null; done
    ip netns del dh$n 2>/dev/null
  done
  rm -rf $R
}
trap cleanup EXIT
mkdir -p $R/A $R/B
ip netns add dhA; ip netns add dhB
ip link add vA type veth peer name vB
ip link set vA netns dhA; ip link set vB netns dhB
ip -n dhA addr add 10.77.0.1/24 dev vA; ip -n dhB addr add 10.77.0.2/24 dev vB
for n in A B; do ip -n dh$n link set lo up; done
ip -n dhA link set vA up; ip -n dhB link set vB up
for n in A B; do
  echo '{}' > $R/$n/daemon.json
  nsenter --net=/var/run/netns/dh$n dockerd --config-file $R/$n/daemon.json \
    --data-root $R/$n/data --exec-root $R/$n/exec -H unix://$R/$n/sock --pidfile $R/$n/pid \
    --storage-driver fuse-overlayfs > $R/$n/log 2>&1 &
done
for n in A B; do
  for i in $(seq 1 40); do docker -H unix://$R/$n/sock info >/dev/null 2>&1 && break; sleep 0.5; done
  docker -H unix://$R/$n/sock info 2>&1 | grep -E "Server Version" || { echo "engine $n did not start"; tail -5 $R/$n/log; exit 1; }
  docker save deckhand-test/busybox:latest | docker -H unix://$R/$n/sock load | tail -1
done
A="docker -H unix://$R/A/sock"; B="docker -H unix://$R/B/sock"
$A swarm init --advertise-addr 10.77.0.1 2>&1 | head -2
TOKEN=$($A swarm join-token -q worker)
$B swarm join --token $TOKEN 10.77.0.1:2377 2>&1 | head -2
$A node ls 2>&1 | head -4
$A network create -d overlay --attachable dh-ov 2>&1 | tail -1
$A run -d --name m1 --network dh-ov --network-alias master deckhand-test/busybox:latest sleep 120 2>&1 | tail -1
sleep 2
timeout 60 $B run --rm --network dh-ov deckhand-test/busybox:latest sh -c 'nslookup master 2>&1 | tail -2; ping -c 2 -W 2 master && echo CROSS-ENGINE-OK' 2>&1 | tail -6
$A rm -f m1 >/dev/null 2>&1
$B swarm leave --force >/dev/null 2>&1; $A swarm leave --force >/dev/null 2>&1
