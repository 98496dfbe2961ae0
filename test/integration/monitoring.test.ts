/**
 * The alerting rules and the Grafana dashboard in monitoring/ (issue 17, item 11): promtool
 * accepts the rules and passes their unit tests, every alert is tested firing and not firing,
 * and every series the rules, the dashboard and the unit tests name is one a real daemon
 * serves at /metrics, with the same labels, so none of them can drift from the exporter.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { binDirFor, freePort, PgCluster, removeDir, tmpDir, waitFor } from '../helpers/pg-cluster';
import { listenHttp, pgConninfo, WALVAULT_BIN, WalvaultProcess, writeConfig } from '../helpers/walvault';

const ROOT = path.resolve(path.dirname(WALVAULT_BIN), '..');
const RULES = path.join(ROOT, 'monitoring', 'walvault-alerts.yml');
const RULE_TESTS = path.join(ROOT, 'monitoring', 'walvault-alerts.test.yml');
const DASHBOARD = path.join(ROOT, 'monitoring', 'walvault-dashboard.json');

/** Labels Prometheus adds to every scraped series; the exporter never sends them. */
const TARGET_LABELS = new Set(['job', 'instance']);

function promtool(args: string[]): { code: number | null; output: string } {
  const r = spawnSync('promtool', args, { cwd: ROOT, encoding: 'utf8', timeout: 30000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    assert.fail("promtool is not installed: install Debian's prometheus package (apt-get install -y prometheus), as .ci/run does when it is missing");
  }
  if (r.error) throw r.error;
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

/**
 * The `expr:` values of a rule file. No YAML parser is a dependency here, so this reads the
 * two forms a rule file uses: a one-line value, and a block scalar (`|` or `>`) whose lines
 * are indented deeper than the key.
 */
function ruleExprs(text: string): string[] {
  const lines = text.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)(?:-\s+)?expr:\s*(.*)$/.exec(lines[i]);
    if (!m) continue;
    const value = m[2].trim();
    if (!/^[|>][-+]?$/.test(value)) {
      out.push(value.replace(/^(['"])(.*)\1$/, '$2'));
      continue;
    }
    const block: string[] = [];
    while (i + 1 < lines.length && (lines[i + 1].trim() === '' || lines[i + 1].search(/\S/) > m[1].length)) block.push(lines[++i].trim());
    out.push(block.join(' ').trim());
  }
  return out;
}

/** Every `expr` in the dashboard, and the queries of its template variables. */
function dashboardQueries(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const x of node) dashboardQueries(x, out);
  } else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'expr' && typeof v === 'string') out.push(v);
      else if (k === 'query' && typeof v === 'string' && /walvault_/.test(v)) out.push(v);
      else dashboardQueries(v, out);
    }
  }
  return out;
}

function dashboardLegends(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const x of node) dashboardLegends(x, out);
  } else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'legendFormat' && typeof v === 'string') out.push(v);
      else dashboardLegends(v, out);
    }
  }
  return out;
}

function metricNames(promql: string): string[] {
  return [...promql.matchAll(/\bwalvault_[a-z0-9_]+/g)].map((m) => m[0]);
}

function labelNames(labelText: string): string[] {
  return [...labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?:[^"\\]|\\.)*"/g)].map((m) => m[1]).sort();
}

/** The unit tests' input series, as written: `- series: 'name{labels}'`, one per line. */
function inputSeries(text: string): Array<{ name: string; labels: string[] }> {
  return [...text.matchAll(/^\s*-\s+series:\s*'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^']*\})?'\s*$/gm)].map((m) => ({ name: m[1], labels: labelNames(m[2] ?? '') }));
}

/** A scrape's samples: every series name with the label-name sets it comes with. */
interface Scrape {
  text: string;
  series: Map<string, Set<string>>;
}

async function scrape(base: string): Promise<Scrape> {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  const series = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    // A histogram or summary is sampled as NAME_bucket, NAME_sum and NAME_count: the names
    // here are the sample lines', so PromQL that uses those forms finds them as they are.
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+\S+$/.exec(line);
    if (!m) continue;
    const set = series.get(m[1]) ?? new Set<string>();
    set.add(labelNames(m[2] ?? '').join(','));
    series.set(m[1], set);
  }
  return { text, series };
}

