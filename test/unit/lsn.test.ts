import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { isWalvaultError, type ErrorCode } from '../../src/errors';
import {
  formatLsn,
  historyFileName,
  isHistoryFileName,
  isSegmentFileName,
  isValidSegmentSize,
  maxLsn,
  minLsn,
  parseLsn,
  parseSegmentFileName,
  parseSegmentSizeSetting,
  pgMicrosToUnixMs,
  pgNowMicros,
  segmentFileName,
  segmentNumber,
  segmentOffset,
  segmentsPerLogId,
  segmentStart,
  segmentStartOfNumber,
} from '../../src/wal/lsn';

const MiB = 1 << 20;
const GiB = 1 << 30;
const U64_MAX = (1n << 64n) - 1n;

function isCode(code: ErrorCode) {
  return (err: unknown): boolean => {
    assert.ok(isWalvaultError(err, code), `expected WalvaultError ${code}, got ${String(err)}`);
    return true;
  };
}

describe('parseLsn / formatLsn', () => {
  const cases: Array<[string, bigint]> = [
    ['0/0', 0n],
    ['0/1', 1n],
    ['0/16B3748', 0x16b3748n],
    ['3/A0FF1234', 0x3_a0ff1234n],
    ['1/0', 0x1_0000_0000n],
    ['0/FFFFFFFF', 0xffffffffn],
    ['FFFFFFFF/FFFFFFFF', U64_MAX],
    ['12345678/9ABCDEF0', 0x12345678_9abcdef0n],
  ];
  for (const [text, value] of cases) {
    test(`${text} round trips`, () => {
      assert.equal(parseLsn(text), value);
      assert.equal(formatLsn(value), text);
      assert.equal(formatLsn(parseLsn(text)), text);
      assert.equal(parseLsn(formatLsn(value)), value);
    });
  }

  test('values past 2^53 keep full precision', () => {
    const v = (1n << 53n) + 1n;
    assert.equal(formatLsn(v), '200000/1');
    assert.equal(parseLsn('200000/1'), v);
  });

  test('padded input is accepted and formatted without padding', () => {
    assert.equal(parseLsn('00000000/016B3748'), 0x16b3748n);
    assert.equal(parseLsn('00000003/A0FF1234'), 0x3_a0ff1234n);
    assert.equal(formatLsn(parseLsn('00000003/0000000A')), '3/A');
  });

  test('lower-case input is accepted and formatted upper-case', () => {
    assert.equal(parseLsn('0/16b3748'), 0x16b3748n);
    assert.equal(parseLsn('3/a0ff1234'), 0x3_a0ff1234n);
    assert.equal(parseLsn('ffffffff/ffffffff'), U64_MAX);
    assert.equal(formatLsn(parseLsn('a/bcdef')), 'A/BCDEF');
  });

  for (const bad of [
    '',
    '0',
    '16B3748',
    '0/',
    '/0',
    '0//1',
    '1/2/3',
    '123456789/0',
    '0/123456789',
    'G/0',
    '0/XYZ',
    '0x1/2',
    '-1/0',
    '1.5/0',
    '0 / 1',
  ]) {
    test(`rejects ${JSON.stringify(bad)} with PG_PROTOCOL`, () => {
      assert.throws(() => parseLsn(bad), isCode('PG_PROTOCOL'));
    });
  }

  test('formatLsn rejects values outside 0..2^64-1', () => {
    assert.throws(() => formatLsn(-1n), RangeError);
    assert.throws(() => formatLsn(U64_MAX + 1n), RangeError);
  });

  test('maxLsn / minLsn', () => {
    assert.equal(maxLsn(5n, 7n), 7n);
    assert.equal(maxLsn(7n, 5n), 7n);
    assert.equal(minLsn(5n, 7n), 5n);
    assert.equal(minLsn(7n, 5n), 5n);
    assert.equal(maxLsn(U64_MAX, 0n), U64_MAX);
  });
});

