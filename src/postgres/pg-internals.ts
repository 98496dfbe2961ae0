/**
 * Every part of `pg` walvault relies on that `pg` does not document, reached through this one
 * module and nowhere else in src/.
 *
 * `pg` and `pg-protocol` (its parser and serializer) are pinned exactly in package.json: each
 * internal below was read in pg PG_PINNED (lib/client.js, lib/connection.js, lib/query.js,
 * lib/crypto/sasl.js) and pg-protocol PG_PROTOCOL_PINNED (dist/index.js, parser.js,
 * messages.js). test/unit/pg-internals.test.ts fails, naming the internal, when an upgrade
 * changes one; checkPgInternals and checkPgConnected do the cheap part of that at every
 * connection, so an install with another `pg` fails at its first connection with one line
 * naming what is missing instead of streaming wrong. How to upgrade: docs/replication-protocol.md,
 * "What walvault relies on in pg".
 *
 * The internals, numbered where they are reached:
 *   I1  client.connection, pg's Connection (pgConnectionOf)
 *   I2  the `stream` option called with the connection's config, its `ssl` (newPgClient)
 *   I3  connection.stream, the socket, replaced by the TLS socket (socketOf)
 *   I4  pg-protocol's parser reads connection.stream's 'data' events (copy-data-tap.ts relies on it)
 *   I5  the connection emits each parsed message under pg-protocol's name (PgMessages)
 *   I6  pg's Client leaves CopyBothResponse, CopyOutResponse and CopyDone alone (MESSAGES_PG_IGNORES)
 *   I7  connection.query, sendCopyFromChunk, endCopyFrom (PgConnection, copyInQuery)
 *   I8  the handlers pg's Client calls on a submittable (copyInQuery)
 *   I9  the `replication` setting goes into the startup packet (REPLICATION_SETTING)
 *   I10 the texts of pg's own errors (PG_ERROR_TEXTS)
 *
 * Documented `pg` API, used directly and not listed here: `new Client(config)` with host,
 * port, user, password, database, ssl, connectionTimeoutMillis, keepAlive, application_name and
 * options; connect(), query(text) (a list of results for several), end(), the 'error' event;
 * client.query(submittable) as such (what the submittable is handed is internal: I7, I8).
 */
import { createRequire } from 'node:module';
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import { Client, Connection, Query, type ClientConfig } from 'pg';
import { WalvaultError } from '../errors';

/** The `pg` every internal below was checked against; package.json pins exactly this one. */
export const PG_PINNED = '8.23.1';
/** The `pg-protocol` that `pg` PG_PINNED parses and serializes with; pinned exactly as well. */
export const PG_PROTOCOL_PINNED = '1.16.1';

/** The socket under a connection: a net.Socket, or the tls.TLSSocket that replaces it. */
export type PgSocket = net.Socket;

/**
 * I5. The backend messages walvault listens for on the connection, by the event name `pg`
 * emits them under (pg-protocol's `msg.name`), with the shapes walvault reads.
 */
export interface PgMessages {
  /** CopyBothResponse ('W'): START_REPLICATION has entered copy-both mode. */
  replicationStart: unknown;
  /** CopyDone ('c'). */
  copyDone: unknown;
  /** CommandComplete ('C'). */
  commandComplete: { text: string };
  /** RowDescription ('T'). */
  rowDescription: { fields: Array<{ name: string }> };
  /** DataRow ('D'): each value as text, null for NULL. */
  dataRow: { fields: Array<string | null> };
  /** CopyOutResponse ('H'). */
  copyOutResponse: unknown;
  /**
   * Not a message: connection.js emits 'end' when its socket closes, before the Client fails
   * the pending query (wal-stream-session.ts tells a server shutdown in copy mode by it).
   */
  end: unknown;
}
export type PgMessageName = keyof PgMessages;

/**
 * I1, I5, I7. The parts of pg's `Connection` (lib/connection.js) walvault uses: an
 * EventEmitter of parsed backend messages, and the writers of CopyData and CopyDone.
 * Its socket is reached through socketOf.
 */
export interface PgConnection {
  on<E extends PgMessageName>(event: E, fn: (msg: PgMessages[E]) => void): unknown;
  removeListener<E extends PgMessageName>(event: E, fn: (msg: PgMessages[E]) => void): unknown;
  /** CopyData ('d') with `chunk` as its body (pg-protocol serialize.copyData). */
  sendCopyFromChunk(chunk: Buffer): void;
  /** CopyDone ('c') (serialize.copyDone). */
  endCopyFrom(): void;
}

