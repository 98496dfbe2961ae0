/**
 * Memory of `walvault wal-fetch` (restore_command) for one 16 MiB and one 64 MiB segment
 * (BENCH_WALFETCH_SEG_MB, default "16,64"), from a local archive: uncompressed (the local
 * default) and zstd + AES-256-GCM (the encrypted, compressed form). The segment's records are
 * random text and numbers, so it compresses about like production WAL. Per case: peak RSS
 * (VmHWM) and peak Buffer memory (arrayBuffers), median and spread (max/min) over
 * BENCH_WALFETCH_ROUNDS (default 3) rounds, with `cp` of the same segment in the same rounds
 * for time. BENCH_WALFETCH_BASELINE=PATH/bin/walvault adds another build (the one before
 * streaming reads, say) in the same rounds. Streaming reads hold a few frames: the peak must
 * not grow with the segment size.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Archive } from '../src/archive/archive';
import { createKeyPair, loadPublicKey } from '../src/archive/encryption';
import { LocalStorage } from '../src/storage/local';
import { segmentFileName } from '../src/wal/lsn';
import { removeDir, tmpDir } from '../test/helpers/pg-cluster';
import { WALVAULT_BIN } from '../test/helpers/walvault';
import { xorshift32 } from '../test/helpers/seeded-random';
import { buildSegment, FIXTURE_BLCKSZ, FIXTURE_SYSID } from '../test/helpers/wal-fixtures';
import { fmt, machineFacts, printTable, saveResults } from './bench-util';

const MiB = 1024 * 1024;
const SIZES = (process.env.BENCH_WALFETCH_SEG_MB ?? '16,64').split(',').map(Number);
const ROUNDS = Number(process.env.BENCH_WALFETCH_ROUNDS ?? 3);
const BASELINE = process.env.BENCH_WALFETCH_BASELINE;
const PROBE = path.join(__dirname, 'exit-peak-probe.js');

/** A well-formed segment whose record bytes are text and numbers (about 3-5:1 with zstd). */
function realLookingSegment(segNo: bigint, segSize: number): Buffer {
  const seg = buildSegment(segNo, 1, 7, segSize);
  const next = xorshift32(11);
  const words = ['alpha', 'bravo', 'order', 'customer', 'warehouse', 'district', 'payment', 'history', 'stock', 'item'];
  for (let page = 0; page < segSize; page += FIXTURE_BLCKSZ) {
    const body = page === 0 ? 40 : 24;
    let text = '';
    while (text.length < FIXTURE_BLCKSZ - body) text += `${words[next() % words.length]} ${next() % 100000} ${(next() % 1000000) / 100} `;
    seg.write(text.slice(0, FIXTURE_BLCKSZ - body), page + body, 'latin1');
  }
  return seg;
}

interface Run {
  seconds: number;
  peakRssMiB: number;
  peakArrayBuffersMiB: number;
}

function run(cmd: string, args: string[], probe: boolean): Promise<Run> {
  const peakFile = path.join(tmpDir('walvault-peak-'), 'peak.jsonl');
  const started = performance.now();
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: probe ? { ...process.env, NODE_OPTIONS: `--require ${PROBE}`, WALVAULT_BENCH_PEAK_FILE: peakFile } : process.env,
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => {
      const seconds = (performance.now() - started) / 1000;
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr}`));
      const peak = probe ? (JSON.parse(fs.readFileSync(peakFile, 'utf8').trim().split('\n').pop()!) as Omit<Run, 'seconds'>) : { peakRssMiB: NaN, peakArrayBuffersMiB: NaN };
      removeDir(path.dirname(peakFile));
      resolve({ seconds, ...peak });
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const spread = (xs: number[]) => Math.max(...xs) / Math.min(...xs);

async function main(): Promise<number> {
  const startedAt = new Date();
  const work = tmpDir('walvault-walfetch-bench-');
  const results: Array<Record<string, unknown>> = [];
  try {
    const keyFile = path.join(work, 'site.key');
    await createKeyPair(keyFile, path.join(work, 'site.pub'));
    const tools: Array<[string, string]> = [['walvault', WALVAULT_BIN], ...(BASELINE ? ([['baseline', BASELINE]] as Array<[string, string]>) : [])];
    const rows = [['case', 'tool', 'peak RSS MiB (median)', 'spread', 'peak Buffers MiB (median)', 'spread', 'seconds (median)', 'spread']];
    console.log(`wal-fetch memory bench: segments of ${SIZES.join(', ')} MiB, ${ROUNDS} rounds`);
    for (const mb of SIZES) {
      const segSize = mb * MiB;
      const name = segmentFileName(1, 3n, segSize);
      const segment = realLookingSegment(3n, segSize);
      const plainFile = path.join(work, `${name}.${mb}`);
      fs.writeFileSync(plainFile, segment);
      for (const kind of ['uncompressed', 'zstd+aes'] as const) {
        const dir = path.join(work, `archive-${mb}-${kind}`);
        const archive = new Archive(new LocalStorage(dir), kind === 'zstd+aes' ? { codec: 'zstd', recipient: loadPublicKey(path.join(work, 'site.pub')) } : {});
        await archive.ensureCluster({ systemId: FIXTURE_SYSID.toString(), pgVersionNum: 160000, walSegmentSize: segSize });
        await archive.putImmutable(Archive.walKey(name), segment);
        await archive.close();
        const storedMiB = fs.statSync(path.join(dir, 'wal', name)).size / MiB;
        const args = (bin: string, dest: string) => [bin, 'wal-fetch', name, dest, '--archive', dir, ...(kind === 'zstd+aes' ? ['--private-key', keyFile] : [])];
        const runs = new Map<string, Run[]>();
        for (let round = 0; round < ROUNDS; round++) {
          // Alternating, each into a fresh destination.
          for (const [label, bin] of [...tools, ['cp', '/bin/cp'] as [string, string]]) {
            const dest = path.join(work, `dest-${label}`);
            fs.rmSync(dest, { force: true });
            const r = label === 'cp' ? await run('/bin/cp', [plainFile, dest], false) : await run(process.execPath, args(bin, dest), true);
            if (!fs.readFileSync(dest).equals(segment)) throw new Error(`${label}: ${dest} is not the segment`);
            runs.set(label, [...(runs.get(label) ?? []), r]);
          }
        }
        for (const [label, rs] of runs) {
          const rss = rs.map((r) => r.peakRssMiB);
          const bufs = rs.map((r) => r.peakArrayBuffersMiB);
          const secs = rs.map((r) => r.seconds);
          const probed = label !== 'cp';
          rows.push([`${mb} MiB ${kind} (${fmt(storedMiB)} MiB stored)`, label, probed ? fmt(median(rss)) : '-', probed ? fmt(spread(rss), 2) : '-', probed ? fmt(median(bufs)) : '-', probed ? fmt(spread(bufs), 2) : '-', fmt(median(secs), 3), fmt(spread(secs), 2)]);
          results.push({ segMiB: mb, kind, storedMiB, tool: label, rounds: rs });
        }
      }
    }
    printTable(rows);
    const file = saveResults('wal-fetch-mem', { machine: machineFacts(), sizesMiB: SIZES, rounds: ROUNDS, baseline: BASELINE ?? null, results }, startedAt);
    console.log(`results: ${path.relative(process.cwd(), file)}`);
    return 0;
  } finally {
    removeDir(work);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
