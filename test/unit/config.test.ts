import { test, describe } from 'node:test';
import { createKeyPair } from '../../src/archive/encryption';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { isWalvaultError } from '../../src/errors';
import { configFromOptions, loadConfigFile, selectSite, writableSite } from '../../src/config/config';
import type { Config } from '../../src/config/config-types';
import { createLogger } from '../../src/observe/logger';

const SECRET = 'Hunter2-s3cret';
const PG_ENV = ['PGHOST', 'PGPORT', 'PGUSER', 'PGSSLMODE'];

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'walvault-config-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function write(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** Loads with the PG* environment cleared, so descriptions do not depend on the test runner. */
function load(file: string): Config {
  const saved = new Map(PG_ENV.map((k) => [k, process.env[k]]));
  for (const k of PG_ENV) delete process.env[k];
  try {
    return loadConfigFile(file);
  } finally {
    for (const [k, v] of saved) if (v !== undefined) process.env[k] = v;
  }
}

/** Asserts a one-line CONFIG_INVALID error that mentions `includes` and none of `excludes`. */
function assertInvalid(fn: () => unknown, includes: string[], excludes: string[] = []): string {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(isWalvaultError(caught, 'CONFIG_INVALID'), `expected CONFIG_INVALID, got ${String(caught)}`);
  const msg = caught.message;
  assert.ok(!/[\r\n]/.test(msg), `message is not one line: ${JSON.stringify(msg)}`);
  for (const s of includes) assert.ok(msg.includes(s), `message lacks ${JSON.stringify(s)}: ${msg}`);
  for (const s of excludes) assert.ok(!msg.includes(s), `message leaks ${JSON.stringify(s)}: ${msg}`);
  return msg;
}

/** A minimal valid TOML site plus `extra` lines. */
function site(name: string, extra = ''): string {
  const dirName = name.replace(/\W/g, '_');
  return `[sites."${name}"]\npg = "host=db1 user=walvault"\narchive = "/a/${dirName}"\nstate = "/s/${dirName}"\n${extra}\n`;
}

