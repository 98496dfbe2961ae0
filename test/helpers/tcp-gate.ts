/**
 * A TCP forwarder on 127.0.0.1 that a test can shut and open again: the process behind it sees
 * its storage vanish (connections reset, new ones refused) while the test itself still reaches
 * the real server directly. Bytes pass through untouched; nothing here speaks the protocol.
 */
import * as net from 'node:net';
import { freePort } from './free-port';

export class TcpGate {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  static async open(targetPort: number): Promise<TcpGate> {
    const gate = new TcpGate(await freePort(), targetPort);
    await gate.openGate();
    return gate;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get isOpen(): boolean {
    return this.server !== null;
  }

  /** Starts forwarding again on the same port. */
  async openGate(): Promise<void> {
    if (this.server) return;
    const server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.once('close', () => this.sockets.delete(s));
        // A reset on one side ends the pair; the error itself is the point of an outage.
        s.on('error', () => undefined);
      }
      client.pipe(upstream).on('close', () => client.destroy());
      upstream.pipe(client).on('close', () => upstream.destroy());
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  /** Resets every forwarded connection and refuses new ones until openGate(). */
  async shut(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.resetAndDestroy();
    this.sockets.clear();
    await closed;
  }
}
