/**
 * A TCP forwarder on 127.0.0.1 that moves bytes at a fixed rate each way: a slow link between
 * a client and a real server. Bytes pass through untouched, in order; each side is paused
 * after a chunk for as long as that chunk takes at the rate.
 */
import * as net from 'node:net';

export class SlowLink {
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly sockets: Set<net.Socket>,
  ) {}

  static async open(targetPort: number, bytesPerSecond: number): Promise<SlowLink> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.once('close', () => sockets.delete(s));
        s.on('error', () => undefined);
      }
      // An end is passed on once what came before it has gone through; a reset at once.
      throttle(client, upstream, bytesPerSecond);
      throttle(upstream, client, bytesPerSecond);
      client.once('error', () => upstream.destroy());
      upstream.once('error', () => client.destroy());
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
    return new SlowLink(server, port, sockets);
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Small pieces, so the rate holds within a chunk too. */
const PIECE = 16 * 1024;

function throttle(from: net.Socket, to: net.Socket, bytesPerSecond: number): void {
  let busy = Promise.resolve();
  from.on('data', (chunk: Buffer) => {
    from.pause();
    busy = busy.then(async () => {
      for (let at = 0; at < chunk.length; at += PIECE) {
        const piece = chunk.subarray(at, at + PIECE);
        await new Promise((r) => setTimeout(r, (piece.length / bytesPerSecond) * 1000));
        if (to.destroyed) return;
        to.write(piece);
      }
      from.resume();
    });
  });
  from.once('end', () => void busy.then(() => to.end()));
  from.once('close', () => void busy.then(() => to.end()));
}
