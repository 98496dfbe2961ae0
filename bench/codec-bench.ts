/**
 * Codec bench: compression ratio and speed of every codec on real WAL, the way the archive
 * uses them (1 MiB frames through the same Codec objects, so zstd's worker round trip and the
 * thread-pool hops of the others are counted), plus AES-256-GCM encryption of the frames.
 *
 * WAL: a PostgreSQL 15 cluster with 16 MiB segments, pgbench initialised and then run
 * (the TPC-B-like OLTP mix) until BENCH_CODEC_WAL_MB (default 256) MiB of finished segments
 * exist; those segments are read from pg_wal.
 *
 * BENCH_CODEC_WAL_DIR=<dir> measures the WAL segments found in <dir> instead (your own
 * pg_wal or archive of raw segments, say), and BENCH_CODEC_SAVE_DIR=<dir> keeps the generated
 * segments there for another run.
 *
 * Speeds are MiB of plaintext per second on one stream (one frame at a time), which is what
 * one upload sees; several uploads run at once in the daemon.
 */
import { performance } from 'node:perf_hooks';
import { codecByName, CODEC_NAMES, type CodecName } from '../src/archive/codecs';
import { encryptFrame } from '../src/archive/encryption';
import { FRAME_PLAINTEXT_MAX } from '../src/archive/framed-body';
import { PgCluster } from '../test/helpers/pg-cluster';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const MiB = 1024 * 1024;

export interface CodecResult {
  codec: CodecName;
  ratio: number;
  compressMiBs: number;
  decompressMiBs: number;
}

export interface CodecBenchResult {
  walMiB: number;
  segments: number;
  workload: string;
  codecs: CodecResult[];
  aesGcmMiBs: number;
}

function frames(segments: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const s of segments) for (let at = 0; at < s.length; at += FRAME_PLAINTEXT_MAX) out.push(s.subarray(at, at + FRAME_PLAINTEXT_MAX));
  return out;
}

