import type { FileHandle } from 'node:fs/promises';

/**
 * Writes every piece at `position` on, in order: a list in vectored writes, a single piece in
 * a plain one. A short write leaves the rest of the list to go again. Returns the position
 * after the last byte. `progress` hears, after each write, where the rest goes, so a caller
 * that retries a failed write (a full disk) goes on from there.
 */
export async function writeFully(
  handle: Pick<FileHandle, 'write' | 'writev'>,
  pieces: readonly Buffer[],
  position: number,
  progress?: (p: { position: number; rest: Buffer[] }) => void,
): Promise<number> {
  let rest = pieces.filter((p) => p.length > 0);
  while (rest.length > 0) {
    const { bytesWritten } = rest.length === 1 ? await handle.write(rest[0], 0, rest[0].length, position) : await handle.writev(rest, position);
    position += bytesWritten;
    let skip = bytesWritten;
    while (rest.length > 0 && skip >= rest[0].length) {
      skip -= rest[0].length;
      rest = rest.slice(1);
    }
    if (skip > 0) rest = [rest[0].subarray(skip), ...rest.slice(1)];
    progress?.({ position, rest });
  }
  return position;
}
