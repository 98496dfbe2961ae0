import * as fs from 'node:fs';
import Database from 'better-sqlite3';
import { readError } from './sqlite-errors';
import { toSiteRow, type RawSite, type SiteRow } from './rows';
import { SITE_COLUMNS } from './statements';

/**
 * Another process's view of the ledger (`walvault status`, beside a running daemon): opened
 * read-only, never created, migrated or written. What it answers is what the receiver last
 * committed, so the newest positions may be a few status intervals behind the receiver.
 */
export class LedgerReader {
  private constructor(
    readonly path: string,
    private readonly db: Database.Database,
  ) {}

  /** The ledger at `path`, or null when there is none yet (a site that never streamed). */
  static open(path: string): LedgerReader | null {
    if (!fs.existsSync(path)) return null;
    try {
      return new LedgerReader(path, new Database(path, { readonly: true, fileMustExist: true }));
    } catch (err) {
      throw readError(path, err);
    }
  }

  /** The site's timeline and positions; null when the site is not in this ledger. */
  site(site: string): SiteRow | null {
    const row = this.read<RawSite>(`SELECT ${SITE_COLUMNS} FROM sites WHERE site = ?`, site);
    return row ? toSiteRow(row) : null;
  }

  /** Whether the site is in this ledger; false in a file whose creation never finished (no schema yet). */
  hasSite(site: string): boolean {
    if (Number(this.db.pragma('user_version', { simple: true })) === 0) return false;
    return this.site(site) !== null;
  }

  /** The segment archived last, and when. */
  lastArchivedSegment(site: string): { name: string; at: string } | null {
    const row = this.read<{ name: string; archived_at: string }>(
      "SELECT name, archived_at FROM segments WHERE site = ? AND state = 'archived' ORDER BY archived_at DESC, seg_no DESC LIMIT 1",
      site,
    );
    return row ? { name: row.name, at: row.archived_at } : null;
  }

  close(): void {
    this.db.close();
  }

  private read<T>(sql: string, ...params: unknown[]): T | undefined {
    try {
      return this.db.prepare(sql).safeIntegers(true).get(...params) as T | undefined;
    } catch (err) {
      throw readError(this.path, err);
    }
  }
}
