/**
 * Preloaded into a short-lived walvault command by a bench (NODE_OPTIONS=--require
 * .../exit-peak-probe.js, WALVAULT_BENCH_PEAK_FILE=FILE): at exit, appends one JSON line with
 * the kernel's peak resident set (VmHWM, exact) and the highest process.memoryUsage()
 * arrayBuffers seen (Buffers: what a streaming read should keep small), sampled every
 * millisecond. A command that ends within a second is over before a 100 ms sampler looks.
 */
import * as fs from 'node:fs';

const file = process.env.WALVAULT_BENCH_PEAK_FILE;
if (file) {
  let peakArrayBuffers = 0;
  const sample = () => {
    peakArrayBuffers = Math.max(peakArrayBuffers, process.memoryUsage().arrayBuffers);
  };
  setInterval(sample, 1).unref();
  process.on('exit', () => {
    sample();
    const hwmKiB = Number(/^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
    fs.appendFileSync(file, JSON.stringify({ peakRssMiB: hwmKiB / 1024, peakArrayBuffersMiB: peakArrayBuffers / 1048576 }) + '\n');
  });
}
