/**
 * What the site's server says, for `status`: reached over the site's own replication
 * connection (a walvault role may have no right to a database), so it uses what that
 * protocol offers: IDENTIFY_SYSTEM for the WAL position, READ_REPLICATION_SLOT
 * (PostgreSQL 15+) for the slot's restart position, SHOW for settings. The WAL the slot
 * holds on the server is the distance between the two.
 */
import type { SiteConfig } from '../config/config-types';
import { errorMessage, isWalvaultError } from '../errors';
import type { ReplicationConnection } from '../postgres/replication-connection';
import { serverVersionText } from '../postgres/server-version';
import { connectSite } from '../postgres/site-connection';
import { withTimeout } from '../util/timers';
import { formatLsn, type Lsn } from '../wal/lsn';

export interface ServerView {
  /** The server answered (a refusal, such as a bad password, is in `error`). */
  reachable: boolean;
  error: string | null;
  /** As people write it: "15.18". */
  version: string | null;
  /** The server's WAL position (IDENTIFY_SYSTEM). */
  walPosition: string | null;
  slot: {
    name: string;
    /** null: the server cannot say (older than 15). */
    exists: boolean | null;
    restartLsn: string | null;
    /** WAL the server keeps for the slot: its position minus the slot's restart position. */
    retainedBytes: number | null;
  };
  /** The server's max_slot_wal_keep_size ("-1": no limit). */
  maxSlotWalKeepSize: string | null;
}

/** Status answers within seconds even when the server does not. */
const SERVER_TIMEOUT_MS = 5000;

export async function serverView(site: SiteConfig): Promise<ServerView> {
  const view: ServerView = { reachable: false, error: null, version: null, walPosition: null, slot: { name: site.slot, exists: null, restartLsn: null, retainedBytes: null }, maxSlotWalKeepSize: null };
  let conn: ReplicationConnection | null = null;
  const ask = async () => {
    conn = await connectSite(site, 'status');
    view.reachable = true;
    const facts = await conn.serverFacts();
    view.version = serverVersionText(facts.versionNum);
    const identity = await conn.identifySystem();
    view.walPosition = formatLsn(identity.xlogPos);
    view.maxSlotWalKeepSize = await conn.show('max_slot_wal_keep_size');
    Object.assign(view.slot, await slotHold(conn, site.slot, facts.major, identity.xlogPos));
  };
  const asking = ask();
  try {
    const done = await withTimeout(
      asking.then(() => true),
      SERVER_TIMEOUT_MS,
    );
    if (!done) view.error = `no answer from ${site.pgDescription} within ${SERVER_TIMEOUT_MS / 1000} s`;
  } catch (err) {
    view.error = errorMessage(err);
    // A refusal (a bad password, pg_hba) is an answer too; no connection at all is not.
    view.reachable = view.reachable || (isWalvaultError(err) && err.code !== 'PG_UNREACHABLE' && err.code !== 'PG_NOT_POSTGRES');
  }
  // Closed once the questions end, also when they end after status stopped waiting: a
  // connection made late must not keep the process alive.
  void asking
    .catch(() => undefined)
    .then(() => (conn as ReplicationConnection | null)?.close())
    .catch(() => undefined);
  return view;
}

/** The slot as the server holds it, and the WAL it keeps there up to `position`. */
export async function slotHold(
  conn: ReplicationConnection,
  name: string,
  major: number,
  position: Lsn,
): Promise<{ exists: boolean | null; restartLsn: string | null; retainedBytes: number | null }> {
  const slot = await conn.readSlot(name, major);
  if (!slot) return { exists: null, restartLsn: null, retainedBytes: null };
  if (slot.restartLsn === null) return { exists: slot.exists, restartLsn: null, retainedBytes: null };
  return { exists: slot.exists, restartLsn: formatLsn(slot.restartLsn), retainedBytes: position > slot.restartLsn ? Number(position - slot.restartLsn) : 0 };
}
