/**
 * Reads a plain-TCP (or Unix-socket) walsender connection into one reused buffer and takes
 * the CopyData messages of a replication stream for itself, handing everything else to `pg`.
 *
 * Why: `pg` reads through a Readable stream, which allocates a fresh 64 KiB buffer per read,
 * and its parser copies each read once more to join messages that span reads. At hundreds of
 * MiB/s that garbage is what a receiver's memory consists of. Here bytes land in one buffer,
 * a CopyData body that lies within one read is passed on as a view of it, and only bodies
 * that span reads are joined (in a second reused buffer).
 *
 * Backend message framing (every message, protocol 3.0):
 *    0  Byte1  type     'd' CopyData, 'W' CopyBothResponse, 'c' CopyDone, 'E' error, ...
 *    1  Int32  length   big-endian; counts itself and the body, not the type byte
 *    5  Byte[length - 4] body
 *
 * While disarmed (start-up, authentication, ordinary commands) every byte goes to `pg`
 * unchanged. While armed (a START_REPLICATION is running), CopyData bodies go to the tap's
 * consumer and every other message still goes to `pg`, which therefore sees the
 * CopyBothResponse, CopyDone, the end-of-timeline result, errors and ReadyForQuery as usual.
 * Over TLS the tap cannot read the socket: it takes the decrypted reads that the TLS socket
 * emits instead (tapStreamReads), in place of `pg`'s parser, which would otherwise join every
 * 128 KiB XLogData out of ~16 KiB TLS records by copying and reallocating as it grows.
 */
import * as net from 'node:net';
import { WalvaultError } from '../errors';

const TYPE_COPY_DATA = 0x64; // 'd'
const HEADER = 5;
/** Large enough that most 128 KiB XLogData messages arrive whole within one read. */
const READ_BUFFER = 512 * 1024;
/** PostgreSQL never sends a CopyData message near this size; a larger length is corruption. */
const MAX_MESSAGE = 64 * 1024 * 1024;
/** Initial size of the buffer that joins bodies spanning reads (XLogData is at most 128 KiB + 25 with 8 KiB pages). */
const JOIN_BUFFER = 256 * 1024;

export type CopyDataConsumer = (body: Buffer) => void;

export class CopyDataTap {
  private consumer: CopyDataConsumer | null = null;
  private readonly header = Buffer.alloc(HEADER);
  private headerHave = 0;
  /** Body length of the message being read; -1 while reading a header. */
  private bodyLength = -1;
  private bodyHave = 0;
  /** Whether the current message goes to the consumer (else to `pg`). */
  private tapping = false;
  /** Joins tapped bodies that span reads; reused. */
  private joined: Buffer = Buffer.alloc(0);
  private failed = false;
  onFailure: ((err: Error) => void) | null = null;

  /** @param forward receives bytes meant for `pg` (a private copy each time), in order. */
  constructor(private readonly forward: (bytes: Buffer) => void) {}

  /** From the next message on, CopyData bodies go to `consumer` (each valid only during the call). */
  arm(consumer: CopyDataConsumer): void {
    this.consumer = consumer;
  }

  disarm(): void {
    this.consumer = null;
  }

