/**
 * STATE/daemon-state.json, the daemon's account of a site for `walvault status`: what the
 * receiver's status and samples become, positions exact as `X/Y` text, written whole, and
 * read back only when it is this version's file for this site.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { readDaemonState, writeDaemonState, type DaemonStateSource } from '../../src/daemon/daemon-state';
import { DAEMON_STATE_FILE } from '../../src/daemon/state-dir';
import type { Sample } from '../../src/observe/metrics';

const gauge = (name: string, value: number): Sample => ({ name, help: name, type: 'gauge', value, labels: { site: 'main' } });

/** A receiver's public face, as the state file sees it. */
function receiver(over: Partial<ReturnType<DaemonStateSource['status']>> = {}, samples: Sample[] = [], extra: Sample[] = []): DaemonStateSource {
  return {
    status: () => ({ site: 'main', state: 'streaming', received: '1000000/30', fsynced: '1000000/20', archived: '0/0', serverWalEnd: '1000000/40', ...over }),
    metrics: () => samples,
    extraMetrics: () => extra,
  };
}

let dir = '';
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-daemon-state-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('daemon state file', () => {
  it('holds the receiver state, positions as text (exact past 2^53), 0/0 as none, the alerts and the last drill', async () => {
    const samples = [
      gauge('walvault_archive_lag_bytes', 4096),
      gauge('walvault_archive_lag_seconds', 0.8),
      gauge('walvault_storage_failing', 1),
      gauge('walvault_storage_failing_seconds', 42.5),
      gauge('walvault_spool_alert', 1),
    ];
    const before = Date.now();
    await writeDaemonState(dir, receiver({}, samples, [gauge('walvault_drill_last_success', 0)]));
    const s = readDaemonState(dir, 'main');
    assert.ok(s);
    assert.ok(Date.parse(s.writtenAt) >= before - 1000 && Date.parse(s.writtenAt) <= Date.now());
    assert.deepEqual({ ...s, writtenAt: '' }, {
      version: 1,
      site: 'main',
      writtenAt: '',
      state: 'streaming',
      positions: { received: '1000000/30', fsynced: '1000000/20', archived: null, serverWalEnd: '1000000/40' },
      lag: { bytes: 4096, seconds: 0.8 },
      storageFailingSeconds: 42.5,
      spoolAlert: true,
      lastDrillOk: false,
      archives: [],
    });
    assert.equal(fs.statSync(path.join(dir, DAEMON_STATE_FILE)).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(dir), [DAEMON_STATE_FILE], 'no temporary file left');
  });

  it('storage working, no alert, no drill yet, a stopped receiver: say so', async () => {
    await writeDaemonState(dir, receiver({ state: 'stopped', received: null, fsynced: null, archived: null, serverWalEnd: null }, [gauge('walvault_storage_failing', 0), gauge('walvault_spool_alert', 0)]));
    const s = readDaemonState(dir, 'main')!;
    assert.equal(s.state, 'stopped');
    assert.deepEqual(s.positions, { received: null, fsynced: null, archived: null, serverWalEnd: null });
    assert.equal(s.storageFailingSeconds, null);
    assert.equal(s.spoolAlert, false);
    assert.equal(s.lastDrillOk, null);
  });

  it('each write replaces the last', async () => {
    await writeDaemonState(dir, receiver({ state: 'starting' }));
    await writeDaemonState(dir, receiver({ state: 'reconnecting', archived: '0/3000000' }));
    const s = readDaemonState(dir, 'main')!;
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.positions.archived, '0/3000000');
  });

  it('reads as none when missing, damaged, of another version or of another site', async () => {
    assert.equal(readDaemonState(dir, 'main'), null);
    const file = path.join(dir, DAEMON_STATE_FILE);
    fs.writeFileSync(file, '{"version": 1, "site": "ma');
    assert.equal(readDaemonState(dir, 'main'), null);
    await writeDaemonState(dir, receiver());
    assert.equal(readDaemonState(dir, 'other'), null);
    const good = JSON.parse(fs.readFileSync(file, 'utf8'));
    for (const bad of [{ ...good, version: 2 }, { ...good, state: 'dreaming' }, { ...good, positions: { ...good.positions, received: 123 } }, { ...good, lag: null }]) {
      fs.writeFileSync(file, JSON.stringify(bad));
      assert.equal(readDaemonState(dir, 'main'), null, JSON.stringify(bad));
    }
  });

  it('a write that fails leaves the previous file, and takes its temporary file away', async () => {
    await writeDaemonState(dir, receiver({ state: 'streaming' }));
    const failing = receiver();
    failing.metrics = () => {
      throw new Error('boom');
    };
    await assert.rejects(writeDaemonState(dir, failing), /boom/);
    assert.equal(readDaemonState(dir, 'main')?.state, 'streaming');
    // The rename fails (a non-empty directory in the way) after the temporary file was written.
    const file = path.join(dir, DAEMON_STATE_FILE);
    fs.rmSync(file);
    fs.mkdirSync(path.join(file, 'x'), { recursive: true });
    await assert.rejects(writeDaemonState(dir, receiver()), /EISDIR|ENOTEMPTY|EEXIST/);
    assert.deepEqual(fs.readdirSync(dir), [DAEMON_STATE_FILE]);
  });
});