describe('monitoring/: Prometheus alerting rules and Grafana dashboard', () => {
  const rulesText = fs.readFileSync(RULES, 'utf8');
  const testsText = fs.readFileSync(RULE_TESTS, 'utf8');
  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as { panels: unknown[]; templating: { list: Array<{ name: string; type: string }> } };
  const alerts = [...rulesText.matchAll(/^\s*-\s+alert:\s*(\S+)\s*$/gm)].map((m) => m[1]);
  const exprs = ruleExprs(rulesText);
  const dashExprs = dashboardQueries(dashboard);

  it('promtool accepts the rules and passes their unit tests', () => {
    const check = promtool(['check', 'rules', RULES]);
    assert.equal(check.code, 0, check.output);
    assert.match(check.output, new RegExp(`SUCCESS: ${alerts.length} rules found`));
    const unit = promtool(['test', 'rules', RULE_TESTS]);
    assert.equal(unit.code, 0, unit.output);
  });

  it('every alert has a unit test where it fires and one where it does not', () => {
    assert.ok(alerts.length >= 12, `alerts found: ${alerts.join(', ')}`);
    assert.equal(exprs.length, alerts.length, 'one expr read per alert');
    for (const alert of alerts) {
      const quiet = new RegExp(`alertname:\\s*${alert}\\s*\\n\\s*exp_alerts:\\s*\\[\\]`);
      const fires = new RegExp(`alertname:\\s*${alert}\\s*\\n\\s*exp_alerts:\\s*\\n\\s*-\\s+exp_labels:`);
      assert.match(testsText, quiet, `${alert}: a case where it does not fire`);
      assert.match(testsText, fires, `${alert}: a case where it fires`);
    }
  });

  it('the dashboard takes its data source and sites as variables, and its queries parse', () => {
    const vars = dashboard.templating.list;
    assert.ok(vars.some((v) => v.name === 'datasource' && v.type === 'datasource'), 'a datasource variable');
    assert.ok(vars.some((v) => v.name === 'site' && v.type === 'query'), 'a site variable');
    assert.ok(dashExprs.length >= 20, `queries found: ${dashExprs.length}`);
    // promtool parses PromQL through a rule file: one recording rule per query, with
    // Grafana's variables and its label_values() replaced by what they stand for.
    const dir = tmpDir('walvault-dashboard-promql-');
    try {
      const file = path.join(dir, 'dashboard-queries.yml');
      const rules = dashExprs.map((e, i) => `      - record: dashboard_query_${i}\n        expr: ${JSON.stringify(e.replace(/^label_values\((.*),\s*\w+\)$/, '$1').replace(/\$__rate_interval/g, '5m').replace(/\$site/g, '.+'))}`);
      fs.writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join('\n')}\n`);
      const check = promtool(['check', 'rules', file]);
      assert.equal(check.code, 0, check.output);
    } finally {
      removeDir(dir);
    }
  });

  describe('against a real scrape (PostgreSQL 15, one site with backups, checks and drills)', () => {
    let cluster: PgCluster;
    let work = '';
    let daemon: WalvaultProcess;
    let base = '';

    before(async () => {
      cluster = await PgCluster.start({ major: 15, walSegSizeMiB: 1, settings: { wal_keep_size: '1024MB' } });
      work = tmpDir('walvault-monitoring-');
      const port = await freePort();
      base = `http://127.0.0.1:${port}`;
      // Short schedules so every duty has reported within seconds: a backup about 5 s in,
      // checks every 3.6 s, a drill 14.4 s in (on the backup by then, or failing: either
      // way its metrics are there).
      const config = writeConfig(work, {
        main: {
          pg: pgConninfo(cluster),
          archive: path.join(work, 'archive'),
          state: path.join(work, 'state'),
          partial_interval_seconds: 1,
          status_interval_seconds: 1,
          backup_interval_hours: 0.005,
          backup_fast_checkpoint: true,
          check_interval_hours: 0.001,
          drill_interval_hours: 0.004,
          drill_pg_bin: binDirFor(15),
        },
      }, 'info');
      listenHttp(config, port);
      daemon = WalvaultProcess.start(['run', '--config', config]);
      await daemon.waitForLog((l) => l.msg === 'starting replication', 30000, 'streaming to start');
    });

    after(async () => {
      if (daemon?.running) await daemon.stop('SIGTERM', 30000);
      await cluster?.destroy();
      if (work) removeDir(work);
    });

    it('every metric the rules, the dashboard and the unit tests use is served, with the same labels', async () => {
      const inputs = inputSeries(testsText).filter((s) => s.name.startsWith('walvault_'));
      assert.ok(inputs.length >= 12, `input series found: ${inputs.length}`);
      const wanted = new Set([...exprs.flatMap(metricNames), ...dashExprs.flatMap(metricNames), ...inputs.map((s) => s.name)]);
      const missing = (s: Scrape) => [...wanted].filter((n) => !s.series.has(n));
      const seen: { last?: Scrape } = {};
      try {
        await waitFor(
          async () => {
            seen.last = await scrape(base);
            return missing(seen.last).length === 0;
          },
          { timeoutMs: 45000, intervalMs: 1000, what: 'the scrape to show every metric the monitoring files use' },
        );
      } catch {
        // Fall through to the assertion below, which names what is missing.
      }
      const done = seen.last;
      assert.ok(done, 'scraped /metrics');
      assert.deepEqual(missing(done), [], `metrics used in monitoring/ but not in the scrape:\n${done.text}\n${daemon.stderr.slice(-3000)}`);
      for (const s of inputs) {
        const want = s.labels.filter((l) => !TARGET_LABELS.has(l)).join(',');
        const served = [...done.series.get(s.name)!];
        assert.ok(served.includes(want), `${s.name}: the unit tests give it labels {${want}}, the scrape {${served.join('} {')}}`);
      }
      for (const legend of dashboardLegends(dashboard)) {
        for (const m of legend.matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)) assert.ok(done.text.includes(`${m[1]}="`), `the legend "${legend}" names label ${m[1]}, which no series has`);
      }
      // A healthy site: none of the state alerts would fire on it.
      assert.match(done.text, /^walvault_streaming\{site="main"\} 1$/m);
      assert.match(done.text, /^walvault_storage_failing\{site="main"\} 0$/m);
      assert.match(done.text, /^walvault_spool_alert\{site="main"\} 0$/m);
      assert.match(done.text, /^walvault_backups_complete\{site="main"\} [1-9]/m);
    });
  });
});
