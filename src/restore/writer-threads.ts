/**
 * The threads of the restore's writer pool (./file-writers.ts, ./file-writer-thread.ts):
 * started when a pool is made, or ahead of it (prestartWriterThreads).
 */
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { WRITER_ROLE } from './file-writer-messages';

export function defaultWriterCount(): number {
  return Math.max(2, Math.min(4, availableParallelism()));
}

function startThread(): Worker {
  return new Worker(path.join(__dirname, 'file-writer-thread.js'), { workerData: { role: WRITER_ROLE }, resourceLimits: { maxYoungGenerationSizeMb: 8, maxOldGenerationSizeMb: 64 } });
}

/** Threads started ahead (prestartWriterThreads), taken by the next pool. */
const spareThreads: Worker[] = [];

/**
 * Starts a pool's threads now, for the next pool to take: a thread takes about 0.1 s to load
 * its modules, which a restore can spend reading its manifest and indexes meanwhile, on the
 * core the CLI leaves idle. They do not keep the process alive until a pool takes them.
 */
export function prestartWriterThreads(size = defaultWriterCount()): void {
  while (spareThreads.length < size) {
    const worker = startThread();
    // One that fails before a pool takes it leaves the spares: the pool starts another.
    worker.once('error', () => undefined);
    worker.once('exit', () => {
      const at = spareThreads.indexOf(worker);
      if (at >= 0) spareThreads.splice(at, 1);
    });
    worker.unref();
    spareThreads.push(worker);
  }
}

/** A thread for a pool: one started ahead if any is left, else a new one. */
export function takeWriterThread(): Worker {
  return spareThreads.pop() ?? startThread();
}
