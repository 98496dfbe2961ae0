/**
 * `walvault restore`: a complete backup into TARGET_DIR, verified, with recovery settings
 * whose restore_command calls this walvault by absolute path with the same archive.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openSiteReader } from '../archive/site-archive';
import { WalvaultError } from '../errors';
import { createLogger } from '../observe/logger';
import { formatBytes } from '../observe/progress';
import { prefetchShortcut } from '../restore/prefetch';
import { checkTarget, hasTarget, shellWord, targetAction, type RecoveryTarget } from '../restore/recovery-settings';
import { archiveFromOptions } from './archive-option';

export interface RestoreCliOptions {
  config?: string;
  site?: string;
  archive?: string;
  privateKey?: string;
  backup?: string;
  targetTime?: string;
  targetLsn?: string;
  targetXid?: string;
  targetName?: string;
  targetImmediate?: boolean;
  targetAction?: 'promote' | 'pause' | 'shutdown';
  targetTimeline?: string;
  standby?: boolean;
  primaryConninfo?: string;
  archiveMode?: 'off' | 'preserve';
  tablespaceMap?: string[];
  force?: boolean;
  delta?: boolean;
  /** commander: true unless --no-serve-partial */
  servePartial?: boolean;
  /** wal-fetch --accept-gap: recovery ends at a gap instead of stopping there. */
  acceptGap?: boolean;
  /** Segments wal-fetch keeps ready ahead (default '8'). */
  prefetch?: string;
}

function tablespaceMap(items: string[] | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const item of items ?? []) {
    const m = /^([0-9]+)=(.+)$/.exec(item);
    if (!m) throw new WalvaultError('CONFIG_INVALID', `--tablespace-map ${JSON.stringify(item)} is not OID=DIR`, { fix: `e.g. --tablespace-map 16384=/srv/pg/ts1` });
    if (map.has(m[1])) throw new WalvaultError('CONFIG_INVALID', `--tablespace-map names OID ${m[1]} twice`, { fix: `give each tablespace once` });
    map.set(m[1], path.resolve(m[2]));
  }
  return map;
}

/** restore_command: this node and this walvault by absolute path, and the same archive. */
export function restoreCommand(o: RestoreCliOptions, siteName: string | undefined): string {
  const self = fs.realpathSync(process.argv[1]);
  const words = [shellWord(process.execPath, 'the node executable'), shellWord(self, 'the walvault executable'), 'wal-fetch'];
  if (o.config) {
    words.push('--config', shellWord(path.resolve(o.config), '--config'));
    if (siteName) words.push('--site', shellWord(siteName, '--site'));
  } else {
    // The server runs restore_command in the data directory: a relative path would name
    // another place there.
    const archive = /^[a-z][a-z0-9+.-]*:\/\//i.test(o.archive!) ? o.archive! : path.resolve(o.archive!);
    words.push('--archive', shellWord(archive, '--archive'));
  }
  if (o.privateKey) words.push('--private-key', shellWord(path.resolve(o.privateKey), '--private-key'));
  if (o.servePartial !== false) words.push('--serve-partial');
  if (o.acceptGap) words.push('--accept-gap');
  const ahead = o.prefetch ?? '8';
  if (!/^[0-9]+$/.test(ahead) || Number(ahead) > 64) throw new WalvaultError('CONFIG_INVALID', `--prefetch ${JSON.stringify(ahead)}: give how many segments to keep ready, 0 to 64`);
  if (ahead !== '0') words.push('--prefetch', ahead);
  words.push('%f', '%p');
  // A prefetched segment is moved into place by the shell alone: no Node start per segment.
  return ahead === '0' ? words.join(' ') : `${prefetchShortcut()} || ${words.join(' ')}`;
}