export async function realWal(walMiB: number): Promise<{ segments: Buffer[]; workload: string }> {
  const cluster = await PgCluster.start({ walSegSizeMiB: 16, settings: { max_wal_size: '4GB', checkpoint_timeout: '1h', wal_keep_size: '2GB' } });
  try {
    await cluster.pgbench(['-i', '-q', '-s', '20']);
    const first = await cluster.currentWalFileName();
    const load = cluster.pgbenchProcess(['-c', '4', '-j', '2', '-T', '600', '-n']);
    const startLsn = await cluster.currentWalLsn();
    const [h, l] = startLsn.split('/').map((x) => parseInt(x, 16));
    const start = h * 2 ** 32 + l;
    for (;;) {
      const [h2, l2] = (await cluster.currentWalLsn()).split('/').map((x) => parseInt(x, 16));
      if (h2 * 2 ** 32 + l2 - start >= walMiB * MiB + 16 * MiB) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    load.kill('SIGINT');
    const last = await cluster.currentWalFileName();
    // Only segments after pgbench -i: its bulk load is not typical WAL.
    const segments: Buffer[] = [];
    const tli = first.slice(0, 8);
    for (let n = parseInt(first.slice(8, 16), 16) * 256 + parseInt(first.slice(16), 16) + 1; segments.length * 16 < walMiB; n++) {
      const name = `${tli}${Math.floor(n / 256).toString(16).toUpperCase().padStart(8, '0')}${(n % 256).toString(16).toUpperCase().padStart(8, '0')}`;
      if (name >= last) break;
      segments.push(await cluster.readWalFile(name));
    }
    if (segments.length === 0) throw new Error(`no finished segments between ${first} and ${last}`);
    return { segments, workload: 'pgbench -s 20, 4 clients, TPC-B-like' };
  } finally {
    await cluster.destroy();
  }
}

export async function measureCodecs(segments: Buffer[], workload: string): Promise<CodecBenchResult> {
  const all = frames(segments);
  const plain = all.reduce((n, f) => n + f.length, 0);
  const results: CodecResult[] = [];
  for (const name of CODEC_NAMES) {
    const codec = codecByName(name);
    await codec.compress(all[0]); // load the module and start any worker outside the timing
    let t0 = performance.now();
    const packed: Buffer[] = [];
    for (const f of all) packed.push(await codec.compress(f));
    const compressS = (performance.now() - t0) / 1000;
    t0 = performance.now();
    for (let i = 0; i < packed.length; i++) {
      const out = await codec.decompress(packed[i], all[i].length);
      if (out.length !== all[i].length) throw new Error(`${name}: frame ${i} decompressed to ${out.length} bytes`);
    }
    const decompressS = (performance.now() - t0) / 1000;
    const stored = packed.reduce((n, p) => n + p.length, 0);
    results.push({ codec: name, ratio: plain / stored, compressMiBs: plain / MiB / compressS, decompressMiBs: plain / MiB / decompressS });
  }
  const key = randomBytes(32);
  const header = randomBytes(64);
  let t0 = performance.now();
  all.forEach((f, i) => encryptFrame(key, i, false, [header, header.subarray(0, 8)], f));
  const aesGcmMiBs = plain / MiB / ((performance.now() - t0) / 1000);
  return { walMiB: plain / MiB, segments: segments.length, workload, codecs: results, aesGcmMiBs };
}

export function printCodecTable(r: CodecBenchResult): void {
  console.log(`codecs on ${r.walMiB.toFixed(0)} MiB of real WAL (${r.segments} segments; ${r.workload}), 1 MiB frames, one stream`);
  const rows = [['codec', 'ratio', 'compress MiB/s', 'decompress MiB/s'], ...r.codecs.map((c) => [c.codec, c.ratio.toFixed(2), c.compressMiBs.toFixed(0), c.decompressMiBs.toFixed(0)])];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) console.log('  ' + row.map((c, i) => c.padEnd(widths[i])).join('  '));
  console.log(`  aes-256-gcm (per frame, after compression): ${r.aesGcmMiBs.toFixed(0)} MiB/s`);
}

/** The WAL to measure: from BENCH_CODEC_WAL_DIR when set, else generated (and saved to BENCH_CODEC_SAVE_DIR when set). */
export async function benchWal(walMiB: number): Promise<{ segments: Buffer[]; workload: string }> {
  const dir = process.env.BENCH_CODEC_WAL_DIR;
  if (dir) {
    const names = fs.readdirSync(dir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
    if (names.length === 0) throw new Error(`BENCH_CODEC_WAL_DIR=${dir} holds no WAL segments`);
    return { segments: names.map((n) => fs.readFileSync(path.join(dir, n))), workload: `segments from ${dir}` };
  }
  const wal = await realWal(walMiB);
  const save = process.env.BENCH_CODEC_SAVE_DIR;
  if (save) {
    fs.mkdirSync(save, { recursive: true });
    wal.segments.forEach((s, i) => fs.writeFileSync(path.join(save, `00000001${String(i).padStart(16, '0')}`), s));
  }
  return wal;
}

if (require.main === module) {
  const walMiB = Number(process.env.BENCH_CODEC_WAL_MB ?? 256);
  const startedAt = new Date();
  benchWal(walMiB)
    .then(({ segments, workload }) => measureCodecs(segments, workload))
    .then((r) => {
      printCodecTable(r);
      const dir = path.join(__dirname, '..', '..', 'bench', 'results');
      fs.mkdirSync(dir, { recursive: true });
      const file = path.join(dir, `codecs-${startedAt.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`);
      fs.writeFileSync(file, JSON.stringify({ bench: 'codecs', startedAt: startedAt.toISOString(), node: process.version, ...r }, null, 2) + '\n');
      console.log(`  results written to ${path.relative(process.cwd(), file)}`);
    })
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    });
}
