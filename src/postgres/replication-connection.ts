/**
 * A physical replication (walsender) connection on top of `pg`.
 *
 * `pg` does the startup, TLS and SCRAM; we send only simple-protocol queries, because a
 * walsender accepts nothing else. Streaming rides on the pending `START_REPLICATION` query:
 * a CopyDataTap takes the CopyData messages before `pg` parses anything (`pg` still sees the
 * rest): on a plain connection straight off the socket, over TLS off the TLS socket's
 * decrypted reads. What the protocol and `pg` do underneath: docs/replication-protocol.md;
 * every part of `pg` this relies on beyond its documented API is reached through pg-internals.ts.
 */
import * as net from 'node:net';
import type { Client } from 'pg';
import { WalvaultError } from '../errors';
import { formatLsn, parseLsn, parseSegmentSizeSetting, type Lsn } from '../wal/lsn';
import { withTimeout } from '../util/timers';
import { FEATURE_NOT_SUPPORTED, mapPgError, notPostgresError, sqlStateOf, type ConnectTarget } from './connect-errors';
import { foreignAnswer } from './first-answer';
import { tappedSocket, tapStreamReads, type CopyDataTap } from './copy-data-tap';
import {
  checkPgConnected,
  newPgClient,
  pgConnectionOf,
  REPLICATION_SETTING,
  socketOf,
  type PgConnection,
  type PgSubmittable,
} from './pg-internals';
import { WalStreamSession, type StreamHandlers } from './wal-stream-session';

export interface ReplicationConnectOptions {
  /** Connection settings for `pg` (host, port, user, ssl...); `replication` is added here. */
  pg: Record<string, unknown>;
  applicationName: string;
  /** Where and as whom, for error messages; never a password. */
  target: ConnectTarget;
  /** Per-connection wal_sender_timeout override, e.g. '60s'; unset keeps the server's. */
  walSenderTimeout?: string;
}

export interface SystemIdentity {
  systemId: string;
  timeline: number;
  xlogPos: Lsn;
  dbName: string | null;
}

export interface ServerFacts {
  versionNum: number;
  major: number;
  walSegmentSize: number;
  walBlockSize: number;
}

export interface SlotState {
  exists: boolean;
  /** 'physical' or 'logical' (null when it does not exist). */
  type: string | null;
  restartLsn: Lsn | null;
  restartTli: number | null;
}

type Row = Record<string, string | number | null>;

interface PgResult {
  rows: Row[];
}

export function quoteIdent(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}

export class ReplicationConnection {
  private readonly client: Client;
  private lastError: Error | null = null;
  private closed = false;

  private constructor(
    client: Client,
    readonly target: ConnectTarget,
    private readonly tap: CopyDataTap,
  ) {
    this.client = client;
    // An idle client reports socket errors as events; without a listener they would crash us.
    client.on('error', (err: Error) => {
      this.lastError = err;
    });
  }

  static async connect(opts: ReplicationConnectOptions): Promise<ReplicationConnection> {
    const config: Record<string, unknown> = {
      connectionTimeoutMillis: 15000,
      ...opts.pg,
      ...REPLICATION_SETTING,
      application_name: opts.applicationName,
      keepAlive: true,
    };
    if (opts.walSenderTimeout) {
      config.options = `${(config.options as string | undefined) ?? ''} -c wal_sender_timeout=${opts.walSenderTimeout}`.trim();
    }
    let tap: CopyDataTap | null = null;
    // What the endpoint sent first: when the connection fails, it tells a wrong port (an HTTP
    // or SSH server...) from a PostgreSQL that refused.
    let first: Buffer | null = null;
    let sslRequested = false;
    const keepFirst = (bytes: Buffer) => {
      first ??= bytes;
    };
    const client = newPgClient(config, (tls) => {
      if (tls) {
        sslRequested = true;
        const socket = new net.Socket();
        socket.prependOnceListener('data', (b: Buffer) => keepFirst(Buffer.from(b.subarray(0, 64))));
        return socket;
      }
      const tapped = tappedSocket(keepFirst);
      tap = tapped.tap;
      return tapped.socket;
    });
    try {
      await client.connect();
      checkPgConnected(client);
    } catch (err) {
      client.removeAllListeners();
      try {
        await client.end();
      } catch {
        /* the socket is gone already */
      }
      const foreign = first ? foreignAnswer(first, sslRequested) : null;
      throw foreign ? notPostgresError(opts.target, foreign, err) : mapPgError(err, opts.target);
    }
    // Over TLS, `pg` has put its parser on the TLS socket it made: the tap goes in front of it.
    tap ??= tapStreamReads(socketOf(pgConnectionOf(client)));
    return new ReplicationConnection(client, opts.target, tap);
  }

  get connection(): PgConnection {
    return pgConnectionOf(this.client);
  }

  async command(sql: string): Promise<PgResult[]> {
    try {
      const res = (await this.client.query(sql)) as unknown as PgResult | PgResult[];
      return Array.isArray(res) ? res : [res];
    } catch (err) {
      throw mapPgError(err, this.target);
    }
  }

  private async singleRow(sql: string): Promise<Row> {
    const results = await this.command(sql);
    const row = results.find((r) => r.rows && r.rows.length > 0)?.rows[0];
    if (!row) throw new WalvaultError('PG_PROTOCOL', `${sql} returned no row from ${this.target.description}`);
    return row;
  }

