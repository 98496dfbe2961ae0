/** A replication connection to a site's server for one duty (backup, repair, check). */
import { ReplicationConnection } from './replication-connection';

/**
 * What connecting needs of a site's settings. A SiteConfig has these; naming them here keeps
 * postgres/ below config/ (it takes settings, it does not read the configuration).
 */
export interface SiteServer {
  /** libpq settings as `pg` takes them. */
  pg: { user?: string } & Record<string, unknown>;
  applicationName: string;
  /** Where and as whom, for errors; never the password. */
  pgDescription: string;
}

export function connectSite(site: SiteServer, duty: string): Promise<ReplicationConnection> {
  return ReplicationConnection.connect({
    pg: site.pg,
    // Shown in pg_stat_replication, so an operator can tell the duties apart.
    applicationName: `${site.applicationName}_${duty}`,
    target: { description: site.pgDescription, user: String(site.pg.user ?? process.env.PGUSER ?? 'postgres') },
  });
}