describe('valid files', () => {
  test('TOML with every key', async (t) => {
    const dir = tempDir(t);
    await createKeyPair(path.join(dir, 'site.key'), path.join(dir, 'site.pub'));
    const file = write(
      dir,
      'walvault.toml',
      `[log]
level = "debug"

[sites.main]
pg = "host=db1 port=5433 user=walvault"
archive = "file:///var/lib/walvault/archive/main"
state = "/var/lib/walvault/state/main"
slot = "wv_main"
mode = "sync"
application_name = "standby1"
partial_interval_seconds = 0
status_interval_seconds = 2.5
create_slot = false
upload_concurrency = 8
spool_alert_mib = 512
storage_stall_seconds = 45
compression = "lz4"
archive_file_mode = "0640"
encryption_public_key_file = "site.pub"
encryption_private_key_file = "site.key"
backup_interval_hours = 12
full_backup_interval_days = 3
max_incremental_chain = 10
backup_fast_checkpoint = true
first_backup_fast_checkpoint = true
backup_compression = "client"
backup_compression_workers = 4
backup_max_rate_kbps = 65536
retain_backups = 3
recovery_window_days = 7.5
check_interval_hours = 2
drill_interval_hours = 168
drill_pg_bin = "pg16/bin"
drill_os_user = "pgdrill"
drill_query = "SELECT 1"

[sites.main.s3]
endpoint = "https://minio.example:9000"
region = "eu-west-1"
force_path_style = false
checksums = "when_supported"
profile = "backup"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "${SECRET}"
session_token = "token-${SECRET}"
request_timeout_seconds = 30
connect_timeout_seconds = 4
`,
    );
    const cfg = load(file);
    assert.equal(cfg.source, file);
    assert.equal(cfg.logLevel, 'debug');
    const expected = {
      name: 'main',
      pg: { host: 'db1', port: 5433, user: 'walvault', application_name: 'standby1' },
      pgDescription: 'db1:5433 user=walvault',
      archive: 'file:///var/lib/walvault/archive/main',
      state: '/var/lib/walvault/state/main',
      slot: 'wv_main',
      mode: 'sync',
      applicationName: 'standby1',
      partialIntervalSeconds: 0,
      statusIntervalSeconds: 2.5,
      createSlot: false,
      uploadConcurrency: 8,
      archivedQuorum: 1,
      spoolAlertMiB: 512,
      storageStallSeconds: 45,
      compression: 'lz4',
      compressionChosen: true,
      archiveFileMode: 0o640,
      encryptionPublicKeyFile: path.join(dir, 'site.pub'),
      encryptionPrivateKeyFile: path.join(dir, 'site.key'),
      backupIntervalHours: 12,
      fullBackupIntervalDays: 3,
      maxIncrementalChain: 10,
      backupFastCheckpoint: true,
      firstBackupFastCheckpoint: true,
      backupCompression: 'client',
      backupCompressionWorkers: 4,
      backupMaxRateKiB: 65536,
      retainBackups: 3,
      recoveryWindowDays: 7.5,
      checkIntervalHours: 2,
      drillIntervalHours: 168,
      drillPgBin: path.join(dir, 'pg16/bin'),
      drillOsUser: 'pgdrill',
      drillQuery: 'SELECT 1',
      s3: {
        endpoint: 'https://minio.example:9000',
        region: 'eu-west-1',
        forcePathStyle: false,
        checksums: 'when_supported',
        profile: 'backup',
        accessKeyId: 'AKIAEXAMPLE',
        requestTimeoutSeconds: 30,
        connectTimeoutSeconds: 4,
      },
      azure: {},
    };
    // The one-archive form: the site's archive is also its only entry of archives.
    const { archive, s3, azure, archiveFileMode, compression, compressionChosen, encryptionPublicKeyFile, encryptionPrivateKeyFile } = expected;
    assert.deepEqual(cfg.sites, [{ ...expected, archives: [{ archive, s3, azure, archiveFileMode, compression, compressionChosen, encryptionPublicKeyFile, encryptionPrivateKeyFile }] }]);
    // The secrets are there for the S3 client, but not enumerable: printing or logging the
    // site cannot show them.
    assert.equal(cfg.sites[0].s3.secretAccessKey, SECRET);
    assert.equal(cfg.sites[0].s3.sessionToken, `token-${SECRET}`);
    assert.ok(!JSON.stringify(cfg).includes(SECRET));
  });

  test('defaults', (t) => {
    const dir = tempDir(t);
    const cfg = load(write(dir, 'w.toml', site('main')));
    assert.equal(cfg.logLevel, 'info');
    const s = cfg.sites[0];
    assert.equal(s.slot, 'walvault_main');
    assert.equal(s.mode, 'archive');
    assert.equal(s.applicationName, 'walvault_main');
    assert.equal(s.pg.application_name, 'walvault_main');
    assert.equal(s.partialIntervalSeconds, 10);
    assert.equal(s.statusIntervalSeconds, 10);
    assert.equal(s.createSlot, true);
    assert.equal(s.uploadConcurrency, 2);
    assert.equal(s.archiveFileMode, 0o600, 'a local archive is readable by its owner only');
    assert.equal(s.pgDescription, 'db1:5432 user=walvault');
    // A base backup a day, none deleted unless a retention policy is set.
    assert.equal(s.backupIntervalHours, 24);
    assert.equal(s.fullBackupIntervalDays, 7);
    assert.equal(s.maxIncrementalChain, 6);
    assert.equal(s.backupFastCheckpoint, false);
    assert.equal(s.firstBackupFastCheckpoint, false);
    assert.equal(s.backupCompression, 'server');
    assert.equal(s.backupCompressionWorkers, 2);
    assert.equal(s.backupMaxRateKiB, undefined);
    assert.equal(s.retainBackups, 0);
    assert.equal(s.recoveryWindowDays, 0);
  });

  test('the default slot folds the site name into a valid slot name of at most 63 characters', (t) => {
    const dir = tempDir(t);
    const long = 'A'.repeat(63);
    const cfg = load(write(dir, 'w.toml', site('Prod-DB.eu') + site(long)));
    assert.equal(cfg.sites[0].slot, 'walvault_prod_db_eu');
    assert.equal(cfg.sites[1].slot, 'walvault_' + 'a'.repeat(54));
    assert.equal(cfg.sites[1].slot.length, 63);
  });

  test('application_name may come from the pg string', (t) => {
    const dir = tempDir(t);
    const cfg = load(write(dir, 'w.toml', `[sites.main]\npg = "host=db1 application_name=sb"\narchive = "/a"\nstate = "/s"\n`));
    assert.equal(cfg.sites[0].applicationName, 'sb');
  });

  test('JSON with several sites', (t) => {
    const dir = tempDir(t);
    const file = write(
      dir,
      'walvault.json',
      JSON.stringify({
        log: { level: 'warn' },
        sites: {
          a: { pg: 'postgresql://walvault@db1:5432/postgres?sslmode=disable', archive: '/arch/a', state: '/st/a', upload_concurrency: 4 },
          b: { pg: '', archive: 's3://bucket/b', state: '/st/b', mode: 'sync' },
        },
      }),
    );
    const cfg = load(file);
    assert.equal(cfg.logLevel, 'warn');
    assert.deepEqual(
      cfg.sites.map((s) => [s.name, s.archive, s.mode, s.uploadConcurrency]),
      [
        ['a', '/arch/a', 'archive', 4],
        ['b', 's3://bucket/b', 'sync', 2],
      ],
    );
    assert.deepEqual(cfg.sites[0].pg, { user: 'walvault', host: 'db1', port: 5432, database: 'postgres', ssl: false, application_name: 'walvault_a' });
    assert.deepEqual(cfg.sites[1].pg, { application_name: 'walvault_b' });
  });

  test('without a known extension: JSON when it starts with "{", else TOML', (t) => {
    const dir = tempDir(t);
    const json = write(dir, 'a.conf', `  {"sites": {"j": {"pg": "", "archive": "/a", "state": "/s"}}}`);
    const toml = write(dir, 'b.conf', site('t'));
    assert.equal(load(json).sites[0].name, 'j');
    assert.equal(load(toml).sites[0].name, 't');
  });

  test('relative paths resolve against the config file\'s directory', (t) => {
    const dir = tempDir(t);
    fs.mkdirSync(path.join(dir, 'etc'));
    const cfg = load(write(dir, 'etc/w.toml', `[sites.main]\npg = ""\narchive = "../archive"\nstate = "state/main"\n`));
    assert.equal(cfg.sites[0].archive, path.join(dir, 'archive'));
    assert.equal(cfg.sites[0].state, path.join(dir, 'etc', 'state', 'main'));
  });
});

