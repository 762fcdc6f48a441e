// payload.ts - frame payloads as typed commands.
//
// Second layer of decoding (the first is codec.ts): each command's payload is
// read field by field, every C string must end (NUL) inside the payload, and
// bytes left over are an error (MILTER_BAD_PAYLOAD). An unknown command letter
// is MILTER_UNKNOWN_COMMAND. A header's strings are decoded only when read;
// body chunks are never copied.

import { PeerError } from '../shield/errors.js';
import { printable } from '../util/printable.js';
import * as C from './constants.js';
import type { Frame } from './codec.js';

export type Command =
  | { readonly kind: 'optneg'; readonly version: number; readonly actions: number; readonly protocol: number }
  | { readonly kind: 'macro'; readonly stage: number; readonly macros: Macros }
  | { readonly kind: 'connect'; readonly hostname: string; readonly family: string; readonly port: number; readonly address: string }
  | { readonly kind: 'helo'; readonly helo: string }
  | { readonly kind: 'mail'; readonly args: readonly string[] }
  | { readonly kind: 'rcpt'; readonly args: readonly string[] }
  | { readonly kind: 'data' }
  | { readonly kind: 'header'; readonly name: string; readonly value: string }
  | { readonly kind: 'eoh' }
  | { readonly kind: 'body'; readonly chunk: Buffer }
  | { readonly kind: 'eob' }
  | { readonly kind: 'abort' }
  | { readonly kind: 'quit' }
  | { readonly kind: 'quit_nc' }
  | { readonly kind: 'unknown'; readonly line: string };

/**
 * The macros of one MACRO frame, read where they lie in its chunk: a name is
 * compared byte by byte and a value decoded only when asked for (an event
 * reads four names, of the dozen or so a message's frames carry). A name is
 * found with braces or without, as smfi_getsymval finds it; the last one sent
 * wins. Read them while the frame's chunk is at hand (MilterState keeps the
 * values it reads, not this).
 */
export class Macros {
  readonly #buf: Buffer;
  /** Per macro: where its name starts and ends (at its NUL), then its value (-1, -1: none sent). */
  readonly #at: readonly number[];

  constructor(buf: Buffer, at: readonly number[]) {
    this.#buf = buf;
    this.#at = at;
  }

  /** The value of `name` (ASCII), asked for with braces or without. */
  get(name: string): string | undefined {
    const at = this.#at;
    for (let i = at.length - 4; i >= 0; i -= 4) {
      if (this.#named(at[i]!, at[i + 1]!, name)) return this.#value(i);
    }
    return undefined;
  }

  /** Name (braces taken off) and value pairs, each name once with its last value, in order of first appearance. */
  *[Symbol.iterator](): IterableIterator<[string, string]> {
    const all = new Map<string, string>();
    for (let i = 0; i < this.#at.length; i += 4) {
      const raw = this.#buf.toString('utf8', this.#at[i], this.#at[i + 1]);
      all.set(raw.length > 2 && raw.startsWith('{') && raw.endsWith('}') ? raw.slice(1, -1) : raw, this.#value(i));
    }
    yield* all;
  }

  /** The name buf[start, end) is `name`, or `name` in braces. */
  #named(start: number, end: number, name: string): boolean {
    const buf = this.#buf;
    if (end - start === name.length + 2 && name !== '' && buf[start] === 0x7b && buf[end - 1] === 0x7d) {
      start++;
      end--;
    } else if (end - start !== name.length) {
      return false;
    }
    for (let j = 0; j < name.length; j++) if (buf[start + j] !== name.charCodeAt(j)) return false;
    return true;
  }

  #value(i: number): string {
    const start = this.#at[i + 2]!;
    // A broken peer may send a name without a value: read it as empty.
    return start < 0 ? '' : this.#buf.toString('utf8', start, this.#at[i + 3]);
  }
}

function bad(cmd: number, why: string, payload: Buffer): never {
  throw new PeerError('MILTER_BAD_PAYLOAD', `${C.letter(cmd)}: ${why}; payload "${printable(payload.subarray(0, 48), 60)}"`);
}

/** Reads NUL-terminated strings from a frame's payload, refusing one that runs off its end. */
class Reader {
  readonly cmd: number;
  readonly buf: Buffer;
  readonly end: number;
  #pos: number;
  constructor(readonly frame: Frame) {
    this.cmd = frame.cmd;
    this.buf = frame.buf;
    this.end = frame.end;
    this.#pos = frame.start;
  }

