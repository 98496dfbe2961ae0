/**
 * The archived position: the end of the longest run of WAL, from where this site's
 * archive is known complete, whose every byte is in verified objects. Uploads finish out
 * of order (several run at once), so finished ranges wait here until the run reaches them.
 */
import type { Lsn } from '../wal/lsn';

export class ArchivedPosition {
  private readonly pending: Array<{ start: Lsn; end: Lsn }> = [];

  constructor(private position: Lsn) {}

  get lsn(): Lsn {
    return this.position;
  }

  /** Moves the position back to `lsn` if past it (a timeline fork before it). */
  clampTo(lsn: Lsn): void {
    if (this.position > lsn) this.position = lsn;
    for (const r of this.pending) if (r.end > lsn) r.end = lsn;
  }

  /** Records that [start, end) is archived; returns true when the position moved. */
  add(start: Lsn, end: Lsn): boolean {
    const before = this.position;
    this.pending.push({ start, end });
    let moved = true;
    while (moved) {
      moved = false;
      for (let i = this.pending.length - 1; i >= 0; i--) {
        const r = this.pending[i];
        if (r.start <= this.position) {
          if (r.end > this.position) this.position = r.end;
          this.pending.splice(i, 1);
          moved = true;
        }
      }
    }
    return this.position > before;
  }
}