describe('password_file', () => {
  test('the first line becomes the password', (t) => {
    const dir = tempDir(t);
    write(dir, 'pw', `${SECRET}\r\nsecond line\n`);
    const cfg = load(write(dir, 'w.toml', site('main', 'password_file = "pw"')));
    assert.equal(cfg.sites[0].pg.password, SECRET);
    assert.ok(!cfg.sites[0].pgDescription.includes(SECRET));
  });

  test('a missing file names the key', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 'w.toml', site('main', 'password_file = "/nonexistent/pw"'));
    assertInvalid(() => load(file), [`${file}: sites.main.password_file: cannot read /nonexistent/pw (ENOENT)`]);
  });

  test('an empty first line is refused', (t) => {
    const dir = tempDir(t);
    write(dir, 'pw', `\n${SECRET}\n`);
    const file = write(dir, 'w.toml', site('main', 'password_file = "pw"'));
    assertInvalid(() => load(file), ['sites.main.password_file', 'empty first line'], [SECRET]);
  });

  test('a later error does not reveal the password', (t) => {
    const dir = tempDir(t);
    write(dir, 'pw', SECRET);
    const file = write(dir, 'w.toml', site('main', 'password_file = "pw"\nmode = "fast"'));
    assertInvalid(() => load(file), ['sites.main.mode'], [SECRET]);
  });

  test('the logger redacts it when a site config is logged', (t) => {
    const dir = tempDir(t);
    write(dir, 'pw', SECRET);
    const cfg = load(write(dir, 'w.toml', site('main', 'password_file = "pw"')));
    for (const format of ['json', 'pretty'] as const) {
      let out = '';
      const sink = new Writable({
        write(chunk, _enc, cb) {
          out += String(chunk);
          cb();
        },
      });
      const log = createLogger({ level: 'info', destination: sink, format });
      log.info({ site: cfg.sites[0] }, 'starting');
      log.info({ pg: cfg.sites[0].pg }, 'connecting');
      log.info({ config: cfg }, 'loaded');
      assert.ok(out.includes('starting') && out.includes('connecting') && out.includes('loaded'), out);
      assert.ok(out.includes('[redacted]'), out);
      assert.ok(!out.includes(SECRET), `${format} log leaks the password: ${out}`);
    }
  });
});

