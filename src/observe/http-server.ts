/**
 * The daemon's HTTP listener (`[http] listen`, loopback by default): `/metrics` in the
 * Prometheus text format through prom-client, every site's numbers labelled by site, and
 * `/health`: 200 when every site streams and archives, 503 naming each site that does not
 * and why. Read-only; it never changes anything.
 */
import * as http from 'node:http';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import { WalvaultError } from '../errors';
import type { Sample } from './metrics';

export interface ObservedSite {
  name: string;
  metrics(): Sample[];
  health(): { ok: boolean; problems: string[] };
}

/**
 * A registry whose metrics are filled from the sites' samples at each scrape. Names, help
 * and types come from the samples (gauges set, counters carried over as their totals).
 */
function siteRegistry(sites: ObservedSite[]): { registry: Registry; collectAll(): void } {
  const registry = new Registry();
  const known = new Map<string, Gauge | Counter>();
  const collectAll = () => {
    const all = sites.flatMap((s) => s.metrics());
    const byName = new Map<string, Sample[]>();
    for (const smp of all) {
      const list = byName.get(smp.name);
      if (list) list.push(smp);
      else byName.set(smp.name, [smp]);
    }
    for (const [name, list] of byName) {
      let metric = known.get(name);
      if (!metric) {
        const labelNames = [...new Set(list.flatMap((x) => Object.keys(x.labels ?? {})))];
        metric = list[0].type === 'counter' ? new Counter({ name, help: list[0].help, labelNames, registers: [registry] }) : new Gauge({ name, help: list[0].help, labelNames, registers: [registry] });
        known.set(name, metric);
      }
      metric.reset();
      for (const x of list) {
        if (metric instanceof Counter) metric.inc(x.labels ?? {}, x.value);
        else metric.set(x.labels ?? {}, x.value);
      }
    }
    // A metric no site reports now (a check's counts after a check that could not run) shows no stale value.
    for (const [name, metric] of known) {
      if (!byName.has(name)) metric.reset();
    }
  };
  return { registry, collectAll };
}

export interface HttpListener {
  address: string;
  close(): Promise<void>;
}

export async function startHttpListener({ host, port }: { host: string; port: number }, sites: ObservedSite[], log: Logger): Promise<HttpListener> {
  const listen = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const { registry, collectAll } = siteRegistry(sites);
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/metrics') {
      try {
        collectAll();
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`);
        return;
      }
      void registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
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
