/**
 * Issue 14, item 7d: a connection setting that points at something other than PostgreSQL (a
 * web server on that port, say) gets one line saying so, naming host:port and the fix, a
 * non-zero exit and nothing written; not "impossible length of 1414811695 bytes" ("TTP/" read
 * as a message length). Real servers on loopback: Node's HTTP server, and a TCP service that
 * greets with an SSH banner.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { snapshotTree } from '../helpers/errors-fixtures';
import { removeDir, tmpDir } from '../helpers/pg-cluster';
import { runWalvault } from '../helpers/walvault';

const EXIT_WITHIN_MS = 15_000;

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

describe('an endpoint that is not PostgreSQL', () => {
  let work: string;
  let web: http.Server;
  let ssh: net.Server;
  let webPort: number;
  let sshPort: number;
  let requests = 0;
  before(async () => {
    work = tmpDir('walvault-not-postgres-');
    web = http.createServer((_req, res) => {
      requests++;
      res.end('hello\n');
    });
    // The SSH protocol: the server sends its identification line first, and closes on garbage.
    ssh = net.createServer((s) => {
      s.write('SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n');
      s.on('data', () => s.end('Invalid SSH identification string.\r\n'));
      s.on('error', () => undefined);
    });
    [webPort, sshPort] = await Promise.all([listen(web), listen(ssh)]);
  });
  after(async () => {
    web?.closeAllConnections();
    await new Promise((r) => web?.close(r));
    await new Promise((r) => ssh?.close(r));
    if (work) removeDir(work);
  });

  const cases: Array<{ name: string; command: string[]; pg: () => string; port: () => number; how: RegExp }> = [
    { name: 'run (one-site form) at an HTTP server', command: ['run'], pg: () => `host=127.0.0.1 port=${webPort} user=walvault`, port: () => webPort, how: /\(it answered like an HTTP server\)/ },
    { name: 'backup push at an HTTP server', command: ['backup', 'push'], pg: () => `host=127.0.0.1 port=${webPort} user=walvault`, port: () => webPort, how: /\(it answered like an HTTP server\)/ },
    {
      name: 'run with sslmode=require at an HTTP server',
      command: ['run'],
      pg: () => `host=127.0.0.1 port=${webPort} user=walvault sslmode=require`,
      port: () => webPort,
      how: /\(it answered like an HTTP server\)/,
    },
    { name: 'backup push at an SSH server', command: ['backup', 'push'], pg: () => `host=127.0.0.1 port=${sshPort} user=walvault`, port: () => sshPort, how: /\(it answered like an SSH server\)/ },
  ];
  for (const c of cases) {
    it(`${c.name}: one line naming it and the fix, non-zero exit, nothing written`, async () => {
      const dir = path.join(work, c.name.replace(/\W+/g, '-'));
      const archive = path.join(dir, 'archive');
      const state = path.join(dir, 'state');
      const started = Date.now();
      const r = await runWalvault([...c.command, '--pg', c.pg(), '--archive', archive, '--state', state], {}, 60_000);
      const elapsed = Date.now() - started;
      const lines = r.stderr.trim().split('\n');
      assert.notEqual(r.code, null, `killed: ${r.stderr}`);
      assert.notEqual(r.code, 0, r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      const line = lines[0];
      assert.match(line, new RegExp(`^walvault: the server at 127\\.0\\.0\\.1:${c.port()} user=walvault is not a PostgreSQL server `));
      assert.match(line, c.how);
      assert.match(line, /point the connection settings \(--pg, or the site's pg\) at PostgreSQL's host and port \(5432/);
      assert.doesNotMatch(line, /impossible length|internal error/);
      assert.ok(elapsed < EXIT_WITHIN_MS, `answered in ${elapsed} ms`);
      assert.equal(snapshotTree(dir), null, 'nothing written');
    });
  }

  it('the web server was only talked to, never sent a request it could parse', () => {
    assert.equal(requests, 0);
  });
});
