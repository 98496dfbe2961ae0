/**
 * docs/configuration.md against the table of keys the loader reads (src/config/keys.ts;
 * issue 7, acceptance 4; issue 18, item 6): every accepted key is documented in its table
 * and nothing else is; each key's default on the page is the table's; and the loader applies
 * the table's defaults, so a default cannot change in the code without the page.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { loadConfigFile } from '../../src/config/config';
import { CONFIG_KEYS, KEYS, literalDefault, type Section } from '../../src/config/keys';

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

const SECTIONS: Record<Section, string> = { top: 'Top level', log: '`[log]`', http: '`[http]`', site: '`[sites.NAME]`', archive: '`[[sites.NAME.archives]]`', s3: '`[sites.NAME.s3]`', azure: '`[sites.NAME.azure]`' };
const sections = Object.keys(SECTIONS) as Section[];

describe('configuration reference', () => {
  const doc = tables();

  test('documents every key the loader accepts, in its table, and no other', () => {
    for (const section of sections) {
      const keys = CONFIG_KEYS[section];
      const rows = doc.get(SECTIONS[section]);
      assert.ok(rows, `docs/configuration.md has a "## ${SECTIONS[section]}" section`);
      const missing = keys.filter((k) => !rows.has(k));
      assert.deepEqual(missing, [], `keys of ${SECTIONS[section]} without documentation in docs/configuration.md`);
      const unknown = [...rows.keys()].filter((k) => !keys.includes(k));
      assert.deepEqual(unknown, [], `documented keys of ${SECTIONS[section]} the loader does not accept`);
    }
  });

  test('shows each key\'s default as the table has it', () => {
    let literals = 0;
    for (const section of sections) {
      const rows = doc.get(SECTIONS[section])!;
      for (const [key, info] of Object.entries(KEYS[section])) {
        const shown = rows.get(key) ?? '';
        const where = `${SECTIONS[section]} ${key}: the page shows ${JSON.stringify(shown)}`;
        assert.ok(info.meaning.trim() !== '', `${key} has a meaning in src/config/keys.ts`);
        const d = info.default;
        if (d.kind === 'value') {
          // The literal as it is written in a config file, then perhaps words about it.
          const literal = '`' + JSON.stringify(d.value) + '`';
          assert.ok(shown === literal || shown.startsWith(literal + ','), `${where}, the code ${literal}`);
          literals++;
        } else if (d.kind === 'required') {
          assert.equal(shown, 'required', `${where}; the key is required`);
        } else if (d.kind === 'unset') {
          assert.equal(shown, '-', `${where}; the key is unset by default`);
        } else {
          assert.ok(!['', '-', 'required'].includes(shown), `${where}; its default is ${d.how}, which the page must describe`);
        }
      }
    }
    assert.ok(literals >= 20, `most defaults are literal values and compared (${literals})`);
  });

  test('the loader applies the table\'s defaults: writing each one out changes nothing', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-config-ref-'));
    try {
      const site = '[sites.main]\npg = "host=db1 user=walvault"\narchive = "/a/main"\nstate = "/s/main"\n';
      // The S3 and Azure clients apply the [sites.NAME.s3] and [sites.NAME.azure] defaults
      // themselves (from the same constants); the loader leaves them unset.
      const written = (section: Exclude<Section, 'top' | 'archive' | 's3' | 'azure'>) =>
        Object.keys(KEYS[section])
          .filter((k) => literalDefault(section, k) !== undefined)
          .map((k) => `${k} = ${JSON.stringify(literalDefault(section, k))}\n`)
          .join('');
      const bare = path.join(dir, 'bare.toml');
      fs.writeFileSync(bare, `[http]\n${site}`);
      const full = path.join(dir, 'full.toml');
      fs.writeFileSync(full, `[log]\n${written('log')}[http]\n${written('http')}${site}${written('site')}`);
      const loaded = (file: string) => ({ ...loadConfigFile(file), source: '' });
      assert.deepEqual(loaded(bare), loaded(full));
      assert.equal(loadConfigFile(bare).sites[0].archiveFileMode, 0o600);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
