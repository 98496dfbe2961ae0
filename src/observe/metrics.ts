/**
 * Metrics as Prometheus text exposition (format 0.0.4): what `walvault run` writes to
 * `<state>/metrics.prom` for node_exporter's textfile collector, and what a scrape endpoint
 * can serve later.
 *
 *   # HELP name text
 *   # TYPE name gauge|counter
 *   name{label="value",...} number
 */
export type MetricType = 'gauge' | 'counter';

export interface Sample {
  name: string;
  help: string;
  type: MetricType;
  value: number;
  labels?: Record<string, string>;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Renders samples grouped by name (HELP and TYPE once per name, in first-seen order). */
export function renderPrometheus(samples: readonly Sample[]): string {
  const byName = new Map<string, Sample[]>();
  for (const s of samples) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(s.name)) throw new Error(`invalid metric name ${s.name}`);
    const list = byName.get(s.name);
    if (list) list.push(s);
    else byName.set(s.name, [s]);
  }
  const lines: string[] = [];
  for (const [name, list] of byName) {
    lines.push(`# HELP ${name} ${list[0].help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    lines.push(`# TYPE ${name} ${list[0].type}`);
    for (const s of list) {
      const labels = Object.entries(s.labels ?? {});
      const labelText = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : '';
      lines.push(`${name}${labelText} ${formatValue(s.value)}`);
    }
  }
  return lines.join('\n') + '\n';
}
