/**
 * Where the AWS SDK's own messages go. Left alone, the SDK and its HTTP handler print plain
 * text on stderr through `console` (socket-capacity and request-timeout warnings, among
 * others): that breaks the daemon's JSON log and the one-line error contract of every
 * command. Every S3 client is given `sdkLogger`, which forwards the SDK's warnings and errors
 * to the sink the process set (the daemon: its pino logger) and drops everything else; with
 * no sink (the one-shot commands) nothing is printed. Kept apart from s3.ts so that setting
 * the sink does not load the SDK.
 *
 * The SDK's info and error levels are its per-request log (every command's input and output
 * or error, request bodies included): never forwarded. Failed requests reach walvault as
 * errors, which it reports itself.
 */
export interface LogSink {
  warn(obj: object, msg: string): void;
}

let sink: LogSink | null = null;

/** Sends the SDK's warnings and errors to `to` (null: drop them). */
export function setSdkLogSink(to: LogSink | null): void {
  sink = to;
}

const MAX_TEXT = 1000;

/** One SDK warning to the sink, as one line (the Azure SDK's come through here too: ./azure-log.ts). */
export function sdkWarning(source: string, args: unknown[]): void {
  if (sink === null) return;
  const text = args.map((a) => (typeof a === 'string' ? a : a instanceof Error ? a.message : '[object]')).join(' ');
  sink.warn({ source }, text.replace(/\s+/g, ' ').trim().slice(0, MAX_TEXT));
}

function forward(args: unknown[]): void {
  sdkWarning('aws-sdk', args);
}

/** The logger every S3 client and HTTP handler gets (the SDK's Logger shape). */
const drop = (..._args: unknown[]): void => undefined;
export const sdkLogger = {
  trace: drop,
  debug: drop,
  info: drop,
  warn: (...args: unknown[]): void => forward(args),
  error: drop,
};
