/**
 * What walvault relies on in `pg` beyond its documented API (src/postgres/pg-internals.ts,
 * I1..I10), checked against the `pg` installed here. When a `pg` upgrade changes one of them,
 * the assertion that fails names it: update pg-internals.ts (and what uses it) to the new `pg`,
 * the pins in package.json, and this test. docs/replication-protocol.md, "What walvault relies
 * on in pg", has the procedure.
 *
 * Three parts: the pin itself; the internals on a fresh Client, without any server; and the
 * behaviour walvault needs, against a fake walsender on a local TCP port (the real servers are
 * in the integration tests: streaming, base-backup, incremental-backup, errors).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { PassThrough } from 'node:stream';
import { Client, Connection, Query } from 'pg';
import { isWalvaultError } from '../../src/errors';
import {
  backendMessage,
  checkPgConnected,
  checkPgInternals,
  copyInQuery,
  MESSAGES_PG_IGNORES,
  newPgClient,
  PG_ERROR_TEXTS,
  PG_PINNED,
  PG_PROTOCOL_PINNED,
  pgConnectionOf,
  queryHandlers,
  socketOf,
  textRow,
  type PgSocket,
} from '../../src/postgres/pg-internals';
import { ReplicationConnection } from '../../src/postgres/replication-connection';
import { uploadManifest } from '../../src/postgres/upload-manifest';
import { runBaseBackup, TAR_END, type BaseBackupSink } from '../../src/postgres/base-backup-stream';
import { formatLsn, parseLsn } from '../../src/wal/lsn';

const ROOT = path.join(__dirname, '..', '..', '..');
const PG_DIR = path.dirname(require.resolve('pg/package.json'));

function readJson(file: string): any {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** The version of the package `name` that `req` loads (pg-protocol exports no package.json: found from its main file). */
function installedVersion(name: string, req: NodeRequire = require): string {
  for (let dir = path.dirname(req.resolve(name)); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file) && readJson(file).name === name) return readJson(file).version;
  }
  throw new Error(`no package.json found for ${name}`);
}

/** A Client on an unconnected socket, made as walvault makes them. */
function freshClient(config: Record<string, unknown> = {}): Client {
  return newPgClient(config, () => new net.Socket());
}

/** Runs `fn`, which must fail with WalvaultError('INTERNAL') naming `internal` and the pinned pg. */
function assertFailsNaming(fn: () => void, internal: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isWalvaultError(err, 'INTERNAL'), `an INTERNAL WalvaultError, got ${String(err)}`);
    assert.ok(err.message.includes(internal), `the message names ${internal}: ${err.message}`);
    assert.ok(err.message.includes(`pg ${PG_PINNED} exactly`), `the message names the pinned pg: ${err.message}`);
    assert.doesNotMatch(err.message, /\n/, 'one line');
    return true;
  });
}

