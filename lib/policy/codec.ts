// codec.ts - Postfix policy delegation wire format: bytes in, attributes out.
//
// A request is `name=value` lines, each ended by one LF, then an empty line
// (SMTPD_POLICY_README; Postfix's attr_print_plain). Pure and incremental:
// push() any split of the byte stream and get the complete requests back; a
// partial line is kept as pieces and joined only when its LF arrives.
// A request is handed over as its text and where each line's name and value
// lie in it (PolicyAttributes): no string is cut out until it is asked for,
// and a request that arrived in one chunk is read in place.
//
// Trusts nothing: every line is bounded before it is kept, the request size
// and line count are bounded, a value is split at the FIRST "=" (SRS and BATV
// senders contain "="), NUL bytes and invalid UTF-8 are refused. After an
// error the decoder stays failed: nothing more is emitted for that stream.
// Unknown attribute names are kept (and ignored by the request mapping).
//
// Config keys (through PolicyLimits): policy.max_line_length,
// policy.max_request_size, policy.max_attributes.

import { isAscii, isUtf8 } from 'node:buffer';
import { PeerError, type ErrorName } from '../shield/errors.js';
import { printable } from '../log/logger.js';

export interface PolicyLimits {
  readonly maxLineLength: number;
  readonly maxRequestSize: number;
  readonly maxAttributes: number;
}

/**
 * One request, read in place: `text` holds its lines and `marks` says, three
 * numbers a line, where each name starts, where its "=" is and where the
 * value ends. Reads like a Map: a repeated name keeps its last value (and the
 * place of its first).
 */
export class PolicyAttributes {
  constructor(readonly text: string, readonly marks: readonly number[]) {}

  /** The value of the last line named `name`, or undefined. */
  get(name: string): string | undefined {
    const { text, marks } = this;
    for (let i = marks.length - 3; i >= 0; i -= 3) {
      const start = marks[i]!;
      const eq = marks[i + 1]!;
      if (eq - start === name.length && text.startsWith(name, start)) return text.slice(eq + 1, marks[i + 2]);
    }
    return undefined;
  }

  /** The values of a picker's names, in one pass over the lines (AttributePicker.pick). */
  pick(p: AttributePicker): (string | undefined)[] {
    return p.pick(this.text, this.marks);
  }

  /** Name and value pairs, in order of first appearance. */
  *[Symbol.iterator](): IterableIterator<[string, string]> {
    const seen = new Set<string>();
    for (let i = 0; i < this.marks.length; i += 3) {
      const name = this.text.slice(this.marks[i], this.marks[i + 1]);
      if (seen.has(name)) continue;
      seen.add(name);
      yield [name, this.get(name)!];
    }
  }
}

const LF = 0x0a;
const EQ = 0x3d;

/**
 * A fixed list of attribute names, read from a request in one pass: each
 * line's name is matched only against the wanted names of its length. Built
 * once; the request mapping reads its ~18 names this way instead of one
 * lookup (a pass over ~30 lines) per name.
 */
export class AttributePicker {
  /** For each name length, the wanted names of that length and their places, side by side. */
  readonly #names: (string[] | undefined)[] = [];
  readonly #places: (number[] | undefined)[] = [];

