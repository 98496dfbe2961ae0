/**
 * The process logger. Logs go to stderr because stdout carries command output (lists,
 * JSON for scripts, wal-fetch exit codes). A terminal gets short human lines; anything
 * else (journald, files, log shippers) gets pino's JSON, one object per line.
 */
import { format } from 'node:util';
import pino from 'pino';
import type { DestinationStream, Logger } from 'pino';

/**
 * Config objects and errors get logged whole; these keep a password or a TLS key out of
 * the output even then.
 */
const REDACT_PATHS = [
  'password',
  '*.password',
  '*.*.password',
  'pg.password',
  'sites[*].pg.password',
  '*.sites[*].pg.password',
  'ssl.key',
  '*.ssl.key',
  '*.*.ssl.key',
  'PGPASSWORD',
  '*.PGPASSWORD',
];

export interface CreateLoggerOptions {
  level?: string;
  name?: string;
  /** Defaults to stderr. */
  destination?: NodeJS.WritableStream;
  /** Overrides the terminal check: 'pretty' for human lines, 'json' for pino's JSON. */
  format?: 'json' | 'pretty';
}

export function createLogger(opts: CreateLoggerOptions = {}): Logger {
  const out = opts.destination ?? process.stderr;
  const tty = (out as { isTTY?: boolean }).isTTY === true;
  const pretty = opts.format !== undefined ? opts.format === 'pretty' : tty;
  const level = opts.level ?? 'info';
  const options: pino.LoggerOptions = {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    ...(opts.name !== undefined ? { name: opts.name } : {}),
  };
  if (pretty) {
    const style = { colors: tty && !process.env.NO_COLOR, stacks: level === 'debug' || level === 'trace' };
    const stream: DestinationStream = { write: (line: string) => void out.write(formatLogLine(line, style)) };
    return pino(options, stream);
  }
  // Synchronous writes to fd 2 so the last lines before a crash or process.exit are not lost.
  const stream = opts.destination ?? pino.destination({ fd: 2, sync: true });
  return pino(options, stream as DestinationStream);
}

/**
 * For the daemon, whose stderr is a JSON log: what libraries print through `console`, and
 * process warnings (which Node prints as plain text), become log lines instead. (The AWS SDK's
 * own logger is routed separately, see ../storage/sdk-log.ts; this catches the rest.)
 */
export function routeConsoleTo(log: Logger): void {
  const at = (level: 'debug' | 'info' | 'warn') => (...args: unknown[]) => log[level]({ source: 'console' }, format(...args));
  console.debug = at('debug');
  console.log = at('info');
  console.info = at('info');
  console.warn = at('warn');
  console.error = at('warn');
  process.removeAllListeners('warning');
  process.on('warning', (w: Error) => log.warn({ source: 'process', warning: w.name }, w.message));
}

const LABELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const COLORS: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };
// Noise on a terminal: the reader knows which machine and process they are watching.
const HIDDEN = new Set(['time', 'level', 'msg', 'pid', 'hostname', 'err']);

/** One pino JSON line -> `HH:MM:SS LEVEL msg key=value ...`. */
function formatLogLine(json: string, style: { colors?: boolean; stacks?: boolean } = {}): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : json + '\n';
  }
  const t = new Date(typeof rec.time === 'number' ? rec.time : Date.now());
  const clock = [t.getHours(), t.getMinutes(), t.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
  const level = typeof rec.level === 'number' ? rec.level : 30;
  let label = (LABELS[level] ?? String(rec.level)).padEnd(5);
  if (style.colors && COLORS[level]) label = `\x1b[${COLORS[level]}m${label}\x1b[0m`;

  let line = `${clock} ${label}`;
  if (rec.msg !== undefined) line += ` ${String(rec.msg)}`;
  for (const [key, value] of Object.entries(rec)) {
    if (!HIDDEN.has(key)) line += ` ${key}=${formatValue(value)}`;
  }
  let stack = '';
  const err = rec.err as { message?: unknown; code?: unknown; stack?: unknown } | undefined;
  if (err && typeof err === 'object') {
    // logger.error(err) already puts err.message in msg; do not say it twice.
    if (err.message !== undefined && err.message !== rec.msg) line += ` err=${formatValue(err.message)}`;
    if (err.code !== undefined) line += ` code=${formatValue(err.code)}`;
    if (style.stacks && typeof err.stack === 'string') {
      stack = err.stack.split('\n').slice(1).map((l) => `    ${l.trim()}\n`).join('');
    }
  }
  return line + '\n' + stack;
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=\\\x00-\x1f\x7f]+$/.test(v) ? v : JSON.stringify(v);
  if (v !== null && typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
