import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { isWalvaultError } from '../../src/errors';
import { parseLsn, pgNowMicros } from '../../src/wal/lsn';
import {
  encodeStatusUpdate,
  KEEPALIVE,
  readKeepalive,
  readXLogDataHeader,
  STATUS_UPDATE,
  XLOG_DATA,
  XLOG_DATA_HEADER,
} from '../../src/postgres/copy-both-messages';

function protocolError(err: unknown): boolean {
  assert.ok(isWalvaultError(err, 'PG_PROTOCOL'), `expected PG_PROTOCOL, got ${String(err)}`);
  return true;
}

describe('message constants', () => {
  test('type bytes and header size', () => {
    assert.equal(XLOG_DATA, 'w'.charCodeAt(0));
    assert.equal(KEEPALIVE, 'k'.charCodeAt(0));
    assert.equal(STATUS_UPDATE, 'r'.charCodeAt(0));
    assert.equal(XLOG_DATA_HEADER, 25);
  });
});

describe('readXLogDataHeader', () => {
  test('decodes a hand-built big-endian header; the WAL follows at offset 25', () => {
    // 'w' | 00000003A0FF1234 | 00000003A1000000 | 0002B0D9E1A2C3D4 | WAL...
    const msg = Buffer.from(
      '77' + '00000003A0FF1234' + '00000003A1000000' + '0002B0D9E1A2C3D4' + 'DEADBEEF',
      'hex',
    );
    const h = readXLogDataHeader(msg);
    assert.deepEqual(h, {
      dataStart: parseLsn('3/A0FF1234'),
      walEnd: parseLsn('3/A1000000'),
      sendTime: 0x0002b0d9e1a2c3d4n,
    });
    assert.equal(msg.subarray(XLOG_DATA_HEADER).toString('hex'), 'deadbeef');
  });

  test('a header with no WAL bytes (exactly 25 bytes) is accepted', () => {
    const msg = Buffer.alloc(25);
    msg[0] = XLOG_DATA;
    msg.writeBigUInt64BE(0x16b3748n, 1);
    msg.writeBigUInt64BE(0x2000000n, 9);
    msg.writeBigInt64BE(757382400000000n, 17);
    assert.deepEqual(readXLogDataHeader(msg), { dataStart: 0x16b3748n, walEnd: 0x2000000n, sendTime: 757382400000000n });
  });

  test('positions above 2^63 are read unsigned', () => {
    const msg = Buffer.alloc(30);
    msg[0] = XLOG_DATA;
    msg.fill(0xff, 1, 9);
    msg.writeBigUInt64BE(0x80000000_00000000n, 9);
    const h = readXLogDataHeader(msg);
    assert.equal(h.dataStart, (1n << 64n) - 1n);
    assert.equal(h.walEnd, 1n << 63n);
  });

  test('a header read from a view into a larger buffer uses the view offsets', () => {
    const big = Buffer.alloc(100, 0xaa);
    const view = big.subarray(40, 40 + 25 + 8);
    view[0] = XLOG_DATA;
    view.writeBigUInt64BE(0x1000n, 1);
    view.writeBigUInt64BE(0x2000n, 9);
    view.writeBigInt64BE(5n, 17);
    assert.deepEqual(readXLogDataHeader(view), { dataStart: 0x1000n, walEnd: 0x2000n, sendTime: 5n });
  });

  for (const len of [0, 1, 9, 17, 24]) {
    test(`a ${len}-byte message is rejected with PG_PROTOCOL`, () => {
      const msg = Buffer.alloc(len);
      if (len) msg[0] = XLOG_DATA;
      assert.throws(() => readXLogDataHeader(msg), protocolError);
    });
  }
});

