#!/usr/bin/env node
// The Debian packages each test lane needs, and their installation when
// missing (as root, through apt-get). A lane installs its tools rather than
// skipping: `node scripts/host-packages.js [build|unit|integration|chaos|kernel|engine|all]`.
'use strict';
const fs = require('node:fs');
const { execFileSync, spawnSync } = require('node:child_process');

// lane -> [probe, package]; a probe is a command on PATH or a check function.
const hasCommand = (cmd) => () =>
  spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const hasDebianKernel = () => {
  try {
    const vers = fs
      .readdirSync('/boot')
      .filter((f) => /^vmlinuz-.*-amd64$/.test(f))
      .map((f) => f.slice('vmlinuz-'.length));
    return vers.some((v) => fs.existsSync(`/lib/modules/${v}/kernel`));
  } catch {
    return false;
  }
};

const LANES = {
  build: [
    [hasCommand('g++'), 'g++'],
    [hasCommand('make'), 'make'],
    [hasCommand('python3'), 'python3'],
  ],
  unit: [],
  integration: [
    [hasCommand('ip'), 'iproute2'],
    [hasCommand('bridge'), 'iproute2'],
    [hasCommand('iptables-restore'), 'iptables'],
    [hasCommand('nsenter'), 'util-linux'],
    [hasCommand('ping'), 'iputils-ping'],
    [hasCommand('dig'), 'dnsutils'],
    [hasCommand('curl'), 'curl'],
    [hasCommand('strace'), 'strace'],
    [hasCommand('ss'), 'iproute2'],
    // The overlay tests watch the underlay for VXLAN packets (overlay.test.ts).
    [hasCommand('tcpdump'), 'tcpdump'],
    // The stock docker CLI, pointed at cnmd's socket (docker-cli.test.ts); Debian's docker.io ships it.
    [hasCommand('docker'), 'docker.io'],
    // README's published-port example serves HTTP from a sandbox with python3 (readme.test.ts).
    [hasCommand('python3'), 'python3'],
    // The TCP API's TLS test makes its CA and certificates with openssl (api-tcp-tls.test.ts).
    [hasCommand('openssl'), 'openssl'],
    // The LAN's DHCP server for --ipam-driver dhcp (dhcp.test.ts): dnsmasq's binary, without its system service.
    [hasCommand('dnsmasq'), 'dnsmasq-base'],
  ],
  // Fuzzing, storms and SIGKILLs against a daemon in its own netns (test/chaos): the integration tools, and openssl for TLS certs.
  chaos: [
    [hasCommand('ip'), 'iproute2'],
    [hasCommand('iptables-restore'), 'iptables'],
    [hasCommand('nsenter'), 'util-linux'],
    [hasCommand('dig'), 'dnsutils'],
    [hasCommand('curl'), 'curl'],
    [hasCommand('openssl'), 'openssl'],
  ],
  // Debian's Docker engine, run by the engine lane in its own netns with cnmd's plugins.
  engine: [
    [hasCommand('dockerd'), 'docker.io'],
    [hasCommand('containerd'), 'containerd'],
    [hasCommand('runc'), 'runc'],
    [hasCommand('busybox'), 'busybox-static'],
    [hasCommand('ip'), 'iproute2'],
    [hasCommand('iptables-restore'), 'iptables'],
    [hasCommand('curl'), 'curl'],
    // engine-dhcp.test.ts: the LAN's DHCP server.
    [hasCommand('dnsmasq'), 'dnsmasq-base'],
    // engine-overlay.test.ts: two engines bound to a cnmd overlay network, etcd as the cluster store.
    [hasCommand('etcd'), 'etcd-server'],
    [hasCommand('etcdctl'), 'etcd-client'],
  ],
  // Several hosts (netns) on one underlay with etcd: overlay networks across hosts.
  cluster: [
    [hasCommand('etcd'), 'etcd-server'],
    [hasCommand('etcdctl'), 'etcd-client'],
    [hasCommand('ip'), 'iproute2'],
    [hasCommand('bridge'), 'iproute2'],
    [hasCommand('nsenter'), 'util-linux'],
    [hasCommand('ping'), 'iputils-ping'],
    [hasCommand('dig'), 'dnsutils'],
    // The stock docker CLI on cnmd's socket (overlay networks through it).
    [hasCommand('docker'), 'docker.io'],
  ],
  kernel: [
    [hasCommand('qemu-system-x86_64'), 'qemu-system-x86'],
    [hasCommand('busybox'), 'busybox-static'],
    [hasCommand('modprobe'), 'kmod'],
    [hasDebianKernel, 'linux-image-amd64'],
    // The cluster VM (test/kernel-cluster): etcd on the underlay, the underlay watched with
    // tcpdump, names through dig; the host's root is the guest's, so they are installed here.
    [hasCommand('etcd'), 'etcd-server'],
    [hasCommand('etcdctl'), 'etcd-client'],
    [hasCommand('tcpdump'), 'tcpdump'],
    [hasCommand('dnsmasq'), 'dnsmasq-base'],
    // kernel-cluster/encrypted-clients.ts: the docker CLI and curl run in the guest (the host's rootfs).
    [hasCommand('docker'), 'docker.io'],
    [hasCommand('curl'), 'curl'],
    [hasCommand('dig'), 'dnsutils'],
    [hasCommand('ping'), 'iputils-ping'],
    [hasCommand('nsenter'), 'util-linux'],
    // Spoofed-source datagrams on the underlay (test/lib/wire.ts's raw socket).
    [hasCommand('python3'), 'python3'],
    // kernel-cluster/encrypted-engine.ts: Debian's dockerd, its containerd and runc in the guest, launched as the
    // engine lane does (test/lib/dockerd-launch.ts: nsenter, setpriv, unshare), and a busybox image.
    [hasCommand('dockerd'), 'docker.io'],
    [hasCommand('containerd'), 'containerd'],
    [hasCommand('containerd-shim-runc-v2'), 'containerd'],
    [hasCommand('runc'), 'runc'],
    [hasCommand('setpriv'), 'util-linux'],
    [hasCommand('unshare'), 'util-linux'],
    [hasCommand('tar'), 'tar'],
    [hasCommand('iptables-save'), 'iptables'],
  ],
};

function missingFor(lanes) {
  const out = new Set();
  for (const lane of lanes) for (const [probe, pkg] of LANES[lane] || []) if (!probe()) out.add(pkg);
  return [...out].sort();
}

function ensure(lanes) {
  const missing = missingFor(lanes);
  if (missing.length === 0) return;
  if (process.getuid && process.getuid() !== 0) {
    throw new Error(
      `missing Debian packages: ${missing.join(' ')} (install them as root: apt-get install ${missing.join(' ')})`,
    );
  }
  console.log(`installing Debian packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  // Packages with services (docker.io, containerd) must not start them on the
  // machine's own network: the engine lane starts dockerd in its own netns.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !fs.existsSync(policy);
  if (ownPolicy) fs.writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
      stdio: 'inherit',
      env,
    });
  } finally {
    if (ownPolicy) fs.rmSync(policy, { force: true });
  }
  const still = missingFor(lanes);
  if (still.length) throw new Error(`still missing after apt-get install: ${still.join(' ')}`);
}

module.exports = { LANES, ensure, missingFor };

if (require.main === module) {
  const arg = process.argv[2] || 'all';
  const lanes = arg === 'all' ? Object.keys(LANES) : [arg];
  try {
    ensure(lanes);
  } catch (e) {
    console.error(String(e.message || e));
    process.exit(1);
  }
}
