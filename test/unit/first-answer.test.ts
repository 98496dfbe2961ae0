import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { foreignAnswer } from '../../src/postgres/first-answer';

/** A backend message: type, Int32 length counting itself, body. */
function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

describe('foreignAnswer', () => {
  test("PostgreSQL's first answers pass", () => {
    const authOk = message('R', Buffer.from([0, 0, 0, 0]));
    const sasl = message('R', Buffer.from('\0\0\0\x0aSCRAM-SHA-256\0\0', 'latin1'));
    const error = message('E', Buffer.from('SFATAL\0C53300\0Mnumber of requested standby connections exceeds max_wal_senders\0\0', 'latin1'));
    const negotiate = message('v', Buffer.from([0, 0, 0, 0, 0, 0, 0, 0]));
    for (const b of [authOk, sasl, error, negotiate, authOk.subarray(0, 1), authOk.subarray(0, 3)]) assert.equal(foreignAnswer(b, false), null, b.toString('hex'));
    for (const b of [Buffer.from('S'), Buffer.from('N'), error]) assert.equal(foreignAnswer(b, true), null, b.toString('hex'));
    assert.equal(foreignAnswer(Buffer.alloc(0), false), null);
  });

  test('an HTTP, SSH or TLS service is named, after a startup packet or an SSLRequest', () => {
    for (const ssl of [false, true]) {
      assert.equal(foreignAnswer(Buffer.from('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'), ssl), 'it answered like an HTTP server');
      assert.equal(foreignAnswer(Buffer.from('HTTP/1.0 200 OK\r\n'), ssl), 'it answered like an HTTP server');
      assert.equal(foreignAnswer(Buffer.from('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n'), ssl), 'it answered like an SSH server');
      assert.match(foreignAnswer(Buffer.from([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]), ssl)!, /TLS-only/);
      assert.match(foreignAnswer(Buffer.from([0x16, 0x03, 0x03, 0x00, 0x5a, 0x02]), ssl)!, /TLS-only/);
    }
  });

  test('anything else is shown as it came, on one line', () => {
    assert.equal(foreignAnswer(Buffer.from('220 mail.example.com ESMTP Postfix\r\n'), false), 'it answered "220 mail.example.com ESMTP Postf...", not the PostgreSQL protocol');
    assert.equal(foreignAnswer(Buffer.from('+OK ready\r\n'), true), 'it answered "+OK ready", not the PostgreSQL protocol');
    // A PostgreSQL type byte with an absurd length ("ERROR" read as a message) is no PostgreSQL either.
    assert.match(foreignAnswer(Buffer.from('ERROR: unknown command\n'), false)!, /^it answered "ERROR: unknown command"/);
    assert.equal(foreignAnswer(Buffer.from([0x00, 0xff, 0x10, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05]), false), 'it answered bytes 00ff108001020304..., not the PostgreSQL protocol');
    // After an SSLRequest, a message type that only a startup answer may begin with is foreign.
    assert.notEqual(foreignAnswer(Buffer.from('R'), true), null);
  });
});
