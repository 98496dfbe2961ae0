/**
 * The object stores the end-to-end scenarios run against, so that each scenario is written
 * once: S3 (s3rver) and Azure Blob Storage (Azurite), each a real server over HTTP. A walvault
 * process finds either through its SDK's standard environment variables alone, so a site
 * needs nothing but the archive URL.
 */
import { AzuriteServer } from './azurite-server';
import type { ChildServer } from './child-server';
import { S3Server } from './s3-server';

/** A started store: it can be frozen, stopped and started again (ChildServer), and destroyed. */
export type ObjectStore = ChildServer & {
  /** The archive URL (s3:// or azure://) of `prefix` in this store. */
  url(prefix: string): string;
  /**
   * The environment that points a walvault process at this store; `port`, when it is to
   * reach the store through a forwarder on 127.0.0.1 (a TcpGate the test can shut).
   */
  env(port?: number): Record<string, string>;
};

export interface ObjectStoreKind {
  /** As test names say it. */
  readonly name: string;
  /** How walvault's messages name the store ("S3 read of s3://...", "Azure read of azure://..."). */
  readonly says: 'S3' | 'Azure';
  /** The site's table that holds this store's client settings (deadlines and the like). */
  readonly table: 's3' | 'azure';
  /**
   * Starts a store and points this process at it (the walvault processes it starts inherit
   * its environment). Each kind has its own variables, so one store of each can serve at once.
   */
  start(): Promise<ObjectStore>;
}

async function started<T extends ObjectStore & { useInThisProcess(): void }>(store: Promise<T>): Promise<T> {
  const s = await store;
  s.useInThisProcess();
  return s;
}

export const S3_STORE: ObjectStoreKind = { name: 'S3 (s3rver)', says: 'S3', table: 's3', start: () => started(S3Server.start()) };
const AZURE_STORE: ObjectStoreKind = { name: 'Azure (Azurite)', says: 'Azure', table: 'azure', start: () => started(AzuriteServer.start()) };
export const OBJECT_STORES: readonly ObjectStoreKind[] = [S3_STORE, AZURE_STORE];

/** A site's settings table for `kind`'s client, holding `settings` (`{ s3: ... }` or `{ azure: ... }`). */
export function storeTable(kind: ObjectStoreKind, settings: Record<string, string | number | boolean>): { s3?: typeof settings; azure?: typeof settings } {
  return { [kind.table]: settings };
}
