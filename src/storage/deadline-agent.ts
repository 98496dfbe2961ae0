/**
 * HTTP(S) agents whose sockets keep two deadlines, for object-store clients whose own HTTP
 * layer has none (the Azure SDK's waits as long as the socket lives):
 *   - connect: the TCP (and TLS) connection within `connectMs`;
 *   - progress: no byte moving either way for `idleMs` ends the socket, which covers the wait
 *     for the first byte of an answer and an upload or download stalled midway, while a slow
 *     link whose bytes keep moving goes on.
 * A socket that misses one is destroyed with an error coded ETIMEDOUT, the code the SDKs'
 * retry policies and our error mapping recognise as a timeout.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { Duplex } from 'node:stream';

export interface Deadlines {
  connectMs: number;
  idleMs: number;
}

function deadlineError(what: string): NodeJS.ErrnoException {
  return Object.assign(new Error(what), { code: 'ETIMEDOUT' });
}

/** Arms both deadlines on a socket the agent just created. */
function guard(socket: Duplex, d: Deadlines, secure: boolean): void {
  const s = socket as Duplex & { connecting?: boolean; setTimeout(ms: number): void };
  const connected = secure ? 'secureConnect' : 'connect';
  const connectTimer = setTimeout(() => s.destroy(deadlineError(`no connection within ${d.connectMs} ms`)), d.connectMs);
  connectTimer.unref();
  s.once(connected, () => clearTimeout(connectTimer));
  s.once('close', () => clearTimeout(connectTimer));
  // The agent's `timeout` option keeps this idle timeout on the socket across reuse; the
  // socket only emits 'timeout', so it is ended here.
  s.on('timeout', () => s.destroy(deadlineError(`no byte moved for ${d.idleMs} ms`)));
}

/** A keep-alive agent for `protocol` ('http:' or 'https:') whose sockets keep the deadlines. */
export function deadlineAgent(protocol: string, d: Deadlines): http.Agent {
  const options = { keepAlive: true, timeout: d.idleMs };
  const secure = protocol === 'https:';
  const agent = secure ? new https.Agent(options) : new http.Agent(options);
  type Create = (...args: unknown[]) => Duplex;
  const create = (agent as unknown as { createConnection: Create }).createConnection.bind(agent);
  (agent as unknown as { createConnection: Create }).createConnection = (...args: unknown[]) => {
    const socket = create(...args);
    guard(socket, d, secure);
    return socket;
  };
  return agent;
}
