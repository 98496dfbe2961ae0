/**
 * Preloaded into walvault by the bench (NODE_OPTIONS=--require .../mem-probe.js) when
 * BENCH_MEM_TRACE is set: writes process.memoryUsage() every 50 ms as JSON lines, so a
 * high RSS can be split into V8 heap, Buffers (arrayBuffers) and the rest without
 * touching walvault's code.
 */
import * as fs from 'node:fs';

const file = process.env.WALVAULT_BENCH_MEM_TRACE;
if (file) {
  const t0 = Date.now();
  const fd = fs.openSync(file, 'a');
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    // Synchronous and tiny: an async write would itself hold buffers we are trying to measure.
    fs.writeSync(fd, JSON.stringify({ t: Date.now() - t0, rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers }) + '\n');
  }, 50);
  // The probe must never keep walvault alive after it wants to exit.
  timer.unref();
}
