/**
 * Whether the first bytes an endpoint sent can come from PostgreSQL, and if not, what it
 * looks like instead: a wrong port answers with HTTP, an SSH banner, TLS or a mail banner,
 * which read as PostgreSQL messages make absurd lengths ("TTP/" is 1414811695).
 *
 * What PostgreSQL sends first (protocol 3.0):
 * - to an SSLRequest: one byte, 'S' (go on with TLS) or 'N' (no TLS); very old servers an
 *   ErrorResponse 'E';
 * - to a StartupMessage: a message, Byte1 type then Int32 length (counting itself), of type
 *   'R' (an authentication request), 'E' (ErrorResponse: too many clients, pg_hba...),
 *   'v' (NegotiateProtocolVersion) or 'N' (NoticeResponse). All are short.
 * Anything else is not PostgreSQL.
 */

/** No first message PostgreSQL sends during start-up comes near this (error texts are short). */
const MAX_FIRST_MESSAGE = 1024 * 1024;
const PREVIEW_BYTES = 32;

/**
 * How the answer differs from PostgreSQL's ("it answered like an HTTP server"), or null when
 * it may be PostgreSQL's. `afterSslRequest`: the client sent an SSLRequest first.
 */
export function foreignAnswer(first: Buffer, afterSslRequest: boolean): string | null {
  if (first.length === 0) return null;
  const head = first.subarray(0, 8).toString('latin1');
  if (/^HTTP\/\d/.test(head)) return 'it answered like an HTTP server';
  if (head.startsWith('SSH-')) return 'it answered like an SSH server';
  // A TLS record: content type alert (21) or handshake (22), then version major 3.
  if ((first[0] === 21 || first[0] === 22) && first.length > 1 && first[1] === 3) {
    return 'it answered with TLS at once, like a TLS-only service (PostgreSQL starts in plain text)';
  }
  const type = String.fromCharCode(first[0]);
  if (afterSslRequest) {
    if ('SNE'.includes(type)) return null;
  } else if ('REvN'.includes(type)) {
    if (first.length < 5) return null;
    const length = first.readUInt32BE(1);
    if (length >= 4 && length <= MAX_FIRST_MESSAGE) return null;
  }
  return `it answered ${preview(first)}`;
}

/** The first bytes for an operator: text when they are text, else hex. One line either way. */
function preview(bytes: Buffer): string {
  const part = bytes.subarray(0, PREVIEW_BYTES);
  const text = part.toString('latin1');
  const printable = [...text].filter((c) => /[\x20-\x7e\r\n\t]/.test(c)).length;
  if (printable >= part.length * 0.9) {
    const shown = text.replace(/[\r\n\t]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').trim();
    return `"${shown}${bytes.length > PREVIEW_BYTES ? '...' : ''}", not the PostgreSQL protocol`;
  }
  return `bytes ${part.subarray(0, 8).toString('hex')}..., not the PostgreSQL protocol`;
}
