#!/usr/bin/env bash
# The Docker engine with cnmd's drivers, as root, with cnmd running (examples/cnmd.service)
# and dockerd started after it (it finds cnmd-bridge and cnmd-ipam in /run/docker/plugins):
# a cnmd-bridge network, two containers that reach each other by name, a published port,
# connect/disconnect, then everything removed.
#   bash examples/engine-walkthrough.sh        # DOCKER_HOST, CNMD_HOST and IMAGE (default busybox) are honoured
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-busybox}
PORT=${PORT:-18080}
ctl() { node dist/src/cli/cnmctl.js "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  docker rm -f walk-a walk-b walk-web >/dev/null 2>&1 || true
  docker network rm walk-net walk-side >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

say "a network on cnmd's bridge driver, addresses from cnmd's IPAM"
docker network create -d cnmd-bridge --ipam-driver cnmd-ipam --subnet 10.91.0.0/24 -o com.docker.network.bridge.name=br-walk walk-net
docker network ls --filter driver=cnmd-bridge

say "two containers on it reach each other by name (the engine's DNS) and by IP"
docker run -d --name walk-a --network walk-net "$IMAGE" sleep 600 >/dev/null
docker run -d --name walk-b --network walk-net "$IMAGE" sleep 600 >/dev/null
docker exec walk-a ping -c1 -W2 walk-b | grep -E 'bytes from|packets'
docker exec walk-b ping -c1 -W2 "$(docker inspect -f '{{(index .NetworkSettings.Networks "walk-net").IPAddress}}' walk-a)" | grep -E 'bytes from|packets'

say "a published port, served from a container, reached from the host"
docker run -d --name walk-web --network walk-net -p "$PORT:80" "$IMAGE" httpd -f -p 80 -h /bin >/dev/null
for _ in $(seq 25); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/busybox" && break; sleep 0.2; done
echo "  127.0.0.1:$PORT -> walk-web:80: HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/busybox")"

say "connect walk-a to a second cnmd network, then disconnect it"
docker network create -d cnmd-bridge --ipam-driver cnmd-ipam --subnet 10.92.0.0/24 walk-side >/dev/null
docker network connect walk-side walk-a
docker exec walk-a ip -o -4 addr show
docker network disconnect walk-side walk-a
docker exec walk-a ip -o -4 addr show

say "what cnmd holds: the engine's networks, named by their id"
ctl network ls
ip -br link show type bridge | grep -E '^br-' || true
iptables -t nat -S CNMD 2>/dev/null | grep -- "--dport $PORT" || true

say "cleaning up"
cleanup
trap - EXIT
ctl network ls
