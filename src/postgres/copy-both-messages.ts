/**
 * Payloads carried inside CopyData ('d') messages during physical streaming. Offsets are
 * within the CopyData body; every integer is big-endian (network order).
 *
 * XLogData, server -> client, 25-byte header then WAL bytes:
 *    0  Byte1  'w'
 *    1  Int64  dataStart  LSN of the first WAL byte in this message
 *    9  Int64  walEnd     server's send-request position
 *   17  Int64  sendTime   microseconds since 2000-01-01 UTC
 *   25  Byte[n]           WAL for [dataStart, dataStart + n)
 *
 * Primary keepalive, server -> client, 18 bytes:
 *    0  Byte1  'k'
 *    1  Int64  walEnd
 *    9  Int64  sendTime
 *   17  Byte1  replyRequested  1 = answer now or risk wal_sender_timeout
 *
 * Standby status update, client -> server, 34 bytes:
 *    0  Byte1  'r'
 *    1  Int64  write   end (byte after the last) of WAL received and written
 *    9  Int64  flush   end of WAL made safe (fsynced, or archived in archive mode); 0 = unknown
 *   17  Int64  apply   end of WAL applied; an archiver applies nothing and reports its flush
 *   25  Int64  clientTime  microseconds since 2000-01-01 UTC
 *   33  Byte1  replyRequested
 */
import { WalvaultError } from '../errors';
import { pgNowMicros, type Lsn } from '../wal/lsn';

export const XLOG_DATA = 0x77; // 'w'
export const KEEPALIVE = 0x6b; // 'k'
export const STATUS_UPDATE = 0x72; // 'r'

export const XLOG_DATA_HEADER = 25;
const KEEPALIVE_LENGTH = 18;
const STATUS_UPDATE_LENGTH = 34;

export interface XLogDataHeader {
  dataStart: Lsn;
  walEnd: Lsn;
  sendTime: bigint;
}

export function readXLogDataHeader(chunk: Buffer): XLogDataHeader {
  if (chunk.length < XLOG_DATA_HEADER) {
    throw new WalvaultError('PG_PROTOCOL', `XLogData message of ${chunk.length} bytes is shorter than its 25-byte header`);
  }
  return {
    dataStart: chunk.readBigUInt64BE(1),
    walEnd: chunk.readBigUInt64BE(9),
    sendTime: chunk.readBigInt64BE(17),
  };
}

export interface Keepalive {
  walEnd: Lsn;
  sendTime: bigint;
  replyRequested: boolean;
}

export function readKeepalive(chunk: Buffer): Keepalive {
  if (chunk.length < KEEPALIVE_LENGTH) {
    throw new WalvaultError('PG_PROTOCOL', `keepalive message of ${chunk.length} bytes is shorter than 18 bytes`);
  }
  return {
    walEnd: chunk.readBigUInt64BE(1),
    sendTime: chunk.readBigInt64BE(9),
    replyRequested: chunk[17] !== 0,
  };
}

export interface StatusPositions {
  write: Lsn;
  flush: Lsn;
  apply: Lsn;
}

export function encodeStatusUpdate(p: StatusPositions, replyRequested = false, nowMs = Date.now()): Buffer {
  const buf = Buffer.alloc(STATUS_UPDATE_LENGTH);
  buf[0] = STATUS_UPDATE;
  buf.writeBigUInt64BE(p.write, 1);
  buf.writeBigUInt64BE(p.flush, 9);
  buf.writeBigUInt64BE(p.apply, 17);
  buf.writeBigInt64BE(pgNowMicros(nowMs), 25);
  buf[33] = replyRequested ? 1 : 0;
  return buf;
}
