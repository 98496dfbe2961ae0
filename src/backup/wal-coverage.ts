/**
 * Whether the archive holds the WAL a backup needs to become consistent: every byte from its
 * start LSN to its stop LSN. Checked against the archive itself (not the receiver's ledger),
 * so a `backup push` beside a running daemon, or a later finisher, sees the same truth.
 */
import type { Logger } from 'pino';
import { Archive } from '../archive/archive';
import { WalvaultError } from '../errors';
import { sleep } from '../util/timers';
import { formatLsn, parseLsn, segmentFileName, segmentNumber, segmentStart, type Lsn } from '../wal/lsn';
import type { BackupMetadata } from './catalog';

export interface WalSpan {
  startLsn: Lsn;
  startTli: number;
  stopLsn: Lsn;
  stopTli: number;
  segSize: number;
}

export interface CoverageState {
  complete: boolean;
  /** The first segment not yet archived (null when complete). */
  missing: string | null;
  /** How far the archive covers the span without a gap. */
  coveredTo: Lsn;
}

/**
 * Remembers what it has found, so polling re-checks only the segments still missing.
 * A segment counts on the stop timeline or, for a span that crossed a promotion, on the
 * start timeline.
 */
export class WalCoverage {
  private nextSegNo: bigint;
  private readonly lastSegNo: bigint;

  constructor(
    private readonly archive: Archive,
    private readonly span: WalSpan,
  ) {
    this.nextSegNo = segmentNumber(span.startLsn, span.segSize);
    this.lastSegNo = segmentNumber(span.stopLsn - 1n, span.segSize);
  }

  async check(): Promise<CoverageState> {
    const { segSize, stopLsn } = this.span;
    const tlis = [...new Set([this.span.stopTli, this.span.startTli])];
    while (this.nextSegNo <= this.lastSegNo) {
      let found = false;
      for (const tli of tlis) {
        if (await this.archive.exists(Archive.walKey(segmentFileName(tli, this.nextSegNo, segSize)))) {
          found = true;
          break;
        }
      }
      if (!found && this.nextSegNo === this.lastSegNo) {
        // The stop segment may still be growing (a backup taken on a standby ends without a
        // segment switch): its newest partial counts when it reaches the stop LSN.
        const need = Number(stopLsn - segmentStart(stopLsn - 1n, segSize));
        const name = segmentFileName(this.span.stopTli, this.nextSegNo, segSize);
        const partialSize = await this.verifiedSize(Archive.walKey(`${name}.partial`)).catch(() => null);
        if (partialSize !== null && partialSize >= need) return { complete: true, missing: null, coveredTo: stopLsn };
      }
      if (!found) {
        return {
          complete: false,
          missing: segmentFileName(this.span.stopTli, this.nextSegNo, segSize),
          coveredTo: this.nextSegNo === segmentNumber(this.span.startLsn, segSize) ? this.span.startLsn : this.nextSegNo * BigInt(segSize),
        };
      }
      this.nextSegNo++;
    }
    return { complete: true, missing: null, coveredTo: stopLsn };
  }

  /** The plaintext size of `key` once the whole object is read and verified (as it arrives); null when absent. */
  private verifiedSize(key: string): Promise<number | null> {
    return this.archive.read(key, async (o) => {
      for await (const chunk of o.chunks) void chunk;
      return o.header.plaintextSize;
    });
  }

  describe(state: CoverageState): string {
    return state.complete
      ? `WAL ${formatLsn(this.span.startLsn)}..${formatLsn(this.span.stopLsn)} is archived`
      : `WAL is archived up to ${formatLsn(state.coveredTo)} of ${formatLsn(this.span.stopLsn)}; waiting for ${state.missing}`;
  }
}

/** Waits until the archive holds the backup's WAL, or gives up after `walWaitSeconds`. */
export async function waitForWal(
  archive: Archive,
  meta: BackupMetadata,
  o: { walWaitSeconds: number; walPollMs?: number; signal?: AbortSignal },
  log: Logger,
  stillOurs: () => void = () => undefined,
): Promise<void> {
  const coverage = new WalCoverage(archive, {
    startLsn: parseLsn(meta.startLsn),
    startTli: meta.startTimeline,
    stopLsn: parseLsn(meta.stopLsn),
    stopTli: meta.stopTimeline,
    segSize: meta.walSegmentSize,
  });
  const deadline = Date.now() + o.walWaitSeconds * 1000;
  let lastLog = 0;
  for (;;) {
    stillOurs();
    const state = await coverage.check();
    if (state.complete) return;
    if (Date.now() >= deadline) {
      throw new WalvaultError(
        'BACKUP_WAL_MISSING',
        `backup ${meta.name} is stored but not restorable yet: ${coverage.describe(state)}`, { fix: `is "walvault run" streaming this site? ` + `The backup will not be listed until that WAL is archived` },
      );
    }
    if (Date.now() - lastLog >= 30000) {
      lastLog = Date.now();
      log.info({ missing: state.missing }, coverage.describe(state));
    }
    await sleep(o.walPollMs ?? 250, o.signal);
  }
}
