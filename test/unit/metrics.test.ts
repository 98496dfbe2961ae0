import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { renderPrometheus } from '../../src/observe/metrics';

describe('renderPrometheus', () => {
  test('groups by name with HELP and TYPE once, escapes label values', async () => {
    const text = await renderPrometheus([
      { name: 'walvault_storage_failing', help: 'storage writes failing', type: 'gauge', value: 1, labels: { site: 'a' } },
      { name: 'walvault_uploads_failed_total', help: 'failed uploads', type: 'counter', value: 3, labels: { site: 'a' } },
      { name: 'walvault_storage_failing', help: 'storage writes failing', type: 'gauge', value: 0, labels: { site: 'b"\\\n' } },
      { name: 'walvault_uploads_failed_total', help: 'failed uploads', type: 'counter', value: 0, labels: { site: 'b"\\\n' } },
    ]);
    assert.equal(
      text,
      [
        '# HELP walvault_storage_failing storage writes failing',
        '# TYPE walvault_storage_failing gauge',
        'walvault_storage_failing{site="a"} 1',
        'walvault_storage_failing{site="b\\"\\\\\\n"} 0',
        '',
        '# HELP walvault_uploads_failed_total failed uploads',
        '# TYPE walvault_uploads_failed_total counter',
        'walvault_uploads_failed_total{site="a"} 3',
        'walvault_uploads_failed_total{site="b\\"\\\\\\n"} 0',
        '',
      ].join('\n'),
    );
  });

  test('no labels, labels only some samples carry, help escaped', async () => {
    const text = await renderPrometheus([
      { name: 'walvault_up', help: 'line one\nline \\two', type: 'gauge', value: 2.5 },
      { name: 'walvault_backups', help: 'h', type: 'gauge', value: 1, labels: { site: 'a' } },
      { name: 'walvault_backups', help: 'h', type: 'gauge', value: 2, labels: { site: 'a', kind: 'full' } },
    ]);
    assert.match(text, /^# HELP walvault_up line one\\nline \\\\two$/m);
    assert.match(text, /^walvault_up 2\.5$/m);
    assert.match(text, /^walvault_backups\{site="a"\} 1$/m);
    assert.match(text, /^walvault_backups\{site="a",kind="full"\} 2$/m);
  });

  test('nothing to render is an empty exposition', async () => {
    assert.equal(await renderPrometheus([]), '\n');
  });

  test('special values and names', async () => {
    // prom-client writes NaN as "Nan"; Prometheus parses floats case-insensitively.
    assert.match(await renderPrometheus([{ name: 'x', help: 'h', type: 'gauge', value: NaN }]), /^x Nan$/im);
    assert.match(await renderPrometheus([{ name: 'x', help: 'h', type: 'gauge', value: Infinity }]), /^x \+Inf$/m);
    await assert.rejects(renderPrometheus([{ name: 'bad-name', help: 'h', type: 'gauge', value: 1 }]), /invalid metric name/i);
    await assert.rejects(renderPrometheus([{ name: 'x', help: 'h', type: 'gauge', value: 1, labels: { 'bad-label': 'v' } }]), /invalid label name/i);
  });
});
