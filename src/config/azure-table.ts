/**
 * A site's optional [sites.NAME.azure] table (or one archive's [sites.NAME.archives.azure]),
 * the settings of an azure:// archive's client.
 * No secret is accepted here: keys, SAS tokens and connection strings come from the
 * environment or an identity (../storage/azure-credentials.ts), so a config file that is read
 * by more people than the archive's owner gives nothing away.
 */
import type { AzureSettings } from '../storage/azure';
import { CONFIG_KEYS } from './keys';
import { assignment, fail, isTable, rejectUnknownKeys, tableWord, typeName, type Ctx } from './messages';
import { readDeadlines, type StoreTable } from './store-deadlines';

export function parseAzureTable(ctx: Ctx, table: StoreTable, raw: unknown): AzureSettings {
  if (raw === undefined) return {};
  const at = (key: string) => `${table.path}${key ? '.' + key : ''}`;
  if (!isTable(raw)) fail(ctx, at(''), `expected ${tableWord(ctx)}, got ${typeName(raw)}`, ctx.format === 'json' ? 'write "azure": { "account": "..." }' : `write [${table.header}] followed by its keys`);
  rejectUnknownKeys(ctx, raw, `${table.path}.`, CONFIG_KEYS.azure);
  const out: AzureSettings = {};
  const account = raw.account;
  if (account !== undefined) {
    // Azure's account naming rules: 3-24 lower-case letters and digits.
    if (typeof account !== 'string' || !/^[a-z0-9]{3,24}$/.test(account)) {
      fail(ctx, at('account'), `expected a storage account name, got ${typeof account === 'string' ? JSON.stringify(account) : typeName(account)}`, `use 3-24 lower-case letters and digits, e.g. ${assignment(ctx, 'account', '"walarchive"')}`);
    }
    out.account = account as string;
  }
  const endpoint = raw.endpoint;
  if (endpoint !== undefined) {
    let ok = false;
    try {
      const url = new URL(String(endpoint));
      ok = typeof endpoint === 'string' && ['http:', 'https:'].includes(url.protocol) && url.search === '' && url.username === '' && url.password === '';
    } catch {
      ok = false;
    }
    if (!ok) fail(ctx, at('endpoint'), 'is not an http:// or https:// URL without credentials or a query', `write ${assignment(ctx, 'endpoint', '"http://127.0.0.1:10000/devstoreaccount1"')}`);
    out.endpoint = endpoint as string;
  }
  Object.assign(out, readDeadlines(ctx, raw, at, 'azure'));
  return out;
}
