/**
 * A configuration file's text to its document (nested tables of plain values), nothing more:
 * what the keys mean is the loader's business.
 *
 * The file is UTF-8 (a leading byte-order mark is dropped) in one of two syntaxes:
 *  - TOML 1.0 (smol-toml), the one the README shows;
 *  - JSON (RFC 8259), read strictly: no comments, no trailing commas, and a key given twice
 *    in one object is refused (JSON.parse would keep the last, so of two sites of the same
 *    name one would silently be lost).
 * `.json` and `.toml` files are read as their extension says; any other name as JSON when
 * its first non-blank character is `{`, else as TOML.
 *
 * Syntax errors carry `file:line:column` and never the text around the error, which may hold
 * a secret (a password pasted into pg, an S3 key).
 */
import * as fs from 'fs';
import * as path from 'path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { invalid, type Table } from './messages';

export function readConfigDocument(file: string): { doc: unknown; format: 'toml' | 'json' } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw invalid(`config file ${file} not found: ${e.message}`, `check the path`);
    throw invalid(`config file ${file} cannot be read: ${e.message}`, `check the path and its permissions`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const ext = path.extname(file).toLowerCase();
  const format = ext === '.json' ? 'json' : ext === '.toml' ? 'toml' : text.trimStart().startsWith('{') ? 'json' : 'toml';
  return { doc: format === 'json' ? parseJsonDocument(text, file) : parseTomlDocument(text, file), format };
}

function parseTomlDocument(text: string, file: string): unknown {
  try {
    return parseToml(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // smol-toml appends a code excerpt on further lines; it may hold a secret, so only
    // the first line is kept.
    let reason = err.message.split('\n', 1)[0].replace(/^Invalid TOML document:\s*/, '');
    if (/redefine/.test(reason)) reason += ' (a key or table such as [sites.<name>] appears twice)';
    throw invalid(`${file}:${err.line}:${err.column}: invalid TOML: ${reason}`, `fix the syntax at that position`);
  }
}

/**
 * Hand-written because JSON.parse keeps the last of two duplicate keys and its messages
 * quote the text around an error; it still decodes each string literal.
 */
function parseJsonDocument(text: string, file: string): unknown {
  let i = 0;
  const syntax = (reason: string): never => {
    const before = text.slice(0, i).split('\n');
    throw invalid(`${file}:${before.length}:${before[before.length - 1].length + 1}: invalid JSON: ${reason}`, `fix the syntax at that position`);
  };
  const skipSpace = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
  };
  const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const readString = (): string => {
    STRING.lastIndex = i;
    const m = STRING.exec(text);
    if (!m) syntax('unterminated string, bad escape or raw control character in a string');
    i += m![0].length;
    return JSON.parse(m![0]) as string;
  };
  /** An object's members or an array's elements, from after its opening bracket to past `close`. */
  const readItems = (close: '}' | ']', readItem: () => void): void => {
    skipSpace();
    if (text[i] === close) {
      i++;
      return;
    }
    for (;;) {
      readItem();
      skipSpace();
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === close) {
        i++;
        return;
      }
      syntax(`expected "," or "${close}"`);
    }
  };
  const readValue = (keyPath: string): unknown => {
    skipSpace();
    const ch = text[i];
    if (ch === '{') {
      i++;
      const obj: Table = {};
      readItems('}', () => {
        skipSpace();
        if (text[i] !== '"') syntax('expected a double-quoted key');
        const keyStart = i;
        const key = readString();
        const child = keyPath === '' ? key : `${keyPath}.${key}`;
        if (Object.prototype.hasOwnProperty.call(obj, key)) {
          const line = text.slice(0, keyStart).split('\n').length;
          const what = keyPath === 'sites' ? 'duplicate site name' : 'duplicate key';
          throw invalid(`${file}: ${child}: ${what} (again at line ${line})`, `each key may appear only once in an object`);
        }
        skipSpace();
        if (text[i] !== ':') syntax('expected ":" after a key');
        i++;
        // defineProperty, not assignment: a "__proto__" key must stay an ordinary key.
        Object.defineProperty(obj, key, { value: readValue(child), enumerable: true, writable: true, configurable: true });
      });
      return obj;
    }
    if (ch === '[') {
      i++;
      const arr: unknown[] = [];
      readItems(']', () => arr.push(readValue(`${keyPath}[${arr.length}]`)));
      return arr;
    }
    if (ch === '"') return readString();
    for (const [word, value] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m) {
      i += m[0].length;
      return Number(m[0]);
    }
    return syntax(i >= text.length ? 'unexpected end of file' : 'unexpected character');
  };
  const doc = readValue('');
  skipSpace();
  if (i < text.length) syntax('unexpected text after the end of the document');
  return doc;
}