describe('parseSegmentSizeSetting', () => {
  const ok: Array<[string, number]> = [
    ['1MB', MiB],
    ['2MB', 2 * MiB],
    ['16MB', 16 * MiB],
    ['64MB', 64 * MiB],
    ['512MB', 512 * MiB],
    ['1GB', GiB],
    ['1024kB', MiB],
    ['16384kB', 16 * MiB],
    ['1048576', MiB],
    ['16777216B', 16 * MiB],
  ];
  for (const [text, size] of ok) {
    test(`${text} → ${size}`, () => {
      assert.equal(parseSegmentSizeSetting(text), size);
    });
  }

  for (const bad of ['3MB', '2GB', '4GB', '512kB', '0MB', '0', '48MB', '1000000', 'junk', '', 'MB', '16 XB', '16mb', '-16MB', '1.5GB', '16MB16']) {
    test(`rejects ${JSON.stringify(bad)} with PG_PROTOCOL`, () => {
      assert.throws(() => parseSegmentSizeSetting(bad), isCode('PG_PROTOCOL'));
    });
  }

  test('isValidSegmentSize', () => {
    for (let s = 20; s <= 30; s++) assert.equal(isValidSegmentSize(2 ** s), true, `2^${s}`);
    for (const s of [0, 512 * 1024, 2 ** 31, 3 * MiB, MiB + 1, 16.5 * MiB, -MiB, NaN]) {
      assert.equal(isValidSegmentSize(s), false, String(s));
    }
  });
});

describe('segment arithmetic', () => {
  test('16 MiB: 0/16B3748 is in segment 1 at offset 0x6B3748', () => {
    const lsn = parseLsn('0/16B3748');
    const seg = 16 * MiB;
    assert.equal(segmentNumber(lsn, seg), 1n);
    assert.equal(segmentOffset(lsn, seg), 0x6b3748);
    assert.equal(segmentStart(lsn, seg), 0x1000000n);
    assert.equal(segmentStartOfNumber(1n, seg), 0x1000000n);
    assert.equal(segmentFileName(1, segmentNumber(lsn, seg), seg), '000000010000000000000001');
  });

  test('16 MiB: 3/A0FF1234 → segNo 928, 0000000100000003000000A0', () => {
    const lsn = parseLsn('3/A0FF1234');
    const seg = 16 * MiB;
    assert.equal(segmentsPerLogId(seg), 256n);
    assert.equal(segmentNumber(lsn, seg), 928n);
    assert.equal(segmentOffset(lsn, seg), 0xff1234);
    assert.equal(segmentStart(lsn, seg), 0x3_a0000000n);
    assert.equal(segmentFileName(1, 928n, seg), '0000000100000003000000A0');
  });

  test('1 GiB: 3/A0FF1234 → segNo 14, …0000000300000002', () => {
    const lsn = parseLsn('3/A0FF1234');
    const seg = GiB;
    assert.equal(segmentsPerLogId(seg), 4n);
    assert.equal(segmentNumber(lsn, seg), 14n);
    assert.equal(segmentOffset(lsn, seg), 0x20ff1234);
    assert.equal(segmentStart(lsn, seg), 0x3_80000000n);
    assert.equal(segmentStartOfNumber(14n, seg), 0x3_80000000n);
    assert.equal(segmentFileName(1, 14n, seg), '000000010000000300000002');
  });

  test('1 MiB: 3/A0FF1234 → segNo 0x3A0F, …0000000300000A0F', () => {
    const lsn = parseLsn('3/A0FF1234');
    const seg = MiB;
    assert.equal(segmentsPerLogId(seg), 4096n);
    assert.equal(segmentNumber(lsn, seg), 0x3a0fn);
    assert.equal(segmentOffset(lsn, seg), 0xf1234);
    assert.equal(segmentStart(lsn, seg), 0x3_a0f00000n);
    assert.equal(segmentFileName(1, 0x3a0fn, seg), '000000010000000300000A0F');
  });

  test('segment boundaries: the last byte and the first byte of the next segment', () => {
    for (const seg of [MiB, 16 * MiB, GiB]) {
      const b = BigInt(seg);
      assert.equal(segmentNumber(b - 1n, seg), 0n);
      assert.equal(segmentOffset(b - 1n, seg), seg - 1);
      assert.equal(segmentNumber(b, seg), 1n);
      assert.equal(segmentOffset(b, seg), 0);
      assert.equal(segmentStart(5n * b + 17n, seg), 5n * b);
    }
  });

  test('timeline and log parts are upper-case, zero-padded hex', () => {
    assert.equal(segmentFileName(0xab, 0x12_34n * 256n + 0xcdn, 16 * MiB), '000000AB00001234000000CD');
    assert.equal(segmentFileName(0xffffffff, 0n, 16 * MiB), 'FFFFFFFF0000000000000000');
  });

  test('the highest 64-bit position names a valid segment', () => {
    const seg = 16 * MiB;
    const segNo = segmentNumber(U64_MAX, seg);
    const name = segmentFileName(1, segNo, seg);
    assert.equal(name, '00000001FFFFFFFF000000FF');
    assert.deepEqual(parseSegmentFileName(name, seg), { tli: 1, segNo });
  });
});

