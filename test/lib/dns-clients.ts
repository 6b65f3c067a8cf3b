// Hostile DNS clients run inside a sandbox's netns (python3, no dependencies):
// a TCP client that pipelines queries and reads the answers, or never does.
import { execFile } from 'node:child_process';

const NON_READER = `
import json, select, socket, struct, sys, time
host, name, conns, secs, read = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == 'read'
def query(i):
    q = struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\\0' + struct.pack('>HH', 1, 1)
    return struct.pack('>H', len(q)) + q
batch = b''.join(query(i) for i in range(512))
def connect():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, 53))
    s.setblocking(False)
    return s
socks = {connect(): b'' for _ in range(conns)}
sent = closed = 0
end = time.time() + secs
while time.time() < end:
    r, w, _ = select.select(list(socks) if read else [], list(socks), [], 0.2)
    for s in r:
        s.recv(1 << 20)
    for s in w:
        if not socks[s]:
            socks[s] = batch
        try:
            n = s.send(socks[s])
            sent += n
            socks[s] = socks[s][n:]
        except (BrokenPipeError, ConnectionResetError):
            # Closed by the server: come back at once, as a hostile client would.
            del socks[s]
            s.close()
            closed += 1
            socks[connect()] = b''
print(json.dumps({"sent": sent, "closed": closed}))
`;

/**
 * Pipelines A queries for `name` over `conns` TCP connections for `secs`, reading the answers
 * or (read: false) never (a connection the server closes is made again); resolves with what it
 * sent and how many connections the server closed.
 */
export function tcpQueryFlood(
  nsPath: string,
  name: string,
  opts: { conns: number; secs: number; read: boolean },
): Promise<{ sent: number; closed: number }> {
  const { conns, secs } = opts;
  return new Promise((resolve, reject) =>
    execFile(
      'nsenter',
      [
        `--net=${nsPath}`,
        'python3',
        '-c',
        NON_READER,
        '127.0.0.11',
        name,
        String(conns),
        String(secs),
        opts.read ? 'read' : 'never',
      ],
      { encoding: 'utf8', timeout: (secs + 30) * 1000 },
      (e, out, err) => (e ? reject(new Error(`${e.message}\n${err}`)) : resolve(JSON.parse(out))),
    ),
  );
}

/** Resident set size of a process, in bytes. */
export function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(require('node:fs').readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}
