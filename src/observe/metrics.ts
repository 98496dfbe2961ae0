/**
 * Metrics as Prometheus text exposition (format 0.0.4), the one way samples become text: what
 * `walvault run` writes to `<state>/metrics.prom` for node_exporter's textfile collector, and
 * what `/metrics` serves (./http-server.ts). The text is prom-client's: a fresh registry is
 * filled from the samples at each call, so a metric no sample names is not in it.
 *
 *   # HELP name text
 *   # TYPE name gauge|counter
 *   name{label="value",...} number
 */
import { Counter, Gauge, Registry } from 'prom-client';

export type MetricType = 'gauge' | 'counter';

export interface Sample {
  name: string;
  help: string;
  type: MetricType;
  value: number;
  labels?: Record<string, string>;
}

/** The Content-Type of the text renderPrometheus returns. */
export const PROMETHEUS_CONTENT_TYPE: string = Registry.PROMETHEUS_CONTENT_TYPE;

/**
 * Renders samples grouped by name (HELP and TYPE once per name, from its first sample, names
 * in first-seen order): gauges set, counters carried as their totals. Throws on a name or a
 * label name Prometheus does not allow.
 */
export async function renderPrometheus(samples: readonly Sample[]): Promise<string> {
  const byName = new Map<string, Sample[]>();
  for (const s of samples) {
    const list = byName.get(s.name);
    if (list) list.push(s);
    else byName.set(s.name, [s]);
  }
  const registry = new Registry();
  for (const [name, list] of byName) {
    const { help, type } = list[0];
    const labelNames = [...new Set(list.flatMap((s) => Object.keys(s.labels ?? {})))];
    if (type === 'counter') {
      const counter = new Counter({ name, help, labelNames, registers: [registry] });
      for (const s of list) counter.inc(s.labels ?? {}, s.value);
    } else {
      const gauge = new Gauge({ name, help, labelNames, registers: [registry] });
      for (const s of list) gauge.set(s.labels ?? {}, s.value);
    }
  }
  return registry.metrics();
}
