import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { writeFully } from '../../src/util/write-fully';

/** A file handle that writes at most `max` bytes per call into `file`, as a short write does. */
function shortWriter(file: Buffer, max: number) {
  const calls = { write: 0, writev: 0 };
  const put = (bufs: readonly Buffer[], position: number) => {
    let n = 0;
    for (const b of bufs) {
      const take = Math.min(b.length, max - n);
      b.copy(file, position + n, 0, take);
      n += take;
      if (n === max) break;
    }
    return n;
  };
  return {
    calls,
    handle: {
      write: async (b: Buffer, offset: number, length: number, position: number) => {
        calls.write++;
        return { bytesWritten: put([b.subarray(offset, offset + length)], position), buffer: b };
      },
      writev: async (bufs: Buffer[], position: number) => {
        calls.writev++;
        return { bytesWritten: put(bufs, position), buffers: bufs };
      },
    } as unknown as Parameters<typeof writeFully>[0],
  };
}

describe('writeFully', () => {
  test('short writes go on where they stopped, across and within pieces', async () => {
    const pieces = [randomBytes(10), Buffer.alloc(0), randomBytes(1), randomBytes(37), randomBytes(5)];
    const whole = Buffer.concat(pieces);
    for (const max of [1, 3, 7, 11, 1000]) {
      const file = Buffer.alloc(whole.length + 4);
      const seen: number[] = [];
      const { handle } = shortWriter(file, max);
      const end = await writeFully(handle, pieces, 4, (p) => seen.push(p.position));
      assert.equal(end, 4 + whole.length);
      assert.deepEqual(file.subarray(4), whole, `at most ${max} bytes a write`);
      assert.equal(seen.at(-1), end);
      assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
    }
  });

  test('one piece in plain writes, several in vectored ones; nothing to write, no call', async () => {
    const file = Buffer.alloc(64);
    const one = shortWriter(file, 1000);
    await writeFully(one.handle, [randomBytes(8)], 0);
    assert.deepEqual(one.calls, { write: 1, writev: 0 });
    const many = shortWriter(file, 1000);
    await writeFully(many.handle, [randomBytes(8), randomBytes(8)], 0);
    assert.deepEqual(many.calls, { write: 0, writev: 1 });
    const none = shortWriter(file, 1000);
    assert.equal(await writeFully(none.handle, [Buffer.alloc(0)], 9), 9);
    assert.deepEqual(none.calls, { write: 0, writev: 0 });
  });
});