  /** Takes one read. `chunk` is refilled after the call, so nothing may keep a view of it. */
  feed(chunk: Buffer): void {
    if (this.failed) return;
    let at = 0;
    let runFrom = -1; // start of a run of this read's bytes that go to pg
    const flushRun = (end: number): void => {
      if (runFrom >= 0 && end > runFrom) this.forward(Buffer.from(chunk.subarray(runFrom, end)));
      runFrom = -1;
    };
    while (at < chunk.length) {
      if (this.bodyLength < 0) {
        const had = this.headerHave;
        const headerAt = at;
        const take = Math.min(HEADER - had, chunk.length - at);
        chunk.copy(this.header, had, at, at + take);
        this.headerHave += take;
        at += take;
        if (this.headerHave < HEADER) {
          // The rest of this header comes with the next read; until its type is known its
          // bytes are held back (in this.header).
          flushRun(headerAt);
          return;
        }
        if (!this.beginMessage()) return;
        if (this.tapping) {
          flushRun(headerAt);
        } else if (had > 0) {
          // The header started in an earlier read and was held back: pg gets it now.
          flushRun(headerAt);
          this.forward(Buffer.from(this.header));
          runFrom = at;
        } else if (runFrom < 0) {
          runFrom = headerAt;
        }
      } else if (!this.tapping && runFrom < 0) {
        runFrom = at; // the rest of a message for pg that began in an earlier read
      }
      const take = Math.min(this.bodyLength - this.bodyHave, chunk.length - at);
      if (this.tapping) {
        if (this.bodyHave === 0 && take === this.bodyLength) {
          this.deliver(chunk.subarray(at, at + take));
        } else {
          chunk.copy(this.joined, this.bodyHave, at, at + take);
          if (this.bodyHave + take === this.bodyLength) this.deliver(this.joined.subarray(0, this.bodyLength));
        }
        if (this.failed) return;
      }
      this.bodyHave += take;
      at += take;
      if (this.bodyHave === this.bodyLength) {
        this.bodyLength = -1;
        this.headerHave = 0;
        this.tapping = false;
      }
    }
    flushRun(chunk.length);
  }

  private beginMessage(): boolean {
    const type = this.header[0];
    const length = this.header.readUInt32BE(1);
    if (length < 4 || length > MAX_MESSAGE) {
      this.fail(
        new WalvaultError(
          'PG_PROTOCOL',
          `the server sent a message of type 0x${type.toString(16)} with an impossible length of ${length} bytes`, { fix: `the connection is corrupt` },
        ),
      );
      return false;
    }
    this.bodyLength = length - 4;
    this.bodyHave = 0;
    this.tapping = this.consumer !== null && type === TYPE_COPY_DATA;
    if (this.tapping && this.joined.length < this.bodyLength) this.joined = Buffer.allocUnsafe(Math.max(this.bodyLength, JOIN_BUFFER));
    return true;
  }

  private deliver(body: Buffer): void {
    try {
      this.consumer?.(body);
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private fail(err: Error): void {
    this.failed = true;
    this.onFailure?.(err);
  }
}

/**
 * A socket for `pg` whose reads go through a CopyDataTap. `pg` sees 'data' events with the
 * bytes the tap forwards, as if it read them itself (its parser reads nothing else: pg-internals I4). `firstRead` gets a copy of the first
 * read before the tap parses it (what the endpoint said first, even when it is no message).
 */
export function tappedSocket(firstRead?: (bytes: Buffer) => void): { socket: net.Socket; tap: CopyDataTap } {
  let socket: net.Socket;
  const tap = new CopyDataTap((bytes) => socket.emit('data', bytes));
  let onFirst = firstRead;
  // @types/node omits `onread` from the constructor options, though Node has taken it there since v12.
  const options = {
    onread: {
      buffer: Buffer.allocUnsafe(READ_BUFFER),
      callback: (nread: number, buf: Buffer) => {
        if (onFirst && nread > 0) {
          onFirst(Buffer.from(buf.subarray(0, Math.min(nread, 64))));
          onFirst = undefined;
        }
        tap.feed(buf.subarray(0, nread));
        return true;
      },
    },
  };
  socket = new net.Socket(options as net.SocketConstructorOpts);
  tap.onFailure = (err) => socket.destroy(err);
  return { socket, tap };
}

/**
 * Puts a CopyDataTap between an open stream (a TLS socket `pg` has connected) and the 'data'
 * listeners it has now (`pg`'s parser: pg-internals I4, checked by checkPgConnected), which get every byte the tap does not take, in order.
 * Each read the stream emits is a buffer of its own, so views of it are as good as the reused
 * buffer of tappedSocket. Called between two reads, so none is lost or reordered.
 */
export function tapStreamReads(stream: NodeJS.EventEmitter & { destroy(err?: Error): void }): CopyDataTap {
  const listeners = stream.listeners('data') as Array<(bytes: Buffer) => void>;
  stream.removeAllListeners('data');
  const tap = new CopyDataTap((bytes) => {
    for (const l of listeners) l.call(stream, bytes);
  });
  tap.onFailure = (err) => stream.destroy(err);
  stream.on('data', (chunk: Buffer) => tap.feed(chunk));
  return tap;
}
