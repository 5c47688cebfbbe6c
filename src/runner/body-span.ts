// Where a line's "body" value sits in its bytes, so the runner can send the
// input's own bytes upstream (bytes in) instead of serialising the parsed
// body again. A bounded scan of the top level only: strings are skipped by
// their quotes and escapes, nested values by depth. Any key written with an
// escape, or anything unexpected, answers undefined and the caller serialises.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const BODY_KEY = Buffer.from('"body"');

/** The bytes of the top-level "body" value of a JSON object line, or undefined when it cannot be told simply. */
export function bodyBytesOf(line: Buffer): Buffer | undefined {
  let i = skipSpace(line, 0);
  if (line[i] !== OPEN_BRACE) return undefined;
  i += 1;
  // JSON.parse keeps the last of repeated keys, and so does this: validation and the runner read the same body.
  let body: Buffer | undefined;
  for (;;) {
    i = skipSpace(line, i);
    if (line[i] === CLOSE_BRACE && body) return body;
    if (line[i] !== QUOTE) return undefined;
    const keyStart = i;
    const keyEnd = endOfString(line, i);
    // A key written with an escape may spell "body" in another way: JSON.parse would see it, this scan not.
    if (keyEnd < 0 || line.subarray(keyStart, keyEnd).includes(BACKSLASH)) return undefined;
    i = skipSpace(line, keyEnd);
    if (line[i] !== COLON) return undefined;
    const valueStart = skipSpace(line, i + 1);
    const valueEnd = endOfValue(line, valueStart);
    if (valueEnd < 0) return undefined;
    if (keyEnd - keyStart === BODY_KEY.length && line.compare(BODY_KEY, 0, BODY_KEY.length, keyStart, keyEnd) === 0) {
      body = line[valueStart] === OPEN_BRACE ? line.subarray(valueStart, valueEnd) : undefined;
    }
    i = skipSpace(line, valueEnd);
    if (line[i] === COMMA) {
      i += 1;
      continue;
    }
    return line[i] === CLOSE_BRACE ? body : undefined;
  }
}

function skipSpace(bytes: Buffer, i: number): number {
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++;
  return i;
}

/** The index just past the string starting at `i` (a quote), or -1. */
function endOfString(bytes: Buffer, i: number): number {
  for (let j = i + 1; j < bytes.length; j++) {
    if (bytes[j] === BACKSLASH) j++;
    else if (bytes[j] === QUOTE) return j + 1;
  }
  return -1;
}

/** The index just past the value starting at `i`, or -1. */
function endOfValue(bytes: Buffer, i: number): number {
  const first = bytes[i];
  if (first === QUOTE) return endOfString(bytes, i);
  if (first !== OPEN_BRACE && first !== OPEN_BRACKET) {
    // A number, true, false or null: up to the next delimiter.
    let j = i;
    while (j < bytes.length && bytes[j] !== COMMA && bytes[j] !== CLOSE_BRACE && bytes[j] !== CLOSE_BRACKET && bytes[j] > 0x20) j++;
    return j > i ? j : -1;
  }
  let depth = 0;
  for (let j = i; j < bytes.length; j++) {
    const byte = bytes[j];
    if (byte === QUOTE) {
      j = endOfString(bytes, j) - 1;
      if (j < 0) return -1;
    } else if (byte === OPEN_BRACE || byte === OPEN_BRACKET) depth++;
    else if (byte === CLOSE_BRACE || byte === CLOSE_BRACKET) {
      depth--;
      if (depth === 0) return j + 1;
    }
  }
  return -1;
}
