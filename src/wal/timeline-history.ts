/**
 * Timeline history files (`%08X.history`).
 *
 * Text, one entry per line: `<parentTLI> TAB <switchpoint X/Y> TAB <free text>`. Blank lines and
 * lines starting with '#' occur and are skipped. Entry k says timeline p_k was valid up to
 * (not including) switchpoint_k; the file's own timeline is valid from the last switchpoint on.
 * The bytes are archived exactly as received; parsing is only for finding which timeline owns
 * a position.
 */
import { WalvaultError } from '../errors';
import { parseLsn, type Lsn } from './lsn';

export interface TimelineHistoryEntry {
  tli: number;
  /** First LSN that no longer belongs to `tli`. */
  switchpoint: Lsn;
  reason: string;
}

export function parseTimelineHistory(content: string, label = 'timeline history'): TimelineHistoryEntry[] {
  const entries: TimelineHistoryEntry[] = [];
  for (const raw of content.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)(?:\s+(.*))?$/.exec(line);
    if (!m) throw new WalvaultError('PG_PROTOCOL', `${label}: cannot read line "${line}"`);
    const tli = Number(m[1]);
    const prev = entries[entries.length - 1];
    if (prev && tli <= prev.tli) throw new WalvaultError('PG_PROTOCOL', `${label}: timelines do not increase at "${line}"`);
    entries.push({ tli, switchpoint: parseLsn(m[2]), reason: m[3] ?? '' });
  }
  return entries;
}

/** The timeline that owns `lsn`, given the history of `currentTli`. */
export function timelineOfLsn(entries: TimelineHistoryEntry[], currentTli: number, lsn: Lsn): number {
  for (const e of entries) {
    if (lsn < e.switchpoint) return e.tli;
  }
  return currentTli;
}
