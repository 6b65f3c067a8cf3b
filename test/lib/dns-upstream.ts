// A small authoritative DNS server of our own for tests, run in an "outside"
// netns (a node process under nsenter): fixed answers, an NXDOMAIN, a
// SERVFAIL, REFUSED for everything (mode 'refuse'), or silence (mode 'mute').
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import type { TestContext } from 'node:test';

const SERVER = `
const dgram = require('dgram'), net = require('net');
const packet = require(process.argv[3]);
const mode = process.argv[1], addr = process.argv[2];
const answer = (msg) => {
  const q = packet.decode(msg);
  const qn = q.questions[0];
  const base = { id: q.id, type: 'response', flags: packet.RECURSION_AVAILABLE | packet.RECURSION_DESIRED, questions: q.questions };
  if (mode === 'refuse') return packet.encode({ ...base, flags: base.flags | 5 });
  if (qn.name === 'example.test' && qn.type === 'A') return packet.encode({ ...base, answers: [{ name: qn.name, type: 'A', ttl: 60, data: '203.0.113.7' }] });
  if (qn.name === 'fail.test') return packet.encode({ ...base, flags: base.flags | 2 });
  return packet.encode({ ...base, flags: base.flags | 3 });
};
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => { if (mode !== 'mute') u.send(answer(m), r.port, r.address); });
u.bind(53, addr, () => {
  net.createServer((c) => c.on('data', (d) => { if (mode === 'mute') return; const a = answer(d.subarray(2)); const l = Buffer.alloc(2); l.writeUInt16BE(a.length); c.write(Buffer.concat([l, a])); })).listen(53, addr, () => console.log('ready'));
});`;

export async function dnsUpstream(
  t: TestContext,
  nsPath: string,
  addr: string,
  mode: 'answer' | 'refuse' | 'mute' = 'answer',
): Promise<void> {
  const dnsPacket = require.resolve('dns-packet', { paths: [path.resolve(__dirname, '..', '..', '..')] });
  const p = spawn('nsenter', [`--net=${nsPath}`, process.execPath, '-e', SERVER, mode, addr, dnsPacket], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (p.exitCode === null) p.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    p.stdout!.once('data', () => resolve());
    p.once('exit', (c) => reject(new Error(`dns upstream exited ${c}: ${err}`)));
  });
}
