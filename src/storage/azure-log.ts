/**
 * Where the Azure SDK's own log goes. Left alone, @azure/logger prints on stderr whenever
 * AZURE_LOG_LEVEL is set, every request and retry at the info level: that would break the
 * daemon's JSON log and the one-line error contract, as the AWS SDK's console output would
 * (./sdk-log.ts). Once an Azure backend is loaded, the SDK logs its warnings only (its info
 * and error levels are its per-request log; failed requests reach walvault as errors, which
 * it reports itself), and they go to the same sink as the AWS SDK's, scrubbed of every secret
 * an Azure backend of this process was given.
 */
import { AzureLogger, setLogLevel } from '@azure/logger';
import { scrubbed } from './azure-errors';
import { sdkWarning } from './sdk-log';

const secrets = new Set<string>();
let routed = false;

/** Routes the SDK's log (once per process) and adds `values` to what is scrubbed from it. */
export function routeAzureLog(values: readonly string[]): void {
  for (const v of values) secrets.add(v);
  if (routed) return;
  routed = true;
  setLogLevel('warning');
  AzureLogger.log = (...args: unknown[]) => {
    // The SDK's debug loggers put their namespace (azure:PACKAGE:LEVEL) first.
    const first = String(args[0] ?? '');
    if (!/^\S+:warning\b/.test(first)) return;
    sdkWarning('azure-sdk', [scrubbed(args.map((a) => (a instanceof Error ? a.message : String(a))).join(' '), [...secrets])]);
  };
}
