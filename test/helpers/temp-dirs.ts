/** Temporary directories for tests: reachable by the server OS user, removed whole. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SERVER_OS_USER, serverUser } from './os-users';

/** Throws unless the server user (when there is one) can reach `dir` through every parent. */
export function checkTraversable(dir: string): void {
  // The server user must be able to reach our temp dirs: a TMPDIR under /root
  // (0700) would make every start fail with an opaque permission error.
  if (!serverUser()) return;
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const mode = fs.statSync(d).mode;
    if ((mode & 0o001) === 0) {
      throw new Error(`${d} is not traversable by the ${SERVER_OS_USER} user (mode ${(mode & 0o777).toString(8)}); set TMPDIR to e.g. /tmp`);
    }
    if (path.dirname(d) === d) return;
  }
}

/** A fresh temp dir (mode 0755, owned by the current user) for a test's own files. */
export function tmpDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix.endsWith('-') ? prefix : `${prefix}-`));
  // mkdtemp gives 0700: other processes (a server running as postgres) could not look inside.
  fs.chmodSync(dir, 0o755);
  return dir;
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}