  async identifySystem(): Promise<SystemIdentity> {
    const row = await this.singleRow('IDENTIFY_SYSTEM');
    return {
      systemId: String(row.systemid),
      timeline: Number(row.timeline),
      xlogPos: parseLsn(String(row.xlogpos)),
      dbName: row.dbname === null || row.dbname === undefined ? null : String(row.dbname),
    };
  }

  async show(setting: string): Promise<string> {
    const row = await this.singleRow(`SHOW ${setting}`);
    return String(Object.values(row)[0]);
  }

  async serverFacts(): Promise<ServerFacts> {
    const versionNum = Number(await this.show('server_version_num'));
    const walSegmentSize = parseSegmentSizeSetting(await this.show('wal_segment_size'));
    const walBlockSize = Number(await this.show('wal_block_size'));
    return { versionNum, major: Math.floor(versionNum / 10000), walSegmentSize, walBlockSize };
  }

  /** The history file of `tli` exactly as the server holds it. */
  async timelineHistory(tli: number): Promise<{ fileName: string; content: Buffer }> {
    const row = await this.singleRow(`TIMELINE_HISTORY ${tli}`);
    // pg decodes the text column as UTF-8; history files are UTF-8 text, so re-encoding
    // restores the server's bytes.
    return { fileName: String(row.filename), content: Buffer.from(String(row.content), 'utf8') };
  }

  /** READ_REPLICATION_SLOT exists from PostgreSQL 15; older servers report exists=unknown (null). */
  async readSlot(name: string, major: number): Promise<SlotState | null> {
    if (major < 15) return null;
    let row: Row;
    try {
      row = await this.singleRow(`READ_REPLICATION_SLOT ${quoteIdent(name)}`);
    } catch (err) {
      // The server's one refusal of READ_REPLICATION_SLOT with 0A000 (feature not supported)
      // is a logical slot of that name.
      if (sqlStateOf(err) === FEATURE_NOT_SUPPORTED) return { exists: true, type: 'logical', restartLsn: null, restartTli: null };
      throw err;
    }
    if (row.slot_type === null || row.slot_type === undefined) return { exists: false, type: null, restartLsn: null, restartTli: null };
    return {
      exists: true,
      type: String(row.slot_type),
      restartLsn: row.restart_lsn ? parseLsn(String(row.restart_lsn)) : null,
      restartTli: row.restart_tli === null || row.restart_tli === undefined ? null : Number(row.restart_tli),
    };
  }

  /** Creates the physical slot with RESERVE_WAL; returns false when it already exists. */
  async createPhysicalSlot(name: string, major: number): Promise<boolean> {
    const sql =
      major >= 15
        ? `CREATE_REPLICATION_SLOT ${quoteIdent(name)} PHYSICAL (RESERVE_WAL)`
        : `CREATE_REPLICATION_SLOT ${quoteIdent(name)} PHYSICAL RESERVE_WAL`;
    try {
      await this.command(sql);
      return true;
    } catch (err) {
      const cause = (err as WalvaultError).cause as { code?: string } | undefined;
      if (cause?.code === '42710') return false; // duplicate_object: the slot is there already
      throw err;
    }
  }

  /**
   * Drops the slot. The walsender a failed stream leaves behind may hold it for a moment:
   * "is active" (55006) is tried again until `waitMs` has passed.
   */
  async dropSlot(name: string, waitMs = 10000): Promise<void> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        await this.command(`DROP_REPLICATION_SLOT ${quoteIdent(name)}`);
        return;
      } catch (err) {
        const cause = (err as WalvaultError).cause as { code?: string } | undefined;
        if (cause?.code === '42704') return; // undefined_object: gone already
        if (cause?.code !== '55006' || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /**
   * Starts streaming. Resolves `session.done` when the timeline ends, the server shuts
   * down, or we stop; rejects on any error.
   */
  startReplication(opts: { slot?: string; start: Lsn; timeline: number }, handlers: StreamHandlers): WalStreamSession {
    const slotPart = opts.slot ? `SLOT ${quoteIdent(opts.slot)} ` : '';
    const sql = `START_REPLICATION ${slotPart}PHYSICAL ${formatLsn(opts.start)} TIMELINE ${opts.timeline}`;
    const session = new WalStreamSession(this.connection, handlers, opts.start, (consumer) => this.subscribeCopyData(consumer));
    const query = this.client.query(sql) as unknown as Promise<PgResult | PgResult[]>;
    session.attach(
      query.then((r) => (Array.isArray(r) ? r : [r])),
      (err) => mapPgError(err, this.target, 'START_REPLICATION'),
    );
    return session;
  }

  /** Sends `sql` as a simple query; the raw outcome of `pg`, for commands driven through events. */
  rawQuery(sql: string): Promise<unknown> {
    return this.client.query(sql) as unknown as Promise<unknown>;
  }

  /** Queues a query object `pg` drives through its handle* methods (pg-internals copyInQuery). */
  submit(submittable: PgSubmittable): void {
    this.client.query(submittable as never);
  }

  /** Routes CopyData bodies (views valid only during the call) to `consumer` until the returned function is called. */
  subscribeCopyData(consumer: (body: Buffer) => void): () => void {
    this.tap.arm(consumer);
    return () => this.tap.disarm();
  }

  get brokenBy(): Error | null {
    return this.lastError;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await withTimeout(this.client.end(), 2000);
    } catch {
      /* closing a broken connection */
    }
    try {
      socketOf(this.connection).destroy();
    } catch {
      /* already destroyed */
    }
  }
}
