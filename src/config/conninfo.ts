/**
 * libpq connection strings -> options for `new pg.Client(...)`.
 *
 * Both libpq forms are accepted: `key=value ...` and `postgresql://` URIs. Anything left
 * unset is left to pg, which falls back to PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD,
 * PGSSLMODE and finally to ~/.pgpass (or PGPASSFILE) through its `pgpass` dependency, so
 * we never invent defaults here.
 *
 * Passwords are refused in the string itself: connection strings end up in argv, shell
 * history, config files under version control and log lines. Error messages name keys
 * and positions, never values, so a password typed in the wrong place does not leak.
 */
import * as fs from 'fs';
import * as os from 'os';
import type { ConnectionOptions } from 'tls';
import { WalvaultError } from '../errors';

export type PgConnectionConfig = {
  host?: string;
  port?: number;
  user?: string;
  database?: string;
  password?: string;
  ssl?: boolean | ConnectionOptions;
  application_name?: string;
  connectionTimeoutMillis?: number;
  options?: string;
};

const KNOWN_KEYS = [
  'host',
  'hostaddr',
  'port',
  'user',
  'dbname',
  'password',
  'passfile',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'application_name',
  'connect_timeout',
  'options',
] as const;

const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
type SslMode = (typeof SSL_MODES)[number];

export const PASSWORD_HELP =
  'put the password in PGPASSWORD, in a password file (PGPASSFILE or ~/.pgpass), ' +
  'or in a file named by the site key password_file = "/path"';

type Entries = Map<string, string>;

export function parseConninfo(s: string, where: string): PgConnectionConfig {
  const fail = (what: string): never => {
    throw new WalvaultError('CONFIG_INVALID', `${where}: ${what}`.replace(/\s*[\r\n]+\s*/g, ' '));
  };
  const text = s.trim();
  const entries = /^postgres(ql)?:\/\//i.test(text) ? parseUri(text, fail) : parseKeywordValue(text, fail);
  return interpret(entries, fail);
}

/** One line for logs and errors: where we connect and as whom, never the password. */
export function describeConninfo(c: PgConnectionConfig): string {
  const env = process.env;
  const host = c.host ?? nonEmpty(env.PGHOST) ?? 'localhost';
  const port = c.port ?? nonEmpty(env.PGPORT) ?? 5432;
  const user = c.user ?? nonEmpty(env.PGUSER) ?? nonEmpty(env.USER) ?? safeUsername();
  const shownHost = host.includes(':') && !host.startsWith('/') ? `[${host}]` : host;
  return `${shownHost}:${port} user=${user}`;
}

/** The candidate nearest to `word` by edit distance, if it is close enough to be a typo. */
export function closestName(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  return bestDistance <= limit ? best : undefined;
}

// --- the two syntaxes --------------------------------------------------------------

type Fail = (what: string) => never;

/** libpq's `key = value` syntax: values may be single-quoted; backslash escapes one character. */
function parseKeywordValue(s: string, fail: Fail): Entries {
  // Checked before tokenising so that a malformed string holding a password can never
  // be echoed back as "unknown key <part of the password>".
  if (/(^|\s)password\s*=/i.test(s)) refusePassword(fail, 'a password= key');
  const entries: Entries = new Map();
  const isSpace = (ch: string | undefined) => ch !== undefined && /\s/.test(ch);
  let i = 0;
  while (i < s.length) {
    while (isSpace(s[i])) i++;
    if (i >= s.length) break;
    const keyStart = i;
    while (i < s.length && !isSpace(s[i]) && s[i] !== '=') i++;
    const key = s.slice(keyStart, i);
    while (isSpace(s[i])) i++;
    if (s[i] !== '=') {
      fail(
        `${describeToken(key, keyStart)} is not followed by "="; write key=value pairs separated by spaces, ` +
          `e.g. "host=db1 port=5432 user=walvault"`,
      );
    }
    i++;
    while (isSpace(s[i])) i++;
    let value = '';
    if (s[i] === "'") {
      i++;
      for (;;) {
        if (i >= s.length) fail(`the quoted value of ${describeToken(key, keyStart)} has no closing quote; end it with '`);
        const ch = s[i++];
        if (ch === "'") break;
        if (ch === '\\' && i < s.length) value += s[i++];
        else value += ch;
      }
    } else {
      while (i < s.length && !isSpace(s[i])) {
        const ch = s[i++];
        if (ch === '\\' && i < s.length) value += s[i++];
        else value += ch;
      }
    }
    entries.set(key, value);
  }
  return entries;
}

