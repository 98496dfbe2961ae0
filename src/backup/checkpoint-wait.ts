/**
 * BASE_BACKUP says nothing until the server's checkpoint is done, and a spread checkpoint is
 * paced to take checkpoint_completion_target x checkpoint_timeout (27 min with 0.9 x 30min):
 * without a word the backup looks hung. This says, when the backup starts, that it waits for
 * the checkpoint, for how long at most, and how to make it immediate; then again every
 * LOG_EVERY_MS until the server begins to send.
 */
import type { Logger } from 'pino';
import { formatDuration } from '../observe/progress';

const LOG_EVERY_MS = 30_000;

/** What SHOW says of a duration setting in seconds ("30min", "300s", "1h"), or null. */
function durationSettingSeconds(text: string): number | null {
  const m = /^\s*([0-9]+)\s*(ms|s|min|h|d)?\s*$/.exec(text);
  if (!m) return null;
  const unit = { ms: 0.001, s: 1, min: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 'ms' | 's' | 'min' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

/** The longest a spread checkpoint is paced to take, in words, from the two settings' SHOW texts. */
function spreadCheckpointBound(timeout: string, target: string): string {
  const seconds = durationSettingSeconds(timeout);
  const fraction = Number(target);
  const bound = seconds !== null && Number.isFinite(fraction) ? `: up to about ${formatDuration(seconds * fraction)}` : '';
  return `checkpoint_completion_target x checkpoint_timeout (${target} x ${timeout}${bound})`;
}

const FAST_CHECKPOINT_HINT =
  'for an immediate checkpoint: walvault backup push --fast; in the daemon backup_fast_checkpoint = true, or for the first backup only first_backup_fast_checkpoint = true (run --fast-first-backup)';

export class CheckpointWait {
  private timer: NodeJS.Timeout | null = null;

  private constructor(log: Logger, started: number) {
    this.timer = setInterval(() => {
      log.info({ waitingSeconds: Math.round((Date.now() - started) / 1000) }, "base backup still waiting for the server's checkpoint");
    }, LOG_EVERY_MS);
    this.timer.unref();
  }

  /** Logs why the backup waits; `show` reads a server setting (null when it cannot). */
  static async start(show: (setting: string) => Promise<string | null>, fast: boolean, log: Logger): Promise<CheckpointWait> {
    const started = Date.now();
    if (fast) {
      log.info("waiting for the server's immediate checkpoint before the backup streams");
    } else {
      const timeout = await show('checkpoint_timeout');
      const target = await show('checkpoint_completion_target');
      const paced = timeout !== null && target !== null ? `; the server paces it over ${spreadCheckpointBound(timeout, target)}` : '';
      log.info(
        { checkpointTimeout: timeout, checkpointCompletionTarget: target },
        `waiting for the server's spread checkpoint before the backup streams${paced}; ${FAST_CHECKPOINT_HINT}`,
      );
    }
    return new CheckpointWait(log, started);
  }

  /** The server has begun to send (or the backup ended): no more waiting lines. */
  end(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
