#!/usr/bin/env bash
# A first tour of cnmd, as root, with the daemon running (README, quick start step 1):
# two networks, three sandboxes, who can reach whom, then everything removed.
#   bash examples/walkthrough.sh            # uses $CNMD_HOST or unix:///run/cnmd/cnmd.sock
set -euo pipefail
cd "$(dirname "$0")/.."
ctl() { node dist/src/cli/cnmctl.js "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
can() { # can FROM TO_IP: one ping from a sandbox
  if ctl sandbox exec "$1" -- ping -c1 -W1 "$2" >/dev/null 2>&1; then echo "  $1 -> $2: reachable"; else echo "  $1 -> $2: blocked"; fi
}
cleanup() {
  ctl sandbox rm tour-alice tour-bob tour-carol >/dev/null 2>&1 || true
  ctl network rm tour-front tour-back >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

say "two bridge networks"
ctl network create --subnet 10.90.1.0/24 tour-front
ctl network create --subnet 10.90.2.0/24 --internal tour-back
ctl network ls

say "three sandboxes: alice on front, carol on back, bob on both"
ctl sandbox create --name tour-alice --network tour-front
ctl sandbox create --name tour-bob --network tour-front --network tour-back
ctl sandbox create --name tour-carol --network tour-back
ctl sandbox ls

say "bob has one interface per network, in join order"
ctl sandbox exec tour-bob -- ip -br addr

say "who can reach whom"
can tour-alice 10.90.1.3   # bob, same network
can tour-bob 10.90.2.3     # carol, via bob's second network
can tour-alice 10.90.2.3   # carol: different network, isolated
can tour-carol 10.90.1.2   # alice: back is internal and isolated

say "the kernel objects behind it (bridges, their ports, cnmd's iptables chains)"
ip -br link show type bridge | grep -E '^(br-|cnm0)' || true
iptables -S CNMD-ISOLATION-STAGE-1

say "network inspect lists its sandboxes"
ctl network inspect tour-front --format '{{json .Containers}}'

say "cleaning up"
cleanup
trap - EXIT
echo "done"
