/**
 * A test server's settings: the harness's own settings file included from postgresql.conf,
 * pg_hba.conf, and files in a data directory written for the server user.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { serverUser } from './os-users';

/** Test servers listen here only (and on a private Unix socket directory). */
export const HOST = '127.0.0.1';
export const SUPERUSER = 'postgres';
const HARNESS_CONF = 'walvault-harness.conf';

export interface ServerSettings {
  port: number;
  socketDir: string;
  /** Set after (and over) the harness's defaults. */
  settings?: Record<string, string | number>;
}

/** A value as postgresql.conf spells it. */
export function quoteConf(v: string | number): string {
  if (typeof v === 'number') return String(v);
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** Writes `file`, owned by the server user when there is one. */
export function writeServerFile(file: string, text: string): void {
  fs.writeFileSync(file, text);
  const u = serverUser();
  if (u) fs.chownSync(file, u.uid, u.gid);
}

/**
 * Our settings live in an included file rather than being appended to
 * postgresql.conf: a base backup copies both, and a standby or restored copy
 * can then have its port and socket dir replaced instead of piling up lines.
 * `hba` lines come first in pg_hba.conf, before the harness's trust lines.
 */
export function writeClusterConfig(dataDir: string, server: ServerSettings, hba: readonly string[] = []): void {
  const confPath = path.join(dataDir, 'postgresql.conf');
  const conf = fs.readFileSync(confPath, 'utf8');
  const includeLine = `include '${HARNESS_CONF}'`;
  if (!conf.split('\n').some((l) => l.trim() === includeLine)) {
    writeServerFile(confPath, `${conf.replace(/\n?$/, '\n')}${includeLine}\n`);
  }
  writeHarnessConf(dataDir, server);

  const lines = [
    '# written by test/helpers/server-config.ts; the first matching line wins',
    ...hba,
    'local all all trust',
    'host all all 127.0.0.1/32 trust',
    'local replication all trust',
    'host replication all 127.0.0.1/32 trust',
    '',
  ].join('\n');
  writeServerFile(path.join(dataDir, 'pg_hba.conf'), lines);
}

/** (Re)writes the harness's settings file: also when the server moves to another port. */
export function writeHarnessConf(dataDir: string, server: ServerSettings): void {
  const settings: Record<string, string | number> = {
    listen_addresses: HOST,
    port: server.port,
    unix_socket_directories: server.socketDir,
    wal_level: 'replica',
    max_wal_senders: 10,
    max_replication_slots: 10,
    fsync: 'on',
    full_page_writes: 'on',
    synchronous_commit: 'on',
    wal_keep_size: '16MB',
    hot_standby: 'on',
    logging_collector: 'off',
    log_line_prefix: '%m [%p] %q%a ',
    lc_messages: 'C',
    // Many clusters may run at once on a small machine.
    shared_buffers: '32MB',
    max_connections: 50,
    ...(server.settings ?? {}),
  };
  const lines = ['# written by test/helpers/server-config.ts'];
  for (const [k, v] of Object.entries(settings)) lines.push(`${k} = ${quoteConf(v)}`);
  writeServerFile(path.join(dataDir, HARNESS_CONF), `${lines.join('\n')}\n`);
}