/** What a submittable's submit and handleCopyInResponse are handed (I7): the same Connection. */
interface PgWire extends PgConnection {
  /** Query ('Q'), simple protocol (serialize.query). */
  query(text: string): void;
}

/**
 * I1. `client.connection`: the Connection a Client builds in its constructor
 * (client.js: `this.connection = c.connection || new Connection({ stream: c.stream, ssl, ... })`),
 * the one it reads messages from and writes through for its whole life.
 */
export function pgConnectionOf(client: Client): PgConnection {
  return (client as unknown as { connection: PgConnection }).connection;
}

/**
 * I3. `connection.stream`: the socket pg reads and writes. Before connecting, the socket the
 * stream factory made (I2); after an SSLRequest answered 'S', the TLS socket tls.connect made on
 * top of it (connection.js upgradeToSSL: `self.stream = stream.getSecureStream(options)`).
 * pg never pauses or resumes it itself, so walvault may: it pauses it to hold back the server
 * (backpressure), destroys it to abort a BASE_BACKUP (which cannot be cancelled) and on close.
 */
export function socketOf(connection: PgConnection): PgSocket {
  return (connection as unknown as { stream: PgSocket }).stream;
}

/**
 * I2. A Client on a socket walvault makes. `makeSocket(tls)` is told whether TLS will follow
 * (an SSLRequest, then the TLS socket pg makes on top of it): pg documents `stream` only as
 * `() => Duplex`; connection.js calls it, synchronously inside `new Client`, with the
 * Connection's own config, whose `ssl` says so, and keeps the result as `connection.stream`.
 * Checks the shape of what walvault relies on (checkPgInternals) before anything is sent.
 */
export function newPgClient(config: Record<string, unknown>, makeSocket: (tls: boolean) => PgSocket): Client {
  let made: PgSocket | null = null;
  const stream = (connectionConfig: { ssl?: unknown }): PgSocket => (made = makeSocket(Boolean(connectionConfig.ssl)));
  const client = new Client({ ...config, stream } as unknown as ClientConfig);
  checkPgInternals(client);
  need(made !== null && socketOf(pgConnectionOf(client)) === made, 'ClientConfig.stream', "a function called with the connection's config inside new Client, whose result becomes connection.stream");
  return client;
}

/**
 * I7, I8. A COPY FROM STDIN exchange for `client.query(...)`. pg answers a CopyInResponse to
 * its own Query with CopyFail, so the exchange is a submittable pg drives instead: it calls
 * `submit(connection)` when the query's turn comes, then on the running query the handlers
 * client.js names `activeQuery.handleX(...)`, the same set as pg's Query.prototype (checked),
 * handing `connection` to handleCopyInResponse. After handleError it calls nothing more.
 */
export interface CopyInExchange {
  /** CopyInResponse: the server waits for the data, sent with `send` (CopyData), closed with `end` (CopyDone). */
  copyIn(send: (chunk: Buffer) => void, end: () => void): void;
  /** ReadyForQuery after a successful exchange (or one the server ended without asking for data). */
  readyForQuery(): void;
  /** An ErrorResponse, or a broken connection. */
  error(err: Error): void;
}

/** Opaque to the rest of src/: only ReplicationConnection hands it to `client.query`. */
export interface PgSubmittable {
  submit(connection: never): void;
}

export function copyInQuery(sql: string, exchange: CopyInExchange): PgSubmittable {
  return {
    submit(connection: PgWire): void {
      connection.query(sql);
    },
    handleCopyInResponse(connection: PgWire): void {
      exchange.copyIn(
        (chunk) => connection.sendCopyFromChunk(chunk),
        () => connection.endCopyFrom(),
      );
    },
    handleRowDescription(): void {},
    handleDataRow(): void {},
    handleCommandComplete(): void {},
    handleEmptyQuery(): void {},
    handlePortalSuspended(): void {},
    handleCopyData(): void {},
    handleReadyForQuery(): void {
      exchange.readyForQuery();
    },
    handleError(err: Error): void {
      exchange.error(err);
    },
  } as PgSubmittable;
}

