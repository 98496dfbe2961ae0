/**
 * Several stores seen as one for finding things: what a site with several archives holds is
 * what any of them holds. Listings are merged (each key once, as the first store that has it
 * describes it); head, get and the rest answer from the first store that has the object. A
 * store that fails fails the call: "not there" is only said when every store said so.
 *
 * Contents are read and checked archive by archive, each with its own keys
 * (../archive/archive-set.ts); this only answers what exists. Writes are refused: which
 * stores a write must reach is not this layer's to decide.
 */
import { isWalvaultError, WalvaultError } from '../errors';
import type { ListOptions, ObjectInfo, ReadInto, Storage } from './storage';

export class UnionStorage implements Storage {
  readonly description: string;

  constructor(private readonly members: readonly Storage[]) {
    this.description = members.map((m) => m.description).join(' + ');
  }

  async list(prefix: string, opts?: ListOptions): Promise<ObjectInfo[]> {
    return merged(await Promise.all(this.members.map((m) => m.list(prefix, opts))), opts);
  }

  /**
   * The listings of the stores that answer, merged; `down` hears of each store that failed
   * (with its error), and the call fails only when none answered or a failure was not the
   * store's. For choosing what to read, never for deciding that something is missing.
   */
  async listAnswered(prefix: string, down: (description: string, err: WalvaultError) => void): Promise<ObjectInfo[]> {
    const answers = await Promise.allSettled(this.members.map((m) => m.list(prefix)));
    const lists: ObjectInfo[][] = [];
    const failed: Array<{ description: string; err: unknown }> = [];
    answers.forEach((a, i) => (a.status === 'fulfilled' ? lists.push(a.value) : failed.push({ description: this.members[i].description, err: a.reason })));
    const notStore = failed.find((f) => !isStoreFailure(f.err));
    if (notStore) throw notStore.err;
    if (lists.length === 0) throw failed[0].err;
    for (const f of failed) down(f.description, f.err as WalvaultError);
    return merged(lists);
  }

  head(key: string): Promise<ObjectInfo | null> {
    return this.first((m) => m.head(key));
  }

  get(key: string): Promise<Buffer | null> {
    return this.first((m) => m.get(key));
  }

  getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    return this.first((m) => m.getRange(key, offset, length, into));
  }

  openRead(key: string, into?: ReadInto): Promise<{ size: number; chunks: AsyncIterable<Buffer> } | null> {
    return this.first((m) => m.openRead(key, into));
  }

  put(key: string): Promise<void> {
    return Promise.reject(refused('put', key));
  }

  delete(key: string): Promise<void> {
    return Promise.reject(refused('delete', key));
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.close()));
  }

  private async first<T>(ask: (m: Storage) => Promise<T | null>): Promise<T | null> {
    for (const m of this.members) {
      const found = await ask(m);
      if (found !== null) return found;
    }
    return null;
  }
}

function merged(lists: ObjectInfo[][], opts?: ListOptions): ObjectInfo[] {
  const byKey = new Map<string, ObjectInfo>();
  for (const list of lists) for (const o of list) if (!byKey.has(o.key)) byKey.set(o.key, o);
  // Plain code-unit order, as every backend sorts.
  const all = [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return opts?.limit === undefined ? all : all.slice(0, opts.limit);
}

/** The store failed (no answer, a refusal, an I/O error there), not this process. */
function isStoreFailure(err: unknown): err is WalvaultError {
  return isWalvaultError(err) && err.code.startsWith('STORAGE_') && !err.local;
}

function refused(what: string, key: string): WalvaultError {
  return new WalvaultError('INTERNAL', `${what} of ${key} asked of several archives read as one`, { fix: 'writes go to one archive at a time: report this with the command that did it' });
}
