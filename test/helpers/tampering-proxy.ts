/**
 * A TCP forwarder on 127.0.0.1 in front of an HTTP/1.1 server that flips one bit of one
 * request body on its way: a store (or a network) that damages what it is sent while
 * answering as if all were well. It follows the client's requests just far enough to find
 * their bodies (request line and headers up to the blank line, then Content-Length bytes);
 * everything else, and every answer, passes through untouched.
 */
import * as net from 'node:net';

export interface Tamper {
  /** Whether to damage the body of the request with this request line (e.g. "PUT /b/k?partNumber=2&... HTTP/1.1"). */
  match(requestLine: string): boolean;
  /** Which byte of that body to damage. */
  offset: number;
  /** How many matching requests to damage (then the proxy only forwards); default 1. */
  times?: number;
  /**
   * A header (lower case) removed from a request whose body is damaged: its checksum of the
   * body (Azure's Content-MD5), which the store would check. The proxy then stands for a store
   * that damages what it took after any such check.
   */
  strip?: string;
}

export class TamperingProxy {
  /** Request lines whose bodies were damaged. */
  readonly tampered: string[] = [];
  /** Every request's head (request line and headers), in order. */
  readonly heads: string[] = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async open(targetPort: number, tamper: Tamper): Promise<TamperingProxy> {
    let proxy: TamperingProxy | null = null;
    let left = tamper.times ?? 1;
    const server = net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        proxy!.sockets.add(s);
        s.once('close', () => proxy!.sockets.delete(s));
        s.on('error', () => undefined);
      }
      upstream.pipe(client);
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
      client.once('end', () => upstream.end());

      // Per connection: the head being read, or how much of the current body is left.
      let head = Buffer.alloc(0);
      let bodyLeft = 0;
      let bodyAt = 0;
      let damageAt = -1;
      client.on('data', (data: Buffer) => {
        const out: Buffer[] = [];
        let rest = data;
        while (rest.length > 0) {
          if (bodyLeft > 0) {
            const n = Math.min(bodyLeft, rest.length);
            const piece = Buffer.from(rest.subarray(0, n));
            if (damageAt >= bodyAt && damageAt < bodyAt + n) piece[damageAt - bodyAt] ^= 0x01;
            out.push(piece);
            bodyAt += n;
            bodyLeft -= n;
            rest = rest.subarray(n);
            continue;
          }
          head = Buffer.concat([head, rest]);
          rest = Buffer.alloc(0);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) break;
          const text = head.subarray(0, end).toString('latin1');
          let sent = head.subarray(0, end + 4);
          rest = head.subarray(end + 4);
          head = Buffer.alloc(0);
          proxy!.heads.push(text);
          const requestLine = text.split('\r\n')[0];
          bodyLeft = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? 0);
          bodyAt = 0;
          damageAt = -1;
          if (bodyLeft > tamper.offset && left > 0 && tamper.match(requestLine)) {
            left--;
            damageAt = tamper.offset;
            proxy!.tampered.push(requestLine);
            const strip = tamper.strip;
            if (strip !== undefined) {
              const kept = text.split('\r\n').filter((l) => !l.toLowerCase().startsWith(`${strip}:`));
              sent = Buffer.from(`${kept.join('\r\n')}\r\n\r\n`, 'latin1');
            }
          }
          out.push(sent);
        }
        if (out.length > 0 && !upstream.write(Buffer.concat(out))) {
          client.pause();
          upstream.once('drain', () => client.resume());
        }
      });
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
    proxy = new TamperingProxy(server, port);
    return proxy;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