/** The handle* methods of a submittable: what pg may call on the running query. */
export function queryHandlers(query: object): string[] {
  const names = new Set<string>();
  for (let o: object | null = query; o && o !== Object.prototype && o !== EventEmitter.prototype; o = Object.getPrototypeOf(o)) {
    for (const n of Object.getOwnPropertyNames(o)) if (n.startsWith('handle')) names.add(n);
  }
  return [...names].sort();
}

/**
 * I9. Makes the connection a physical walsender: connection-parameters.js reads `replication`
 * and client.js getStartupConf puts `replication=true` into the startup packet. pg's Client
 * documentation does not list the setting.
 */
export const REPLICATION_SETTING = { replication: 'true' } as const;

/**
 * I10. Texts of pg's own errors (not the server's) walvault tells causes apart by. SQLSTATEs
 * are used wherever the server sends one; these errors have none.
 */
export const PG_ERROR_TEXTS = {
  /** client.js, connectionTimeoutMillis elapsed: `con.stream.destroy(new Error('timeout expired'))` (older pg: "Connection terminated due to connection timeout"). */
  connectTimeout: /timeout expired|Connection terminated due to connection timeout/i,
  /**
   * crypto/sasl.js "SASL: SCRAM-SERVER-FIRST-MESSAGE: client password must be a string" (SCRAM
   * asked, no password set) and the other SCRAM-SERVER-FIRST-MESSAGE errors; client.js "Password
   * must be a string" (a password function's result).
   */
  noPassword: /client password must be a string|password must be a string|SASL: SCRAM-SERVER-FIRST-MESSAGE/i,
} as const;

/** I6. Messages pg's Client must leave to walvault: it registers no listener for them (client.js _attachListeners). */
export const MESSAGES_PG_IGNORES: readonly PgMessageName[] = ['replicationStart', 'copyOutResponse', 'copyDone'];

/** The CopyInResponse pg does handle, by handing it to the running query (I8). */
const COPY_IN_RESPONSE = 'copyInResponse';

function installedPgVersion(): string {
  try {
    return String((require('pg/package.json') as { version?: unknown }).version);
  } catch {
    return 'unknown';
  }
}

function need(ok: boolean, internal: string, expected: string): void {
  if (ok) return;
  throw new WalvaultError(
    'INTERNAL',
    `pg ${installedPgVersion()} does not provide what walvault relies on: ${internal} (${expected}); walvault is built against pg ${PG_PINNED} exactly ` +
      `(package.json pins it; reinstall with npm ci, or see "What walvault relies on in pg" in docs/replication-protocol.md before upgrading)`,
  );
}

const isFunction = (o: unknown, key: string): boolean => typeof (o as Record<string, unknown> | null | undefined)?.[key] === 'function';

