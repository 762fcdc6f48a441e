// codec.ts - Postfix policy delegation wire format: bytes in, attributes out.
//
// A request is `name=value` lines, each ended by one LF, then an empty line
// (SMTPD_POLICY_README; Postfix's attr_print_plain). Pure and incremental:
// push() any split of the byte stream and get the complete requests back; a
// partial line is kept as pieces and joined only when its LF arrives.
// A request is handed over as its text (PolicyAttributes): a request that
// arrived in one chunk is read in place, and only the values of the picker
// the decoder was given are cut out, as their lines arrive.
//
// Trusts nothing: every line is bounded before it is kept, the request size
// and line count are bounded, a value is split at the FIRST "=" (SRS and BATV
// senders contain "="), NUL bytes are refused; a line that is not UTF-8 is
// kept byte for byte (latin1), as Postfix passes 8-bit text on. After an
// error the decoder stays failed: nothing more is emitted for that stream.
// Unknown attribute names are kept (and ignored by the request mapping).
//
// Config keys (through PolicyLimits): policy.max_line_length,
// policy.max_request_size, policy.max_attributes.

import { isAscii, isUtf8 } from 'node:buffer';
import { PeerError, type ErrorName } from '../shield/errors.js';
import { printable } from '../util/printable.js';

export interface PolicyLimits {
  readonly maxLineLength: number;
  readonly maxRequestSize: number;
  readonly maxAttributes: number;
}

/**
 * One request, read in place: its lines are `text` from `from` to `to`, each
 * ended by LF (the chunk it arrived in, or a text of its own when it came in
 * pieces). Reads like a Map: a repeated name keeps its last value (and the
 * place of its first). The values of the decoder's picker were cut out as the
 * lines arrived; anything else is found by reading the lines again.
 */
export class PolicyAttributes {
  readonly #picker: AttributePicker | undefined;
  readonly #picked: (string | undefined)[] | undefined;

  constructor(readonly text: string, readonly from: number, readonly to: number,
    picker?: AttributePicker, picked?: (string | undefined)[]) {
    this.#picker = picker;
    this.#picked = picked;
  }

  /** The value of the last line named `name`, or undefined. */
  get(name: string): string | undefined {
    let value: string | undefined;
    this.#lines((start, eq, end) => {
      if (eq - start === name.length && this.text.startsWith(name, start)) value = this.text.slice(eq + 1, end);
    });
    return value;
  }

  /**
   * The values of a picker's names (the last line of each name wins),
   * undefined where there is none. For the decoder's own picker this is the
   * array it filled, which belongs to this request alone.
   */
  pick(p: AttributePicker): (string | undefined)[] {
    if (p === this.#picker) return this.#picked!;
    const out = p.blank();
    this.#lines((start, eq, end) => {
      const place = p.placeOf(this.text, start, eq);
      if (place >= 0) out[place] = this.text.slice(eq + 1, end);
    });
    return out;
  }

  /** Name and value pairs, in order of first appearance. */
  *[Symbol.iterator](): IterableIterator<[string, string]> {
    const names: string[] = [];
    this.#lines((start, eq) => { names.push(this.text.slice(start, eq)); });
    for (const name of new Set(names)) yield [name, this.get(name)!];
  }

  /** Calls `line` with where each line's name starts, its "=" and its end. */
  #lines(line: (start: number, eq: number, end: number) => void): void {
    const text = this.text;
    for (let start = this.from; start < this.to;) {
      const end = text.indexOf('\n', start);
      line(start, text.indexOf('=', start), end);
      start = end + 1;
    }
  }
}

/**
 * A fixed list of attribute names and the place of each in a result. Handed
 * to the decoder, it is matched against each line's name as the line
 * arrives, and each wanted value is cut out then: the request mapping reads
 * its ~18 names without a second pass over ~30 lines. A name is compared
 * only with the wanted names of its length.
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

  /** A result with no value found yet. */
  blank(): (string | undefined)[] {
    return new Array<string | undefined>(this.names.length).fill(undefined);
  }

  /** The place of the name text[start, eq) among the wanted names, or -1. */
  placeOf(text: string, start: number, eq: number): number {
    const wanted = this.#names[eq - start];
    if (wanted === undefined) return -1;
    // First and last letters tell most names of one length apart, without a call.
    const first = text.charCodeAt(start);
    const last = text.charCodeAt(eq - 1);
    for (let j = 0; j < wanted.length; j++) {
      const w = wanted[j]!;
      if (w.charCodeAt(0) === first && w.charCodeAt(w.length - 1) === last && text.startsWith(w, start)) return this.#places[eq - start]![j]!;
    }
    return -1;
  }
}

const LF = 0x0a;

export class PolicyDecoder {
  readonly #limits: PolicyLimits;
  readonly #picker: AttributePicker | undefined;
  #pieces: Buffer[] = [];
  #pieceBytes = 0;
  /**
   * The current request's lines are #text from #from to #to: while they come
   * one after another in one chunk's text, that text read in place; once
   * they do not (a line split across chunks, or not ASCII), a text of the
   * request's own, its lines appended as they come.
   */
  #text = '';
  #from = 0;
  #to = 0;
  #own = false;
  /** The picker's values for the current request, filled as its lines arrive. */
  #picked: (string | undefined)[] | undefined;
  #lines = 0;
  #requestBytes = 0;
  #failed: PeerError | undefined;

  /** `picker`: names whose values every request hands over ready cut (PolicyAttributes.pick). */
  constructor(limits: PolicyLimits, picker?: AttributePicker) {
    this.#limits = limits;
    this.#picker = picker;
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
    // A request begun in an earlier chunk goes on in a text of its own.
    if (this.#lines > 0) this.#ownText();
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
          this.#attribute(text, start, lf, true);
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
    // Postfix passes 8-bit bytes through (a HELO name, a sender without
    // SMTPUTF8): such a line is kept byte for byte, one character a byte.
    const text = line.toString(isUtf8(line) ? 'utf8' : 'latin1');
    this.#countLine(line.length);
    return this.#attribute(text, 0, text.length, false);
  }

  /**
   * The `name=value` line text[start, end), already decoded and counted.
   * `inPlace`: text[end] is its LF (a line of an ASCII chunk's text).
   */
  #attribute(text: string, start: number, end: number, inPlace: boolean): undefined {
    const eq = text.indexOf('=', start);
    if (eq <= start || eq >= end) this.#fail('PEER_MALFORMED_LINE', `expected name=value, got "${printable(Buffer.from(text.slice(start, Math.min(end, start + 80))), 60)}"`);
    if (this.#lines === 1) {
      this.#text = text;
      this.#from = this.#to = start;
      if (this.#picker) this.#picked = this.#picker.blank();
    }
    if (inPlace && !this.#own && start === this.#to) {
      this.#to = end + 1;
    } else {
      this.#ownText();
      this.#text += text.slice(start, end) + '\n';
      this.#to = this.#text.length;
    }
    if (this.#picker) {
      const place = this.#picker.placeOf(text, start, eq);
      if (place >= 0) this.#picked![place] = text.slice(eq + 1, end);
    }
    return undefined;
  }

  /** From here on the current request's lines are a text of its own. */
  #ownText(): void {
    if (this.#own) return;
    this.#text = this.#text.slice(this.#from, this.#to);
    this.#from = 0;
    this.#own = true;
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
    const attrs = new PolicyAttributes(this.#text, this.#from, this.#to, this.#picker, this.#picked);
    this.#text = '';
    this.#own = false;
    this.#picked = undefined;
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
