import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * The package's root: compiled helpers live in dist/test/helpers (or dist/bench), sources in
 * test/helpers, so this walks up to the first package.json rather than assume a depth.
 */
export function repoRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${__dirname}`);
    dir = parent;
  }
  return dir;
}
