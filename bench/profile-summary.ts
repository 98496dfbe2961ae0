/**
 * Summarises a V8 .cpuprofile (from `BENCH_CPU_PROF=<dir> npm run bench`) as self time per
 * function, without opening DevTools:
 *
 *   node dist/bench/profile-summary.js <file.cpuprofile> [top=25]
 *
 * Self time answers "where does the main thread spend its time"; the inclusive column
 * adds what the function's callees spent, so a cheap wrapper around an expensive native
 * call (hash.update) still shows up under the caller that made the call.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function frameKey(f: CallFrame): string {
  const name = f.functionName || '(anonymous)';
  if (!f.url) return name;
  // Paths in the repo are what one acts on; node_modules and node: internals stay short.
  const url = f.url.replace(/^file:\/\//, '');
  const short = url.includes('/node_modules/') ? url.slice(url.lastIndexOf('/node_modules/') + 14) : path.relative(process.cwd(), url) || url;
  return `${name}  ${short}:${f.lineNumber + 1}`;
}

function summarise(file: string, top: number): void {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attributing it to sample i is V8's convention.
  for (let i = 0; i < prof.samples.length; i++) {
    selfUs.set(prof.samples[i], (selfUs.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
  }
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    const key = frameKey(node.callFrame);
    self.set(key, (self.get(key) ?? 0) + us);
    // Count each function once per stack, so recursion does not inflate it.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = frameKey(byId.get(cur)!.callFrame);
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + us);
    }
  }
  const total = prof.endTime - prof.startTime;
  const idle = self.get('(idle)') ?? 0;
  console.log(`${file}: ${(total / 1e6).toFixed(2)} s profiled, main thread busy ${((total - idle) / 1e6).toFixed(2)} s (${(((total - idle) / total) * 100).toFixed(0)}%)`);
  const show = (title: string, m: Map<string, number>) => {
    console.log(`\n${title}`);
    const rows = [...m].filter(([k]) => k !== '(idle)' && k !== '(root)').sort((a, b) => b[1] - a[1]).slice(0, top);
    for (const [k, us] of rows) console.log(`${(us / 1000).toFixed(0).padStart(8)} ms ${((us / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
  };
  show('self time', self);
  show('inclusive time', inclusive);
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node dist/bench/profile-summary.js <file.cpuprofile> [top]');
  process.exitCode = 2;
} else {
  summarise(file, Number(topArg ?? 25));
}
