/**
 * Dependencies point one way (issue 18, item 3): every relative import in src/ goes from a
 * layer to its own directory, to a lower layer, or along one of the few peer imports listed
 * below; runtime imports form no cycle. docs/architecture.md ("Dependency rule") states this
 * rule and nothing more.
 *
 * The checker is a pure function of (file -> its imports), so the tests below also feed it
 * made-up trees and show it failing on a forbidden import.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import ts from 'typescript';

const ROOT = path.join(__dirname, '..', '..', '..');

/** Top to bottom: a directory of src/ (or src/errors.ts) may import those below its own layer. */
const LAYERS: readonly (readonly string[])[] = [
  ['cli'],
  ['daemon', 'restore', 'check', 'copy'],
  ['backup'],
  ['config'],
  ['postgres', 'wal', 'archive', 'ledger'],
  ['storage'],
  ['observe', 'util'],
  ['errors'],
];

/** The only imports allowed between directories of one layer: importer -> imported. */
const PEER_IMPORTS: readonly (readonly [string, string])[] = [
  // A drill restores the archive into a scratch directory.
  ['check', 'restore'],
  ['postgres', 'wal'],
  ['archive', 'wal'],
  ['ledger', 'wal'],
];

const RULE = LAYERS.map((l) => l.join(' | ')).join(' -> ');

export interface SourceImport {
  /** As written: './lsn', '../archive/archive'. */
  specifier: string;
  /** Erased from the emitted JavaScript (`import type`, `typeof import()`): no runtime edge. */
  typeOnly: boolean;
}

/** The relative imports of one file's text: static, re-exports, import(), require(), import types. */
export function parseImports(fileName: string, text: string): SourceImport[] {
  const out: SourceImport[] = [];
  const add = (node: ts.Node | undefined, typeOnly: boolean) => {
    if (node && ts.isStringLiteralLike(node) && node.text.startsWith('.')) out.push({ specifier: node.text, typeOnly });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const named = clause?.namedBindings;
      const allNamedTypes = named !== undefined && ts.isNamedImports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly);
      add(node.moduleSpecifier, clause !== undefined && (clause.isTypeOnly || (clause.name === undefined && allNamedTypes)));
    } else if (ts.isExportDeclaration(node)) {
      const named = node.exportClause;
      add(node.moduleSpecifier, node.isTypeOnly || (named !== undefined && ts.isNamedExports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly)));
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node.moduleReference.expression, node.isTypeOnly);
    } else if (ts.isCallExpression(node) && (node.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(node.expression) && node.expression.text === 'require'))) {
      add(node.arguments[0], false);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node.argument.literal, true);
    }
    ts.forEachChild(node, visit);
  };
  visit(ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS));
  return out;
}

/** `src/check/drill.ts` -> `check`; `src/errors.ts` -> `errors`. */
function componentOf(file: string): string {
  const parts = file.split('/');
  return parts.length === 2 ? parts[1].replace(/\.ts$/, '') : parts[1];
}

function layerOf(component: string): number {
  return LAYERS.findIndex((l) => l.includes(component));
}

function allowed(from: string, to: string): boolean {
  if (from === to) return true;
  const a = layerOf(from);
  const b = layerOf(to);
  if (a < b) return true;
  return a === b && PEER_IMPORTS.some(([x, y]) => x === from && y === to);
}

/**
 * Every break of the rule in a tree: `files` maps each source file (`src/...ts`, '/'
 * separated) to its imports. One line per forbidden import (file, import, rule), per file
 * in a directory the rule does not place, per import that names no file, and per cycle of
 * runtime imports.
 */
export function dependencyViolations(files: ReadonlyMap<string, readonly SourceImport[]>): string[] {
  const problems: string[] = [];
  const runtime = new Map<string, string[]>();
  for (const [file, imports] of files) {
    const from = componentOf(file);
    if (layerOf(from) < 0) problems.push(`${file}: ${from} has no place in the layer rule ${RULE}`);
    const edges: string[] = [];
    runtime.set(file, edges);
    for (const imp of imports) {
      const base = path.posix.normalize(path.posix.join(path.posix.dirname(file), imp.specifier));
      const target = [`${base}.ts`, `${base}/index.ts`].find((f) => files.has(f));
      if (!target) {
        problems.push(`${file}: imports '${imp.specifier}', which is no source file`);
        continue;
      }
      const to = componentOf(target);
      if (layerOf(from) >= 0 && layerOf(to) >= 0 && !allowed(from, to)) {
        problems.push(`${file}: imports '${imp.specifier}' (${to}), but ${from} may not import ${to}: ${RULE}`);
      }
      if (!imp.typeOnly && target !== file) edges.push(target);
    }
  }
  for (const cycle of cycles(runtime)) problems.push(`runtime import cycle among ${cycle.join(', ')}`);
  return problems;
}

/** The strongly connected components of more than one file (Tarjan), each sorted by name. */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) connect(v);
  return found;
}