describe('parseSegmentFileName', () => {
  test('is the inverse of segmentFileName for 1 MiB, 16 MiB, 1 GiB', () => {
    for (const seg of [MiB, 16 * MiB, 64 * MiB, GiB]) {
      const per = segmentsPerLogId(seg);
      for (const segNo of [0n, 1n, per - 1n, per, per + 1n, 928n, 12345n, 0xfffffn * per + per - 1n]) {
        for (const tli of [1, 2, 0x1f, 0xffffffff]) {
          const name = segmentFileName(tli, segNo, seg);
          assert.equal(name.length, 24);
          assert.ok(isSegmentFileName(name), name);
          assert.deepEqual(parseSegmentFileName(name, seg), { tli, segNo }, `${name} @ ${seg}`);
        }
      }
    }
  });

  test('doc examples parse back', () => {
    assert.deepEqual(parseSegmentFileName('0000000100000003000000A0', 16 * MiB), { tli: 1, segNo: 928n });
    assert.deepEqual(parseSegmentFileName('000000010000000300000002', GiB), { tli: 1, segNo: 14n });
    assert.deepEqual(parseSegmentFileName('000000020000000000000001', 16 * MiB), { tli: 2, segNo: 1n });
  });

  test('rejects a seg field too large for the segment size (WAL_BAD_NAME)', () => {
    assert.throws(() => parseSegmentFileName('000000010000000000000100', 16 * MiB), isCode('WAL_BAD_NAME'));
    assert.throws(() => parseSegmentFileName('000000010000000300000004', GiB), isCode('WAL_BAD_NAME'));
    assert.throws(() => parseSegmentFileName('000000010000000000001000', MiB), isCode('WAL_BAD_NAME'));
    // The largest valid seg fields are accepted.
    assert.deepEqual(parseSegmentFileName('0000000100000000000000FF', 16 * MiB), { tli: 1, segNo: 255n });
    assert.deepEqual(parseSegmentFileName('000000010000000000000003', GiB), { tli: 1, segNo: 3n });
    assert.deepEqual(parseSegmentFileName('000000010000000000000FFF', MiB), { tli: 1, segNo: 4095n });
  });

  for (const bad of [
    '',
    '00000001000000000000000',
    '0000000100000000000000010',
    '0000000100000000000000a0',
    '00000001000000000000000G',
    '000000010000000000000001.partial',
    '00000002.history',
    ' 000000010000000000000001',
  ]) {
    test(`rejects ${JSON.stringify(bad)} (WAL_BAD_NAME)`, () => {
      assert.equal(isSegmentFileName(bad), false);
      assert.throws(() => parseSegmentFileName(bad, 16 * MiB), isCode('WAL_BAD_NAME'));
    });
  }
});

describe('history file names', () => {
  test('historyFileName', () => {
    assert.equal(historyFileName(2), '00000002.history');
    assert.equal(historyFileName(0x1a), '0000001A.history');
    assert.equal(historyFileName(0xffffffff), 'FFFFFFFF.history');
  });

  test('isHistoryFileName', () => {
    assert.equal(isHistoryFileName('00000002.history'), true);
    assert.equal(isHistoryFileName(historyFileName(0xabc)), true);
    assert.equal(isHistoryFileName('0000001a.history'), false);
    assert.equal(isHistoryFileName('0000002.history'), false);
    assert.equal(isHistoryFileName('00000002.history.tmp'), false);
    assert.equal(isHistoryFileName('000000010000000000000001'), false);
  });
});

describe('PostgreSQL epoch', () => {
  test('2000-01-01 00:00:00 UTC is 0', () => {
    assert.equal(pgNowMicros(Date.UTC(2000, 0, 1)), 0n);
    assert.equal(pgNowMicros(946684800000), 0n);
    assert.equal(pgMicrosToUnixMs(0n), 946684800000);
  });

  test('known dates', () => {
    const ms = Date.UTC(2024, 0, 1); // 1704067200000
    assert.equal(pgNowMicros(ms), 757382400000000n);
    assert.equal(pgMicrosToUnixMs(757382400000000n), ms);
    assert.equal(pgNowMicros(946684800001), 1000n);
    assert.equal(pgNowMicros(946684799999), -1000n);
    // sub-millisecond micros are truncated
    assert.equal(pgMicrosToUnixMs(757382400000999n), ms);
  });

  test('round trip and default clock', () => {
    for (const ms of [0, 946684800000, 1_700_000_000_123, 4_102_444_800_000]) {
      assert.equal(pgMicrosToUnixMs(pgNowMicros(ms)), ms);
    }
    const before = Date.now();
    const now = pgNowMicros();
    const after = Date.now();
    assert.ok(now >= pgNowMicros(before) && now <= pgNowMicros(after), String(now));
  });
});