describe('pg is pinned exactly', () => {
  const pkg = readJson(path.join(ROOT, 'package.json'));
  const lock = readJson(path.join(ROOT, 'package-lock.json'));

  for (const [name, pinned] of [
    ['pg', PG_PINNED],
    ['pg-protocol', PG_PROTOCOL_PINNED],
  ] as const) {
    test(`${name}: package.json, package-lock.json, the installed copy and pg-internals.ts agree on ${pinned}`, () => {
      assert.equal(pkg.dependencies[name], pinned, `package.json pins ${name} exactly (no ^ or ~) to the version pg-internals.ts was checked against`);
      assert.equal(lock.packages[''].dependencies[name], pinned, `package-lock.json's root entry pins ${name} as package.json does`);
      assert.equal(lock.packages[`node_modules/${name}`].version, pinned, `package-lock.json locks ${name} at the pin`);
      assert.equal(installedVersion(name), pinned, `the installed ${name} is the pinned one: run npm ci, or re-check pg-internals.ts against it`);
    });
  }

  test('docs/replication-protocol.md names the pin and every internal', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'replication-protocol.md'), 'utf8');
    const section = doc.slice(doc.indexOf('## 9. What walvault relies on in pg'));
    assert.ok(section.length > 100, 'the section "What walvault relies on in pg" exists');
    assert.ok(section.includes(`\`pg\` ${PG_PINNED}`) && section.includes(`\`pg-protocol\` ${PG_PROTOCOL_PINNED}`), 'the section names the pinned versions');
    const source = fs.readFileSync(path.join(ROOT, 'src', 'postgres', 'pg-internals.ts'), 'utf8');
    const internals = [...new Set([...source.matchAll(/\bI(\d+)\b/g)].map((m) => Number(m[1])))].sort((a, b) => a - b);
    assert.deepEqual(internals, Array.from({ length: internals.length }, (_, i) => i + 1), 'pg-internals.ts numbers its internals I1, I2, ...');
    for (const n of internals) assert.match(section, new RegExp(`^\\| I${n} \\|`, 'm'), `the section lists I${n}`);
  });

  test("the pg-protocol pg itself loads is the pinned one (pg's parser and serializer)", () => {
    const fromPg = createRequire(path.join(PG_DIR, 'lib', 'connection.js'));
    assert.equal(fromPg.resolve('pg-protocol'), require.resolve('pg-protocol'), 'pg uses the top-level pg-protocol, not a copy of its own');
    assert.equal(installedVersion('pg-protocol', fromPg), PG_PROTOCOL_PINNED, "pg's pg-protocol is the pinned version");
    assert.match(fs.readFileSync(path.join(PG_DIR, 'lib', 'connection.js'), 'utf8'), /require\('pg-protocol'\)/, "pg's Connection parses and serializes with pg-protocol");
  });
});

