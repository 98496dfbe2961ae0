import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isWalvaultError } from '../../src/errors';
import { closestName, describeConninfo, parseConninfo } from '../../src/config/conninfo';

const WHERE = 'test.toml: sites.main.pg';
const SECRET = 'Hunter2-s3cret';
const PG_ENV = ['PGHOST', 'PGPORT', 'PGUSER', 'PGSSLMODE', 'PGDATABASE'];

/** Runs fn with exactly these PG* variables set (others unset), then restores the environment. */
function withEnv<T>(vars: Record<string, string>, fn: () => T): T {
  const saved = new Map(PG_ENV.map((k) => [k, process.env[k]]));
  for (const k of PG_ENV) delete process.env[k];
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const parse = (s: string) => withEnv({}, () => parseConninfo(s, WHERE));

/** Asserts a one-line CONFIG_INVALID error that mentions `includes` and none of `excludes`. */
function assertInvalid(fn: () => unknown, includes: string[], excludes: string[] = []): string {
  let caught: unknown;
  try {
    withEnv({}, fn);
  } catch (err) {
    caught = err;
  }
  assert.ok(isWalvaultError(caught, 'CONFIG_INVALID'), `expected CONFIG_INVALID, got ${String(caught)}`);
  const msg = caught.message;
  assert.ok(!/[\r\n]/.test(msg), `message is not one line: ${JSON.stringify(msg)}`);
  assert.ok(msg.startsWith(`${WHERE}: `), `message does not say where: ${msg}`);
  for (const s of includes) assert.ok(msg.includes(s), `message lacks ${JSON.stringify(s)}: ${msg}`);
  for (const s of excludes) assert.ok(!msg.includes(s), `message leaks ${JSON.stringify(s)}: ${msg}`);
  return msg;
}

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'walvault-conninfo-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('key=value form', () => {
  test('maps every supported key onto pg options', () => {
    assert.deepEqual(
      parse("host=db1 port=5433 user=walvault dbname=postgres application_name=wv connect_timeout=5 options='-c wal_sender_timeout=0'"),
      {
        host: 'db1',
        port: 5433,
        user: 'walvault',
        database: 'postgres',
        application_name: 'wv',
        connectionTimeoutMillis: 5000,
        options: '-c wal_sender_timeout=0',
      },
    );
  });

  test('fills in no defaults, so pg can use PGHOST, PGPORT, PGUSER and ~/.pgpass', () => {
    assert.deepEqual(parse(''), {});
    assert.deepEqual(parse('   '), {});
    assert.deepEqual(parse('user=walvault'), { user: 'walvault' });
  });

  test('single quotes, backslash escapes and spaces around "="', () => {
    assert.deepEqual(parse("user = 'wal vault'   options='-c search_path=\\'a b\\'' host=a\\ b dbname='it\\\\s'"), {
      user: 'wal vault',
      options: "-c search_path='a b'",
      host: 'a b',
      database: 'it\\s',
    });
    assert.deepEqual(parse("application_name=''"), {});
  });

  test('a Unix socket directory is kept as the host', () => {
    assert.deepEqual(parse('host=/var/run/postgresql port=5432'), { host: '/var/run/postgresql', port: 5432 });
  });

  test('hostaddr is used as the host and wins over host', () => {
    assert.deepEqual(parse('host=db1.example hostaddr=10.0.0.5'), { host: '10.0.0.5' });
  });

  test('the last of repeated keys wins, as in libpq', () => {
    assert.deepEqual(parse('port=5432 port=5433'), { port: 5433 });
  });

  test('connect_timeout=0 means wait forever, which is pg\'s default', () => {
    assert.deepEqual(parse('connect_timeout=0'), {});
  });
});

describe('URI form', () => {
  test('user, host, port, database and query parameters', () => {
    assert.deepEqual(parse('postgresql://walvault@db1:5433/postgres?sslmode=disable&application_name=wv&connect_timeout=3'), {
      user: 'walvault',
      host: 'db1',
      port: 5433,
      database: 'postgres',
      ssl: false,
      application_name: 'wv',
      connectionTimeoutMillis: 3000,
    });
  });

  test('postgres:// works too, and an empty URI sets nothing', () => {
    assert.deepEqual(parse('postgres://db2'), { host: 'db2' });
    assert.deepEqual(parse('postgresql://'), {});
  });

  test('percent-encoding in every part', () => {
    assert.deepEqual(parse('postgres://wal%40vault@%2Fvar%2Frun%2Fpostgresql/my%20db?options=-c%20a%3Db'), {
      user: 'wal@vault',
      host: '/var/run/postgresql',
      database: 'my db',
      options: '-c a=b',
    });
  });

  test('IPv6 addresses in brackets', () => {
    assert.deepEqual(parse('postgresql://[::1]:6543'), { host: '::1', port: 6543 });
    assert.deepEqual(parse('postgresql://[fe80::1]/db'), { host: 'fe80::1', database: 'db' });
  });

  test('host and port as query parameters', () => {
    assert.deepEqual(parse('postgresql:///db?host=/tmp&port=5999'), { host: '/tmp', port: 5999, database: 'db' });
  });
});