/** One backend message: type byte, Int32 length (counting itself), body. */
export function backendMessage(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** RowDescription and DataRow of one row of text columns. */
export function textRow(row: Record<string, string | null>): Buffer {
  const names = Object.keys(row);
  const description = [Buffer.from([names.length >> 8, names.length & 0xff])];
  for (const name of names) {
    const field = Buffer.alloc(18);
    field.writeUInt32BE(25, 6); // type oid: text
    field.writeInt16BE(-1, 10);
    field.writeInt32BE(-1, 12);
    description.push(Buffer.from(name + '\0'), field);
  }
  const values = [Buffer.from([names.length >> 8, names.length & 0xff])];
  for (const v of Object.values(row)) {
    const len = Buffer.alloc(4);
    len.writeInt32BE(v === null ? -1 : Buffer.byteLength(v));
    values.push(len);
    if (v !== null) values.push(Buffer.from(v));
  }
  return Buffer.concat([backendMessage('T', Buffer.concat(description)), backendMessage('D', Buffer.concat(values))]);
}

let parserChecked = false;

/**
 * I4, I5. The pg-protocol that pg itself loads (resolved from pg's directory) parses whatever a
 * stream's 'data' events carry and names the messages walvault listens for as PgMessages says.
 * Once a process: the parser is a module, not a per-client thing.
 */
function checkParser(): void {
  if (parserChecked) return;
  let protocol: { parse?: (stream: EventEmitter, cb: (msg: Record<string, unknown>) => void) => unknown };
  try {
    protocol = createRequire(require.resolve('pg'))('pg-protocol');
  } catch {
    protocol = {};
  }
  need(isFunction(protocol, 'parse'), "pg-protocol's parse(stream, callback)", 'the parser pg attaches to its socket');
  const source = new EventEmitter();
  const got: Array<Record<string, unknown>> = [];
  protocol.parse!(source, (msg) => got.push(msg));
  source.emit(
    'data',
    Buffer.concat([
      backendMessage('W', Buffer.from([0, 0, 0])),
      backendMessage('c'),
      backendMessage('C', Buffer.from('START_REPLICATION\0')),
      textRow({ next_tli: '2', none: null }),
      backendMessage('H', Buffer.from([0, 0, 0])),
    ]),
  );
  const names = got.map((m) => m.name);
  const expected: PgMessageName[] = ['replicationStart', 'copyDone', 'commandComplete', 'rowDescription', 'dataRow', 'copyOutResponse'];
  need(
    names.join() === expected.join(),
    "pg-protocol's message names",
    `a stream's 'data' parsed into ${expected.join(', ')}; got ${names.join(', ') || 'nothing'}`,
  );
  const description = got[3] as unknown as PgMessages['rowDescription'];
  const row = got[4] as unknown as PgMessages['dataRow'];
  need(
    description.fields?.[0]?.name === 'next_tli' && row.fields?.[0] === '2' && row.fields?.[1] === null,
    "pg-protocol's rowDescription.fields[].name and dataRow.fields[]",
    'column names, and values as text with null for NULL',
  );
  parserChecked = true;
}

/**
 * Checks, before connecting, that `client` (made by newPgClient) has every internal walvault
 * relies on in the shape it relies on; throws WalvaultError('INTERNAL') naming the first one
 * missing and the pinned pg. Cheap: a few property tests, and a few messages parsed once a process.
 */
export function checkPgInternals(client: Client): void {
  const connection = pgConnectionOf(client) as unknown;
  need(connection instanceof Connection && connection instanceof EventEmitter, 'Client#connection', "pg's Connection, an EventEmitter, built by the Client");
  const socket = socketOf(connection as PgConnection) as unknown;
  need(
    ['on', 'listeners', 'removeAllListeners', 'pause', 'resume', 'destroy'].every((m) => isFunction(socket, m)),
    'Connection#stream',
    'the socket pg reads and writes, with on, listeners, removeAllListeners, pause, resume and destroy',
  );
  for (const method of ['query', 'sendCopyFromChunk', 'endCopyFrom']) {
    need(isFunction(connection, method), `Connection#${method}`, 'a method that writes one frontend message');
  }
  const ours = queryHandlers(copyInQuery('', { copyIn() {}, readyForQuery() {}, error() {} }));
  const pgs = queryHandlers(Query.prototype);
  need(
    ours.join() === pgs.join(),
    "the handlers pg's Client calls on a running query (Query.prototype.handle*)",
    `walvault's submittable has ${ours.join(', ')}; pg's Query has ${pgs.join(', ')}`,
  );
  checkParser();
}

/**
 * Checks, once connected (before anything is tapped or queried), what only a connected client
 * shows: pg's parser reads `connection.stream` through its 'data' events (I4), pg's Client leaves
 * CopyBothResponse, CopyOutResponse and CopyDone to walvault (I6) and hands CopyInResponse to the
 * running query (I8).
 */
export function checkPgConnected(client: Client): void {
  const connection = pgConnectionOf(client) as unknown as EventEmitter;
  need(socketOf(connection as unknown as PgConnection).listenerCount('data') > 0, "pg-protocol's parser on connection.stream 'data'", "pg reading its socket through 'data' events");
  for (const name of MESSAGES_PG_IGNORES) {
    need(connection.listenerCount(name) === 0, `pg's Client leaving '${name}' alone`, "no listener of pg's own for it, so copy-both and copy-out go on undisturbed");
  }
  need(connection.listenerCount(COPY_IN_RESPONSE) > 0, `pg's Client handling '${COPY_IN_RESPONSE}'`, 'handed to the running query, the UPLOAD_MANIFEST submittable');
}

/** Listens for `handlers`' messages on `connection` until the returned function is called. */
export function onPgMessages(connection: PgConnection, handlers: { [E in PgMessageName]?: (msg: PgMessages[E]) => void }): () => void {
  const entries = Object.entries(handlers) as Array<[PgMessageName, (msg: unknown) => void]>;
  for (const [name, fn] of entries) connection.on(name, fn);
  return () => {
    for (const [name, fn] of entries) connection.removeListener(name, fn);
  };
}
