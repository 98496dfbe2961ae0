/**
 * Fixtures for the bad-input acceptance test (test/integration/errors.test.ts): a byte-level
 * picture of a directory tree, and a real pg_receivewal holding a walsender or a slot.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clientBin, type PgCluster } from './pg-cluster';

export interface TreeEntry {
  path: string;
  kind: 'dir' | 'file' | 'symlink' | 'other';
  mode: number;
  size: number;
  sha256: string | null;
}

/**
 * Every entry under `root` (root itself included) with its content hash; null when root does
 * not exist. Two equal snapshots mean nothing was created, removed or rewritten with other bytes.
 */
export function snapshotTree(root: string): TreeEntry[] | null {
  let top: fs.Stats;
  try {
    top = fs.lstatSync(root);
  } catch (err) {
    // ENOTDIR: a path "under" a regular file cannot exist, which is what the caller asks.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
  const out: TreeEntry[] = [];
  const visit = (abs: string, rel: string, st: fs.Stats): void => {
    const kind = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
    const sha256 = kind === 'file' ? createHash('sha256').update(fs.readFileSync(abs)).digest('hex') : kind === 'symlink' ? fs.readlinkSync(abs) : null;
    out.push({ path: rel, kind, mode: st.mode & 0o7777, size: kind === 'dir' ? 0 : st.size, sha256 });
    if (kind !== 'dir') return;
    for (const name of fs.readdirSync(abs).sort()) {
      const child = path.join(abs, name);
      visit(child, rel === '.' ? name : `${rel}/${name}`, fs.lstatSync(child));
    }
  };
  visit(root, '.', top);
  return out;
}

/** Env without inherited PG* variables, which would point the client tools at another server. */
function clientEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, LC_ALL: 'C', LANG: 'C' };
}

export interface ReceivewalProcess {
  child: ChildProcess;
  /** What pg_receivewal said so far, for failure messages. */
  output(): string;
}

/**
 * A real replication client (PG15's pg_receivewal) connected to `cluster` as postgres: it takes
 * one walsender, and with `slot` makes that slot active in its walsender process.
 */
export function startReceivewal(cluster: PgCluster, dir: string, slot?: string): ReceivewalProcess {
  fs.mkdirSync(dir, { recursive: true });
  const args = ['-D', dir, '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', '--no-loop', '--no-password'];
  if (slot) args.push(`--slot=${slot}`);
  const child = spawn(clientBin('pg_receivewal'), args, { env: clientEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (text += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (text += d));
  return { child, output: () => text };
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}