  constructor(readonly names: readonly string[]) {
    names.forEach((n, i) => {
      (this.#names[n.length] ??= []).push(n);
      (this.#places[n.length] ??= []).push(i);
    });
  }

  /** Each name's value (from the last line of that name), undefined where there is none. */
  pick(text: string, marks: readonly number[]): (string | undefined)[] {
    const out = new Array<string | undefined>(this.names.length).fill(undefined);
    for (let i = 0; i < marks.length; i += 3) {
      const start = marks[i]!;
      const eq = marks[i + 1]!;
      const wanted = this.#names[eq - start];
      if (wanted === undefined) continue;
      for (let j = 0; j < wanted.length; j++) {
        if (text.startsWith(wanted[j]!, start)) {
          out[this.#places[eq - start]![j]!] = text.slice(eq + 1, marks[i + 2]);
          break;
        }
      }
    }
    return out;
  }
}

export class PolicyDecoder {
  readonly #limits: PolicyLimits;
  #pieces: Buffer[] = [];
  #pieceBytes = 0;
  /** The text the current request's lines are marked in ("" before its first line). */
  #text = '';
  /**
   * Where the current request's lines lie, three numbers a line: the first
   * `#marked` entries. Reused from request to request, and copied out at the
   * end at its exact size: grown afresh each time, it was three quarters of
   * what decoding a request allocated.
   */
  #marks: number[] = [];
  #marked = 0;
  #lines = 0;
  #requestBytes = 0;
  #failed: PeerError | undefined;

  constructor(limits: PolicyLimits) {
    this.#limits = limits;
  }

  /** Feeds bytes; returns the requests they complete. Throws a PeerError (1xx) on bad input. */
  push(chunk: Buffer): PolicyAttributes[] {
    if (this.#failed) throw this.#failed;
    // NUL is checked on arrival, not at end of line: a TLS ClientHello or
    // other binary probe may never send an LF.
    const nul = chunk.indexOf(0);
    if (nul >= 0) this.#fail('PEER_BAD_ENCODING', `NUL byte in "${printable(chunk.subarray(Math.max(0, nul - 40), nul + 8), 60)}"`);
    // Postfix traffic is nearly always ASCII: one SIMD check per chunk, then
    // the chunk is decoded once and split with string operations (a char is
    // a byte, so the byte bounds hold). Otherwise each line is checked as
    // UTF-8 on its own.
    const text = isAscii(chunk) ? chunk.toString('latin1') : undefined;
    const out: PolicyAttributes[] = [];
    let start = 0;
    for (;;) {
      const lf = text === undefined ? chunk.indexOf(LF, start) : text.indexOf('\n', start);
      if (lf < 0) break;
      const lineBytes = this.#pieceBytes + (lf - start);
      this.#checkLine(lineBytes, chunk, start);
      let done: PolicyAttributes | undefined;
      if (this.#pieces.length > 0) {
        // Joined with pieces of earlier chunks: not covered by this chunk's check.
        this.#pieces.push(chunk.subarray(start, lf));
        const line = Buffer.concat(this.#pieces, lineBytes);
        this.#pieces = [];
        this.#pieceBytes = 0;
        done = this.#bytesLine(line);
      } else if (text !== undefined) {
        if (lf === start) done = this.#endOfRequest();
        else {
          this.#countLine(lf - start); // ASCII: a char is a byte
          this.#attribute(text, start, lf);
        }
      } else {
        done = this.#bytesLine(chunk.subarray(start, lf));
      }
      start = lf + 1;
      if (done) out.push(done);
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#pieceBytes += rest.length;
      this.#checkLine(this.#pieceBytes, rest, 0);
      this.#pieces.push(rest);
    }
    return out;
  }

  /** The peer closed: throws PEER_TRUNCATED when a request was left unfinished. */
  end(): void {
    if (this.#failed) return;
    if (this.#pieceBytes > 0 || this.#lines > 0) {
      this.#fail('PEER_TRUNCATED', `connection closed inside a request (${this.#lines} lines, no empty line)`);
    }
  }

  /** True between requests: nothing partial is buffered. */
  get idle(): boolean {
    return this.#pieceBytes === 0 && this.#lines === 0;
  }

  #checkLine(lineBytes: number, chunk: Buffer, at: number): void {
    if (lineBytes > this.#limits.maxLineLength) {
      this.#fail('PEER_LINE_TOO_LONG', `line longer than ${this.#limits.maxLineLength} bytes: "${printable(chunk.subarray(at, at + 64), 40)}"`);
    }
    if (this.#requestBytes + lineBytes + 1 > this.#limits.maxRequestSize) {
      this.#fail('PEER_REQUEST_TOO_LARGE', `request larger than ${this.#limits.maxRequestSize} bytes`);
    }
  }

  /** A line as bytes, of unknown encoding. */
  #bytesLine(line: Buffer): PolicyAttributes | undefined {
    if (line.length === 0) return this.#endOfRequest();
    if (!isUtf8(line)) {
      this.#countLine(line.length);
      this.#fail('PEER_BAD_ENCODING', `invalid UTF-8 in "${printable(line, 60)}"`);
    }
    const text = line.toString('utf8');
    this.#countLine(line.length);
    return this.#attribute(text, 0, text.length);
  }

  /**
   * The `name=value` line text[start, end), already decoded and counted, is
   * marked where it lies; a line from another text than the request's first
   * lines (a request split across chunks, or a line that was not ASCII) is
   * appended to the request's own text.
   */
  #attribute(text: string, start: number, end: number): undefined {
    const eq = text.indexOf('=', start);
    if (eq <= start || eq >= end) this.#fail('PEER_MALFORMED_LINE', `expected name=value, got "${printable(Buffer.from(text.slice(start, Math.min(end, start + 80))), 60)}"`);
    if (this.#marked === 0) this.#text = text;
    let at = 0;
    if (this.#text !== text) {
      at = this.#text.length - start;
      this.#text += text.slice(start, end);
    }
    const m = this.#marks;
    const n = this.#marked;
    m[n] = start + at;
    m[n + 1] = eq + at;
    m[n + 2] = end + at;
    this.#marked = n + 3;
    return undefined;
  }

  #countLine(bytes: number): void {
    this.#lines++;
    this.#requestBytes += bytes + 1;
    if (this.#lines > this.#limits.maxAttributes) {
      this.#fail('PEER_TOO_MANY_ATTRIBUTES', `more than ${this.#limits.maxAttributes} attributes in one request`);
    }
  }

  #endOfRequest(): PolicyAttributes {
    if (this.#lines === 0) this.#fail('PEER_EMPTY_REQUEST', 'empty line with no attributes before it');
    const attrs = new PolicyAttributes(this.#text, this.#marks.slice(0, this.#marked));
    this.#text = '';
    this.#marked = 0;
    // A request of many lines leaves no large array behind on its connection.
    if (this.#marks.length > 3 * 128) this.#marks = [];
    this.#lines = 0;
    this.#requestBytes = 0;
    return attrs;
  }

  #fail(symbol: ErrorName, message: string): never {
    this.#pieces = [];
    this.#pieceBytes = 0;
    this.#failed = new PeerError(symbol, message);
    throw this.#failed;
  }
}

/** Encodes one request the way Postfix does (for tests, benchmarks and the explain client). */
export function encodeRequest(attrs: Iterable<readonly [string, string]>): Buffer {
  let s = '';
  for (const [k, v] of attrs) s += `${k}=${v}\n`;
  return Buffer.from(s + '\n', 'utf8');
}
