// Finds a Docker (v1) plugin by name the way the engine's pkg/plugins does, so a
// plugin installed for Docker is found by cnmd without extra configuration:
//   <socketDir>/<name>.sock, <socketDir>/<name>/<name>.sock   (must be sockets)
//   then per spec dir: <name>.spec, <name>/<name>.spec, <name>.json, <name>/<name>.json
// The directories are the caller's (cnmd's --plugin-dir, /etc/docker/plugins,
// /usr/lib/docker/plugins by default): several daemons on one machine must not
// find each other's plugins through a hardcoded path.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { CnmdError } from '../errors';

export type PluginAddr = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export interface PluginLocation {
  name: string;
  addr: PluginAddr;
  /** The file that named the address: a socket, .spec or .json. */
  source?: string;
}

export interface SearchDirs {
  socketDirs: string[];
  specDirs: string[];
}

/** Docker's spec directories (non-rootless); pass them explicitly with the plugin dir. */
export const DOCKER_SPEC_DIRS: readonly string[] = ['/etc/docker/plugins', '/usr/lib/docker/plugins'];

const OP = 'plugin discovery';

export function formatAddr(a: PluginAddr): string {
  return a.kind === 'unix'
    ? `unix://${a.path}`
    : `tcp://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

/**
 * A plugin name becomes a file name in several directories: anything that could
 * climb out of them or hide in a subdirectory is refused.
 */
export function validatePluginName(name: string): void {
  const fix =
    'a plugin name is its socket or spec file name without the extension: letters, digits, ".", "_", "-", ' +
    'starting with a letter or digit';
  if (typeof name !== 'string' || name === '')
    throw new CnmdError('INVALID_ARGUMENT', `${OP}: empty plugin name; ${fix}`, {
      op: OP,
      object: String(name),
    });
  if (name.length > 255 || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || name.includes('..')) {
    throw new CnmdError('INVALID_ARGUMENT', `${OP}: invalid plugin name ${JSON.stringify(name)}; ${fix}`, {
      op: OP,
      object: name,
    });
  }
}

function specError(name: string, file: string, message: string): CnmdError {
  return new CnmdError('INVALID_ARGUMENT', `${OP}: plugin "${name}": ${file}: ${message}`, {
    op: OP,
    object: name,
    file,
  });
}

/** Parses a plugin address as the .spec file or .json "Addr" holds it. */
export function parsePluginAddr(name: string, file: string, text: string): PluginAddr {
  const addr = text.trim();
  const expect = 'write one address: unix:///absolute/path.sock or tcp://host:port';
  if (addr === '') throw specError(name, file, `the file is empty; ${expect}`);
  if (/\s/.test(addr))
    throw specError(name, file, `${JSON.stringify(addr)} is more than one address; ${expect}`);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(addr)?.[1]?.toLowerCase();
  if (!scheme)
    throw specError(name, file, `${JSON.stringify(addr)} has no scheme (unknown protocol); ${expect}`);
  if (scheme === 'https') {
    throw specError(
      name,
      file,
      `${addr} needs TLS, which cnmd does not speak to plugins; serve the plugin on a unix socket or a ` +
        `plain tcp:// address`,
    );
  }
  if (scheme === 'unix') {
    const p = addr.slice('unix://'.length);
    if (!p.startsWith('/'))
      throw specError(
        name,
        file,
        `${JSON.stringify(addr)}: the socket path must be absolute (unix:///run/x.sock has three slashes); ${expect}`,
      );
    return { kind: 'unix', path: path.normalize(p) };
  }
  if (scheme === 'tcp' || scheme === 'http') {
    let u: URL;
    try {
      u = new URL(addr);
    } catch {
      throw specError(name, file, `${JSON.stringify(addr)} is not a valid URL; ${expect}`);
    }
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = Number(u.port);
    if (host === '' || !u.port || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw specError(
        name,
        file,
        `${JSON.stringify(addr)} needs a host and a port from 1 to 65535; ${expect}`,
      );
    }
    if ((u.pathname !== '' && u.pathname !== '/') || u.search || u.username) {
      throw specError(
        name,
        file,
        `${JSON.stringify(addr)} has a path, query or user, which a plugin address cannot have; ${expect}`,
      );
    }
    return { kind: 'tcp', host, port };
  }
  throw specError(name, file, `unsupported protocol "${scheme}" in ${JSON.stringify(addr)}; ${expect}`);
}

function parseJsonSpec(name: string, file: string, text: string): PluginAddr {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw specError(
      name,
      file,
      `not valid JSON (${(e as Error).message}); write {"Name": "${name}", "Addr": "unix:///path.sock"}`,
    );
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw specError(
      name,
      file,
      `must hold a JSON object like {"Name": "${name}", "Addr": "unix:///path.sock"}`,
    );
  const o = doc as Record<string, unknown>;
  // Docker turns TLS on for any TLSConfig, even an empty one.
  if (o.TLSConfig !== undefined && o.TLSConfig !== null) {
    throw specError(
      name,
      file,
      'has a TLSConfig, but cnmd does not speak TLS to plugins; remove TLSConfig and serve the plugin on a ' +
        'unix socket or a plain tcp:// address',
    );
  }
  if (typeof o.Addr !== 'string')
    throw specError(
      name,
      file,
      `"Addr" is missing or not a string; write {"Name": "${name}", "Addr": "unix:///path.sock"}`,
    );
  return parsePluginAddr(name, file, o.Addr);
}

async function isSocket(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isSocket();
  } catch (e) {
    // Nothing there is "not a socket"; EACCES and the like are the caller's to see.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw e;
  }
}

async function readIfExists(p: string): Promise<string | undefined> {
  try {
    return await fs.readFile(p, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `${OP}: cannot read ${p} (${code}); fix its permissions or remove it`,
      { op: OP, object: p, errno: code, cause: e },
    );
  }
}

function candidates(dir: string, name: string, ext: string): string[] {
  return [path.join(dir, name + ext), path.join(dir, name, name + ext)];
}

/** The plugin's address, or NOT_FOUND listing every place looked at. */
export async function discoverPlugin(name: string, dirs: SearchDirs): Promise<PluginLocation> {
  validatePluginName(name);
  const tried: string[] = [];
  for (const dir of dirs.socketDirs) {
    for (const p of candidates(dir, name, '.sock')) {
      tried.push(p);
      if (await isSocket(p)) return { name, addr: { kind: 'unix', path: p }, source: p };
    }
  }
  for (const dir of dirs.specDirs) {
    for (const p of [...candidates(dir, name, '.spec'), ...candidates(dir, name, '.json')]) {
      tried.push(p);
      const text = await readIfExists(p);
      if (text === undefined) continue;
      const addr = p.endsWith('.json') ? parseJsonSpec(name, p, text) : parsePluginAddr(name, p, text);
      return { name, addr, source: p };
    }
  }
  throw new CnmdError(
    'NOT_FOUND',
    `${OP}: plugin "${name}" not found; looked for ${tried.join(', ') || '(no directories given)'}; start ` +
      `the plugin so that it listens on one of these sockets, or write a .spec/.json file with its address`,
    { op: OP, object: name, tried },
  );
}
