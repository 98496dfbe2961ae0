/**
 * Where the write path spends its effort for one WAL segment, per path: the bytes it copies in
 * memory, hashes with SHA-256, reads from and writes to files (counted in every thread by
 * ./byte-counter.ts, so the figures are exact and do not depend on how busy the machine is),
 * and the process CPU time per segment (workers included; noisy on a shared machine).
 *
 *   node dist/bench/write-path-bench.js
 *
 * Paths: a sealed spool file (envelope header + WAL, as the receiver leaves a completed
 * segment) stored with Archive.putSealedFile into
 *   - a local archive on the same filesystem, no codec (hard link, read back)
 *   - a local archive, zstd
 *   - s3rver (a real S3-protocol server on loopback, as in the tests), zstd
 *   - s3rver, zstd + encryption
 * and a 16 MiB backup part in shared memory with Archive.putOwnedBuffer into s3rver, zstd.
 * The spool's own SHA-256 as WAL arrives (one pass, in SegmentSpool) is not part of these
 * figures: they are what storing costs after that.
 *
 * The WAL is generated, seeded (the same bytes every run): 8 KiB pages of records holding
 * random words, hex strings and numbers, which compress about like production WAL with
 * zstd level 1 (about 3:1, printed), not like pgbench's blank padding (23:1).
 *
 * The counter's hooks cost CPU of their own (every postMessage to a worker, every hash
 * update): BENCH_COUNT=0 runs without it, for CPU figures only.
 *
 * Environment: BENCH_SEGMENTS (segments per path, default 4), BENCH_SEG_MIB (default 16),
 * BENCH_COUNT=0 (no counting), BENCH_CPU_PROF=<dir> (a V8 CPU profile of the whole run, for
 * bench/profile-summary.ts).
 * Results also go to bench/results/write-path-<timestamp>.json.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Archive, type ArchiveOptions } from '../src/archive/archive';
import { createKeyPair, loadPrivateKey, loadPublicKey } from '../src/archive/encryption';
import { encodePlainHeader } from '../src/archive/envelope';
import { LocalStorage } from '../src/storage/local';
import { S3Storage, parseS3Url } from '../src/storage/s3';
import type { Storage } from '../src/storage/storage';
import { segmentFileName } from '../src/wal/lsn';
import { removeDir, tmpDir } from '../test/helpers/pg-cluster';
import { S3Server } from '../test/helpers/s3-server';
import { xorshift32 } from '../test/helpers/seeded-random';
import { envNumber, fmt, machineFacts, median, MiB, printTable, saveResults } from './bench-util';
import { collectCounts, counterInstalled, resetCounts, type ByteCounts } from './byte-counter';

const SEGMENTS = Math.round(envNumber('BENCH_SEGMENTS', 4));
const SEG_SIZE = Math.round(envNumber('BENCH_SEG_MIB', 16) * MiB);
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
const COUNTING = process.env.BENCH_COUNT !== '0';

const WORDS = 'order customer invoice shipped pending account balance transfer warehouse product quantity price discount region north south east west review rating comment status active closed'.split(' ');

/**
 * WAL-like bytes: 8 KiB pages, each with a 24-byte header (magic, timeline, address), and
 * records of a 24-byte header (length, a transaction id and a previous-record pointer that
 * grow, a checksum) and a tuple of words, hex digests, numbers, dates and padding: about 3:1
 * with zstd level 1.
 */
