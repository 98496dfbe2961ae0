/**
 * Issue 14, item 7a: the hint for an encrypted object read without a key must name a real way
 * to give the key. The config key it names is taken from the message itself and handed to the
 * config loader, and the read is tried again through that configuration; the option it names
 * must be one every reading command accepts.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Archive } from '../../src/archive/archive';
import { createKeyPair, loadPublicKey } from '../../src/archive/encryption';
import { openSiteArchive } from '../../src/archive/site-archive';
import { archiveFromOptions } from '../../src/cli/archive-option';
import { buildProgram } from '../../src/cli/main';
import { CONFIG_KEYS } from '../../src/config/keys';
import { isWalvaultError } from '../../src/errors';
import { LocalStorage } from '../../src/storage/local';

describe('the hint for an encrypted object without a key', () => {
  test('names a config key the loader accepts and that makes the read work, and an option the reading commands take', async (t) => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-key-hint-'));
    t.after(() => fs.rm(dir, { recursive: true, force: true }));
    const keyFile = path.join(dir, 'site.key');
    await createKeyPair(keyFile, path.join(dir, 'site.pub'));
    const root = path.join(dir, 'archive');
    const NAME = 'wal/000000010000000000000003';
    const data = Buffer.from('WAL bytes '.repeat(1000));
    await new Archive(new LocalStorage(root), { codec: 'none', recipient: loadPublicKey(path.join(dir, 'site.pub')) }).putImmutable(NAME, data);

    let message = '';
    await assert.rejects(new Archive(new LocalStorage(root)).get(NAME), (err: unknown) => {
      assert.ok(isWalvaultError(err, 'ARCHIVE_KEY_REQUIRED'), String(err));
      message = err.message;
      return true;
    });
    assert.ok(message.includes(NAME), message);

    // Every config-key-like word of the hint (snake_case) is a key a site accepts.
    const named = [...message.matchAll(/\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b/g)].map((m) => m[0]);
    assert.ok(named.length > 0, `the hint names a config key: ${message}`);
    for (const k of named) assert.ok(CONFIG_KEYS.site.includes(k), `the hint names "${k}", which a site does not accept: ${message}`);
    // No table that does not exist (the old hint named an [encryption] table).
    for (const m of message.matchAll(/\[([a-z0-9_.]+)\]/g)) {
      assert.ok((Object.keys(CONFIG_KEYS) as string[]).includes(m[1]), `the hint names a table [${m[1]}] the loader does not know: ${message}`);
    }

    // The named key, set in a config file, loads and lets the same read succeed.
    for (const k of named) {
      const config = path.join(dir, `${k}.toml`);
      await fs.writeFile(config, `[sites.main]\npg = "host=db1 user=walvault"\narchive = ${JSON.stringify(root)}\nstate = ${JSON.stringify(path.join(dir, 'state'))}\n${k} = ${JSON.stringify(keyFile)}\n`);
      const archive = openSiteArchive(archiveFromOptions({ config }), 'read');
      assert.ok((await archive.get(NAME))?.equals(data), `a config with ${k} reads the object`);
    }

    // The option it names is one every command that reads archived objects accepts.
    const options = [...message.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0]);
    assert.ok(options.length > 0, `the hint names a command-line option: ${message}`);
    const program = buildProgram();
    for (const name of ['wal-fetch', 'restore', 'check', 'verify', 'drill']) {
      const cmd = program.commands.find((c) => c.name() === name);
      assert.ok(cmd, name);
      for (const o of options) assert.ok(cmd.options.some((opt) => opt.long === o), `${name} accepts ${o}`);
    }
  });
});
