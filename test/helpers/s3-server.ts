/**
 * A real S3-protocol server for tests: the npm package s3rver in a child process on
 * 127.0.0.1, storing under a temp directory. It runs with --openssl-legacy-provider: on
 * Node 20 s3rver encrypts the continuation token of a paged listing with a legacy cipher and
 * answers any truncated ListObjectsV2 page with HTTP 500 otherwise. Clients must use
 * WHEN_REQUIRED checksums (our S3 backend does so for custom endpoints): with the SDK's
 * default, a streamed PutObject is sent aws-chunked and s3rver stores the chunk framing as
 * the object.
 */
import * as http from 'node:http';
import * as path from 'node:path';
import { ChildServer } from './child-server';
import { freePort } from './free-port';
import { tmpDir } from './temp-dirs';

const S3RVER_BIN = path.join(require.resolve('s3rver/package.json'), '..', 'bin', 's3rver.js');
/** s3rver's built-in credentials; it checks signatures against them. */
const S3RVER_KEY = 'S3RVER';

const endpointAt = (port: number): string => `http://127.0.0.1:${port}`;

export class S3Server extends ChildServer {
  private constructor(
    port: number,
    dataDir: string,
    readonly bucket: string,
  ) {
    // Killed outright: s3rver keeps no state that a clean stop would save.
    super(port, dataDir, 'SIGKILL');
  }

  static async start(opts: { bucket?: string } = {}): Promise<S3Server> {
    const server = new S3Server(await freePort(), tmpDir('walvault-s3rver-'), opts.bucket ?? 'walvault-test');
    await server.startProcess();
    return server;
  }

  get endpoint(): string {
    return endpointAt(this.port);
  }

  /** `s3://bucket/prefix` for an archive in this server. */
  url(prefix: string): string {
    return `s3://${this.bucket}/${prefix}`;
  }

  /**
   * What a walvault process needs in its environment to use this server; `port`, when the
   * process is to reach it through a forwarder on 127.0.0.1 (a TcpGate) instead.
   */
  env(port = this.port): Record<string, string> {
    return {
      AWS_ENDPOINT_URL_S3: endpointAt(port),
      AWS_ACCESS_KEY_ID: S3RVER_KEY,
      AWS_SECRET_ACCESS_KEY: S3RVER_KEY,
      AWS_REGION: 'us-east-1',
    };
  }

  /**
   * Points this test process (and the walvault processes it starts, which inherit its
   * environment) at this server through the standard AWS variables.
   */
  useInThisProcess(): void {
    Object.assign(process.env, this.env());
  }

  /** S3Settings for an in-process S3Storage. */
  settings(): { endpoint: string; accessKeyId: string; secretAccessKey: string; region: string } {
    return { endpoint: this.endpoint, accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY, region: 'us-east-1' };
  }

  protected nodeArgs(): string[] {
    return ['--openssl-legacy-provider', S3RVER_BIN, '-d', this.dataDir, '-a', '127.0.0.1', '-p', String(this.port), '--configure-bucket', this.bucket];
  }

  protected answers(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: this.port, method: 'HEAD', path: `/${this.bucket}`, timeout: 1000 }, (res) => {
        res.resume();
        // 403 is fine: the server is up, it only wants a signature.
        resolve(res.statusCode !== undefined);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  }
}