function walLike(size: number, seed: number): Buffer {
  // xorshift32: the same "random" WAL every run, so the counts compare across runs.
  const next = xorshift32(seed);
  const buf = Buffer.alloc(size);
  let xid = 5000;
  let prev = 0;
  for (let page = 0; page < size; page += 8192) {
    buf.writeUInt16LE(0xd110, page);
    buf.writeUInt16LE(1, page + 2);
    buf.writeUInt32LE(1, page + 4);
    buf.writeBigUInt64LE(BigInt(page), 8);
    let at = page + 24;
    const end = Math.min(size, page + 8192);
    while (at < end - 64) {
      const words = Array.from({ length: 2 + (next() % 6) }, () => WORDS[next() % WORDS.length]).join(' ');
      const hex = next() % 2 === 0 ? createHash('md5').update(String(next())).digest('hex') : '';
      const day = String(1 + (next() % 28)).padStart(2, '0');
      const rec = `${next() % 100000}|${words}|${hex}|${(next() % 1000000) / 100}|2026-11-${day} 12:00:00+00|${WORDS[next() % WORDS.length]}|account_${next() % 50}@example.com|${' '.repeat(20)}`;
      const len = Math.min(end - at - 24, 24 + rec.length);
      if (next() % 4 === 0) xid++;
      buf.writeUInt32LE(len, at);
      buf.writeUInt32LE(xid, at + 4);
      buf.writeBigUInt64LE(BigInt(prev), at + 8);
      buf.writeUInt32LE(next(), at + 16);
      buf.write(rec, at + 24, len - 24, 'latin1');
      prev = at;
      at += (len + 7) & ~7;
    }
  }
  return buf;
}

interface Case {
  label: string;
  kind: 'sealed' | 'owned';
  s3: boolean;
  options: (keys: KeyFiles) => ArchiveOptions;
}

interface KeyFiles {
  pub: string;
  key: string;
}

const CASES: Case[] = [
  { label: 'local, plain (hard link)', kind: 'sealed', s3: false, options: () => ({}) },
  { label: 'local, zstd', kind: 'sealed', s3: false, options: () => ({ codec: 'zstd' }) },
  { label: 's3rver, zstd', kind: 'sealed', s3: true, options: () => ({ codec: 'zstd' }) },
  { label: 's3rver, zstd + encryption', kind: 'sealed', s3: true, options: (k) => ({ codec: 'zstd', recipient: loadPublicKey(k.pub), privateKey: loadPrivateKey(k.key) }) },
  { label: 's3rver, zstd, backup part (putOwnedBuffer)', kind: 'owned', s3: true, options: () => ({ codec: 'zstd' }) },
];

interface Row {
  label: string;
  storedBytes: number;
  perSegment: ByteCounts;
  cpuMs: number[];
  wallMs: number[];
}

