/**
 * A site's optional [sites.NAME.s3] table (or one archive's [sites.NAME.archives.s3]), the
 * overrides of an s3:// archive's client. What is left out the S3 client and the AWS SDK
 * decide (keys.ts says how). Secrets may be written here (the file is the operator's to
 * protect), never on the command line, and are never echoed.
 */
import type { S3Settings } from '../storage/s3';
import { CONFIG_KEYS } from './keys';
import { assignment, fail, isTable, rejectUnknownKeys, tableWord, typeName, type Ctx } from './messages';
import { readDeadlines, type StoreTable } from './store-deadlines';

export function parseS3Table(ctx: Ctx, table: StoreTable, raw: unknown): S3Settings {
  if (raw === undefined) return {};
  const at = (key: string) => `${table.path}${key ? '.' + key : ''}`;
  if (!isTable(raw)) fail(ctx, at(''), `expected ${tableWord(ctx)}, got ${typeName(raw)}`, ctx.format === 'json' ? 'write "s3": { "endpoint": "https://..." }' : `write [${table.header}] followed by its keys`);
  rejectUnknownKeys(ctx, raw, `${table.path}.`, CONFIG_KEYS.s3);
  const text = (key: string, example: string): string | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.trim() === '') fail(ctx, at(key), `expected a non-empty string, got ${typeName(v)}`, `write ${assignment(ctx, key, example)}`);
    return v as string;
  };
  const out: S3Settings = {};
  const endpoint = text('endpoint', '"https://minio.example:9000"');
  if (endpoint !== undefined) {
    let ok = false;
    try {
      ok = ['http:', 'https:'].includes(new URL(endpoint).protocol);
    } catch {
      ok = false;
    }
    if (!ok) fail(ctx, at('endpoint'), 'is not an http:// or https:// URL', `write ${assignment(ctx, 'endpoint', '"https://minio.example:9000"')}`);
    out.endpoint = endpoint;
  }
  const region = text('region', '"eu-west-1"');
  if (region !== undefined) out.region = region;
  const profile = text('profile', '"backup"');
  if (profile !== undefined) out.profile = profile;
  if (raw.force_path_style !== undefined) {
    if (typeof raw.force_path_style !== 'boolean') fail(ctx, at('force_path_style'), `expected a boolean, got ${typeName(raw.force_path_style)}`, `write ${assignment(ctx, 'force_path_style', 'true')} or false, without quotes`);
    out.forcePathStyle = raw.force_path_style;
  }
  if (raw.sign_payloads !== undefined) {
    if (typeof raw.sign_payloads !== 'boolean') fail(ctx, at('sign_payloads'), `expected a boolean, got ${typeName(raw.sign_payloads)}`, `write ${assignment(ctx, 'sign_payloads', 'true')} or false, without quotes`);
    out.signPayloads = raw.sign_payloads;
  }
  const checksums = text('checksums', '"when_required"');
  if (checksums !== undefined) {
    if (checksums !== 'when_required' && checksums !== 'when_supported') {
      fail(ctx, at('checksums'), `${JSON.stringify(checksums)} is not a checksum mode`, 'use "when_required" (needed by several S3-compatible stores) or "when_supported" (the SDK\'s default for AWS)');
    }
    out.checksums = checksums;
  }
  const keyId = text('access_key_id', '"AKIA..."');
  const secret = text('secret_access_key', '"..."');
  const token = text('session_token', '"..."');
  if ((keyId === undefined) !== (secret === undefined)) {
    fail(ctx, at(keyId === undefined ? 'access_key_id' : 'secret_access_key'), 'missing', 'set access_key_id and secret_access_key together, or neither (to use the AWS environment, profile or instance role)');
  }
  if (token !== undefined && keyId === undefined) fail(ctx, at('session_token'), 'set without access_key_id', 'a session token belongs with access_key_id and secret_access_key');
  if (keyId !== undefined) {
    out.accessKeyId = keyId;
    // Not enumerable: a site object that gets logged or printed must not carry the secret.
    Object.defineProperty(out, 'secretAccessKey', { value: secret, enumerable: false, writable: true, configurable: true });
    if (token !== undefined) Object.defineProperty(out, 'sessionToken', { value: token, enumerable: false, writable: true, configurable: true });
  }
  Object.assign(out, readDeadlines(ctx, raw, at, 's3'));
  return out;
}
