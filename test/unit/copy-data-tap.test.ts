import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { CopyDataTap, tapStreamReads } from '../../src/postgres/copy-data-tap';
import { isWalvaultError } from '../../src/errors';

/** One backend message: type byte, Int32 length (itself + body), body. */
function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

interface Script {
  /** Bytes sent before the tap is armed (all of them belong to pg). */
  before: Buffer;
  /** Bytes sent while armed. */
  armed: Buffer;
  /** What pg must see of `armed`: every message but CopyData. */
  pgPart: Buffer;
  copyBodies: Buffer[];
}

function script(): Script {
  const before = Buffer.concat([message('R', Buffer.alloc(4)), message('S', Buffer.from('server_version\x0017\x00')), message('Z', Buffer.from('I'))]);
  const copyBodies = [
    Buffer.concat([Buffer.from('w'), randomBytes(24 + 131072)]),
    Buffer.concat([Buffer.from('k'), randomBytes(17)]),
    Buffer.concat([Buffer.from('w'), randomBytes(24 + 4000)]),
    Buffer.alloc(0), // an empty CopyData is legal and must arrive as such
    Buffer.concat([Buffer.from('w'), randomBytes(24 + 70000)]),
  ];
  const pgMessages = {
    start: message('W', Buffer.from([0, 0, 0])),
    notice: message('N', Buffer.from('SWARNING\x00\x00')),
    end: Buffer.concat([message('c', Buffer.alloc(0)), message('T', randomBytes(40)), message('D', randomBytes(30)), message('C', Buffer.from('SELECT\x00')), message('Z', Buffer.from('I'))]),
  };
  const d = copyBodies.map((b) => message('d', b));
  const armed = Buffer.concat([pgMessages.start, d[0], d[1], pgMessages.notice, d[2], d[3], d[4], pgMessages.end]);
  const pgPart = Buffer.concat([pgMessages.start, pgMessages.notice, pgMessages.end]);
  return { before, armed, pgPart, copyBodies };
}

/** Feeds `bytes` in chunks of the given sizes (cycled), through one reused buffer, as a socket does. */
function feedInChunks(tap: CopyDataTap, bytes: Buffer, sizes: number[]): void {
  const reused = Buffer.alloc(Math.max(...sizes));
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length], bytes.length - at);
    bytes.copy(reused, 0, at, at + n);
    tap.feed(reused.subarray(0, n));
    reused.fill(0xee); // anything that kept a view of the read now sees garbage
    at += n;
  }
}

function run(sizes: number[]): { forwarded: Buffer; bodies: Buffer[]; s: Script } {
  const s = script();
  const forwarded: Buffer[] = [];
  const bodies: Buffer[] = [];
  const tap = new CopyDataTap((b) => forwarded.push(b));
  tap.onFailure = (err) => assert.fail(err);
  feedInChunks(tap, s.before, sizes);
  tap.arm((body) => bodies.push(Buffer.from(body)));
  feedInChunks(tap, s.armed, sizes);
  tap.disarm();
  return { forwarded: Buffer.concat(forwarded), bodies, s };
}

