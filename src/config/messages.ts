/**
 * How a configuration problem is told: one line, `<source>: <key path>: <problem>; <fix>`, as a
 * WalvaultError('CONFIG_INVALID'). Key paths and fixes are written in the user's own syntax
 * (TOML, JSON or command-line options), so the fix can be copied as it stands. A wrong value
 * is described by its kind only: it might be a secret.
 */
import { WalvaultError } from '../errors';
import { PASSWORD_HELP, closestName } from './conninfo';

export type Format = 'toml' | 'json' | 'cli';
export type Table = Record<string, unknown>;

export interface Ctx {
  source: string;
  format: Format;
  /** Relative paths resolve against this directory. */
  baseDir: string;
}

export function invalid(what: string, fix?: string): WalvaultError {
  const oneLine = (text: string) => text.replace(/\s*[\r\n]+\s*/g, ' ');
  return new WalvaultError('CONFIG_INVALID', oneLine(what), fix === undefined ? {} : { fix: oneLine(fix) });
}

export function fail(ctx: Ctx, where: string, what: string, fix: string): never {
  throw invalid(`${ctx.source}: ${where}: ${what}`, `${fix}`);
}

/** The command-line option that sets a site key in the one-site form. */
function optionName(key: string): string {
  return `--${key.replace(/_/g, '-')}`;
}

export function keyPath(ctx: Ctx, site: string, key: string): string {
  return ctx.format === 'cli' ? optionName(key) : `sites.${site}.${key}`;
}

/** How to write `key = value` in the user's own syntax, for fixes. */
export function assignment(ctx: Ctx, key: string, literal: string): string {
  if (ctx.format === 'json') return `"${key}": ${literal}`;
  if (ctx.format === 'cli') return `${optionName(key)} ${literal.replace(/^"|"$/g, "'")}`;
  return `${key} = ${literal}`;
}

/** A string key of `raw`: undefined when absent (refused when `required`), refused when of another type or empty (unless `emptyOk`). */
export function stringKey(ctx: Ctx, raw: Table, where: string, key: string, o: { required: boolean; example: string; emptyOk?: boolean }): string | undefined {
  const v = raw[key];
  if (v === undefined) {
    if (o.required) fail(ctx, where, 'missing', `add ${assignment(ctx, key, o.example)}`);
    return undefined;
  }
  if (typeof v !== 'string') fail(ctx, where, `expected a string, got ${typeName(v)}`, `quote it: ${assignment(ctx, key, o.example)}`);
  if (v === '' && !o.emptyOk) fail(ctx, where, 'is empty', o.required ? `set it: ${assignment(ctx, key, o.example)}` : 'remove it to get the default');
  return v;
}

export function tableWord(ctx: Ctx): string {
  return ctx.format === 'json' ? 'an object' : 'a table';
}

/** Describes a wrong value by its kind only: the value itself might be a secret. */
export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number';
  if (typeof v === 'object') return 'a table';
  if (typeof v === 'bigint') return 'an integer';
  return `a ${typeof v}`;
}

export function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** A misspelt key would otherwise be ignored and its setting silently left at the default. */
export function rejectUnknownKeys(ctx: Ctx, table: Table, prefix: string, allowed: readonly string[]): void {
  for (const key of Object.keys(table)) {
    if (allowed.includes(key)) continue;
    const shownKey = ctx.format === 'cli' ? optionName(key) : prefix + key;
    if (key === 'password') fail(ctx, shownKey, 'passwords are not allowed in the configuration', PASSWORD_HELP);
    const guess = closestName(key, allowed);
    fail(ctx, shownKey, 'unknown key', guess ? `did you mean "${guess}"?` : `remove it; known keys here: ${allowed.join(', ')}`);
  }
}
