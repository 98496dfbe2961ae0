/**
 * What this machine charges for memory the process touches for the first time: a fresh
 * child process allocates BENCH_FRESH_MIB (default 1024) MiB and writes one byte a page,
 * three times, and the time per 4 KiB page is printed with the CPU time split into user and
 * system. Not part of `npm run bench`:
 *
 *   node dist/bench/fresh-memory-probe.js
 *
 * On bare metal a page costs a fraction of a microsecond. On the development VM (Firecracker,
 * with a virtio balloon that reports free pages to the host) it costs 10-20 us: a page the
 * guest freed went back to the host, and the first touch of it faults there. The page cache
 * pays the same for every page a restore writes into a new file, which is why a full restore
 * is slower in the delta bench (whose earlier rounds freed the memory) than run alone right
 * after another (which reuses pages freed a moment before, not yet given back).
 */
import { spawnSync } from 'node:child_process';
import { envNumber } from './bench-util';

const MIB = envNumber('BENCH_FRESH_MIB', 1024);

function touchInChild(): { ms: number; userMs: number; systemMs: number } {
  const script = `
    const n = ${MIB} * 1024 * 1024;
    const t = performance.now(); const c = process.cpuUsage();
    const b = Buffer.allocUnsafeSlow(n);
    for (let i = 0; i < n; i += 4096) b[i] = 1;
    const u = process.cpuUsage(c);
    process.stdout.write(JSON.stringify({ ms: performance.now() - t, userMs: u.user / 1000, systemMs: u.system / 1000 }));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`the probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { ms: number; userMs: number; systemMs: number };
}

const pages = (MIB * 1024 * 1024) / 4096;
for (let round = 1; round <= 3; round++) {
  const m = touchInChild();
  console.log(`round ${round}: ${MIB} MiB of fresh memory touched in ${(m.ms / 1000).toFixed(2)} s (user ${(m.userMs / 1000).toFixed(2)} s, system ${(m.systemMs / 1000).toFixed(2)} s): ${((m.ms * 1000) / pages).toFixed(2)} us a page`);
}