export async function restoreCommandCli(targetDir: string, o: RestoreCliOptions): Promise<void> {
  const target: RecoveryTarget = checkTarget({
    time: o.targetTime,
    lsn: o.targetLsn,
    xid: o.targetXid,
    name: o.targetName,
    immediate: o.targetImmediate,
    action: o.targetAction,
    timeline: o.targetTimeline,
  });
  if (o.primaryConninfo !== undefined && !o.standby) {
    throw new WalvaultError('CONFIG_INVALID', '--primary-conninfo is for a standby', { fix: 'add --standby, or leave it out' });
  }
  if (o.primaryConninfo !== undefined && /password\s*=/i.test(o.primaryConninfo)) {
    throw new WalvaultError('CONFIG_INVALID', '--primary-conninfo must not carry a password (it would show in the process list)', { fix: 'use a password file for the server user' });
  }
  const map = tablespaceMap(o.tablespaceMap);
  // The writer threads load while the backup is chosen and its manifest read.
  (await import('../restore/writer-threads')).prestartWriterThreads();
  const settings = archiveFromOptions(o);
  const siteName = o.config ? (settings as { name?: string }).name : undefined;
  const command = restoreCommand(o, siteName);
  const log = createLogger({ level: 'info' });
  const archive = openSiteReader(settings, (line) => log.warn(line));
  try {
    const { restoreBackup } = await import('../restore/restore');
    const r = await restoreBackup({
      archive,
      backup: o.backup ?? 'LATEST',
      targetDir,
      target,
      standby: o.standby === true,
      primaryConninfo: o.primaryConninfo,
      archiveOff: o.archiveMode !== 'preserve',
      force: o.force === true,
      delta: o.delta === true,
      tablespaceMap: map,
      restoreCommand: command,
      log,
      progressOut: process.stderr,
    });
    const dir = path.resolve(targetDir);
    const until =
      target.time ?? target.lsn ?? target.xid ?? target.name ?? (target.immediate ? 'the end of the backup (consistency)' : 'the end of the archive');
    process.stdout.write(
      [
        `restored backup ${r.meta.name} (WAL ${r.meta.startLsn}..${r.meta.stopLsn}, timeline ${r.meta.stopTimeline}) into ${dir}: ` +
          `${r.files} files, ${formatBytes(r.bytes)}, every one checked against the backup manifest`,
        ...(r.delta
          ? [
              `delta: ${r.delta.checked} files there checked, ${r.delta.kept} kept (${formatBytes(r.delta.keptBytes)}), ` +
                `${r.delta.fetched} fetched (${formatBytes(r.delta.fetchedBytes)}), ${r.delta.removed} removed (files, links and directories the backup does not have, or that differed); ` +
                `${r.delta.patched} files that differed patched in place (${formatBytes(r.delta.patchedBytesWritten)} written into them)`,
            ]
          : []),
        ...r.tablespaces.map((t) => `tablespace ${t.oid} restored into ${t.dir}`),
        `${o.standby ? 'standby.signal' : 'recovery.signal'} and restore_command written to ${path.join(dir, 'postgresql.auto.conf')}`,
        ...(o.archiveMode !== 'preserve'
          ? ["archive_mode is off in it, so it cannot push WAL into the source's archive; to archive it, run walvault for it as a new site (or restore with --archive-mode preserve)"]
          : []),
        'next:',
        `  1. if PostgreSQL runs as another user: chown -R <that user> ${dir}${r.tablespaces.map((t) => ` ${t.dir}`).join('')}`,
        `  2. start it: pg_ctl -D ${dir} start`,
        o.standby
          ? '     it runs as a hot standby, replaying WAL from the archive as it arrives; pg_ctl promote makes it a primary'
          : `     it replays WAL from the archive up to ${until}, then ${{ promote: 'promotes (a new timeline)', pause: "pauses: look, then SELECT pg_wal_replay_resume() to promote", shutdown: 'shuts down' }[hasTarget(target) ? targetAction(target) : 'promote']}`,
        '',
      ].join('\n'),
    );
  } finally {
    await archive.close();
  }
}
