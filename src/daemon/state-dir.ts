/**
 * What the daemon keeps in a site's state directory, by name. The receiver writes these and
 * `walvault status` (../cli/site-status.ts) reads them from another process, so both take
 * the names from here rather than status importing the receiver. (The lock's name is
 * ./state-lock.ts's own; the pinned archive key is ../archive/key-pin.ts's.)
 */

/** The SQLite ledger (../ledger/ledger.ts). */
export const LEDGER_FILE = 'ledger.db';
export const SPOOL_DIR = 'spool';
/** Prometheus text, rewritten every status interval (node_exporter's textfile collector reads it). */
export const METRICS_FILE = 'metrics.prom';
/** The daemon's state for `status`, rewritten with the metrics file (./daemon-state.ts). */
export const DAEMON_STATE_FILE = 'daemon-state.json';
