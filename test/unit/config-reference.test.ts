/**
 * docs/configuration.md against the loader (issue 7, acceptance 4): every accepted key is
 * documented in its table and nothing else is; and each literal default the page shows is
 * what a minimal configuration loads with.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { CONFIG_KEYS, loadConfigFile } from '../../src/config/config';

const DOC = path.join(__dirname, '..', '..', '..', 'docs', 'configuration.md');

/** The `| key | default | meaning |` rows of each `## heading` section. */
function tables(): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let section = '';
  for (const line of fs.readFileSync(DOC, 'utf8').split('\n')) {
    const h = /^## (.+)$/.exec(line);
    if (h) {
      section = h[1].trim();
      out.set(section, new Map());
      continue;
    }
    const row = /^\| `([a-z0-9_]+)` \| (.*?) \| .* \|$/.exec(line);
    if (row && section) out.get(section)!.set(row[1], row[2].trim());
  }
  return out;
}

const SECTIONS: Record<keyof typeof CONFIG_KEYS, string> = { top: 'Top level', log: '`[log]`', http: '`[http]`', site: '`[sites.NAME]`', s3: '`[sites.NAME.s3]`' };

describe('configuration reference', () => {
  const doc = tables();

  test('documents every key the loader accepts, in its table, and no other', () => {
    for (const [table, keys] of Object.entries(CONFIG_KEYS) as Array<[keyof typeof CONFIG_KEYS, readonly string[]]>) {
      const rows = doc.get(SECTIONS[table]);
      assert.ok(rows, `docs/configuration.md has a "## ${SECTIONS[table]}" section`);
      const missing = keys.filter((k) => !rows.has(k));
      assert.deepEqual(missing, [], `keys of ${SECTIONS[table]} without documentation in docs/configuration.md`);
      const unknown = [...rows.keys()].filter((k) => !keys.includes(k));
      assert.deepEqual(unknown, [], `documented keys of ${SECTIONS[table]} the loader does not accept`);
      for (const [k, dflt] of rows) assert.notEqual(dflt, '', `${k} shows a default (or "-" / "required")`);
    }
  });

  test('the literal defaults shown are the loader\'s', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-config-ref-'));
    try {
      const file = path.join(dir, 'c.toml');
      fs.writeFileSync(file, '[sites.main]\npg = "host=db1 user=walvault"\narchive = "/a/main"\nstate = "/s/main"\n');
      const site = loadConfigFile(file).sites[0] as unknown as Record<string, unknown>;
      // The field a key loads into, where the name is not simply camelCase.
      const field: Record<string, string> = { spool_alert_mib: 'spoolAlertMiB', backup_max_rate_kbps: 'backupMaxRateKiB' };
      const camel = (k: string) => field[k] ?? k.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
      let compared = 0;
      for (const [k, shown] of doc.get(SECTIONS.site)!) {
        const literal = /^`([^`]+)`$/.exec(shown);
        if (!literal) continue; // "-", "required", or a default described in words
        const expected = JSON.parse(literal[1]) as unknown;
        assert.deepEqual(site[camel(k)], expected, `${k}: the page says ${shown}, the loader gives ${JSON.stringify(site[camel(k)])}`);
        compared++;
      }
      assert.ok(compared >= 12, `most site defaults are literal and compared (${compared})`);
      assert.equal(loadConfigFile(file).logLevel, JSON.parse(/^`([^`]+)`$/.exec(doc.get(SECTIONS.log)!.get('level')!)![1]));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
