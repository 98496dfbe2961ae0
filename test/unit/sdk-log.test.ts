/**
 * The AWS SDK's own messages (src/storage/sdk-log.ts): its warnings reach the sink the process
 * set, as one line; its per-request logs (info, error: whole inputs, bodies included) never
 * do; with no sink nothing is printed anywhere.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { sdkLogger, setSdkLogSink } from '../../src/storage/sdk-log';

describe('SDK log routing', () => {
  afterEach(() => setSdkLogSink(null));

  test('warnings go to the sink as one line; request logs do not', () => {
    const got: Array<{ obj: object; msg: string }> = [];
    setSdkLogSink({ warn: (obj, msg) => void got.push({ obj, msg }) });
    sdkLogger.warn('@smithy/node-http-handler:WARN - socket usage at capacity=50 and 150 additional requests are enqueued.\nSee https://docs.aws.amazon.com/...');
    sdkLogger.info({ commandName: 'PutObjectCommand', input: { Body: Buffer.alloc(10) } });
    sdkLogger.error({ commandName: 'PutObjectCommand', input: { Body: Buffer.alloc(10) } });
    sdkLogger.debug('x');
    sdkLogger.trace('x');
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].obj, { source: 'aws-sdk' });
    assert.match(got[0].msg, /^@smithy\/node-http-handler:WARN - socket usage at capacity=50 and 150 additional requests are enqueued\. See /);
    assert.ok(!got[0].msg.includes('\n'));
  });

  test('without a sink nothing is printed', (t) => {
    const printed: unknown[] = [];
    t.mock.method(console, 'warn', (...a: unknown[]) => void printed.push(a));
    t.mock.method(console, 'error', (...a: unknown[]) => void printed.push(a));
    t.mock.method(console, 'log', (...a: unknown[]) => void printed.push(a));
    sdkLogger.warn('a warning');
    sdkLogger.error('an error');
    assert.deepEqual(printed, []);
  });

  test('objects are not serialized into the line (they may hold request bodies)', () => {
    const got: string[] = [];
    setSdkLogSink({ warn: (_o, msg) => void got.push(msg) });
    sdkLogger.warn('An error was encountered in a non-retryable streaming request.', { input: { Body: 'x'.repeat(100_000) } });
    assert.equal(got[0], 'An error was encountered in a non-retryable streaming request. [object]');
  });
});
