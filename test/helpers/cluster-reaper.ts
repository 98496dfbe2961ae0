/**
 * No test server outlives its test process: servers still running when the process exits or
 * is stopped by a signal are stopped then, and a process killed outright (SIGKILL) leaves an
 * owner record by each server's directory, so the next run stops the servers whose owner is
 * gone.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runSync } from './run-command';
import { removeDir } from './temp-dirs';

/** Every cluster's directory is a mkdtemp of this in os.tmpdir(). */
export const BASE_PREFIX = 'walvault-pg-';
const OWNER_FILE = 'owner.json';

interface LiveCluster {
  destroySync(): void;
}

const liveClusters = new Set<LiveCluster>();
let exitHooksInstalled = false;

/** Stopped (destroySync) when the process exits or is signalled, unless forgotten first. */
export function trackCluster(c: LiveCluster): void {
  installExitHooks();
  liveClusters.add(c);
}

export function forgetCluster(c: LiveCluster): void {
  liveClusters.delete(c);
}

function cleanupAllSync(): void {
  for (const c of [...liveClusters]) {
    try {
      c.destroySync();
    } catch {
      // best effort: the process is going away anyway
    }
  }
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', cleanupAllSync);
  // 'exit' does not fire on a fatal signal, which is exactly when a test run is
  // aborted (Ctrl-C, runner timeout): stop servers there too.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      cleanupAllSync();
      // Re-raise only when nobody else listens: another listener owns shutdown then.
      if (process.listenerCount(sig) <= 1) {
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, handler);
  }
}

interface OwnerRecord {
  pid: number;
  binDir: string;
  dataDir: string;
}

/** Records this process as the owner of the server in `baseDir`, for reapOrphans. */
export function writeOwnerRecord(baseDir: string, binDir: string, dataDir: string): void {
  fs.writeFileSync(path.join(baseDir, OWNER_FILE), JSON.stringify({ pid: process.pid, binDir, dataDir } satisfies OwnerRecord));
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let reaped = false;

/**
 * A test process killed with SIGKILL leaves its servers running and holding
 * ports and memory; the next run stops servers whose owning process is gone.
 */
export function reapOrphans(): void {
  if (reaped) return;
  reaped = true;
  let entries: string[];
  try {
    entries = fs.readdirSync(os.tmpdir()).filter((e) => e.startsWith(BASE_PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const base = path.join(os.tmpdir(), e);
    try {
      const owner = JSON.parse(fs.readFileSync(path.join(base, OWNER_FILE), 'utf8')) as OwnerRecord;
      if (pidAlive(owner.pid)) continue;
      if (fs.existsSync(path.join(owner.dataDir, 'postmaster.pid'))) {
        try {
          runSync(path.join(owner.binDir, 'pg_ctl'), ['-D', owner.dataDir, '-m', 'immediate', '-w', '-t', '10', 'stop'], {
            asServer: true,
            cwd: base,
          });
        } catch {
          // already dead
        }
      }
      removeDir(base);
    } catch {
      // not ours, half-created by a live process, or not removable: leave it
    }
  }
}
