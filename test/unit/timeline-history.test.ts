import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { isWalvaultError } from '../../src/errors';
import { parseLsn } from '../../src/wal/lsn';
import { parseTimelineHistory, timelineOfLsn, type TimelineHistoryEntry } from '../../src/wal/timeline-history';

function protocolError(label?: string) {
  return (err: unknown): boolean => {
    assert.ok(isWalvaultError(err, 'PG_PROTOCOL'), `expected PG_PROTOCOL, got ${String(err)}`);
    if (label) assert.ok(err.message.startsWith(label + ':'), err.message);
    return true;
  };
}

/** What 00000003.history looks like on a real server: the parent's content, an extra newline, the new line. */
const HISTORY_3 = '1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2024-05-01 10:00:00+00\n';

describe('parseTimelineHistory', () => {
  test('single entry as written by the server', () => {
    assert.deepEqual(parseTimelineHistory('1\t0/3000158\tno recovery target specified\n'), [
      { tli: 1, switchpoint: 0x3000158n, reason: 'no recovery target specified' },
    ]);
  });

  test('a 3-timeline history with the blank line the server inserts', () => {
    const entries = parseTimelineHistory(HISTORY_3);
    assert.deepEqual(entries, [
      { tli: 1, switchpoint: parseLsn('0/3000158'), reason: 'no recovery target specified' },
      { tli: 2, switchpoint: parseLsn('0/5000000'), reason: 'before 2024-05-01 10:00:00+00' },
    ]);
  });

  test('comments, blank and whitespace-only lines, CRLF are skipped', () => {
    const text = [
      '# timeline history for TLI 4',
      '',
      '   ',
      '\t',
      '1\t0/3000158\tno recovery target specified',
      '  # indented comment',
      '',
      '2\t1/A0FF1234\tat restore point "before_upgrade"\r',
      '',
      '3\t2/0\t',
      '',
    ].join('\n');
    assert.deepEqual(parseTimelineHistory(text), [
      { tli: 1, switchpoint: 0x3000158n, reason: 'no recovery target specified' },
      { tli: 2, switchpoint: 0x1_a0ff1234n, reason: 'at restore point "before_upgrade"' },
      { tli: 3, switchpoint: 0x2_00000000n, reason: '' },
    ]);
  });

  test('the reason keeps inner whitespace and tabs', () => {
    const [e] = parseTimelineHistory('1\t0/3000158\tafter transaction 742\tat 2024-05-01  10:00\n');
    assert.equal(e.reason, 'after transaction 742\tat 2024-05-01  10:00');
  });

  test('a line without a reason has an empty reason', () => {
    assert.deepEqual(parseTimelineHistory('1\t0/3000158'), [{ tli: 1, switchpoint: 0x3000158n, reason: '' }]);
  });

  test('lower-case and padded switchpoints', () => {
    const entries = parseTimelineHistory('1\t0/a0ff1234\tx\n2\t00000003/000000A0\ty\n');
    assert.equal(entries[0].switchpoint, 0xa0ff1234n);
    assert.equal(entries[1].switchpoint, 0x3_000000a0n);
  });

  test('empty content and only comments give no entries', () => {
    assert.deepEqual(parseTimelineHistory(''), []);
    assert.deepEqual(parseTimelineHistory('\n\n# nothing\n'), []);
  });

  test('parent TLIs may skip numbers (they only have to increase)', () => {
    const entries = parseTimelineHistory('1\t0/3000000\ta\n5\t0/4000000\tb\n');
    assert.deepEqual(
      entries.map((e) => e.tli),
      [1, 5],
    );
  });

  test('non-increasing TLIs are rejected', () => {
    assert.throws(() => parseTimelineHistory('1\t0/3000000\ta\n1\t0/4000000\tb\n', '00000003.history'), protocolError('00000003.history'));
    assert.throws(() => parseTimelineHistory('2\t0/3000000\ta\n1\t0/4000000\tb\n'), protocolError('timeline history'));
    assert.throws(() => parseTimelineHistory('1\t0/3000000\ta\n\n3\t0/4000000\tb\n\n2\t0/5000000\tc\n'), protocolError());
  });

  for (const [name, line] of [
    ['no switchpoint', '1'],
    ['no tab-separated switchpoint', '1\tno recovery target specified'],
    ['switchpoint without slash', '1\t3000158\treason'],
    ['non-numeric tli', 'x\t0/3000158\treason'],
    ['hex tli', 'A\t0/3000158\treason'],
    ['negative tli', '-1\t0/3000158\treason'],
    ['bad lsn characters', '1\t0/30G0158\treason'],
    ['fields glued together', '10/3000158\treason'],
    ['lsn first', '0/3000158\t1\treason'],
  ] as const) {
    test(`malformed line rejected: ${name}`, () => {
      assert.throws(() => parseTimelineHistory(`${line}\n`, 'h'), protocolError('h'));
      // also when it follows a good line
      assert.throws(() => parseTimelineHistory(`1\t0/1000000\tok\n${line}\n`, 'h'), protocolError('h'));
    });
  }

  test('switchpoint halves longer than 32 bits are rejected', () => {
    assert.throws(() => parseTimelineHistory('1\t0/123456789\treason\n'), protocolError());
    assert.throws(() => parseTimelineHistory('1\t123456789/0\treason\n'), protocolError());
  });
});

describe('timelineOfLsn', () => {
  // History of TLI 3: TLI 1 valid until 0/3000158, TLI 2 until 0/5000000, TLI 3 from there on.
  const entries: TimelineHistoryEntry[] = parseTimelineHistory(HISTORY_3);
  const cases: Array<[string, number]> = [
    ['0/0', 1],
    ['0/1000000', 1],
    ['0/3000157', 1],
    ['0/3000158', 2], // the switchpoint itself belongs to the next timeline
    ['0/3000159', 2],
    ['0/4FFFFFF', 2],
    ['0/5000000', 3],
    ['0/5000001', 3],
    ['1/0', 3],
    ['FFFFFFFF/FFFFFFFF', 3],
  ];
  for (const [lsn, tli] of cases) {
    test(`${lsn} → TLI ${tli}`, () => {
      assert.equal(timelineOfLsn(entries, 3, parseLsn(lsn)), tli);
    });
  }

  test('with no history everything belongs to the current timeline', () => {
    assert.equal(timelineOfLsn([], 1, 0n), 1);
    assert.equal(timelineOfLsn([], 1, parseLsn('5/0')), 1);
  });

  test('with skipped TLIs the parent named in the file owns the range', () => {
    const skip = parseTimelineHistory('1\t0/3000000\ta\n4\t0/6000000\tb\n');
    assert.equal(timelineOfLsn(skip, 7, parseLsn('0/2FFFFFF')), 1);
    assert.equal(timelineOfLsn(skip, 7, parseLsn('0/3000000')), 4);
    assert.equal(timelineOfLsn(skip, 7, parseLsn('0/5FFFFFF')), 4);
    assert.equal(timelineOfLsn(skip, 7, parseLsn('0/6000000')), 7);
  });
});
