/** A replication connection to a site's server for one duty (backup, repair, check). */
import type { SiteConfig } from '../config/config-types';
import { ReplicationConnection } from './replication-connection';

export function connectSite(site: SiteConfig, duty: string): Promise<ReplicationConnection> {
  return ReplicationConnection.connect({
    pg: site.pg as Record<string, unknown>,
    // Shown in pg_stat_replication, so an operator can tell the duties apart.
    applicationName: `${site.applicationName}_${duty}`,
    target: { description: site.pgDescription, user: String(site.pg.user ?? process.env.PGUSER ?? 'postgres') },
  });
}