/** src/ as it is: every .ts file and its imports. */
function sourceTree(): Map<string, SourceImport[]> {
  const files = new Map<string, SourceImport[]>();
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) files.set(rel, parseImports(rel, fs.readFileSync(path.join(ROOT, rel), 'utf8')));
    }
  };
  walk('src');
  return files;
}

/** A made-up tree: file -> import lines. */
function tree(sources: Record<string, string>): Map<string, SourceImport[]> {
  return new Map(Object.entries(sources).map(([file, text]) => [file, parseImports(file, text)]));
}

describe('dependency direction', () => {
  test('src/ follows the layer rule and has no runtime import cycle', () => {
    const files = sourceTree();
    assert.ok(files.size > 100, `read ${files.size} source files`);
    assert.deepEqual(dependencyViolations(files), []);
  });

  test('a forbidden import added to src/ makes it fail, naming the file, the import and the rule', () => {
    const files = sourceTree();
    const local = files.get('src/storage/local.ts')!;
    files.set('src/storage/local.ts', [...local, ...parseImports('src/storage/local.ts', "import { Archive } from '../archive/archive';")]);
    const problems = dependencyViolations(files);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0], /^src\/storage\/local\.ts: imports '\.\.\/archive\/archive' \(archive\), but storage may not import archive: cli -> daemon \| restore \| check \| copy -> /);
  });

  test('daemon and check never import each other, types included', () => {
    const files = tree({
      'src/daemon/drill-scheduler.ts': "import type { DrillResult } from '../check/drill';",
      'src/check/drill.ts': '',
      'src/check/site-status.ts': "import { LEDGER_FILE } from '../daemon/state-dir';",
      'src/daemon/state-dir.ts': '',
    });
    assert.deepEqual(
      dependencyViolations(files).map((p) => p.split(',')[0]),
      ["src/daemon/drill-scheduler.ts: imports '../check/drill' (check)", "src/check/site-status.ts: imports '../daemon/state-dir' (daemon)"],
    );
  });

  test('peers import each other only as listed: check may import restore, restore not check', () => {
    const files = tree({
      'src/check/drill.ts': "import { restoreBackup } from '../restore/restore';",
      'src/restore/restore.ts': '',
      'src/restore/wal-miss.ts': "import { gapAfterMiss } from '../check/wal-gap';",
      'src/check/wal-gap.ts': '',
      'src/archive/archive.ts': "import { parseLsn } from '../wal/lsn';",
      'src/wal/lsn.ts': "import { WalvaultError } from '../errors';",
      'src/errors.ts': '',
    });
    const problems = dependencyViolations(files);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0], /^src\/restore\/wal-miss\.ts: imports '\.\.\/check\/wal-gap' \(check\), but restore may not import check/);
  });

  test('a runtime import cycle fails; one closed only by type imports does not', () => {
    const runtime = tree({
      'src/archive/codecs.ts': "const w = require('./workers') as typeof import('./workers');",
      'src/archive/workers.ts': "export { LEVEL } from './codecs';",
    });
    assert.deepEqual(dependencyViolations(runtime), ['runtime import cycle among src/archive/codecs.ts, src/archive/workers.ts']);
    const typesOnly = tree({
      'src/archive/codecs.ts': "import { FRAME_MAX } from './framed-body';",
      'src/archive/framed-body.ts': "import type { Codec } from './codecs';\nimport { type CompressedFrame } from './codecs';",
    });
    assert.deepEqual(dependencyViolations(typesOnly), []);
  });

  test('a directory the rule does not place, and an import of no file, fail', () => {
    const files = tree({ 'src/metrics/x.ts': "import './missing';" });
    assert.deepEqual(dependencyViolations(files), [
      'src/metrics/x.ts: metrics has no place in the layer rule cli -> daemon | restore | check | copy -> backup -> config -> postgres | wal | archive | ledger -> storage -> observe | util -> errors',
      "src/metrics/x.ts: imports './missing', which is no source file",
    ]);
  });

  test('every way of importing is seen, and told type-only or not', () => {
    const text = [
      "import * as fs from 'node:fs';",
      "import { a } from './a';",
      "import type { B } from './b';",
      "import { type C, type D } from './c';",
      "import { type E, e } from './e';",
      "import './f';",
      "export { g } from './g';",
      "export type { H } from './h';",
      "export * from './i';",
      "const j = () => import('./j');",
      "const k = require('./k') as typeof import('./k2');",
      '// import { l } from "./l";',
    ].join('\n');
    assert.deepEqual(parseImports('src/x/y.ts', text), [
      { specifier: './a', typeOnly: false },
      { specifier: './b', typeOnly: true },
      { specifier: './c', typeOnly: true },
      { specifier: './e', typeOnly: false },
      { specifier: './f', typeOnly: false },
      { specifier: './g', typeOnly: false },
      { specifier: './h', typeOnly: true },
      { specifier: './i', typeOnly: false },
      { specifier: './j', typeOnly: false },
      { specifier: './k', typeOnly: false },
      { specifier: './k2', typeOnly: true },
    ]);
  });
});
