/**
 * Running PostgreSQL's programs for the harness: a clean environment (no inherited PG*
 * variables, C locale), as the server OS user when asked, output collected, a failure thrown
 * with what the program said.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { serverUser } from './os-users';

/**
 * Env for PostgreSQL processes: inherited PG* variables (PGHOST, PGDATA,
 * PGPASSWORD...) would silently redirect the tools to another server, and a
 * fixed C locale keeps server messages parseable.
 */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('PG') && k !== 'LC_ALL' && k !== 'LANG' && k !== 'LANGUAGE') env[k] = v;
  }
  env.LC_ALL = 'C';
  env.LANG = 'C';
  return { ...env, ...extra };
}

export interface RunOptions {
  asServer?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    message: string,
    readonly stdout: string,
    readonly stderr: string,
    readonly code: number | null,
  ) {
    super(message);
  }
}

/** cwd, env and (as the server user) uid/gid for spawning one of PostgreSQL's programs. */
export function spawnOptions(opts: RunOptions) {
  const u = opts.asServer ? serverUser() : undefined;
  return {
    cwd: opts.cwd ?? os.tmpdir(),
    env: cleanEnv(opts.env),
    ...(u ? { uid: u.uid, gid: u.gid } : {}),
  };
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...spawnOptions(opts), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(new CommandError(`${path.basename(cmd)}: ${err.message}`, stdout, stderr, null));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (code === 0) return resolve({ stdout, stderr });
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      const detail = (stderr.trim() || stdout.trim()).slice(-4000);
      reject(new CommandError(`${path.basename(cmd)} ${args.join(' ')} failed (${how}): ${detail}`, stdout, stderr, code));
    });
  });
}

export function runSync(cmd: string, args: string[], opts: RunOptions = {}): void {
  execFileSync(cmd, args, { ...spawnOptions(opts), stdio: 'ignore', timeout: opts.timeoutMs ?? 15_000 });
}