/** `postgresql://[user[:password]@][host][:port][/dbname][?key=value&...]` */
function parseUri(s: string, fail: Fail): Entries {
  const entries: Entries = new Map();
  const afterScheme = s.slice(s.indexOf('://') + 3);
  const q = afterScheme.indexOf('?');
  const body = q < 0 ? afterScheme : afterScheme.slice(0, q);
  const query = q < 0 ? '' : afterScheme.slice(q + 1);
  const slash = body.indexOf('/');
  const authority = slash < 0 ? body : body.slice(0, slash);
  const path = slash < 0 ? '' : body.slice(slash + 1);

  const at = authority.lastIndexOf('@');
  const userinfo = at < 0 ? '' : authority.slice(0, at);
  const hostport = at < 0 ? authority : authority.slice(at + 1);
  if (userinfo.includes(':')) refusePassword(fail, 'a password in the URI (user:password@)');
  const params = query === '' ? [] : query.split('&');
  for (const p of params) {
    const name = p.split('=', 1)[0];
    if (safeDecode(name) === 'password') refusePassword(fail, 'a password query parameter');
  }

  if (userinfo !== '') entries.set('user', decode(userinfo, 'the user name', fail));
  if (hostport !== '') {
    if (hostport.includes(',')) fail(multiHost());
    let host: string;
    let port = '';
    if (hostport.startsWith('[')) {
      const close = hostport.indexOf(']');
      if (close < 0) fail('the IPv6 address in the URI has no closing "]"; write it as [::1]:5432');
      host = hostport.slice(1, close);
      const rest = hostport.slice(close + 1);
      if (rest !== '' && !rest.startsWith(':')) fail('unexpected text after "]" in the URI host; write [address]:port');
      port = rest.slice(1);
    } else {
      const colon = hostport.indexOf(':');
      host = colon < 0 ? hostport : hostport.slice(0, colon);
      port = colon < 0 ? '' : hostport.slice(colon + 1);
    }
    if (host !== '') entries.set('host', decode(host, 'the host', fail));
    if (port !== '') entries.set('port', decode(port, 'the port', fail));
  }
  if (path !== '') entries.set('dbname', decode(path, 'the database name', fail));

  for (const p of params) {
    if (p === '') continue;
    const eq = p.indexOf('=');
    if (eq < 0) fail(`query parameter ${describeToken(safeDecode(p), -1)} has no "="; write ?key=value&key=value`);
    entries.set(decode(p.slice(0, eq), 'a query parameter name', fail), decode(p.slice(eq + 1), 'a query parameter value', fail));
  }
  return entries;
}

// --- from strings to pg options ----------------------------------------------------

function interpret(entries: Entries, fail: Fail): PgConnectionConfig {
  for (const key of entries.keys()) {
    if ((KNOWN_KEYS as readonly string[]).includes(key)) continue;
    const guess = closestName(key, KNOWN_KEYS);
    fail(
      `unknown connection key ${describeToken(key, -1)}` +
        (guess ? `; did you mean "${guess}"?` : `; supported keys: ${KNOWN_KEYS.filter((k) => k !== 'password').join(', ')}`),
    );
  }
  if (entries.has('password')) refusePassword(fail, 'a password key');
  if (entries.has('passfile')) {
    // pg's pgpass lookup only honours the PGPASSFILE environment variable; accepting the
    // key and ignoring it would fail later as a confusing authentication error.
    fail(`passfile: not supported in the connection string; set PGPASSFILE in the environment instead, or use the site key password_file = "/path"`);
  }

  const out: PgConnectionConfig = {};
  const get = (k: string) => nonEmpty(entries.get(k));

  const host = get('hostaddr') ?? get('host');
  if (host !== undefined) {
    if (host.includes(',')) fail(multiHost());
    out.host = host;
  }
  const port = get('port');
  if (port !== undefined) {
    if (port.includes(',')) fail(multiHost());
    const n = /^\d{1,5}$/.test(port) ? Number(port) : NaN;
    if (!(n >= 1 && n <= 65535)) fail('port: not a port number; use an integer from 1 to 65535, e.g. port=5432');
    out.port = n;
  }
  const user = get('user');
  if (user !== undefined) out.user = user;
  const dbname = get('dbname');
  if (dbname !== undefined) out.database = dbname;
  const appName = get('application_name');
  if (appName !== undefined) out.application_name = appName;
  const options = get('options');
  if (options !== undefined) out.options = options;

  const timeout = get('connect_timeout');
  if (timeout !== undefined) {
    if (!/^\d+$/.test(timeout)) fail('connect_timeout: not a whole number of seconds; use e.g. connect_timeout=10 (0 waits forever)');
    // 0 is libpq's "wait forever", which is also pg's default, so it needs no setting.
    if (Number(timeout) > 0) out.connectionTimeoutMillis = Number(timeout) * 1000;
  }

  const ssl = sslOptions(entries, host ?? nonEmpty(process.env.PGHOST), fail);
  if (ssl !== undefined) out.ssl = ssl;
  return out;
}