async function runCase(c: Case, work: string, plaintext: Buffer, digest: Buffer, s3: S3Server | null, keyFiles: KeyFiles, caseNo: number): Promise<Row> {
  const storage: Storage = c.s3 ? new S3Storage(parseS3Url(s3!.url(`bench${caseNo}`))!, { ...s3!.settings(), signPayloads: false /* as over https: s3rver is http */ }) : new LocalStorage(path.join(work, `archive${caseNo}`));
  const archive = new Archive(storage, c.options(keyFiles));
  await archive.ensureCluster({ systemId: '7000000000000000001', pgVersionNum: 150000, walSegmentSize: SEG_SIZE });
  // The spool file as SegmentSpool seals it: plain envelope header, then the WAL.
  const spoolFile = path.join(work, `spool${caseNo}`);
  fs.writeFileSync(spoolFile, Buffer.concat([encodePlainHeader(plaintext.length, digest), plaintext]), { mode: 0o600 });
  const part = Buffer.from(new SharedArrayBuffer(plaintext.length));
  plaintext.copy(part);
  const store = async (n: number): Promise<void> => {
    const key = c.kind === 'sealed' ? Archive.walKey(segmentFileName(1, BigInt(16 + n), SEG_SIZE)) : `backups/bench/part-${n}`;
    const result = c.kind === 'sealed' ? await archive.putSealedFile(key, spoolFile, plaintext.length, digest) : await archive.putOwnedBuffer(key, part, digest);
    if (result !== 'stored') throw new Error(`${c.label}: ${key} was ${result}, expected stored`);
  };
  // Modules loaded, workers started, connections open: not what a steady stream pays.
  await store(0);
  const total: ByteCounts = { copy: 0, sha256: 0, read: 0, write: 0, copyBy: {} };
  const cpuMs: number[] = [];
  const wallMs: number[] = [];
  for (let i = 1; i <= SEGMENTS; i++) {
    resetCounts();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await store(i);
    wallMs.push(performance.now() - t0);
    const cpu = process.cpuUsage(cpu0);
    cpuMs.push((cpu.user + cpu.system) / 1000);
    const got = await collectCounts();
    total.copy += got.copy;
    total.sha256 += got.sha256;
    total.read += got.read;
    total.write += got.write;
    for (const [k, v] of Object.entries(got.copyBy)) total.copyBy[k] = (total.copyBy[k] ?? 0) + v;
  }
  const info = await storage.head(c.kind === 'sealed' ? Archive.walKey(segmentFileName(1, 17n, SEG_SIZE)) : 'backups/bench/part-1');
  await archive.close();
  const per = (n: number) => n / SEGMENTS;
  return {
    label: c.label,
    storedBytes: info?.size ?? 0,
    perSegment: {
      copy: per(total.copy),
      sha256: per(total.sha256),
      read: per(total.read),
      write: per(total.write),
      copyBy: Object.fromEntries(Object.entries(total.copyBy).map(([k, v]) => [k, per(v)])),
    },
    cpuMs,
    wallMs,
  };
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const work = tmpDir('walvault-write-bench-');
  let s3: S3Server | null = null;
  try {
    const plaintext = walLike(SEG_SIZE, 42);
    const digest = createHash('sha256').update(plaintext).digest();
    const keyFiles = { key: path.join(work, 'site.key'), pub: path.join(work, 'site.pub') };
    await createKeyPair(keyFiles.key, keyFiles.pub);
    s3 = await S3Server.start({ bucket: 'walvault-bench' });
    const rows: Row[] = [];
    for (const [i, c] of CASES.entries()) {
      console.log(`${c.label}...`);
      rows.push(await runCase(c, work, plaintext, digest, s3, keyFiles, i));
    }
    const x = (n: number) => (COUNTING ? fmt(n / plaintext.length, 2) : 'n/a');
    console.log(`\nper ${SEG_SIZE / MiB} MiB segment (${SEGMENTS} segments per path after one to warm up); x = multiples of the plaintext`);
    printTable([
      ['path', 'stored MiB', 'ratio', 'copied x', 'sha256 x', 'file read x', 'file write x', 'CPU ms (median)', 'CPU spread', 'wall ms (median)'],
      ...rows.map((r) => [
        r.label,
        fmt(r.storedBytes / MiB, 2),
        fmt(plaintext.length / r.storedBytes, 2),
        x(r.perSegment.copy),
        x(r.perSegment.sha256),
        x(r.perSegment.read),
        x(r.perSegment.write),
        fmt(median(r.cpuMs), 0),
        fmt(Math.max(...r.cpuMs) / Math.min(...r.cpuMs), 2),
        fmt(median(r.wallMs), 0),
      ]),
    ]);
    if (COUNTING) console.log('\ncopies by call (x plaintext)');
    for (const r of COUNTING ? rows : []) {
      const by = Object.entries(r.perSegment.copyBy).sort((a, b) => b[1] - a[1]);
      console.log(`  ${r.label}: ${by.length === 0 ? 'none' : by.map(([k, v]) => `${k} ${x(v)}`).join(', ')}`);
    }
    const file = saveResults('write-path', { machine: machineFacts(), segSize: SEG_SIZE, segments: SEGMENTS, counted: COUNTING, rows }, startedAt);
    console.log(`\nresults: ${path.relative(process.cwd(), file)}`);
  } finally {
    await s3?.destroy();
    removeDir(work);
  }
}

if (process.env.WALVAULT_WRITE_BENCH_CHILD !== '1') {
  // Run again with the counter preloaded, so it is in place in every thread before any work
  // (and with the profiler on, when asked).
  const args = [...(COUNTING ? ['-r', path.join(__dirname, 'byte-counter.js')] : []), ...(CPU_PROF_DIR ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF_DIR] : []), __filename];
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, WALVAULT_WRITE_BENCH_CHILD: '1', WALVAULT_BYTE_COUNTER: COUNTING ? '1' : '0' } });
  process.exit(r.status ?? 1);
} else {
  if (COUNTING && !counterInstalled()) throw new Error('the byte counter is not installed');
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
