/**
 * Configuration: one TOML or JSON file with a section per site, or the one-site form
 * given on the command line. Everything is checked up front so that a typo stops the
 * daemon at start-up with one line naming the key, instead of surfacing hours later.
 *
 * Secrets never appear in messages: passwords are refused in the pg string, read from
 * `password_file` at load time, and messages describe a wrong value by its type only.
 *
 * Relative paths (state, a plain archive path, password_file) are resolved against the
 * config file's directory, so the file means the same whatever directory the daemon
 * starts in; on the command line they are relative to the working directory.
 *
 * The parts: config-file.ts reads the file's syntax, keys.ts lists the keys and their
 * defaults, site.ts, s3-table.ts and azure-table.ts check a site, messages.ts words the errors; this module
 * checks the top-level tables and the sites against each other.
 */
import * as path from 'path';
import { WalvaultError } from '../errors';
import type { Config, SiteConfig } from './config-types';
import { readConfigDocument } from './config-file';
import { closestName } from './conninfo';
import { CONFIG_KEYS, defaultOf } from './keys';
import { assignment, fail, invalid, isTable, rejectUnknownKeys, tableWord, typeName, type Ctx, type Table } from './messages';
import { buildSite } from './site';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const SITE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function loadConfigFile(file: string): Config {
  const { doc, format } = readConfigDocument(file);
  return buildConfig(doc, { source: file, format, baseDir: path.dirname(path.resolve(file)) });
}

/** The site keys the one-site form of `walvault run` takes as options. */
export interface OneSiteOptions {
  pg?: string;
  archive?: string;
  state?: string;
  slot?: string;
  mode?: string;
  compression?: string;
  archive_file_mode?: string;
  encryption_public_key_file?: string;
  backup_interval_hours?: number;
  first_backup_fast_checkpoint?: boolean;
}

/** The one-site form: `walvault run --pg ... --archive ... --state ...`. */
export function configFromOptions(o: OneSiteOptions): Config {
  const ctx: Ctx = { source: 'command line', format: 'cli', baseDir: process.cwd() };
  const raw: Table = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) raw[k] = v;
  return { logLevel: defaultOf('log', 'level', 'string'), sites: [buildSite(ctx, 'default', raw)], source: ctx.source };
}

export function selectSite(cfg: Config, name?: string): SiteConfig {
  const names = cfg.sites.map((s) => s.name);
  if (name !== undefined) {
    const site = cfg.sites.find((s) => s.name === name);
    if (site) return site;
    const guess = closestName(name, names);
    throw invalid(
      `${cfg.source}: no site named ${JSON.stringify(name)}; ` +
        (guess ? `did you mean "${guess}"? ` : '') +
        `configured sites: ${names.join(', ') || '(none)'}`,
    );
  }
  if (cfg.sites.length === 1) return cfg.sites[0];
  if (cfg.sites.length === 0) throw invalid(`${cfg.source}: sites: no sites configured`, `add a [sites.<name>] section`);
  throw invalid(`${cfg.source}: several sites are configured (${names.join(', ')})`, `choose one with --site <name>`);
}

/**
 * The site, for a command that writes one archive (wal-push, backup delete, check --repair,
 * copy --to): with several, it would leave the others behind, so a site naming more than one
 * is refused before anything is written. `run` and `backup push` write every archive.
 */
export function writableSite(site: SiteConfig, command: string): SiteConfig {
  if (site.archives.length <= 1) return site;
  throw new WalvaultError(
    'ARCHIVES_WRITE_UNSUPPORTED',
    `${command}: site ${site.name} names ${site.archives.length} archives (${site.archives.map((a) => a.archive).join(', ')}), and ${command} writes one archive only (run and backup push write them all)`,
    { fix: `give ${command} one archive for writing (--archive URL, or a site with one) and fill the others with walvault copy` },
  );
}

/** "host:port" or "[v6]:port"; null for anything else. */
function parseHostPort(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:[\]\s]+)):([0-9]{1,5})$/.exec(text.trim());
  if (!m || Number(m[3]) > 65535) return null;
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