describe('errors: one line, CONFIG_INVALID, naming the key', () => {
  test('unknown keys, with a suggestion when close', (t) => {
    const dir = tempDir(t);
    const f1 = write(dir, 'a.toml', site('main', 'mdoe = "sync"'));
    assertInvalid(() => load(f1), [`${f1}: sites.main.mdoe: unknown key; did you mean "mode"?`]);
    const f2 = write(dir, 'b.toml', site('main').replace('[sites."main"]', '[site.main]'));
    assertInvalid(() => load(f2), [`${f2}: site: unknown key; did you mean "sites"?`]);
    const f3 = write(dir, 'c.toml', `[log]\nlevle = "info"\n${site('main')}`);
    assertInvalid(() => load(f3), ['log.levle: unknown key; did you mean "level"?']);
    const f4 = write(dir, 'd.toml', site('main', 'frobnicate = 1'));
    assertInvalid(() => load(f4), ['sites.main.frobnicate: unknown key', 'known keys here', 'upload_concurrency']);
  });

  test('wrong types are described by kind, not value', (t) => {
    const dir = tempDir(t);
    const cases: [string, string, string][] = [
      ['upload_concurrency = "2"', 'sites.main.upload_concurrency', 'expected a number, got a string'],
      ['create_slot = "yes"', 'sites.main.create_slot', 'expected a boolean, got a string'],
      ['slot = 5', 'sites.main.slot', 'expected a string, got an integer'],
      ['mode = ["sync"]', 'sites.main.mode', 'expected a string, got an array'],
      ['application_name = 1979-05-27', 'sites.main.application_name', 'expected a string, got a date'],
    ];
    for (const [i, [line, key, what]] of cases.entries()) {
      const file = write(dir, `t${i}.toml`, site('main', line));
      assertInvalid(() => load(file), [`${key}: ${what}`]);
    }
    const pgTable = write(dir, 'pg.toml', `[sites.main]\narchive = "/a"\nstate = "/s"\n[sites.main.pg]\nhost = "db1"\npassword = "${SECRET}"\n`);
    assertInvalid(() => load(pgTable), ['sites.main.pg: expected a string, got a table'], [SECRET]);
    const notTable = write(dir, 'nt.toml', `[sites]\nmain = "host=db1"\n`);
    assertInvalid(() => load(notTable), ['sites.main: expected a table, got a string']);
    const logLevel = write(dir, 'll.toml', `[log]\nlevel = "verbose"\n${site('main')}`);
    assertInvalid(() => load(logLevel), ['log.level: "verbose" is not a log level', '"debug"']);
    const jsonArray = write(dir, 'arr.json', '[]');
    assertInvalid(() => load(jsonArray), ['expected an object, got an array']);
  });

  test('missing required keys', (t) => {
    const dir = tempDir(t);
    for (const key of ['pg', 'archive', 'state']) {
      const text = site('main')
        .split('\n')
        .filter((l) => !l.startsWith(`${key} =`))
        .join('\n');
      const file = write(dir, `${key}.toml`, text);
      assertInvalid(() => load(file), [`${file}: sites.main.${key}: missing; add ${key} = `]);
    }
    const file = write(dir, 'state.json', JSON.stringify({ sites: { main: { pg: '', archive: '/a' } } }));
    assertInvalid(() => load(file), [`sites.main.state: missing; add "state": `]);
  });

  test('empty strings', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 'e.toml', `[sites.main]\npg = ""\narchive = ""\nstate = "/s"\n`);
    assertInvalid(() => load(file), ['sites.main.archive: is empty']);
  });

  test('bad mode values', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 'm.toml', site('main', 'mode = "Archive"'));
    assertInvalid(() => load(file), ['sites.main.mode: "Archive" is not a mode', '"archive"', '"sync"']);
  });

  test('negative and out-of-range numbers', (t) => {
    const dir = tempDir(t);
    const cases: [string, string][] = [
      ['partial_interval_seconds = -1', 'sites.main.partial_interval_seconds: must not be negative, got -1'],
      ['status_interval_seconds = -10', 'sites.main.status_interval_seconds: must not be negative'],
      ['status_interval_seconds = 0', 'sites.main.status_interval_seconds: must be greater than 0'],
      ['upload_concurrency = 0', 'sites.main.upload_concurrency: must be at least 1'],
      ['storage_stall_seconds = 0', 'sites.main.storage_stall_seconds: must be greater than 0'],
      ['upload_concurrency = -3', 'sites.main.upload_concurrency: must not be negative'],
      ['upload_concurrency = 1.5', 'sites.main.upload_concurrency: expected a whole number'],
      ['partial_interval_seconds = inf', 'sites.main.partial_interval_seconds: expected a number'],
      ['retain_backups = 1.5', 'sites.main.retain_backups: expected a whole number'],
      ['backup_interval_hours = -1', 'sites.main.backup_interval_hours: must not be negative'],
      ['backup_max_rate_kbps = 10', 'sites.main.backup_max_rate_kbps: must be at least 32'],
      ['backup_max_rate_kbps = 2000000', 'sites.main.backup_max_rate_kbps: 2000000 is above the server\'s limit'],
      ['backup_fast_checkpoint = "yes"', 'sites.main.backup_fast_checkpoint: expected a boolean'],
      ['backup_compression = "both"', 'sites.main.backup_compression: "both" is not a place'],
    ];
    for (const [i, [line, expected]] of cases.entries()) {
      const file = write(dir, `n${i}.toml`, site('main', line));
      assertInvalid(() => load(file), [expected]);
    }
  });

  test('the default codec: zstd for s3:// archives, none for local directories', () => {
    const one = (archive: string) => configFromOptions({ pg: 'host=db1', archive, state: '/st' }).sites[0].compression;
    assert.equal(one('s3://bucket/prefix'), 'zstd');
    assert.equal(one('/var/lib/walvault/archive'), 'none');
    assert.equal(one('file:///var/lib/walvault/archive'), 'none');
    assert.equal(configFromOptions({ pg: 'host=db1', archive: '/a', state: '/st', compression: 'snappy' }).sites[0].compression, 'snappy');
    // Only a named codec is a choice; the default gives way to what the archive recorded.
    assert.equal(configFromOptions({ pg: 'host=db1', archive: '/a', state: '/st', compression: 'snappy' }).sites[0].compressionChosen, true);
    assert.equal(configFromOptions({ pg: 'host=db1', archive: '/a', state: '/st' }).sites[0].compressionChosen, false);
  });

  test('unknown codec, missing or wrong encryption key', async (t) => {
    const dir = tempDir(t);
    await createKeyPair(path.join(dir, 'k.key'), path.join(dir, 'k.pub'));
    const cases: [string, string[]][] = [
      ['compression = "brotli"', ['sites.main.compression: "brotli" is not a codec', '"zstd"', '"lz4"']],
      ['encryption_public_key_file = "nope.pub"', ['sites.main.encryption_public_key_file', 'nope.pub', 'ENOENT', 'walvault keys create']],
      ['encryption_public_key_file = "k.key"', ['sites.main.encryption_public_key_file', 'this is a private key']],
      ['encryption_public_key_file = "n0.toml"', ['sites.main.encryption_public_key_file', 'not a PEM public key']],
    ];
    for (const [i, [line, expected]] of cases.entries()) {
      const file = write(dir, `n${i}.toml`, site('main', line));
      assertInvalid(() => load(file), expected);
    }
  });

  test('archive_file_mode: owner read-write, others read at most', (t) => {
    const dir = tempDir(t);
    for (const [text, mode] of [['0600', 0o600], ['0640', 0o640], ['644', 0o644], ['0604', 0o604]] as const) {
      assert.equal(load(write(dir, `ok${text}.toml`, site('main', `archive_file_mode = "${text}"`))).sites[0].archiveFileMode, mode);
    }
    for (const bad of ['0660', '0700', '0400', '0666', '0755', 'rw-r-----', '640x']) {
      const file = write(dir, `bad${bad}.toml`, site('main', `archive_file_mode = "${bad}"`));
      assertInvalid(() => load(file), [`sites.main.archive_file_mode: "${bad}" is not a mode for archive objects`, '"0640"']);
    }
    assertInvalid(() => configFromOptions({ pg: 'host=db1', archive: '/a', state: '/st', archive_file_mode: '0777' }), ['--archive-file-mode: "0777" is not a mode']);
  });

  test('invalid slot and site names', (t) => {
    const dir = tempDir(t);
    const slot = write(dir, 's.toml', site('main', 'slot = "Bad-Slot"'));
    assertInvalid(() => load(slot), ['sites.main.slot: "Bad-Slot" is not a valid replication slot name', 'lower-case']);
    const longSlot = write(dir, 'l.toml', site('main', `slot = "${'x'.repeat(64)}"`));
    assertInvalid(() => load(longSlot), ['sites.main.slot', 'at most 63']);
    const name = write(dir, 'n.toml', site('my site'));
    assertInvalid(() => load(name), ['sites."my site": invalid site name']);
  });

  test('application_name set differently in two places', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 'a.toml', `[sites.main]\npg = "application_name=x"\napplication_name = "y"\narchive = "/a"\nstate = "/s"\n`);
    assertInvalid(() => load(file), ['sites.main.application_name: differs from the application_name in pg']);
  });

  test('duplicate site names', (t) => {
    const dir = tempDir(t);
    const toml = write(dir, 'd.toml', site('main') + site('main'));
    assertInvalid(() => load(toml), [`${toml}:6:`, 'invalid TOML', 'appears twice']);
    const json = write(dir, 'd.json', `{"sites": {\n"main": {"pg": "", "archive": "/a", "state": "/s"},\n"main": {"pg": "", "archive": "/b", "state": "/t"}}}`);
    assertInvalid(() => load(json), [`${json}: sites.main: duplicate site name (again at line 3)`]);
    const jsonKey = write(dir, 'k.json', `{"sites": {"main": {"pg": "", "archive": "/a", "state": "/s", "state": "/t"}}}`);
    assertInvalid(() => load(jsonKey), ['sites.main.state: duplicate key']);
    const cased = write(dir, 'c.toml', site('main') + site('Main').replace('/a/Main', '/a/x').replace('/s/Main', '/s/x'));
    assertInvalid(() => load(cased), ['sites.Main: duplicate site name']);
  });

  test('two sites sharing a state directory or an archive', (t) => {
    const dir = tempDir(t);
    const state = write(dir, 's.toml', site('a') + site('b').replace('/s/b', '/s/a'));
    assertInvalid(() => load(state), ['sites.b.state: same directory as sites.a.state']);
    const archive = write(dir, 'a.toml', site('a') + site('b').replace('/a/b', '/a/a'));
    assertInvalid(() => load(archive), ['sites.b.archive: same archive as sites.a.archive']);
  });

  test('no sites at all', (t) => {
    const dir = tempDir(t);
    for (const [name, text] of [
      ['empty.toml', ''],
      ['log-only.toml', '[log]\nlevel = "info"\n'],
      ['empty-sites.toml', '[sites]\n'],
      ['empty.json', '{}'],
      ['empty-sites.json', '{"sites": {}}'],
    ]) {
      const file = write(dir, name, text);
      assertInvalid(() => load(file), [`${file}: sites: no sites configured`]);
    }
  });

  test('a missing or unreadable file', (t) => {
    const dir = tempDir(t);
    const missing = path.join(dir, 'nope.toml');
    assertInvalid(() => load(missing), [`config file ${missing} not found: `]);
    assertInvalid(() => load(dir), [`config file ${dir} cannot be read: `]);
  });

  test('TOML syntax errors give line and column and no source text', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 's.toml', `[sites.main]\narchive = "/a"\npg = "host=db1 password=${SECRET}\nstate = "/s"\n`);
    assertInvalid(() => load(file), [`${file}:3:`, 'invalid TOML'], [SECRET]);
  });

  test('JSON syntax errors give line and column and no source text', (t) => {
    const dir = tempDir(t);
    const line3 = `    "main": { "pg": "password=${SECRET}" "archive": "/a" }`;
    const file = write(dir, 's.json', `{\n  "sites": {\n${line3}\n  }\n}\n`);
    const column = line3.indexOf('"archive"') + 1;
    assertInvalid(() => load(file), [`${file}:3:${column}: invalid JSON: expected "," or "}"`], [SECRET]);
    const trailing = write(dir, 't.json', '{"sites": {}},');
    assertInvalid(() => load(trailing), [`${trailing}:1:14: invalid JSON: unexpected text after the end`]);
    const truncated = write(dir, 'u.json', '{"sites": {"a": ');
    assertInvalid(() => load(truncated), [`${truncated}:1:17: invalid JSON: unexpected end of file`]);
    const control = write(dir, 'c.json', '{"sites": "a\u0001"}');
    assertInvalid(() => load(control), [`${control}:1:11: invalid JSON: unterminated string`]);
  });

  test('a password in the pg string is refused, never echoed', (t) => {
    const dir = tempDir(t);
    const kv = write(dir, 'kv.toml', `[sites.main]\npg = "host=db1 password=${SECRET}"\narchive = "/a"\nstate = "/s"\n`);
    assertInvalid(() => load(kv), [`${kv}: sites.main.pg: `, 'PGPASSWORD', 'password_file'], [SECRET]);
    const uri = write(dir, 'uri.json', JSON.stringify({ sites: { main: { pg: `postgresql://walvault:${SECRET}@db1/postgres`, archive: '/a', state: '/s' } } }));
    assertInvalid(() => load(uri), ['sites.main.pg: ', 'PGPASSWORD'], [SECRET]);
  });

  test('a password key in the site is refused with the alternatives', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 'p.toml', site('main', `password = "${SECRET}"`));
    assertInvalid(() => load(file), ['sites.main.password: passwords are not allowed', 'PGPASSWORD', 'password_file'], [SECRET]);
  });

  test('errors inside the pg string carry the file and key path', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 'h.toml', `[sites.main]\npg = "hots=db1"\narchive = "/a"\nstate = "/s"\n`);
    assertInvalid(() => load(file), [`${file}: sites.main.pg: unknown connection key "hots"; did you mean "host"?`]);
  });
});

