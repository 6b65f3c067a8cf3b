#!/usr/bin/env bash
# Two "hosts" and etcd on one machine, as the cluster lane lays them out, as root:
# an underlay bridge in netns cw-ul (192.0.2.254/24), hosts cw-h1/cw-h2 (192.0.2.1, .2)
# and etcd in cw-e1 (192.0.2.101), one cnmd per host on --cluster-store. Then an
# overlay network created on h1 shows up on h2, sandboxes on both reach each other
# by name, the records in etcd are listed, and everything is removed.
#   bash examples/cluster-walkthrough.sh      # WORKDIR (default: a new temp dir) is honoured
# Nothing of the machine's own network is touched: every address lives in the cw-* namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORKDIR:-$(mktemp -d /tmp/cnmd-cluster.XXXXXX)}
STORE=etcd://192.0.2.101:2379
PIDS=()
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
ctl() { local h=$1; shift; node dist/src/cli/cnmctl.js -H "unix://$W/$h/cnmd.sock" "$@"; }
cleanup() {
  for h in h1 h2; do [ -S "$W/$h/cnmd.sock" ] && ctl "$h" sandbox rm "walk-$h" >/dev/null 2>&1 || true; done
  [ -S "$W/h1/cnmd.sock" ] && ctl h1 network rm walk-ov >/dev/null 2>&1 || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in cw-h1 cw-h2 cw-e1 cw-ul; do ip netns del "$ns" 2>/dev/null || true; done
  # The daemons' namespaces (the overlay networks', sandboxes') are mounts under $W.
  { awk '{print $5}' /proc/self/mountinfo | grep "^$W/" | sort -r | while read -r m; do umount "$m"; done; } || true
  [ -z "${WORKDIR:-}" ] && rm -rf "$W"
  return 0
}
trap cleanup EXIT

say "the underlay: a bridge in cw-ul, two hosts and an etcd member on it"
ip netns add cw-ul
in_ns cw-ul ip link add br0 type bridge
in_ns cw-ul ip addr add 192.0.2.254/24 dev br0
in_ns cw-ul ip link set br0 up
i=0
for spec in h1:192.0.2.1 h2:192.0.2.2 e1:192.0.2.101; do
  name=${spec%%:*} addr=${spec#*:} i=$((i + 1))
  ip netns add "cw-$name"
  in_ns cw-ul ip link add "cw$i" type veth peer name eth0 netns "/run/netns/cw-$name"
  in_ns cw-ul ip link set "cw$i" master br0 up
  in_ns "cw-$name" ip link set lo up
  in_ns "cw-$name" ip addr add "$addr/24" dev eth0
  in_ns "cw-$name" ip link set eth0 up
  in_ns "cw-$name" ip route add default via 192.0.2.254
done
in_ns cw-ul ip -br addr show br0

say "etcd on 192.0.2.101, one cnmd per host pointed at it"
nsenter --net=/run/netns/cw-e1 etcd --name e1 --data-dir "$W/etcd" --listen-client-urls http://192.0.2.101:2379 \
  --advertise-client-urls http://192.0.2.101:2379 --listen-peer-urls http://192.0.2.101:2380 \
  --initial-advertise-peer-urls http://192.0.2.101:2380 --initial-cluster e1=http://192.0.2.101:2380 \
  >"$W/etcd.log" 2>&1 &
PIDS+=($!) # nsenter execs etcd: this is etcd's pid
for _ in $(seq 100); do in_ns cw-e1 etcdctl --endpoints=http://192.0.2.101:2379 endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
for h in h1 h2; do
  mkdir -p "$W/$h"
  nsenter --net="/run/netns/cw-$h" node dist/src/cli/cnmd.js --data-root "$W/$h/data" --exec-root "$W/$h/exec" \
    -H "unix://$W/$h/cnmd.sock" --plugin-dir "$W/$h/plugins" --cluster-store "$STORE" --cluster-ttl 5 --netns-pool-size 0 \
    >"$W/$h/cnmd.log" 2>&1 &
  PIDS+=($!)
done
for h in h1 h2; do for _ in $(seq 100); do ctl "$h" version >/dev/null 2>&1 && break; sleep 0.1; done; done

say "an overlay network created on h1 ..."
ctl h1 network create -d overlay --subnet 10.77.0.0/24 walk-ov
say "... is on h2, same id, subnet and VNI"
for _ in $(seq 50); do ctl h2 network inspect walk-ov >/dev/null 2>&1 && break; sleep 0.1; done
for h in h1 h2; do
  echo "  $h: $(ctl "$h" network inspect -f '{{.Id}} {{json .IPAM.Config}} vni={{index .Options "com.docker.network.driver.overlay.vxlanid_list"}}' walk-ov)"
done

say "a sandbox on each host; they reach each other by name across the underlay"
ctl h1 sandbox create --name walk-h1 --network walk-ov >/dev/null
ctl h2 sandbox create --name walk-h2 --network walk-ov >/dev/null
for _ in $(seq 50); do ctl h1 sandbox exec walk-h1 -- ping -c1 -W1 walk-h2 >/dev/null 2>&1 && break; sleep 0.1; done
ctl h1 sandbox exec walk-h1 -- ping -c1 -W1 walk-h2 | grep -E 'bytes from'
ctl h2 sandbox exec walk-h2 -- ping -c1 -W1 walk-h1 | grep -E 'bytes from'
echo "  peers of walk-ov: $(ctl h1 network inspect -f '{{json .Peers}}' walk-ov)"

say "what etcd holds"
in_ns cw-e1 etcdctl --endpoints=http://192.0.2.101:2379 get --prefix --keys-only /cnmd/v1/ | grep -v '^$'

say "network rm is refused while a host has endpoints on it, then removes it everywhere"
ctl h1 network rm walk-ov || true
ctl h1 sandbox rm walk-h1 >/dev/null
ctl h2 sandbox rm walk-h2 >/dev/null
for _ in $(seq 50); do ctl h1 network rm walk-ov >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 50); do ctl h2 network inspect walk-ov >/dev/null 2>&1 || break; sleep 0.1; done
echo "  h2 networks: $(ctl h2 network ls --format '{{.Name}}' | tr '\n' ' ')"
