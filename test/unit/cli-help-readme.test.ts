/**
 * The README's command synopses against the CLI's own help (issue 17, item 10): every option
 * `walvault CMD --help` lists appears in the README's synopsis of CMD, and every option the
 * synopsis shows exists; every command the CLI has gets a synopsis.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';

const ROOT = path.join(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'walvault');

function help(command: string[]): string {
  return execFileSync(process.execPath, [BIN, ...command, '--help'], { encoding: 'utf8' });
}

/** Long options of a help text's "Options:" list, but --help. */
function helpOptions(text: string): Set<string> {
  const list = text.slice(text.indexOf('Options:'), text.indexOf('Commands:') > 0 ? text.indexOf('Commands:') : undefined);
  return new Set([...list.matchAll(/^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]).filter((o) => o !== '--help'));
}

/** Subcommand names of a help text's "Commands:" list, but help. */
function helpCommands(text: string): string[] {
  const i = text.indexOf('Commands:');
  if (i < 0) return [];
  return [...text.slice(i).matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]).filter((c) => c !== 'help');
}

/**
 * The synopsis lines of each command in the README's code blocks under "### `walvault ...`":
 * a line starting "walvault" names the command (its leading lowercase words), and the
 * indented lines after it continue it.
 */
function synopses(): Map<string, string> {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const out = new Map<string, string>();
  for (const section of readme.split(/^### /m).filter((s) => s.startsWith('`walvault '))) {
    const block = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
    let current: string | null = null;
    for (const line of block.split('\n')) {
      if (line.startsWith('walvault ')) {
        const words = line.split(/\s+/).slice(1);
        const name: string[] = [];
        for (const w of words) {
          if (!/^[a-z][a-z-]*$/.test(w)) break;
          name.push(w);
        }
        current = name.join(' ');
        out.set(current, (out.get(current) ?? '') + line + '\n');
      } else if (current && /^\s/.test(line)) {
        out.set(current, out.get(current) + line + '\n');
      }
    }
  }
  return out;
}

/** Every command path of the CLI: leaves of the command tree. */
function commands(): string[][] {
  const out: string[][] = [];
  for (const top of helpCommands(help([]))) {
    const subs = helpCommands(help([top]));
    if (subs.length === 0) out.push([top]);
    else for (const sub of subs) out.push([top, sub]);
  }
  return out;
}

describe('README synopses match the CLI help', () => {
  const readme = synopses();
  const cli = commands();

  test('the CLI has the commands the README shows, and no other', () => {
    assert.ok(cli.length >= 10, `commands found in --help: ${cli.map((c) => c.join(' ')).join(', ')}`);
    assert.deepEqual([...readme.keys()].sort(), cli.map((c) => c.join(' ')).sort());
  });

  for (const command of cli) {
    const name = command.join(' ');
    test(`walvault ${name}`, () => {
      const synopsis = readme.get(name) ?? '';
      const inReadme = new Set([...synopsis.matchAll(/(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]));
      const inHelp = helpOptions(help(command));
      assert.deepEqual([...inHelp].filter((o) => !inReadme.has(o)), [], `options of walvault ${name} --help missing from its README synopsis`);
      assert.deepEqual([...inReadme].filter((o) => !inHelp.has(o)), [], `options in the README synopsis of walvault ${name} that --help does not list`);
    });
  }
});
