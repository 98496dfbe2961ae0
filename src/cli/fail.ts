import { WalvaultError } from '../errors';

/** Prints one line naming the cause and the fix, and sets a non-zero exit code. */
export function reportAndExit(err: unknown): void {
  if (err instanceof WalvaultError) {
    process.stderr.write(`walvault: ${err.message}\n`);
    process.exitCode = err.exitCode;
    return;
  }
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`walvault: internal error: ${message}\n`);
  process.exitCode = 70;
}
