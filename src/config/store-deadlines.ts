/**
 * The deadline keys an object store's table shares ([sites.NAME.s3], [sites.NAME.azure]).
 * Left out, a timeout stays unset here: the client applies its default (keys.ts shows it),
 * also for archives named on the command line, which have no table.
 */
import { defaultOf, type Section } from './keys';
import { assignment, fail, typeName, type Ctx, type Table } from './messages';

/**
 * Where a store's table sits, for messages: its key path (`sites.main.s3`,
 * `sites.main.archives[2].s3`) and the TOML header that opens it (`sites.main.archives.s3`
 * follows its [[sites.main.archives]] entry).
 */
export interface StoreTable {
  path: string;
  header: string;
}

export function readDeadlines(ctx: Ctx, raw: Table, at: (key: string) => string, section: Section): { requestTimeoutSeconds?: number; connectTimeoutSeconds?: number } {
  const seconds = (key: string): number | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      fail(ctx, at(key), `expected a positive number of seconds, got ${typeof v === 'number' ? v : typeName(v)}`, `write ${assignment(ctx, key, String(defaultOf(section, key, 'number')))}`);
    }
    return v as number;
  };
  const out: { requestTimeoutSeconds?: number; connectTimeoutSeconds?: number } = {};
  const timeout = seconds('request_timeout_seconds');
  if (timeout !== undefined) out.requestTimeoutSeconds = timeout;
  const connectTimeout = seconds('connect_timeout_seconds');
  if (connectTimeout !== undefined) out.connectTimeoutSeconds = connectTimeout;
  return out;
}
