/**
 * The `backup_label` a base backup carries as the first member of base.tar, read while the
 * tar streams past (nothing is buffered beyond that member).
 *
 * ustar header (512 bytes, ASCII):
 *    0  name[100]   NUL-padded path
 *  124  size[12]    octal digits, NUL/space terminated (or base-256 with the top bit set)
 *  156  typeflag    '0' or NUL: regular file
 *  257  magic[6]    "ustar"
 * The content follows in 512-byte blocks.
 *
 * backup_label (text, one `KEY: value` per line):
 *    START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
 *    CHECKPOINT LOCATION: 0/2000060
 *    BACKUP METHOD: streamed
 *    BACKUP FROM: primary | standby
 *    START TIME: 2024-05-01 10:00:00 UTC
 *    LABEL: <label>
 *    START TIMELINE: 1            (PostgreSQL 11+)
 */
import { WalvaultError } from '../errors';
import { parseLsn, type Lsn } from '../wal/lsn';

export interface BackupLabel {
  startLsn: Lsn;
  startSegment: string;
  checkpointLsn: Lsn;
  backupFrom: string;
  startTime: string;
  label: string;
  startTimeline: number;
}

const BLOCK = 512;
/** A backup_label is a few hundred bytes; anything near this is not one. */
const LABEL_MAX = 64 * 1024;

export function parseBackupLabel(text: string): BackupLabel {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const at = line.indexOf(': ');
    if (at > 0) fields.set(line.slice(0, at), line.slice(at + 2));
  }
  const need = (k: string): string => {
    const v = fields.get(k);
    if (v === undefined) throw new WalvaultError('BACKUP_BAD_LABEL', `backup_label has no "${k}" line`);
    return v;
  };
  const start = /^([0-9A-F]+\/[0-9A-F]+) \(file ([0-9A-F]{24})\)$/.exec(need('START WAL LOCATION'));
  if (!start) throw new WalvaultError('BACKUP_BAD_LABEL', `backup_label START WAL LOCATION is malformed: ${need('START WAL LOCATION')}`);
  return {
    startLsn: parseLsn(start[1]),
    startSegment: start[2],
    checkpointLsn: parseLsn(need('CHECKPOINT LOCATION')),
    backupFrom: fields.get('BACKUP FROM') ?? 'primary',
    startTime: need('START TIME'),
    label: fields.get('LABEL') ?? '',
    startTimeline: Number(fields.get('START TIMELINE') ?? '0'),
  };
}

function tarSize(field: Buffer): number {
  if (field[0] & 0x80) {
    // base-256: big-endian, top bit of the first byte is the marker
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i];
    return n;
  }
  const text = field.toString('ascii').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(text)) throw new WalvaultError('BACKUP_BAD_LABEL', `base.tar: malformed size field ${JSON.stringify(text)} in the first header`);
  return parseInt(text, 8);
}

/**
 * Watches the start of base.tar and yields the backup_label once its bytes have gone by.
 * `feed` takes each chunk (not kept); `label` is set when complete, `error` if the archive
 * does not start with one.
 */
export class BackupLabelSniffer {
  private readonly head: Buffer[] = [];
  private have = 0;
  private want = BLOCK;
  private size = -1;
  label: BackupLabel | null = null;
  text: string | null = null;
  error: Error | null = null;

  get done(): boolean {
    return this.label !== null || this.error !== null;
  }

  feed(chunk: Buffer): void {
    if (this.done) return;
    const take = Math.min(chunk.length, this.want - this.have);
    this.head.push(Buffer.from(chunk.subarray(0, take)));
    this.have += take;
    if (this.have < this.want) return;
    const buf = Buffer.concat(this.head);
    try {
      if (this.size < 0) {
        const name = buf.toString('utf8', 0, 100).replace(/\0.*$/s, '');
        if (name !== 'backup_label') throw new WalvaultError('BACKUP_BAD_LABEL', `base.tar does not begin with backup_label (its first member is ${JSON.stringify(name)})`);
        this.size = tarSize(buf.subarray(124, 136));
        if (this.size <= 0 || this.size > LABEL_MAX) throw new WalvaultError('BACKUP_BAD_LABEL', `base.tar: backup_label of ${this.size} bytes`);
        this.want = BLOCK + this.size;
        this.feed(chunk.subarray(take));
        return;
      }
      this.text = buf.toString('utf8', BLOCK, BLOCK + this.size);
      this.label = parseBackupLabel(this.text);
    } catch (err) {
      this.error = err as Error;
    }
  }
}