describe('passwords are refused and never echoed', () => {
  const cases: [string, string][] = [
    ['key=value', `host=db1 password=${SECRET}`],
    ['quoted with a space', `password='${SECRET} more' host=db1`],
    ['spaces around =', `password = ${SECRET}`],
    ['unquoted with a space (would otherwise be a bad key)', `host=db1 password=${SECRET} tail`],
    ['URI user:password@', `postgresql://walvault:${SECRET}@db1/postgres`],
    ['URI with an empty user', `postgresql://:${SECRET}@db1`],
    ['URI query parameter', `postgresql://db1?password=${SECRET}`],
  ];
  for (const [name, s] of cases) {
    test(name, () => {
      assertInvalid(() => parseConninfo(s, WHERE), ['password', 'PGPASSWORD', 'PGPASSFILE', 'password_file'], [SECRET, 'more', 'tail']);
    });
  }
});

describe('errors name the problem on one line', () => {
  test('an unknown key, with a suggestion when close', () => {
    assertInvalid(() => parseConninfo('hots=db1', WHERE), ['"hots"', 'did you mean "host"?']);
    assertInvalid(() => parseConninfo('host=db1 sslmod=require', WHERE), ['"sslmod"', 'did you mean "sslmode"?']);
    assertInvalid(() => parseConninfo('postgresql://db1?frobnicate=1', WHERE), ['"frobnicate"', 'supported keys', 'sslmode']);
  });

  test('passfile is refused with a pointer to PGPASSFILE', () => {
    assertInvalid(() => parseConninfo('passfile=/home/x/.pgpass', WHERE), ['passfile', 'PGPASSFILE']);
  });

  test('a key without "="', () => {
    assertInvalid(() => parseConninfo('host db1', WHERE), ['"host"', 'not followed by "="']);
  });

  test('text that does not look like a key is not echoed', () => {
    assertInvalid(() => parseConninfo("host=db1 '@x!", WHERE), ['character 10'], ["'@x!"]);
  });

  test('an unterminated quote', () => {
    assertInvalid(() => parseConninfo("host=db1 options='-c x=1", WHERE), ['"options"', 'no closing quote'], ['-c x=1']);
  });

  test('bad port numbers', () => {
    for (const p of ['abc', '0', '70000', '-1', '54 32x']) {
      assertInvalid(() => parseConninfo(`port='${p}'`, WHERE), ['port', '1 to 65535']);
    }
    assertInvalid(() => parseConninfo('postgresql://db1:x/db', WHERE), ['port']);
  });

  test('several hosts', () => {
    assertInvalid(() => parseConninfo('host=a,b', WHERE), ['several hosts']);
    assertInvalid(() => parseConninfo('postgresql://a:1,b:2/db', WHERE), ['several hosts']);
  });

  test('a bad sslmode value', () => {
    assertInvalid(() => parseConninfo('sslmode=requir', WHERE), ['sslmode', '"requir"', 'verify-full']);
  });

  test('a bad connect_timeout', () => {
    assertInvalid(() => parseConninfo('connect_timeout=-5', WHERE), ['connect_timeout']);
    assertInvalid(() => parseConninfo('connect_timeout=2.5', WHERE), ['connect_timeout']);
  });

  test('malformed percent-encoding and brackets in URIs', () => {
    assertInvalid(() => parseConninfo('postgresql://db1/%zz', WHERE), ['percent-encoding']);
    assertInvalid(() => parseConninfo('postgresql://[::1:5432/db', WHERE), ['"]"']);
    assertInvalid(() => parseConninfo('postgresql://db1?sslmode', WHERE), ['no "="']);
  });
});

