import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import { processAlive, processArgs, processState } from '../../src/util/process-alive';

/** Pids whose parent is `ppid` (the 4th field of /proc/PID/stat). */
function childrenOf(ppid: number): number[] {
  const kids: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) kids.push(Number(p));
    } catch {
      // exited meanwhile
    }
  }
  return kids;
}

describe('processAlive', () => {
  it('a running process is alive, with its state and arguments readable', () => {
    assert.equal(processAlive(process.pid), true);
    assert.match(processState(process.pid) ?? '', /^[RS]$/);
    assert.ok(processArgs(process.pid)?.includes(process.argv[1]), 'its arguments include this test file');
  });

  it('an exited and reaped process is not', () => {
    const r = spawnSync('true');
    assert.equal(r.status, 0);
    assert.equal(processAlive(r.pid!), false);
    assert.equal(processState(r.pid!), null);
  });

  it('a zombie (exited, never reaped) is not', async () => {
    // `true` exits at once; its parent becomes `sleep` (exec replaces the shell), which never waits for it.
    const holder = spawn('/bin/sh', ['-c', 'true & exec sleep 30'], { stdio: 'ignore' });
    try {
      let zombie = 0;
      for (let i = 0; i < 200 && zombie === 0; i++) {
        const pid = childrenOf(holder.pid!)[0] ?? 0;
        if (pid > 0 && processState(pid) === 'Z') zombie = pid;
        else await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(zombie > 0, 'the child became a zombie');
      assert.doesNotThrow(() => process.kill(zombie, 0), 'the kernel still has the pid');
      assert.equal(processAlive(zombie), false);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});