describe('readKeepalive', () => {
  test('decodes a hand-built keepalive asking for a reply', () => {
    const msg = Buffer.from('6B' + '0000000001000000' + '0002B0D9E1A2C3D4' + '01', 'hex');
    assert.equal(msg.length, 18);
    assert.deepEqual(readKeepalive(msg), { walEnd: 0x1000000n, sendTime: 0x0002b0d9e1a2c3d4n, replyRequested: true });
  });

  test('replyRequested 0 is false', () => {
    const msg = Buffer.from('6B' + '00000003A0FF1234' + '0000000000000001' + '00', 'hex');
    assert.deepEqual(readKeepalive(msg), { walEnd: parseLsn('3/A0FF1234'), sendTime: 1n, replyRequested: false });
  });

  test('walEnd and sendTime are big-endian, not little-endian', () => {
    const msg = Buffer.alloc(18);
    msg[0] = KEEPALIVE;
    msg.writeBigUInt64BE(0x0102030405060708n, 1);
    msg.writeBigInt64BE(0x1112131415161718n, 9);
    const k = readKeepalive(msg);
    assert.equal(k.walEnd, 0x0102030405060708n);
    assert.equal(k.sendTime, 0x1112131415161718n);
    assert.equal(k.replyRequested, false);
  });

  for (const len of [0, 1, 9, 17]) {
    test(`a ${len}-byte keepalive is rejected with PG_PROTOCOL`, () => {
      const msg = Buffer.alloc(len);
      if (len) msg[0] = KEEPALIVE;
      assert.throws(() => readKeepalive(msg), protocolError);
    });
  }
});

describe('encodeStatusUpdate', () => {
  test('34 bytes: r | write | flush | apply | clientTime | reply (exact bytes)', () => {
    const nowMs = Date.UTC(2024, 0, 1); // PG epoch micros 757382400000000 = 0x0002B0D5D4E94000
    const buf = encodeStatusUpdate(
      { write: parseLsn('3/A0FF1234'), flush: parseLsn('3/A0000000'), apply: parseLsn('0/16B3748') },
      false,
      nowMs,
    );
    assert.equal(buf.length, 34);
    assert.equal(
      buf.toString('hex').toUpperCase(),
      '72' + '00000003A0FF1234' + '00000003A0000000' + '00000000016B3748' + '0002B0D5D4E94000' + '00',
    );
  });

  test('positions at offsets 1, 9, 17 (big-endian), clientTime at 25', () => {
    const p = { write: 0x1_0000_0003n, flush: 0x1_0000_0002n, apply: 0x1_0000_0001n };
    const buf = encodeStatusUpdate(p, true, 946684800000 + 1234);
    assert.equal(buf[0], 0x72);
    assert.equal(buf.readBigUInt64BE(1), p.write);
    assert.equal(buf.readBigUInt64BE(9), p.flush);
    assert.equal(buf.readBigUInt64BE(17), p.apply);
    assert.equal(buf.readBigInt64BE(25), 1_234_000n);
    assert.equal(buf[33], 1);
  });

  test('reply flag', () => {
    const p = { write: 10n, flush: 0n, apply: 0n };
    assert.equal(encodeStatusUpdate(p, true)[33], 1);
    assert.equal(encodeStatusUpdate(p, false)[33], 0);
    assert.equal(encodeStatusUpdate(p)[33], 0, 'default is no reply');
  });

  test('flush 0 ("unknown") is encoded as zeros', () => {
    const buf = encodeStatusUpdate({ write: 0x3000000n, flush: 0n, apply: 0n }, false, 946684800000);
    assert.ok(buf.subarray(9, 33).equals(Buffer.alloc(24)), buf.toString('hex'));
    assert.equal(buf.readBigUInt64BE(1), 0x3000000n);
  });

  test('the largest 64-bit position survives', () => {
    const max = (1n << 64n) - 1n;
    const buf = encodeStatusUpdate({ write: max, flush: max, apply: max });
    assert.ok(buf.subarray(1, 25).equals(Buffer.alloc(24, 0xff)));
  });

  test('clientTime defaults to now, in PostgreSQL-epoch microseconds', () => {
    const before = pgNowMicros(Date.now());
    const buf = encodeStatusUpdate({ write: 1n, flush: 1n, apply: 1n });
    const after = pgNowMicros(Date.now());
    const t = buf.readBigInt64BE(25);
    assert.ok(t >= before && t <= after, `${t} not in [${before}, ${after}]`);
    // and it is an absolute PG-epoch value: (now - 2000-01-01) in µs, i.e. ~7.5e14+ (not Unix-epoch, not ms)
    const expected = (BigInt(Date.now()) - 946684800000n) * 1000n;
    assert.ok(expected - t >= 0n && expected - t < 5_000_000n, `${t} vs ${expected}`);
  });
});
