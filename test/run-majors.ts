/**
 * `npm run test:majors`: the receiver, backup, restore, check and wal-fetch suites on every
 * supported PostgreSQL major, one major after another (each run sets WALVAULT_TEST_PG_MAJOR,
 * which every test that names no major of its own then starts). `npm test` runs them on 15,
 * Debian's, and a few cases (streaming, base backup, point-in-time recovery, incrementals) on
 * the others; this runs the whole suites there.
 *
 *   npm run test:majors                 all suites, majors 13 14 16 17 18 (15 is npm test's)
 *   npm run test:majors -- 13 18        only those majors
 *   WALVAULT_MAJOR_SUITES=restore,check npm run test:majors
 *
 * A major whose binaries are not installed fails the run: this command exists to show the
 * suites pass there, and a skip would hide that it did not.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { availableMajors, CLIENT_MAJOR, SUPPORTED_MAJORS } from './helpers/pg-binaries';

/** The suites of issue 18's acceptance 4, by what they exercise. */
const SUITES: Record<string, string[]> = {
  receiver: ['streaming', 'reconnect', 'crash-resume', 'promotion', 'ack-modes'],
  backup: ['backup-push'],
  restore: ['restore', 'restore-partial'],
  check: ['check', 'check-repair'],
  'wal-fetch': ['prefetch', 'wal-gap'],
};

function main(): number {
  const asked = process.argv.slice(2).map(Number);
  const majors = asked.length > 0 ? asked : SUPPORTED_MAJORS.filter((m) => m !== CLIENT_MAJOR);
  const bad = majors.filter((m) => !SUPPORTED_MAJORS.includes(m));
  if (bad.length > 0) {
    console.error(`test:majors: ${bad.join(', ')} not supported; name majors among ${SUPPORTED_MAJORS.join(', ')}`);
    return 2;
  }
  const missing = majors.filter((m) => !availableMajors().includes(m));
  if (missing.length > 0) {
    console.error(`test:majors: PostgreSQL ${missing.join(', ')} binaries not installed; run npm ci (they are the pg13..pg18 devDependencies)`);
    return 2;
  }
  const groups = (process.env.WALVAULT_MAJOR_SUITES ?? Object.keys(SUITES).join(',')).split(',').map((s) => s.trim());
  const unknown = groups.filter((g) => !(g in SUITES));
  if (unknown.length > 0) {
    console.error(`test:majors: unknown suite ${unknown.join(', ')} in WALVAULT_MAJOR_SUITES; use ${Object.keys(SUITES).join(', ')}`);
    return 2;
  }
  const files = groups.flatMap((g) => SUITES[g]).map((f) => path.join(__dirname, 'integration', `${f}.test.js`));
  const failed: number[] = [];
  for (const major of majors) {
    console.log(`\n=== PostgreSQL ${major}: ${groups.join(', ')} ===`);
    const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], {
      stdio: 'inherit',
      env: { ...process.env, WALVAULT_TEST_PG_MAJOR: String(major) },
    });
    if (r.status !== 0) failed.push(major);
  }
  console.log(failed.length === 0 ? `\ntest:majors: every suite passed on PostgreSQL ${majors.join(', ')}` : `\ntest:majors: failures on PostgreSQL ${failed.join(', ')}`);
  return failed.length === 0 ? 0 : 1;
}

process.exitCode = main();