describe('the [s3] table', () => {
  const withS3 = (t: { after(fn: () => void): void }, body: string) => {
    const dir = tempDir(t);
    return () => load(write(dir, 'w.toml', `[sites.main]\npg = "host=db1"\narchive = "s3://bucket/main"\nstate = "/s"\n\n[sites.main.s3]\n${body}\n`));
  };

  test('absent: no overrides, the AWS environment decides', (t) => {
    const dir = tempDir(t);
    const cfg = load(write(dir, 'w.toml', `[sites.main]\npg = "host=db1"\narchive = "s3://bucket/main"\nstate = "/s"\n`));
    assert.deepEqual(cfg.sites[0].s3, {});
    assert.equal(cfg.sites[0].archive, 's3://bucket/main');
  });

  test('bad values name the key and the fix, and never echo a secret', (t) => {
    assertInvalid(withS3(t, 'endpiont = "http://x"'), ['sites.main.s3.endpiont', 'unknown key', 'did you mean "endpoint"']);
    assertInvalid(withS3(t, 'endpoint = "minio:9000"'), ['sites.main.s3.endpoint', 'http:// or https://']);
    assertInvalid(withS3(t, 'checksums = "sometimes"'), ['sites.main.s3.checksums', 'when_required']);
    assertInvalid(withS3(t, 'force_path_style = "yes"'), ['sites.main.s3.force_path_style', 'boolean']);
    assertInvalid(withS3(t, `secret_access_key = "${SECRET}"`), ['sites.main.s3.access_key_id', 'missing', 'together'], [SECRET]);
    assertInvalid(withS3(t, `access_key_id = "AKIA"\nsecret_access_key = 42`), ['sites.main.s3.secret_access_key', 'an integer']);
    assertInvalid(withS3(t, `session_token = "${SECRET}"`), ['sites.main.s3.session_token'], [SECRET]);
    assertInvalid(withS3(t, 'request_timeout_seconds = 0'), ['sites.main.s3.request_timeout_seconds', 'positive']);
    assertInvalid(withS3(t, 'connect_timeout_seconds = "10"'), ['sites.main.s3.connect_timeout_seconds', 'positive number of seconds', 'connect_timeout_seconds = 10']);
    const dir = tempDir(t);
    assertInvalid(
      () => load(write(dir, 'x.toml', `[sites.main]\npg = "host=db1"\narchive = "s3://b/m"\nstate = "/s"\ns3 = "${SECRET}"\n`)),
      ['sites.main.s3', 'expected a table, got a string'],
      [SECRET],
    );
  });
});

