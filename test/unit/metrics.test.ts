import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { renderPrometheus } from '../../src/observe/metrics';

describe('renderPrometheus', () => {
  test('groups by name with HELP and TYPE once, escapes label values', () => {
    const text = renderPrometheus([
      { name: 'walvault_storage_failing', help: 'storage writes failing', type: 'gauge', value: 1, labels: { site: 'a' } },
      { name: 'walvault_uploads_failed_total', help: 'failed uploads', type: 'counter', value: 3, labels: { site: 'a' } },
      { name: 'walvault_storage_failing', help: 'storage writes failing', type: 'gauge', value: 0, labels: { site: 'b"\\\n' } },
    ]);
    assert.equal(
      text,
      [
        '# HELP walvault_storage_failing storage writes failing',
        '# TYPE walvault_storage_failing gauge',
        'walvault_storage_failing{site="a"} 1',
        'walvault_storage_failing{site="b\\"\\\\\\n"} 0',
        '# HELP walvault_uploads_failed_total failed uploads',
        '# TYPE walvault_uploads_failed_total counter',
        'walvault_uploads_failed_total{site="a"} 3',
        '',
      ].join('\n'),
    );
  });

  test('special values and names', () => {
    assert.match(renderPrometheus([{ name: 'x', help: 'h', type: 'gauge', value: NaN }]), /^x NaN$/m);
    assert.match(renderPrometheus([{ name: 'x', help: 'h', type: 'gauge', value: Infinity }]), /^x \+Inf$/m);
    assert.throws(() => renderPrometheus([{ name: 'bad-name', help: 'h', type: 'gauge', value: 1 }]), /invalid metric name/);
  });
});
