import { WalvaultError } from '../errors';

/**
 * The one place a command's error becomes its output: one line with the cause and the fix
 * (the thrower's own, else the one ERROR_TABLE gives its code), and the code's exit status.
 */
export function reportAndExit(err: unknown): void {
  if (err instanceof WalvaultError) {
    process.stderr.write(`walvault: ${errorLine(err)}\n`);
    process.exitCode = err.exitCode;
    return;
  }
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`walvault: internal error: ${message}\n`);
  process.exitCode = 70;
}

/** "cause; fix" */
export function errorLine(err: WalvaultError): string {
  return `${err.what}; ${err.fix}`;
}

/** An error as a command prints it after its own words ("check could not run: ..."). */
export function errorText(err: unknown): string {
  if (err instanceof WalvaultError) return errorLine(err);
  return err instanceof Error ? err.message : String(err);
}