describe('the internals on a fresh Client (no server)', () => {
  test('I1 Client#connection: the pg Connection, an EventEmitter', () => {
    const connection = pgConnectionOf(freshClient()) as unknown;
    assert.ok(connection instanceof Connection, 'Client#connection is a pg.Connection');
    assert.ok(connection instanceof EventEmitter, 'Client#connection is an EventEmitter');
  });

  test("I2 ClientConfig.stream: called inside new Client with the connection's config, ssl telling TLS", () => {
    for (const ssl of [undefined, true, { rejectUnauthorized: false }]) {
      const seen: boolean[] = [];
      let made: PgSocket | null = null;
      const client = newPgClient(ssl === undefined ? {} : { ssl }, (tls) => {
        seen.push(tls);
        return (made = new net.Socket());
      });
      assert.deepEqual(seen, [ssl !== undefined], `ClientConfig.stream called once, synchronously, with ssl ${ssl === undefined ? 'unset' : 'set'}`);
      assert.equal(socketOf(pgConnectionOf(client)), made, 'ClientConfig.stream: its result becomes connection.stream');
    }
  });

  test('I3 Connection#stream: the socket, which walvault pauses, resumes and destroys', () => {
    const socket = socketOf(pgConnectionOf(freshClient()));
    for (const m of ['pause', 'resume', 'destroy', 'on', 'listeners', 'removeAllListeners'] as const) {
      assert.equal(typeof socket[m], 'function', `Connection#stream.${m}`);
    }
    assert.equal(socket.listenerCount('data'), 0, "pg attaches its parser at connect, not before: checkPgConnected looks for it then");
  });

  test('I7 Connection#query, #sendCopyFromChunk, #endCopyFrom: write Query, CopyData, CopyDone', () => {
    const wire = new PassThrough();
    const client = new Client({ stream: () => wire } as never);
    const connection = pgConnectionOf(client) as unknown as { query(t: string): void; sendCopyFromChunk(b: Buffer): void; endCopyFrom(): void };
    connection.query('UPLOAD_MANIFEST');
    assert.deepEqual(wire.read(), backendMessage('Q', Buffer.from('UPLOAD_MANIFEST\0')), 'Connection#query writes a simple-protocol Query');
    connection.sendCopyFromChunk(Buffer.from('manifest bytes'));
    assert.deepEqual(wire.read(), backendMessage('d', Buffer.from('manifest bytes')), 'Connection#sendCopyFromChunk writes CopyData with the chunk as its body');
    connection.endCopyFrom();
    assert.deepEqual(wire.read(), backendMessage('c'), 'Connection#endCopyFrom writes CopyDone');
  });

  test("I8 the handlers pg's Client calls on a running query: the UPLOAD_MANIFEST submittable has every one", () => {
    const ours = queryHandlers(copyInQuery('', { copyIn() {}, readyForQuery() {}, error() {} }));
    assert.deepEqual(queryHandlers(Query.prototype), ours, "pg's Query.prototype.handle* and walvault's submittable (pg-internals copyInQuery) have the same handlers");
    // What client.js calls, read off its text: a handler walvault's submittable lacked would
    // throw inside pg's parser callback.
    const clientJs = fs.readFileSync(path.join(PG_DIR, 'lib', 'client.js'), 'utf8');
    const called = [...new Set([...clientJs.matchAll(/\b(?:activeQuery|query)\.(handle\w+)\(/g)].map((m) => m[1]))].sort();
    assert.ok(called.length >= 5, "client.js calls handlers on the running query as activeQuery.handleX(...)");
    for (const h of called) assert.ok(ours.includes(h), `pg's Client calls ${h} on a running query; walvault's submittable (copyInQuery) lacks it`);
    assert.match(clientJs, /activeQuery\.handleCopyInResponse\(this\.connection\)/, "pg's Client hands the connection to handleCopyInResponse");
    assert.match(clientJs, /activeQuery\.submit\(this\.connection\)/, "pg's Client hands the connection to submit");
  });

  test("I4, I5 pg's Connection hands its stream's 'data' to pg-protocol and emits each message by name", () => {
    const connectionJs = fs.readFileSync(path.join(PG_DIR, 'lib', 'connection.js'), 'utf8');
    assert.match(connectionJs, /parse\(stream, \(msg\) => \{/, "I4: Connection#attachListeners gives its stream to pg-protocol's parse");
    assert.match(connectionJs, /const eventName = msg\.name === 'error' \? 'errorMessage' : msg\.name/, "I5: Connection emits each message under pg-protocol's msg.name");
    const protocolJs = fs.readFileSync(require.resolve('pg-protocol'), 'utf8');
    assert.match(protocolJs, /stream\.on\('data', \(buffer\) => parser\.parse\(buffer, callback\)\)/, "I4: pg-protocol's parse reads the stream's 'data' events");
    const { parse } = require('pg-protocol') as { parse(s: EventEmitter, cb: (m: any) => void): unknown };
    const source = new EventEmitter();
    const got: any[] = [];
    parse(source, (m) => got.push(m));
    source.emit('data', Buffer.concat([backendMessage('W', Buffer.from([0, 0, 0])), backendMessage('c'), backendMessage('H', Buffer.from([0, 0, 0])), backendMessage('C', Buffer.from('SELECT 1\0'))]));
    source.emit('data', textRow({ a: 'x', b: null }));
    assert.deepEqual(
      got.map((m) => m.name),
      ['replicationStart', 'copyDone', 'copyOutResponse', 'commandComplete', 'rowDescription', 'dataRow'],
      'I5: pg-protocol names CopyBothResponse replicationStart, CopyDone copyDone, CopyOutResponse copyOutResponse',
    );
    assert.deepEqual(got[4].fields.map((f: { name: string }) => f.name), ['a', 'b'], 'I5: rowDescription.fields[].name');
    assert.deepEqual(got[5].fields, ['x', null], 'I5: dataRow.fields, text values and null');
  });

  test('checkPgInternals passes on a Client walvault makes', () => {
    checkPgInternals(freshClient());
  });

  test('checkPgInternals fails loudly, naming the internal, when one is missing', () => {
    const withoutConnection = freshClient();
    delete (withoutConnection as unknown as { connection?: unknown }).connection;
    assertFailsNaming(() => checkPgInternals(withoutConnection), 'Client#connection');

    for (const method of ['sendCopyFromChunk', 'endCopyFrom', 'query']) {
      const client = freshClient();
      (pgConnectionOf(client) as unknown as Record<string, unknown>)[method] = undefined;
      assertFailsNaming(() => checkPgInternals(client), `Connection#${method}`);
    }

    const withoutPause = freshClient();
    (socketOf(pgConnectionOf(withoutPause)) as unknown as Record<string, unknown>).pause = undefined;
    assertFailsNaming(() => checkPgInternals(withoutPause), 'Connection#stream');

    // A pg whose Query gained a handler (pg would call it on walvault's submittable too).
    const added = 'handleCopyOutResponse';
    (Query.prototype as unknown as Record<string, unknown>)[added] = () => {};
    try {
      assertFailsNaming(() => checkPgInternals(freshClient()), 'Query.prototype.handle*');
    } finally {
      delete (Query.prototype as unknown as Record<string, unknown>)[added];
    }

    // A socket without what walvault calls on it.
    assertFailsNaming(() => newPgClient({}, () => ({}) as PgSocket), 'Connection#stream');
  });
});

// ---------------------------------------------------------------------------------------------
// A fake walsender: enough of the backend side of the protocol for pg and walvault.

interface Frontend {
  type: string;
  body: Buffer;
}

interface FakeBackend {
  port: number;
  /** The StartupMessage's parameters. */
  startup: Promise<Record<string, string>>;
  close(): Promise<void>;
}

type Greeting = 'ok' | 'silent' | 'scram';

/** `onMessage` gets every frontend message after the startup; `reply` writes to the client. */
async function fakeBackend(greeting: Greeting, onMessage: (m: Frontend, reply: (b: Buffer) => void, socket: net.Socket) => void = () => {}): Promise<FakeBackend> {
  let gotStartup!: (p: Record<string, string>) => void;
  const startup = new Promise<Record<string, string>>((r) => (gotStartup = r));
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let pending = Buffer.alloc(0);
    let started = false;
    const reply = (b: Buffer) => socket.write(b);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        if (!started) {
          if (pending.length < 4 || pending.length < pending.readUInt32BE(0)) return;
          const len = pending.readUInt32BE(0);
          const parts = pending.subarray(8, len).toString('utf8').split('\0');
          pending = pending.subarray(len);
          started = true;
          const params: Record<string, string> = {};
          for (let i = 0; i + 1 < parts.length && parts[i]; i += 2) params[parts[i]] = parts[i + 1];
          gotStartup(params);
          if (greeting === 'ok') reply(Buffer.concat([backendMessage('R', Buffer.alloc(4)), backendMessage('Z', Buffer.from('I'))]));
          if (greeting === 'scram') {
            const body = Buffer.concat([Buffer.from([0, 0, 0, 10]), Buffer.from('SCRAM-SHA-256\0\0')]);
            reply(backendMessage('R', body));
          }
          continue;
        }
        if (pending.length < 5 || pending.length < 1 + pending.readUInt32BE(1)) return;
        const len = pending.readUInt32BE(1);
        const m = { type: String.fromCharCode(pending[0]), body: Buffer.from(pending.subarray(5, 1 + len)) };
        pending = pending.subarray(1 + len);
        if (greeting === 'scram' && m.type === 'p') {
          // SASLContinue with a server-first-message: pg needs the password from here on.
          reply(backendMessage('R', Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from('r=abc,s=c2FsdA==,i=4096')])));
          continue;
        }
        if (m.type === 'X') return;
        onMessage(m, reply, socket);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    startup,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

const target = { description: 'fake walsender', user: 'walvault' };

/** Runs `run` on a ReplicationConnection to a fake walsender answering with `onMessage`. */
async function withWalsender(
  onMessage: Parameters<typeof fakeBackend>[1],
  run: (conn: ReplicationConnection, startup: Promise<Record<string, string>>) => Promise<void>,
): Promise<void> {
  const fake = await fakeBackend('ok', onMessage);
  const conn = await ReplicationConnection.connect({
    pg: { host: '127.0.0.1', port: fake.port, user: 'walvault', database: 'replication' },
    applicationName: 'walvault_test',
    target,
  });
  try {
    await run(conn, fake.startup);
  } finally {
    await conn.close();
    await fake.close();
  }
}

const queryText = (m: Frontend) => m.body.toString('utf8').replace(/\0$/, '');
const done = (tag: string) => Buffer.concat([backendMessage('C', Buffer.from(tag + '\0')), backendMessage('Z', Buffer.from('I'))]);

describe('the behaviour walvault needs of pg, against a fake walsender', () => {
  test('I9, I4, I6: the startup asks for a walsender; once connected pg reads through the tap and leaves copy messages alone', async () => {
    await withWalsender(undefined, async (conn, startupPacket) => {
      const startup = await startupPacket;
      assert.equal(startup.replication, 'true', 'I9: the `replication` setting reaches the startup packet');
      assert.equal(startup.application_name, 'walvault_test');
      const connection = conn.connection as unknown as EventEmitter;
      for (const name of MESSAGES_PG_IGNORES) assert.equal(connection.listenerCount(name), 0, `I6: pg's Client has no listener of its own for '${name}'`);
    });
  });

  test('checkPgConnected fails loudly when pg handles a message walvault takes', async () => {
    const fake = await fakeBackend('ok');
    const client = newPgClient({ host: '127.0.0.1', port: fake.port, user: 'walvault' }, () => new net.Socket());
    try {
      await client.connect();
      checkPgConnected(client);
      pgConnectionOf(client).on('copyDone', () => {});
      assertFailsNaming(() => checkPgConnected(client), "pg's Client leaving 'copyDone' alone");
    } finally {
      await client.end();
      await fake.close();
    }
  });

  test('I3, I5, I7: START_REPLICATION to the end of a timeline (copy-both, status update, CopyDone, the next timeline row)', async () => {
    const start = parseLsn('0/3000000');
    const wal = Buffer.alloc(70000, 0x5a);
    const fromClient: Frontend[] = [];
    const onMessage = (m: Frontend, reply: (b: Buffer) => void): void => {
      fromClient.push(m);
      if (m.type === 'Q') {
        const header = Buffer.alloc(25);
        header[0] = 0x77;
        header.writeBigUInt64BE(start, 1);
        header.writeBigUInt64BE(start + BigInt(wal.length), 9);
        const keepalive = Buffer.alloc(18);
        keepalive[0] = 0x6b;
        reply(Buffer.concat([backendMessage('W', Buffer.from([0, 0, 0])), backendMessage('d', Buffer.concat([header, wal])), backendMessage('d', keepalive), backendMessage('c')]));
      } else if (m.type === 'c') {
        reply(Buffer.concat([textRow({ next_tli: '2', next_tli_startpos: '0/3011170' }), done('START_STREAMING')]));
      }
    };
    await withWalsender(onMessage, async (conn) => {
      const received: Buffer[] = [];
      let keepalives = 0;
      let started = false;
      const session = conn.startReplication(
        { start, timeline: 1 },
        {
          onStart: () => (started = true),
          onXLogData: (h, payload) => {
            assert.equal(h.dataStart, start);
            received.push(Buffer.from(payload));
          },
          onKeepalive: () => keepalives++,
          finalPositions: () => ({ write: start + BigInt(wal.length), flush: start, apply: start }),
        },
      );
      const end = await session.done;
      assert.deepEqual(fromClient.filter((m) => m.type === 'Q').map(queryText), [`START_REPLICATION PHYSICAL ${formatLsn(start)} TIMELINE 1`]);
      assert.deepEqual(end, { kind: 'end-of-timeline', nextTli: 2, nextTliStart: parseLsn('0/3011170') }, "the next timeline's row comes through pg's result");
      assert.ok(started, "I5: 'replicationStart' (CopyBothResponse) reached walvault");
      assert.deepEqual(Buffer.concat(received), wal, 'the XLogData came through the tap whole');
      assert.equal(keepalives, 1);
      const copyData = fromClient.filter((m) => m.type === 'd');
      assert.equal(copyData.length, 1, 'I7: one status update (sendCopyFromChunk) before our CopyDone');
      assert.equal(copyData[0].body[0], 0x72, "the status update is an 'r' message");
      assert.equal(copyData[0].body.readBigUInt64BE(1), start + BigInt(wal.length));
      assert.ok(fromClient.some((m) => m.type === 'c'), "I7: walvault's CopyDone (endCopyFrom) answered the server's");
    });
  });

  test('I7, I8: UPLOAD_MANIFEST through the submittable (CopyInResponse, CopyData in chunks, CopyDone)', async () => {
    const manifest = Buffer.alloc(150000, 0x7b);
    const got: Buffer[] = [];
    const queries: string[] = [];
    const onMessage = (m: Frontend, reply: (b: Buffer) => void): void => {
      if (m.type === 'Q') {
        queries.push(queryText(m));
        if (queryText(m) === 'UPLOAD_MANIFEST') reply(backendMessage('G', Buffer.from([0, 0, 0])));
        else reply(Buffer.concat([textRow({ wal_segment_size: '16MB' }), done('SHOW')]));
      } else if (m.type === 'd') {
        got.push(m.body);
      } else if (m.type === 'c') {
        reply(done('UPLOAD_MANIFEST'));
      }
    };
    await withWalsender(onMessage, async (conn) => {
      await uploadManifest(conn, manifest);
      assert.ok(got.length > 1, 'the manifest went in several CopyData messages');
      assert.deepEqual(Buffer.concat(got), manifest, 'the server got the manifest whole');
      assert.equal(await conn.show('wal_segment_size'), '16MB', "pg's Client is ready for the next query after the exchange");
      assert.deepEqual(queries, ['UPLOAD_MANIFEST', 'SHOW wal_segment_size']);
    });
  });

  for (const major of [14, 15]) {
    test(`I3, I5: BASE_BACKUP (${major}) through rowDescription, dataRow, copyOutResponse, copyDone and the tap`, async () => {
      const tar = Buffer.alloc(3000, 0x61);
      const manifestText = Buffer.from('{"PostgreSQL-Backup-Manifest-Version": 2}');
      const copy = (type: string, ...parts: Buffer[]) => backendMessage('d', Buffer.concat([Buffer.from(type), ...parts]));
      const copyOut = backendMessage('H', Buffer.from([0, 0, 0]));
      const select = backendMessage('C', Buffer.from('SELECT 1\0'));
      // 13 and 14: one COPY OUT per archive and one for the manifest; 15+: one, typed CopyData.
      const archives =
        major < 15
          ? [copyOut, backendMessage('d', tar), backendMessage('c'), copyOut, backendMessage('d', manifestText), backendMessage('c')]
          : [copyOut, copy('n', Buffer.from('base.tar\0\0')), copy('d', tar), copy('p', Buffer.from([0, 0, 0, 0, 0, 0, 0x0b, 0xb8])), copy('m'), copy('d', manifestText), backendMessage('c')];
      const onMessage = (m: Frontend, reply: (b: Buffer) => void): void => {
        if (m.type !== 'Q') return;
        reply(
          Buffer.concat([
            textRow({ recptr: '0/4000028', tli: '1' }),
            select,
            textRow({ spcoid: null, spclocation: null, size: '3' }),
            select,
            ...archives,
            textRow({ recptr: '0/4000100', tli: '1' }),
            done('SELECT 1'),
          ]),
        );
      };
      await withWalsender(onMessage, async (conn) => {
        const archive: Buffer[] = [];
        const manifest: Buffer[] = [];
        const events: string[] = [];
        const sink: BaseBackupSink = {
          start: () => events.push('start'),
          tablespaces: (rows) => events.push(`tablespaces ${rows.length}`),
          archiveStart: (name) => void events.push(`archive ${name}`),
          archiveData: (c) => void archive.push(Buffer.from(c)),
          archiveEnd: () => void events.push('archive end'),
          manifestData: (c) => void manifest.push(Buffer.from(c)),
          progress: () => {},
        };
        const result = await runBaseBackup(conn, major, { label: 't', fastCheckpoint: true }, sink);
        // Up to 14 the archive ends at its COPY OUT's CopyDone, from 15 at the manifest's 'm'.
        assert.deepEqual(events, ['start', 'tablespaces 1', 'archive base.tar', 'archive end'], 'I5: rowDescription, dataRow, copyOutResponse and copyDone reached walvault in order');
        assert.equal(result.start.lsn, parseLsn('0/4000028'));
        assert.equal(result.stop.lsn, parseLsn('0/4000100'));
        assert.deepEqual(Buffer.concat(archive), major < 15 ? Buffer.concat([tar, TAR_END]) : tar);
        assert.deepEqual(Buffer.concat(manifest), manifestText);
      });
    });
  }

  test("I10: the texts of pg's own errors that connect-errors.ts and wal-stream-session.ts read", async () => {
    const failure = async (greeting: Greeting, config: Record<string, unknown>, after?: (c: Client) => Promise<unknown>): Promise<string> => {
      const fake = await fakeBackend(greeting, (m, _reply, socket) => {
        if (m.type === 'Q') socket.destroy();
      });
      const client = new Client({ host: '127.0.0.1', port: fake.port, user: 'walvault', ...config });
      client.on('error', () => {});
      try {
        await client.connect();
        await after?.(client);
        return 'no error';
      } catch (err) {
        return (err as Error).message;
      } finally {
        // Not awaited: after a failed connect, end() may wait for an 'end' pg has emitted already.
        void client.end().catch(() => {});
        await fake.close();
      }
    };
    const timeout = await failure('silent', { connectionTimeoutMillis: 200 });
    assert.match(timeout, PG_ERROR_TEXTS.connectTimeout, `PG_ERROR_TEXTS.connectTimeout: pg's connection timeout says "${timeout}"`);

    const saved = { PGPASSWORD: process.env.PGPASSWORD, PGPASSFILE: process.env.PGPASSFILE };
    delete process.env.PGPASSWORD;
    process.env.PGPASSFILE = path.join(ROOT, 'no-such-pgpass');
    try {
      const noPassword = await failure('scram', {});
      assert.match(noPassword, PG_ERROR_TEXTS.noPassword, `PG_ERROR_TEXTS.noPassword: SCRAM without a password says "${noPassword}"`);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }

    // PgMessages.end: the connection says its socket closed before the pending query fails.
    let endBeforeFailure = false;
    const ended = await failure('ok', {}, async (c) => {
      let sawEnd = false;
      (c as unknown as { connection: EventEmitter }).connection.on('end', () => (sawEnd = true));
      await c.query('IDENTIFY_SYSTEM').catch((err) => {
        endBeforeFailure = sawEnd;
        throw err;
      });
    });
    assert.notEqual(ended, 'no error');
    assert.ok(endBeforeFailure, "PgMessages.end: pg's connection emits 'end' when its socket closes, before the query under it fails");
  });
});
