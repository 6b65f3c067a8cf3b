// README's doc test, engine lane: the ```sh blocks marked `<!-- doctest: engine (...) -->`
// run in order, word for word, against a cnmd and a real engine started after it (as
// README says), both in the test's own "host" netns; `busybox` is the lane's imported
// image under README's name, and `docker` is the CLI of Debian's docker.io, which the
// quick start installs. The other blocks run in test/integration/readme.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { assertNothingLeft, startEngine } from '../lib/engine';
import { README, REPO, blocksScript, lastBlock, shBlocks } from '../lib/readme';

test(
  "README: the engine's blocks run as written against cnmd and a Docker engine",
  { timeout: 300_000 },
  async (t) => {
    const blocks = shBlocks(fs.readFileSync(README, 'utf8')).filter((b) => b.mode === 'engine');
    assert.ok(blocks.length >= 1, 'README has blocks marked for the engine lane');
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const e = await startEngine(t, l, { hostNs: d.host, pluginDir: d.pluginDir, tag: 'readme' });
    await e.docker(['tag', e.image, 'busybox']);
    const scriptPath = path.join(l.root, 'readme-engine.sh');
    fs.writeFileSync(scriptPath, blocksScript(blocks, l.root));
    const PATH = [path.dirname(e.cli), path.join(REPO, 'bin'), process.env.PATH].join(':');
    const proc = spawn('nsenter', [`--net=${d.host.path}`, 'bash', scriptPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PATH, DOCKER_HOST: e.host, CNMD_HOST: d.hostUri },
    });
    let out = '';
    proc.stdout!.on('data', (c) => (out += c));
    proc.stderr!.on('data', (c) => (out += c));
    const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
    assert.equal(
      code,
      0,
      `README block failed: ${lastBlock(out)}\n${out.slice(-6000)}\n${e.logs().slice(-3000)}`,
    );
    assert.match(out, /^::: done$/m);
    // What the block shows: the engine's DNS answered, the binding is a DNAT in cnmd's chain,
    // and `docker port` printed nothing between ping's last line and the DNAT (README: dockerd
    // drops a remote driver's bindings).
    assert.match(out, /1 packets transmitted, 1 packets received/);
    assert.match(
      out,
      /^round-trip [^\n]*\n-A CNMD .*--dport 18080 -j DNAT --to-destination 10\.93\.0\.\d+:80$/m,
    );
    await assertNothingLeft(d, e); // everything it made went
    await e.stop();
  },
);