  string(): string {
    const start = this.skip();
    // Decoded leniently: values are for keys and logs, and the MTA is 8-bit clean.
    return this.buf.toString('utf8', start, this.#pos - 1);
  }

  /** Where the next read starts (after skip(), one past the string's NUL). */
  get at(): number {
    return this.#pos;
  }

  /** Passes over one string, whose NUL must lie inside the frame, without decoding it; returns where it starts. */
  skip(): number {
    const start = this.#pos;
    const nul = this.buf.indexOf(0, start);
    if (nul < 0 || nul >= this.end) bad(this.cmd, 'string without its NUL terminator', this.frame.payload);
    this.#pos = nul + 1;
    return start;
  }

  byte(): number {
    if (this.#pos >= this.end) bad(this.cmd, 'payload too short', this.frame.payload);
    return this.buf[this.#pos++]!;
  }

  u16(): number {
    if (this.#pos + 2 > this.end) bad(this.cmd, 'payload too short', this.frame.payload);
    const v = this.buf.readUInt16BE(this.#pos);
    this.#pos += 2;
    return v;
  }

  u32(): number {
    if (this.#pos + 4 > this.end) bad(this.cmd, 'payload too short', this.frame.payload);
    const v = this.buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return v;
  }

  get left(): number {
    return this.end - this.#pos;
  }

  /** Every remaining string (an argv). */
  strings(): string[] {
    const out: string[] = [];
    while (this.left > 0) out.push(this.string());
    return out;
  }

  done(): void {
    if (this.left !== 0) bad(this.cmd, `${this.left} bytes left over`, this.frame.payload);
  }

  empty(): void {
    if (this.frame.length !== 0) bad(this.cmd, 'expected no payload', this.frame.payload);
  }
}

/**
 * A header, checked like every payload but decoded only if read: sluice
 * answers headers without looking at them, and a message has dozens. Read
 * it while its frame's chunk is at hand (the command is not kept).
 */
class HeaderCommand {
  readonly kind = 'header' as const;
  readonly #buf: Buffer;
  readonly #name: number;
  readonly #value: number;
  readonly #end: number;

  constructor(buf: Buffer, name: number, value: number, end: number) {
    this.#buf = buf;
    this.#name = name;
    this.#value = value;
    this.#end = end;
  }

  get name(): string {
    return this.#buf.toString('utf8', this.#name, this.#value - 1);
  }

  get value(): string {
    return this.#buf.toString('utf8', this.#value, this.#end - 1);
  }
}

/** The commands without a payload, one object each: commands are read, never changed. */
const DATA: Command = { kind: 'data' };
const EOH: Command = { kind: 'eoh' };
const EOB: Command = { kind: 'eob' };
const ABORT: Command = { kind: 'abort' };
const QUIT: Command = { kind: 'quit' };
const QUIT_NC: Command = { kind: 'quit_nc' };

export function decodeCommand(frame: Frame): Command {
  const r = new Reader(frame);
  switch (frame.cmd) {
    case C.SMFIC_OPTNEG: {
      const version = r.u32();
      const actions = r.u32();
      const protocol = r.u32();
      // Extra bytes after the 12 are allowed (future MTAs); libmilter ignores them too.
      return { kind: 'optneg', version, actions, protocol };
    }
    case C.SMFIC_MACRO: {
      const stage = r.byte();
      const at: number[] = [];
      while (r.left > 0) {
        const name = r.skip();
        at.push(name, r.at - 1);
        if (r.left > 0) {
          const value = r.skip();
          at.push(value, r.at - 1);
        } else {
          at.push(-1, -1);
        }
      }
      return { kind: 'macro', stage, macros: new Macros(frame.buf, at) };
    }
    case C.SMFIC_CONNECT: {
      const hostname = r.string();
      const family = String.fromCharCode(r.byte());
      if (family === 'U') {
        r.done();
        return { kind: 'connect', hostname, family, port: 0, address: '' };
      }
      if (!'L46'.includes(family)) bad(frame.cmd, `unknown address family "${printable(family)}"`, frame.payload);
      const port = r.u16();
      const address = r.string();
      r.done();
      return { kind: 'connect', hostname, family, port, address };
    }
    case C.SMFIC_HELO: {
      const helo = r.string();
      r.done();
      return { kind: 'helo', helo };
    }
    case C.SMFIC_MAIL:
    case C.SMFIC_RCPT: {
      const args = r.strings();
      if (args.length === 0) bad(frame.cmd, 'no address', frame.payload);
      return { kind: frame.cmd === C.SMFIC_MAIL ? 'mail' : 'rcpt', args };
    }
    case C.SMFIC_HEADER: {
      const name = r.skip();
      const value = r.skip();
      r.done();
      return new HeaderCommand(frame.buf, name, value, frame.end);
    }
    case C.SMFIC_BODY:
      return { kind: 'body', chunk: frame.payload };
    case C.SMFIC_BODYEOB:
      // libmilter treats data here as a last body chunk; neither MTA sends any.
      return EOB;
    case C.SMFIC_DATA: r.empty(); return DATA;
    case C.SMFIC_EOH: r.empty(); return EOH;
    case C.SMFIC_ABORT: r.empty(); return ABORT;
    case C.SMFIC_QUIT: r.empty(); return QUIT;
    case C.SMFIC_QUIT_NC: r.empty(); return QUIT_NC;
    case C.SMFIC_UNKNOWN: {
      const line = r.string();
      r.done();
      return { kind: 'unknown', line };
    }
    default:
      throw new PeerError('MILTER_UNKNOWN_COMMAND', `unknown milter command ${C.letter(frame.cmd)}; payload "${printable(frame.payload.subarray(0, 48), 60)}"`);
  }
}
