/**
 * Issue 18, item 2: ERROR_TABLE drives every printed fix, every exit status and the daemon's
 * decision to stop or reconnect. The test walks the table.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { errorLine, errorText, reportAndExit } from '../../src/cli/fail';
import { StreamFailures } from '../../src/daemon/stream-failures';
import { ERROR_TABLE, WalvaultError, type ErrorCode } from '../../src/errors';

const CODES = Object.keys(ERROR_TABLE) as ErrorCode[];
const SRC = path.join(__dirname, '..', '..', '..', 'src');

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sourceFiles(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

/** What a command prints and exits with for `err`. */
function commandOutcome(err: unknown): { stderr: string; exitCode: number | undefined } {
  const write = process.stderr.write;
  const before = process.exitCode;
  let stderr = '';
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  try {
    reportAndExit(err);
    return { stderr, exitCode: process.exitCode as number | undefined };
  } finally {
    process.stderr.write = write;
    process.exitCode = before;
  }
}

describe('the error table', () => {
  test('every code declares an exit status, whether retrying helps, and a fix that reads after "; "', () => {
    for (const code of CODES) {
      const k = ERROR_TABLE[code];
      assert.ok(k.exit === 2 || k.exit === 70, `${code}: exit ${k.exit}`);
      assert.ok(['yes', 'no', 'briefly'].includes(k.retry), `${code}: retry ${k.retry}`);
      assert.ok(k.fix.length > 10, `${code}: a fix`);
      assert.match(k.fix, /^[a-z"(]|^[A-Z]+ |^PostgreSQL|^ALTER/, `${code}: the fix continues the line after "; "`);
      assert.doesNotMatch(k.fix, /[.;]$/, `${code}: the line ends with the fix, no stop`);
    }
    assert.equal(ERROR_TABLE.INTERNAL.exit, 70, 'a bug is not an input error');
  });

  test('a command ending on an error prints its cause and its fix on one line, and exits with its code', () => {
    for (const code of CODES) {
      const own = commandOutcome(new WalvaultError(code, `something about ${code}`, { fix: 'do this' }));
      assert.equal(own.stderr, `walvault: something about ${code}; do this\n`);
      assert.equal(own.exitCode, ERROR_TABLE[code].exit, code);
      const table = commandOutcome(new WalvaultError(code, `something about ${code}`));
      assert.equal(table.stderr, `walvault: something about ${code}; ${ERROR_TABLE[code].fix}\n`, `${code}: the table's fix when the thrower gives none`);
      assert.equal(table.exitCode, ERROR_TABLE[code].exit, code);
    }
    const bug = commandOutcome(new TypeError('x is undefined'));
    assert.match(bug.stderr, /^walvault: internal error: TypeError: x is undefined/);
    assert.equal(bug.exitCode, 70);
  });

  test("the message keeps the thrower's fix for logs and wrapping; errorLine and errorText say the same", () => {
    const err = new WalvaultError('STATE_DIR_UNWRITABLE', 'cannot write /x', { fix: 'choose another --state', cause: new Error('EACCES') });
    assert.equal(err.message, 'cannot write /x; choose another --state');
    assert.equal(err.what, 'cannot write /x');
    assert.equal(errorLine(err), err.message);
    assert.equal(errorText(err), err.message);
    assert.equal(errorText(new Error('plain')), 'plain');
    assert.equal(new WalvaultError('LEDGER', 'disk I/O error').message, 'disk I/O error', 'no fix glued in when the thrower gives none');
  });

  test("the receiver stops exactly on the codes retrying cannot help, and on busy ones only at its start", () => {
    const failures = new StreamFailures(pino({ level: 'silent' }));
    for (const code of CODES) {
      const err = new WalvaultError(code, 'x');
      assert.equal(failures.isFatal(err), ERROR_TABLE[code].retry === 'no', code);
      // Once streaming, a busy slot or walsender is a reconnect like any other passing trouble.
      if (ERROR_TABLE[code].retry !== 'no') assert.equal(failures.mustStop(err, { everStreamed: true, stopping: false }), false, code);
    }
    assert.equal(failures.isFatal(new Error('socket hang up')), false);
  });

  test('every code in the table is thrown somewhere, and every code thrown is in the table', () => {
    const text = sourceFiles(SRC)
      .filter((f) => !f.endsWith(`${path.sep}errors.ts`))
      .map((f) => fs.readFileSync(f, 'utf8'))
      .join('\n');
    for (const code of CODES) assert.ok(text.includes(`'${code}'`), `${code} is declared but never used: remove it from ERROR_TABLE`);
    const thrown = new Set([...text.matchAll(/WalvaultError\(\s*'([A-Z_]+)'/g)].map((m) => m[1]));
    for (const code of thrown) assert.ok(code in ERROR_TABLE, `${code} is thrown but not declared`);
  });
});
