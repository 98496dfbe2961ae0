import * as fs from 'node:fs';

/**
 * Whether a process with this pid exists on this host (EPERM: it does, run by someone else).
 * A zombie counts as gone: detached children (the prefetcher) are reparented to a PID 1 that
 * in a container may never reap them.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return processState(pid) !== 'Z';
}

/** The state letter from /proc/PID/stat (R, S, D, Z, ...), or null where /proc cannot tell. */
export function processState(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ...": comm may hold spaces and parentheses, so read after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || null;
  } catch {
    return null;
  }
}

/** The command line of a live process, arguments split, or null where /proc cannot tell. */
export function processArgs(pid: number): string[] | null {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
  } catch {
    return null;
  }
}