describe('CopyDataTap', () => {
  for (const sizes of [[1], [2, 3], [5], [7, 1, 4096], [65536], [524288], [131072 + 30], [100, 200000, 3]]) {
    test(`reads of ${sizes.join('/')} bytes: pg gets every other message unchanged, CopyData bodies arrive whole and in order`, () => {
      const { forwarded, bodies, s } = run(sizes);
      assert.ok(forwarded.equals(Buffer.concat([s.before, s.pgPart])), 'bytes forwarded to pg differ');
      assert.equal(bodies.length, s.copyBodies.length);
      bodies.forEach((b, i) => assert.ok(b.equals(s.copyBodies[i]), `CopyData body ${i} differs`));
    });
  }

  test('random read sizes', () => {
    for (let round = 0; round < 30; round++) {
      const sizes = Array.from({ length: 8 }, () => 1 + Math.floor(Math.random() * (round % 2 ? 300000 : 64)));
      const { forwarded, bodies, s } = run(sizes);
      assert.ok(forwarded.equals(Buffer.concat([s.before, s.pgPart])), `forwarded bytes differ for reads ${sizes}`);
      assert.deepEqual(bodies.map((b) => b.length), s.copyBodies.map((b) => b.length));
      bodies.forEach((b, i) => assert.ok(b.equals(s.copyBodies[i]), `body ${i} differs for reads ${sizes}`));
    }
  });

  test('while disarmed, CopyData goes to pg like everything else', () => {
    const s = script();
    const forwarded: Buffer[] = [];
    const tap = new CopyDataTap((b) => forwarded.push(b));
    feedInChunks(tap, Buffer.concat([s.before, s.armed]), [1000]);
    assert.ok(Buffer.concat(forwarded).equals(Buffer.concat([s.before, s.armed])));
  });

  test('arming between two messages that share a read takes effect from the next read on', () => {
    // The receiver arms before it sends START_REPLICATION, so the server cannot have sent
    // CopyData yet; arming in the middle of a message must still keep framing intact.
    const s = script();
    const forwarded: Buffer[] = [];
    const bodies: Buffer[] = [];
    const tap = new CopyDataTap((b) => forwarded.push(b));
    const all = Buffer.concat([s.before, s.armed]);
    const cut = s.before.length - 3; // the tap is armed while the last 'Z' is half read
    tap.feed(all.subarray(0, cut));
    tap.arm((b) => bodies.push(Buffer.from(b)));
    feedInChunks(tap, all.subarray(cut), [777]);
    assert.ok(Buffer.concat(forwarded).equals(Buffer.concat([s.before, s.pgPart])));
    assert.equal(bodies.length, s.copyBodies.length);
  });

  test('an impossible message length fails the connection with PG_PROTOCOL and stops reading', () => {
    const failures: unknown[] = [];
    const forwarded: Buffer[] = [];
    const tap = new CopyDataTap((b) => forwarded.push(b));
    tap.onFailure = (err) => failures.push(err);
    tap.arm(() => assert.fail('no body expected'));
    const bad = Buffer.from([0x64, 0, 0, 0, 2]); // length 2 is below the 4 bytes the length field itself takes
    tap.feed(bad);
    tap.feed(message('Z', Buffer.from('I')));
    assert.equal(failures.length, 1);
    assert.ok(isWalvaultError(failures[0], 'PG_PROTOCOL'));
    assert.match((failures[0] as Error).message, /impossible length of 2 bytes/);
    assert.equal(forwarded.length, 0);
  });

  test('a consumer that throws fails the connection instead of losing the error', () => {
    const failures: unknown[] = [];
    const tap = new CopyDataTap(() => undefined);
    tap.onFailure = (err) => failures.push(err);
    tap.arm(() => {
      throw new Error('disk full');
    });
    tap.feed(Buffer.concat([message('d', Buffer.from('w123')), message('d', Buffer.from('w456'))]));
    assert.equal(failures.length, 1);
    assert.match(String(failures[0]), /disk full/);
  });

  test("over a stream's own reads (TLS): put in front of the listener already there, which gets the rest in order", async () => {
    const s = script();
    const stream = new PassThrough();
    const forwarded: Buffer[] = [];
    // What `pg` attached at connect: its parser, reading every byte of the stream.
    stream.on('data', (b: Buffer) => forwarded.push(Buffer.from(b)));
    stream.write(s.before);
    await new Promise((r) => setImmediate(r));
    const tap = tapStreamReads(stream);
    const bodies: Buffer[] = [];
    tap.arm((b) => bodies.push(Buffer.from(b)));
    // Reads of TLS record size, so most CopyData messages span several.
    for (let at = 0; at < s.armed.length; at += 16384) stream.write(s.armed.subarray(at, at + 16384));
    await new Promise((r) => setImmediate(r));
    tap.disarm();
    assert.equal(stream.listenerCount('data'), 1, 'one reader of the stream: the tap');
    assert.ok(Buffer.concat(forwarded).equals(Buffer.concat([s.before, s.pgPart])), 'the first listener got everything but the CopyData, in order');
    assert.equal(bodies.length, s.copyBodies.length);
    bodies.forEach((b, i) => assert.ok(b.equals(s.copyBodies[i]), `CopyData body ${i} differs`));
  });
});
