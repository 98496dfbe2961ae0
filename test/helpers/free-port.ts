/** TCP ports on 127.0.0.1 for test servers, none handed out twice by this process. */
import * as net from 'node:net';

const portsHandedOut = new Set<number>();

/** A TCP port on 127.0.0.1 that was free a moment ago (another process can still race us to it). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.unref();
      srv.on('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const addr = srv.address() as net.AddressInfo;
        srv.close(() => resolve(addr.port));
      });
    });
    // Two clusters started concurrently in this process must not get the same port.
    if (!portsHandedOut.has(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
  throw new Error('could not find a free TCP port');
}

/** The port may be handed out again (its server is gone). */
export function releasePort(port: number): void {
  portsHandedOut.delete(port);
}