describe('several archives: [[sites.NAME.archives]]', () => {
  const head = '[sites.main]\npg = "host=db1"\nstate = "/s"\n';
  const two = '[[sites.main.archives]]\nurl = "local"\n\n[[sites.main.archives]]\nurl = "s3://bucket/main"\n';
  const loadText = (t: { after(fn: () => void): void }, text: string, name = 'w.toml') => {
    const dir = tempDir(t);
    return { dir, load: () => load(write(dir, name, text)) };
  };

  test('each archive with its own codec, keys, file mode and store table, in file order; the first is the site\'s own', async (t) => {
    const { dir, load: loadIt } = loadText(
      t,
      `${head}
[[sites.main.archives]]
url = "archive"
archive_file_mode = "0640"

[[sites.main.archives]]
url = "s3://bucket/main"
compression = "lz4"
encryption_public_key_file = "site.pub"
encryption_private_key_file = "site.key"

[sites.main.archives.s3]
endpoint = "http://127.0.0.1:9000"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "${SECRET}"

[[sites.main.archives]]
url = "azure://container/main"

[sites.main.archives.azure]
account = "walarchive"
`,
    );
    await createKeyPair(path.join(dir, 'site.key'), path.join(dir, 'site.pub'));
    const site = loadIt().sites[0];
    assert.deepEqual(
      site.archives.map((a) => [a.archive, a.compression, a.compressionChosen, a.archiveFileMode, a.encryptionPublicKeyFile ?? null, a.encryptionPrivateKeyFile ?? null]),
      [
        [path.join(dir, 'archive'), 'none', false, 0o640, null, null],
        ['s3://bucket/main', 'lz4', true, 0o600, path.join(dir, 'site.pub'), path.join(dir, 'site.key')],
        ['azure://container/main', 'zstd', false, 0o600, null, null],
      ],
    );
    assert.deepEqual(site.archives[0].s3, {});
    assert.equal(site.archives[1].s3.endpoint, 'http://127.0.0.1:9000');
    assert.equal(site.archives[1].s3.secretAccessKey, SECRET);
    assert.deepEqual(site.archives[2].azure, { account: 'walarchive' });
    // What writing commands use: the first archive.
    assert.equal(site.archive, path.join(dir, 'archive'));
    assert.equal(site.archiveFileMode, 0o640);
    assert.ok(!JSON.stringify(site).includes(SECRET));
  });

  test('JSON: "archives" is an array of objects', (t) => {
    const { load: loadIt } = loadText(t, JSON.stringify({ sites: { main: { pg: 'host=db1', state: '/s', archives: [{ url: '/a' }, { url: 's3://b/p', s3: { region: 'eu-west-1' } }] } } }), 'w.json');
    const site = loadIt().sites[0];
    assert.deepEqual(site.archives.map((a) => a.archive), ['/a', 's3://b/p']);
    assert.equal(site.archives[1].s3.region, 'eu-west-1');
  });

  test('mistakes name the key and the fix', (t) => {
    const bad = (text: string, includes: string[], excludes: string[] = []) => assertInvalid(loadText(t, text).load, includes, excludes);
    bad(`${head}compression = "zstd"\n${two}`, ['sites.main.compression', 'beside archives', 'move it into each sites.main.archives table']);
    bad(`${head}archive = "/a"\n${two}`, ['sites.main.archive', 'beside archives', 'as the url of one of the sites.main.archives tables']);
    bad(`${head}archives = []\n`, ['sites.main.archives', 'is empty', '[[sites.main.archives]]']);
    bad(`${head}archives = "/a"\n`, ['sites.main.archives', 'expected an array of tables, got a string']);
    bad(`${head}archives = ["/a", "/b"]\n`, ['sites.main.archives[1]', 'expected a table, got a string']);
    bad(`${head}[[sites.main.archives]]\nurl = "/a"\n[[sites.main.archives]]\ncompression = "zstd"\n`, ['sites.main.archives[2].url', 'missing', 'url = ']);
    bad(`${head}[[sites.main.archives]]\nurl = "/a"\ncompresion = "zstd"\n`, ['sites.main.archives[1].compresion', 'unknown key', 'did you mean "compression"']);
    bad(`${head}[[sites.main.archives]]\nurl = "/a"\ncompression = "brotli"\n`, ['sites.main.archives[1].compression', 'not a codec']);
    bad(`${head}[[sites.main.archives]]\nurl = "/a"\nencryption_public_key_file = "/nonexistent.pub"\n`, ['sites.main.archives[1].encryption_public_key_file', 'walvault keys create']);
    bad(`${head}[[sites.main.archives]]\nurl = "/a"\n[[sites.main.archives]]\nurl = "/a"\n`, ['sites.main.archives[2].url', 'same archive as sites.main.archives[1].url']);
    bad(`${head}${two}[sites.main.archives.s3]\nendpoint = "minio:9000"\n`, ['sites.main.archives[2].s3.endpoint', 'http:// or https://']);
    bad(`${head}${two}[sites.main.archives.s3]\nsecret_access_key = "${SECRET}"\n`, ['sites.main.archives[2].s3.access_key_id', 'missing'], [SECRET]);
    bad(`${head}[[sites.main.archives]]\nurl = "/a"\ns3 = "x"\n`, ['sites.main.archives[1].s3', 'expected a table', '[sites.main.archives.s3]']);
    bad(`${head}${two}${site('other').replace('archive = "/a/other"', 'archive = "s3://bucket/main"')}`, ['sites.other.archive', 'same archive as sites.main.archives[2].url']);
  });

  test('archived_quorum: every archive by default, 1 to the number of archives, anything else refused naming the key', (t) => {
    const at = (q: string) => loadText(t, `${head}${q}\n${two}`).load;
    assert.equal(at('')().sites[0].archivedQuorum, 2);
    assert.equal(at('archived_quorum = 1')().sites[0].archivedQuorum, 1);
    for (const [q, said] of [
      ['archived_quorum = 3', /sites\.main\.archived_quorum: is 3, more than the site's 2 archive\(s\); use how many .* 1 to 2/],
      ['archived_quorum = 0', /sites\.main\.archived_quorum: must be at least 1, got 0/],
      ['archived_quorum = 1.5', /sites\.main\.archived_quorum: expected a whole number/],
    ] as const) {
      assert.throws(at(q), (err: Error) => isWalvaultError(err, 'CONFIG_INVALID') && said.test(err.message), q);
    }
  });

  test('commands that write refuse a site with several archives, naming it; one archive passes', (t) => {
    const cfg = loadText(t, `${head}${two}${site('single')}`).load();
    const several = selectSite(cfg, 'main');
    let caught: unknown;
    try {
      writableSite(several, 'wal-push');
    } catch (err) {
      caught = err;
    }
    assert.ok(isWalvaultError(caught, 'ARCHIVES_WRITE_UNSUPPORTED'), String(caught));
    assert.ok(!/[\r\n]/.test(caught.message));
    for (const s of ['wal-push', 'site main', 'writes one archive only', 'one archive for writing']) assert.ok(caught.message.includes(s), caught.message);
    assert.equal(writableSite(selectSite(cfg, 'single'), 'backup push').name, 'single');
  });
});

describe('configFromOptions', () => {
  test('builds the one site "default"', () => {
    const cfg = configFromOptions({ pg: 'host=db1 user=walvault', archive: 'file:///arch', state: 'rel/state', mode: 'sync' });
    assert.equal(cfg.source, 'command line');
    assert.equal(cfg.logLevel, 'info');
    assert.equal(cfg.sites.length, 1);
    const s = cfg.sites[0];
    assert.equal(s.name, 'default');
    assert.equal(s.slot, 'walvault_default');
    assert.equal(s.mode, 'sync');
    assert.equal(s.archive, 'file:///arch');
    assert.equal(s.state, path.resolve('rel/state'));
    assert.deepEqual(s.pg, { host: 'db1', user: 'walvault', application_name: 'walvault_default' });
  });

  test('names options, not file keys, in errors', () => {
    assertInvalid(() => configFromOptions({ pg: '', state: '/s' }), ['command line: --archive: missing; add --archive ']);
    assertInvalid(() => configFromOptions({ pg: '', archive: '/a', state: '/s', mode: 'later' }), ['command line: --mode: "later" is not a mode']);
    assertInvalid(() => configFromOptions({ pg: '', archive: '/a', state: '/s', slot: 'No Good' }), ['command line: --slot: ']);
    assertInvalid(() => configFromOptions({ pg: `password=${SECRET}`, archive: '/a', state: '/s' }), ['command line: --pg: ', 'PGPASSWORD'], [SECRET]);
  });
});

describe('selectSite', () => {
  test('one site: chosen without a name, and by its name', (t) => {
    const dir = tempDir(t);
    const cfg = load(write(dir, 'one.toml', site('main')));
    assert.equal(selectSite(cfg).name, 'main');
    assert.equal(selectSite(cfg, 'main').name, 'main');
    assertInvalid(() => selectSite(cfg, 'other'), ['no site named "other"', 'configured sites: main']);
  });

  test('two sites: a name is required', (t) => {
    const dir = tempDir(t);
    const file = write(dir, 'two.toml', site('east') + site('west'));
    const cfg = load(file);
    assert.equal(selectSite(cfg, 'west').name, 'west');
    assert.equal(selectSite(cfg, 'east').name, 'east');
    assertInvalid(() => selectSite(cfg), [`${file}: several sites are configured (east, west)`, '--site']);
    assertInvalid(() => selectSite(cfg, 'wset'), ['no site named "wset"', 'did you mean "west"?']);
  });
});

describe('the [http] table', () => {
  test('listen: host:port or [v6]:port, loopback by default; anything else refused naming the key', (t) => {
    const dir = tempDir(t);
    assert.equal(load(write(dir, 'none.toml', site('main'))).httpListen, undefined, 'no table, no listener');
    assert.deepEqual(load(write(dir, 'default.toml', `[http]\n${site('main')}`)).httpListen, { host: '127.0.0.1', port: 9187 });
    assert.deepEqual(load(write(dir, 'v6.toml', `[http]\nlisten = "[::1]:9300"\n${site('main')}`)).httpListen, { host: '::1', port: 9300 });
    for (const bad of ['"9187"', '"localhost:99999"', '"a b:1"', '9187']) {
      assertInvalid(() => load(write(dir, 'bad.toml', `[http]\nlisten = ${bad}\n${site('main')}`)), ['http.listen', 'is not host:port', '127.0.0.1:9187']);
    }
    assertInvalid(() => load(write(dir, 'key.toml', `[http]\nport = 1\n${site('main')}`)), ['http.port']);
  });
});
