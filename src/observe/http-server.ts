/**
 * The daemon's HTTP listener (`[http] listen`, loopback by default): `/metrics` in the
 * Prometheus text format (rendered by ./metrics.ts, as metrics.prom is), every site's numbers
 * labelled by site, and `/health`: 200 when every site streams and archives, 503 naming each
 * site that does not and why. Read-only; it never changes anything.
 */
import * as http from 'node:http';
import type { Logger } from 'pino';
import { WalvaultError } from '../errors';
import { PROMETHEUS_CONTENT_TYPE, renderPrometheus, type Sample } from './metrics';

export interface ObservedSite {
  name: string;
  metrics(): Sample[];
  health(): { ok: boolean; problems: string[] };
}

export interface HttpListener {
  address: string;
  close(): Promise<void>;
}

export async function startHttpListener({ host, port }: { host: string; port: number }, sites: ObservedSite[], log: Logger): Promise<HttpListener> {
  const listen = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/metrics') {
      // Rendered afresh at each scrape: a metric no site reports now (a check's counts after a
      // check that could not run) shows no stale value. A site's metrics() that throws is a 500.
      const render = async () => renderPrometheus(sites.flatMap((s) => s.metrics()));
      void render().then(
        (text) => res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE }).end(text),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
      );
      return;
    }
    if (url === '/health') {
      const report = sites.map((s) => ({ site: s.name, ...s.health() }));
      const ok = report.every((r) => r.ok);
      const body = ok ? `ok: ${report.map((r) => r.site).join(', ')} streaming and archiving\n` : report.filter((r) => !r.ok).map((r) => `${r.site}: ${r.problems.join('; ')}`).join('\n') + '\n';
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' }).end(body);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('walvault serves /metrics and /health\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new WalvaultError('CONFIG_INVALID', `cannot listen on ${listen}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.message}`, { fix: `choose another [http] listen address` })),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as { address: string; port: number };
  const address = `${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info({ address }, 'serving /metrics and /health');
  return {
    address,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