/**
 * libpq's sslmode mapped onto Node's TLS options. Unset (and no certificate keys) leaves
 * `ssl` out so that pg reads PGSSLMODE itself.
 */
function sslOptions(entries: Entries, host: string | undefined, fail: Fail): boolean | ConnectionOptions | undefined {
  const rawMode = nonEmpty(entries.get('sslmode'));
  const rootcert = nonEmpty(entries.get('sslrootcert'));
  const cert = nonEmpty(entries.get('sslcert'));
  const key = nonEmpty(entries.get('sslkey'));
  if (rawMode !== undefined && !(SSL_MODES as readonly string[]).includes(rawMode)) {
    const shown = /^[a-z-]{1,20}$/.test(rawMode) ? `"${rawMode}"` : 'value';
    fail(`sslmode: ${shown} is not a libpq SSL mode; use one of ${SSL_MODES.join(', ')}`);
  }
  if (rawMode === undefined && rootcert === undefined && cert === undefined && key === undefined) return undefined;
  if ((cert === undefined) !== (key === undefined)) {
    fail(`${cert === undefined ? 'sslkey' : 'sslcert'} is set without ${cert === undefined ? 'sslcert' : 'sslkey'}; a client certificate needs both sslcert and sslkey`);
  }
  const envMode = process.env.PGSSLMODE;
  const mode: SslMode =
    (rawMode as SslMode | undefined) ??
    ((SSL_MODES as readonly string[]).includes(envMode ?? '') ? (envMode as SslMode) : 'prefer');

  if (rootcert === 'system' && mode !== 'verify-full') {
    fail(`sslrootcert=system needs sslmode=verify-full (a weaker mode would not check the server's name); set sslmode=verify-full`);
  }
  // libpq never uses TLS over Unix-domain sockets and the server refuses it there, so
  // every mode means "no TLS" for a socket directory.
  if (host !== undefined && host.startsWith('/')) return false;
  // pg cannot fall back between TLS and plaintext the way libpq does: "allow" prefers
  // plaintext, "prefer" prefers TLS, so each gets its first choice.
  if (mode === 'disable' || mode === 'allow') return false;

  const tls: ConnectionOptions = {};
  if (cert !== undefined && key !== undefined) {
    tls.cert = readSslFile('sslcert', cert, fail);
    // Non-enumerable so the private key never shows up when a config object is logged;
    // pg itself copies it explicitly.
    Object.defineProperty(tls, 'key', { value: readSslFile('sslkey', key, fail), enumerable: false, writable: true, configurable: true });
  }
  // As in libpq, require with an explicit root certificate verifies the chain (verify-ca).
  const verify = mode === 'verify-ca' || mode === 'verify-full' || (mode === 'require' && rootcert !== undefined);
  if (!verify) {
    tls.rejectUnauthorized = false;
    return tls;
  }
  tls.rejectUnauthorized = true;
  if (rootcert !== undefined && rootcert !== 'system') tls.ca = readSslFile('sslrootcert', rootcert, fail);
  if (mode !== 'verify-full') tls.checkServerIdentity = () => undefined;
  return tls;
}

function readSslFile(key: string, file: string, fail: Fail): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return fail(`${key}: cannot read ${file} (${code}); check the path and that walvault's user may read it`);
  }
}

// --- helpers -----------------------------------------------------------------------

function refusePassword(fail: Fail, what: string): never {
  return fail(`${what} is not allowed in the connection string (it would be visible in config files, argv and logs); ${PASSWORD_HELP}`);
}

function multiHost(): string {
  return 'several hosts are not supported; give one host (and port) per site';
}

/** A key-like token is safe to echo; anything else may be part of a mistyped secret. */
function describeToken(token: string, position: number): string {
  if (/^[A-Za-z_][A-Za-z0-9_]{0,39}$/.test(token)) return `"${token}"`;
  return position >= 0 ? `the text at character ${position + 1}` : 'a key';
}

function decode(part: string, what: string, fail: Fail): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return fail(`${what} has a malformed percent-encoding; encode special characters as %XX, e.g. %2F for "/"`);
  }
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function safeUsername(): string {
  try {
    return os.userInfo().username;
  } catch {
    return '?';
  }
}

/** Optimal string alignment distance: a swapped pair of letters counts as one edit. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}
