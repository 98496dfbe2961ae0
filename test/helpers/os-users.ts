/**
 * The OS users tests run things as. PostgreSQL refuses to run as root, and CI runs as root,
 * so everything that touches a data directory is spawned as the `postgres` OS user then; and
 * root ignores file modes, so permission tests run themselves again as that user.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { APT_HINT } from './pg-binaries';

export const SERVER_OS_USER = 'postgres';

export interface ServerUser {
  name: string;
  uid: number;
  gid: number;
}

let cachedServerUser: ServerUser | null | undefined;

/**
 * The OS user that runs server processes: `postgres` when we are root (the
 * server refuses root), undefined when we can run them ourselves.
 */
export function serverUser(): ServerUser | undefined {
  if (cachedServerUser !== undefined) return cachedServerUser ?? undefined;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    cachedServerUser = null;
    return undefined;
  }
  try {
    const uid = Number(execFileSync('id', ['-u', SERVER_OS_USER], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', SERVER_OS_USER], { encoding: 'utf8' }).trim());
    cachedServerUser = { name: SERVER_OS_USER, uid, gid };
    return cachedServerUser;
  } catch {
    throw new Error(
      `running as root, and PostgreSQL refuses to run as root, but OS user "${SERVER_OS_USER}" does not exist: ${APT_HINT} (it creates the user)`,
    );
  }
}

/** Give a path (recursively) to the server user so a server can read and write it; no-op when not root. */
export function chownForServer(target: string): void {
  const u = serverUser();
  if (!u) return;
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    fs.lchownSync(p, u.uid, u.gid);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(target);
}

/**
 * The unprivileged OS user to run permission tests as when we are root (root ignores file
 * modes, so EACCES never happens to it): the server user, when it exists. Undefined when we
 * are not root (the test runs as us) or when there is no such user. Never throws, unlike
 * serverUser(): unit tests use it and must not need PostgreSQL installed when not root.
 */
export function unprivilegedUser(): ServerUser | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  try {
    return serverUser();
  } catch {
    return undefined;
  }
}

/**
 * Runs one test of a compiled test file again, alone, in a child `node --test` as `user`, and
 * fails unless that test ran there (not skipped) and passed. For tests about permissions: as
 * root the test calls this, and in the child (not root) the same test runs its body for real.
 * `file` is the test's __filename (dist/test/...js); `name` its exact name. Returns the
 * child's TAP output.
 */
export function runTestAs(user: ServerUser, file: string, name: string, timeoutMs = 60_000): string {
  const pattern = `^${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`;
  // NODE_TEST_CONTEXT would make the child talk to our runner's protocol instead of printing TAP.
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', `--test-name-pattern=${pattern}`, file], {
    cwd: os.tmpdir(),
    env,
    uid: user.uid,
    gid: user.gid,
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  const out = `${r.stdout ?? ''}${r.stderr ? `\nstderr:\n${r.stderr}` : ''}`;
  const what = `"${name}" run again as ${user.name} (uid ${user.uid})`;
  if (r.error) throw new Error(`${what}: ${r.error.message}\n${out}`);
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status ?? r.signal}):\n${out}`);
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const ran = new RegExp(`^\\s*ok \\d+ - ${escaped}\\s*$`, 'm');
  if (!ran.test(r.stdout)) throw new Error(`${what}: the child did not run it (skipped or not found):\n${out}`);
  const counts = /^# pass (\d+)$/m.exec(r.stdout);
  if (!counts || Number(counts[1]) < 1) throw new Error(`${what}: no passing test in the child:\n${out}`);
  return r.stdout;
}