describe('sslmode', () => {
  test('left unset when not given, so pg reads PGSSLMODE itself', () => {
    assert.equal('ssl' in parse('host=db1'), false);
  });

  test('disable and allow mean no TLS', () => {
    assert.equal(parse('host=db1 sslmode=disable').ssl, false);
    assert.equal(parse('host=db1 sslmode=allow').ssl, false);
  });

  test('prefer and require encrypt without verifying the server', () => {
    assert.deepEqual(parse('host=db1 sslmode=prefer').ssl, { rejectUnauthorized: false });
    assert.deepEqual(parse('host=db1 sslmode=require').ssl, { rejectUnauthorized: false });
  });

  test('a Unix socket never uses TLS, as with libpq', () => {
    assert.equal(parse('host=/tmp sslmode=require').ssl, false);
    assert.equal(withEnv({ PGHOST: '/var/run/postgresql' }, () => parseConninfo('sslmode=require', WHERE)).ssl, false);
  });

  test('verify-full and verify-ca read the root certificate; only verify-full checks the name', async (t) => {
    const dir = await tempDir(t);
    const ca = path.join(dir, 'root.crt');
    await fs.writeFile(ca, 'CA PEM');
    const full = parse(`host=db1 sslmode=verify-full sslrootcert=${ca}`).ssl as Record<string, unknown>;
    assert.deepEqual(full, { rejectUnauthorized: true, ca: 'CA PEM' });
    const caOnly = parse(`host=db1 sslmode=verify-ca sslrootcert='${ca}'`).ssl as Record<string, unknown>;
    assert.equal(caOnly.rejectUnauthorized, true);
    assert.equal(caOnly.ca, 'CA PEM');
    assert.equal(typeof caOnly.checkServerIdentity, 'function');
    assert.equal((caOnly.checkServerIdentity as () => unknown)(), undefined);
  });

  test('require with a root certificate verifies the chain, as in libpq', async (t) => {
    const dir = await tempDir(t);
    const ca = path.join(dir, 'root.crt');
    await fs.writeFile(ca, 'CA PEM');
    const ssl = parse(`host=db1 sslmode=require sslrootcert=${ca}`).ssl as Record<string, unknown>;
    assert.equal(ssl.rejectUnauthorized, true);
    assert.equal(ssl.ca, 'CA PEM');
  });

  test('verify-full without sslrootcert uses the system roots', () => {
    assert.deepEqual(parse('host=db1 sslmode=verify-full').ssl, { rejectUnauthorized: true });
    assert.deepEqual(parse('host=db1 sslmode=verify-full sslrootcert=system').ssl, { rejectUnauthorized: true });
    assertInvalid(() => parseConninfo('host=db1 sslmode=require sslrootcert=system', WHERE), ['sslrootcert=system', 'verify-full']);
  });

  test('client certificates: both files read, the key kept out of JSON', async (t) => {
    const dir = await tempDir(t);
    await fs.writeFile(path.join(dir, 'c.crt'), 'CERT PEM');
    await fs.writeFile(path.join(dir, 'c.key'), 'KEY PEM');
    const ssl = parse(`host=db1 sslmode=require sslcert=${dir}/c.crt sslkey=${dir}/c.key`).ssl as Record<string, unknown>;
    assert.equal(ssl.cert, 'CERT PEM');
    assert.equal(ssl.key, 'KEY PEM');
    assert.ok(!JSON.stringify(ssl).includes('KEY PEM'));
    assertInvalid(() => parseConninfo(`host=db1 sslcert=${dir}/c.crt`, WHERE), ['sslcert', 'sslkey']);
  });

  test('a missing certificate file names the key and the path', () => {
    assertInvalid(() => parseConninfo('host=db1 sslmode=verify-full sslrootcert=/nonexistent/root.crt', WHERE), [
      'sslrootcert',
      '/nonexistent/root.crt',
      'ENOENT',
    ]);
  });

  test('without sslmode, certificate keys follow PGSSLMODE', async (t) => {
    const dir = await tempDir(t);
    const ca = path.join(dir, 'root.crt');
    await fs.writeFile(ca, 'CA PEM');
    const ssl = withEnv({ PGSSLMODE: 'verify-full' }, () => parseConninfo(`host=db1 sslrootcert=${ca}`, WHERE).ssl);
    assert.deepEqual(ssl, { rejectUnauthorized: true, ca: 'CA PEM' });
  });
});

describe('describeConninfo', () => {
  test('host:port user=, from the config', () => {
    assert.equal(withEnv({}, () => describeConninfo({ host: '127.0.0.1', port: 5432, user: 'walvault', password: SECRET })), '127.0.0.1:5432 user=walvault');
  });

  test('falls back to PGHOST, PGPORT and PGUSER like pg does', () => {
    assert.equal(withEnv({ PGHOST: 'envhost', PGPORT: '6000', PGUSER: 'envuser' }, () => describeConninfo({})), 'envhost:6000 user=envuser');
    assert.equal(withEnv({ PGHOST: 'envhost', PGUSER: 'envuser' }, () => describeConninfo({ host: 'db1', user: 'u' })), 'db1:5432 user=u');
  });

  test('pg\'s own defaults when nothing is set', () => {
    const d = withEnv({}, () => describeConninfo({}));
    assert.match(d, /^localhost:5432 user=\S+$/);
  });

  test('IPv6 addresses in brackets, socket directories as they are', () => {
    assert.equal(withEnv({}, () => describeConninfo({ host: '::1', port: 5433, user: 'u' })), '[::1]:5433 user=u');
    assert.equal(withEnv({}, () => describeConninfo({ host: '/tmp', user: 'u' })), '/tmp:5432 user=u');
  });
});

test('closestName suggests only near misses', () => {
  assert.equal(closestName('mdoe', ['mode', 'slot']), 'mode');
  assert.equal(closestName('archve', ['archive', 'state']), 'archive');
  assert.equal(closestName('frobnicate', ['mode', 'slot']), undefined);
});