function buildConfig(doc: unknown, ctx: Ctx): Config {
  if (!isTable(doc)) fail(ctx, '(top level)', `expected ${tableWord(ctx)}, got ${typeName(doc)}`, 'the file must hold one object with "log" and "sites"');
  rejectUnknownKeys(ctx, doc, '', CONFIG_KEYS.top);

  let logLevel = defaultOf('log', 'level', 'string');
  if (doc.log !== undefined) {
    if (!isTable(doc.log)) fail(ctx, 'log', `expected ${tableWord(ctx)}, got ${typeName(doc.log)}`, `write ${ctx.format === 'json' ? '"log": { "level": "info" }' : '[log] followed by level = "info"'}`);
    rejectUnknownKeys(ctx, doc.log, 'log.', CONFIG_KEYS.log);
    const level = doc.log.level;
    if (level !== undefined) {
      if (typeof level !== 'string' || !LOG_LEVELS.includes(level)) {
        const shown = typeof level === 'string' ? JSON.stringify(level) : typeName(level);
        fail(ctx, 'log.level', `${shown} is not a log level`, `use one of ${LOG_LEVELS.map((l) => `"${l}"`).join(', ')}`);
      }
      logLevel = level;
    }
  }

  let httpListen: { host: string; port: number } | undefined;
  if (doc.http !== undefined) {
    if (!isTable(doc.http)) fail(ctx, 'http', `expected ${tableWord(ctx)}, got ${typeName(doc.http)}`, `write ${ctx.format === 'json' ? '"http": { "listen": "127.0.0.1:9187" }' : '[http] followed by listen = "127.0.0.1:9187"'}`);
    rejectUnknownKeys(ctx, doc.http, 'http.', CONFIG_KEYS.http);
    const listen = doc.http.listen ?? defaultOf('http', 'listen', 'string');
    const parsed = typeof listen === 'string' ? parseHostPort(listen) : null;
    if (!parsed) {
      fail(ctx, 'http.listen', `${typeof listen === 'string' ? JSON.stringify(listen) : typeName(listen)} is not host:port`, `write ${assignment(ctx, 'listen', '"127.0.0.1:9187"')} (a loopback address keeps the metrics on this host)`);
    }
    httpListen = parsed!;
  }

  const addSite = ctx.format === 'json' ? 'add "sites": { "<name>": { "pg": ..., "archive": ..., "state": ... } }' : 'add a [sites.<name>] section with pg, archive and state';
  if (doc.sites === undefined) fail(ctx, 'sites', 'no sites configured', addSite);
  if (!isTable(doc.sites)) fail(ctx, 'sites', `expected ${tableWord(ctx)}, got ${typeName(doc.sites)}`, addSite);
  const entries = Object.entries(doc.sites);
  if (entries.length === 0) fail(ctx, 'sites', 'no sites configured', addSite);

  const sites: SiteConfig[] = [];
  for (const [name, raw] of entries) {
    if (!SITE_NAME.test(name)) {
      fail(ctx, `sites.${JSON.stringify(name)}`, 'invalid site name', 'use up to 63 letters, digits, "_", "-" or "." starting with a letter or digit (the name appears in slot names, metrics and --site)');
    }
    if (!isTable(raw)) {
      fail(ctx, `sites.${name}`, `expected ${tableWord(ctx)}, got ${typeName(raw)}`, ctx.format === 'json' ? `write "${name}": { "pg": ..., "archive": ..., "state": ... }` : `write [sites.${name}] followed by its keys`);
    }
    sites.push(buildSite(ctx, name, raw));
  }
  checkSitesApart(ctx, sites);
  return { logLevel, sites, source: ctx.source, ...(httpListen !== undefined ? { httpListen } : {}) };
}

/** Sites sharing a name (up to case), a state directory or an archive would corrupt each other. */
function checkSitesApart(ctx: Ctx, sites: SiteConfig[]): void {
  for (let i = 0; i < sites.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = sites[j];
      const b = sites[i];
      if (a.name.toLowerCase() === b.name.toLowerCase()) {
        fail(ctx, `sites.${b.name}`, `duplicate site name (same as sites.${a.name} apart from case)`, 'give every site a distinct name');
      }
      if (a.state === b.state) {
        fail(ctx, `sites.${b.name}.state`, `same directory as sites.${a.name}.state`, 'give every site its own state directory');
      }
      const shared = b.archives.find((t) => a.archives.some((u) => u.archive === t.archive));
      if (shared) {
        const aShared = a.archives.find((u) => u.archive === shared.archive)!;
        fail(ctx, archiveKey(b, shared), `same archive as ${archiveKey(a, aShared)}`, 'one archive holds one cluster: give every site its own archive');
      }
    }
  }
}

/** Where a site's archive is named in the file. */
function archiveKey(site: SiteConfig, target: SiteConfig['archives'][number]): string {
  return site.archives.length > 1 || site.archives[0] !== target ? `sites.${site.name}.archives[${site.archives.indexOf(target) + 1}].url` : `sites.${site.name}.archive`;
}
