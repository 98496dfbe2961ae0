/**
 * `walvault drill`: restore the newest backup into a temporary directory, recover it to the
 * end of the archive as a throw-away hot standby, query it, remove it; report each phase's
 * time (see ../check/drill.ts). Exit 0: the drill succeeded; 1: it failed (the reason is in
 * the report); 2: it could not run.
 */
import { errorText } from './fail';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WalvaultError } from '../errors';
import type { SiteConfig } from '../config/config-types';
import { archiveFromOptions } from './archive-option';
import { restoreCommand } from './restore';

export interface DrillCliOptions {
  config?: string;
  site?: string;
  archive?: string;
  privateKey?: string;
  backup?: string;
  query?: string;
  pgBin?: string;
  osUser?: string;
  dbUser?: string;
  workDir?: string;
  keep?: boolean;
  timeout?: string;
  json?: boolean;
}

export function binDirResolver(pgBin: string | undefined): (major: number) => string {
  return (major) => {
    const candidates = pgBin ? [path.resolve(pgBin)] : [`/usr/lib/postgresql/${major}/bin`, `/usr/pgsql-${major}/bin`];
    const found = candidates.find((d) => fs.existsSync(path.join(d, 'pg_ctl')));
    if (!found) throw new WalvaultError('CONFIG_INVALID', `no pg_ctl for PostgreSQL ${major} in ${candidates.join(' or ')}`, { fix: `install that version's server, or pass --pg-bin DIR` });
    return found;
  };
}

export function osUserFor(name: string): { name: string; uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  try {
    return { name, uid: Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim()), gid: Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim()) };
  } catch {
    throw new WalvaultError('CONFIG_INVALID', `running as root, and PostgreSQL refuses to run as root, but OS user "${name}" does not exist`, { fix: `pass --os-user with the user PostgreSQL runs as` });
  }
}

export async function drillCommand(o: DrillCliOptions): Promise<number> {
  let log;
  try {
    const timeout = o.timeout === undefined ? 3600 : Number(o.timeout);
    if (!Number.isFinite(timeout) || timeout <= 0) throw new WalvaultError('CONFIG_INVALID', `--timeout ${JSON.stringify(o.timeout)}: give seconds, more than 0`);
    const settings = archiveFromOptions(o);
    const siteName = o.config ? (settings as { name?: string }).name : undefined;
    const siteUser = o.config ? (settings as SiteConfig).pg.user : undefined;
    const osUser = osUserFor(o.osUser ?? 'postgres');
    const { createLogger } = await import('../observe/logger');
    log = createLogger({ level: 'warn' });
    const { openSiteReader } = await import('../archive/site-archive');
    const { runDrill } = await import('../check/drill');
    const warn = log;
    const archive = openSiteReader(settings, (line) => warn.warn(line));
    try {
      const r = await runDrill({
        archive,
        backup: o.backup ?? 'LATEST',
        restoreCommand: restoreCommand({ ...o, servePartial: true }, siteName),
        binDirFor: binDirResolver(o.pgBin),
        osUser,
        dbUser: o.dbUser ?? (siteUser ? String(siteUser) : 'postgres'),
        query: o.query,
        workDir: o.workDir,
        keep: o.keep === true,
        timeoutMs: timeout * 1000,
        log,
      });
      if (o.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      else {
        const p = r.phases;
        process.stdout.write(
          (r.ok
            ? `drill OK: backup ${r.backup} restored and recovered to ${r.recoveredTo?.lsn}${r.recoveredTo?.time ? ` (last transaction ${r.recoveredTo.time})` : ''}\n`
            : `drill FAILED${r.backup ? ` (backup ${r.backup})` : ''}: ${r.problem}\n`) +
            `phases: restore ${p.restoreSeconds ?? '-'} s, start ${p.startSeconds ?? '-'} s, recovery ${p.recoverySeconds ?? '-'} s, queries ${p.querySeconds ?? '-'} s; total ${p.totalSeconds} s\n` +
            (o.keep ? `kept: ${r.directory}\n` : ''),
        );
      }
      return r.ok ? 0 : 1;
    } finally {
      await archive.close();
    }
  } catch (err) {
    process.stderr.write(`walvault: drill could not run: ${errorText(err)}\n`);
    return 2;
  }
}
