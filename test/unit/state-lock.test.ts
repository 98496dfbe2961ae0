import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StateLock } from '../../src/daemon/state-lock';
import { isWalvaultError } from '../../src/errors';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-lock-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('StateLock', () => {
  test('is a symbolic link to the PID (no data block: it can be taken on a full disk), released on release()', (t) => {
    const dir = tempDir(t);
    const lock = StateLock.acquire(dir);
    const file = path.join(dir, 'walvault.lock');
    assert.ok(fs.lstatSync(file).isSymbolicLink());
    assert.equal(fs.readlinkSync(file), String(process.pid));
    assert.equal(StateLock.holder(dir), process.pid);
    lock.release();
    assert.equal(fs.lstatSync(file, { throwIfNoEntry: false }), undefined);
    assert.equal(StateLock.holder(dir), null);
  });

  test('a live holder refuses; a dead one, or an older walvault\'s lock file, is taken over', (t) => {
    const dir = tempDir(t);
    const file = path.join(dir, 'walvault.lock');
    fs.symlinkSync(String(process.ppid), file);
    assert.throws(() => StateLock.acquire(dir), (err) => isWalvaultError(err, 'STATE_DIR_UNWRITABLE') && err.message.includes(`in use by walvault process ${process.ppid}`));
    fs.rmSync(file);
    // A PID no process has (beyond pid_max) stands for a crashed holder.
    fs.writeFileSync(file, '4194305\n');
    assert.equal(StateLock.holder(dir), null);
    StateLock.acquire(dir).release();
    fs.writeFileSync(file, `${process.ppid}\n`);
    assert.equal(StateLock.holder(dir), process.ppid, 'an older walvault\'s lock file still reads');
  });
});
