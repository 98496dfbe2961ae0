/**
 * The receiver's replication connection to its site's server, refused before anything
 * streams when the server is not the one the site archives (another system identifier after
 * a reconnect: the connection settings now point elsewhere) or is a version walvault cannot
 * read WAL of.
 */
import type { SiteConfig } from '../config/config-types';
import { WalvaultError } from '../errors';
import { ReplicationConnection, type ServerFacts, type SystemIdentity } from '../postgres/replication-connection';
import { serverVersionText } from '../postgres/server-version';
import { pageMagicForMajor, type PageCheckContext } from '../wal/page-header';

export function openReplicationConnection(site: SiteConfig): Promise<ReplicationConnection> {
  return ReplicationConnection.connect({
    pg: site.pg as Record<string, unknown>,
    applicationName: site.applicationName,
    target: { description: site.pgDescription, user: String(site.pg.user ?? process.env.PGUSER ?? 'postgres'), slot: site.slot },
  });
}

/** Connects and identifies the server; `known`: the system the site archives, once known. */
export async function connectToSiteServer(site: SiteConfig, known: SystemIdentity | undefined): Promise<{ conn: ReplicationConnection; identity: SystemIdentity; facts: ServerFacts }> {
  const conn = await openReplicationConnection(site);
  try {
    const identity = await conn.identifySystem();
    const facts = await conn.serverFacts();
    if (known && identity.systemId !== known.systemId) {
      throw new WalvaultError(
        'ARCHIVE_OTHER_CLUSTER',
        `the server at ${site.pgDescription} is now database system ${identity.systemId}, but this site archives ${known.systemId}`, { fix: `fix the connection settings` },
      );
    }
    // Throws for a WAL page format walvault does not know (a major version newer than it).
    pageMagicForMajor(facts.major);
    if (facts.major < 13) {
      throw new WalvaultError('PG_UNSUPPORTED_VERSION', `PostgreSQL ${serverVersionText(facts.versionNum)} is too old: walvault supports 13 to 18`);
    }
    return { conn, identity, facts };
  } catch (err) {
    await conn.close();
    throw err;
  }
}

/** How the spool checks the pages of segment `name` on timeline `tli` from this server. */
export function pageCheckContext(identity: SystemIdentity, facts: ServerFacts, tli: number, name: string): PageCheckContext {
  return {
    magic: pageMagicForMajor(facts.major),
    systemId: BigInt(identity.systemId),
    segSize: facts.walSegmentSize,
    blockSize: facts.walBlockSize,
    fileTli: tli,
    label: `WAL segment ${name}`,
  };
}
