// codec.ts - milter framing: `uint32 length (big-endian) | command byte | payload`.
//
// Pure and incremental: push() any split of the byte stream (including inside
// the 4-byte length) and get whole frames back. A frame inside one chunk is
// read where it lies in that chunk, without copying (nor a Buffer view per
// frame: payload.ts reads between the frame's bounds); a frame that straddles
// chunks is kept as pieces and joined once, when its last byte arrives.
//
// Trusts nothing: the length is checked (1 <= length <= max) as soon as its 4
// bytes are in, before anything more is kept, so "GET / HTTP/1.0" (length
// 0x47455420) or a TLS ClientHello is refused at once. After an error the
// decoder stays failed and emits nothing more.
//
// Config keys (through the constructor): milter.max_frame_size.

import { PeerError } from '../shield/errors.js';
import { printable } from '../util/printable.js';

/** One frame: its command byte, and its payload as buf[start, end). */
export class Frame {
  constructor(readonly cmd: number, readonly buf: Buffer, readonly start: number, readonly end: number) {}

  /** A frame of this whole payload. */
  static of(cmd: number, payload: Buffer): Frame {
    return new Frame(cmd, payload, 0, payload.length);
  }

  /** The payload as a Buffer of its own: a view, no bytes copied. */
  get payload(): Buffer {
    return this.buf.subarray(this.start, this.end);
  }

  get length(): number {
    return this.end - this.start;
  }
}

export class FrameDecoder {
  readonly #max: number;
  #pieces: Buffer[] = [];
  #have = 0;
  /** Whole frame size (4 + length) once the header is known, else -1. */
  #need = -1;
  #failed: PeerError | undefined;

  /** `max`: the largest length field accepted (command byte plus payload). */
  constructor(max: number) {
    this.#max = max;
  }

  push(chunk: Buffer): Frame[] {
    const out: Frame[] = [];
    this.pushInto(chunk, out);
    return out;
  }

  /**
   * push(), adding the frames to `out` (a session's queue) rather than to an
   * array of their own. On an error, frames before it may have been added.
   */
  pushInto(chunk: Buffer, out: Frame[]): void {
    if (this.#failed) throw this.#failed;
    let data = chunk;
    let pos = 0;
    while (pos < data.length) {
      if (this.#pieces.length === 0 && data.length - pos >= 4) {
        const size = 4 + this.#length(data, pos);
        if (data.length - pos < size) {
          this.#stash(data.subarray(pos), size);
          break;
        }
        out.push(new Frame(data[pos + 4]!, data, pos + 5, pos + size));
        pos += size;
        continue;
      }
      // Joining pieces: a header split across chunks, or a frame still arriving.
      const rest = data.subarray(pos);
      this.#pieces.push(rest);
      this.#have += rest.length;
      pos = data.length;
      if (this.#need < 0 && this.#have >= 4) {
        this.#need = 4 + this.#length(Buffer.concat(this.#pieces, 4), 0);
      }
      if (this.#need >= 0 && this.#have >= this.#need) {
        const joined = Buffer.concat(this.#pieces, this.#have);
        const size = this.#need;
        this.#pieces = [];
        this.#have = 0;
        this.#need = -1;
        out.push(new Frame(joined[4]!, joined, 5, size));
        data = joined;
        pos = size;
      }
    }
  }

  /** The peer closed: PEER_TRUNCATED if a frame was left unfinished. */
  end(): void {
    if (this.#failed || this.#have === 0) return;
    this.#failed = new PeerError('PEER_TRUNCATED', `connection closed inside a milter frame (${this.#have} of ${this.#need < 0 ? '?' : this.#need} bytes)`);
    throw this.#failed;
  }

  get idle(): boolean {
    return this.#have === 0;
  }

  #stash(rest: Buffer, size: number): void {
    this.#pieces = [rest];
    this.#have = rest.length;
    this.#need = size;
  }

  #length(buf: Buffer, at: number): number {
    const len = buf.readUInt32BE(at);
    if (len < 1 || len > this.#max) {
      this.#pieces = [];
      this.#have = 0;
      this.#failed = new PeerError('MILTER_BAD_LENGTH',
        `frame length ${len} outside 1..${this.#max}; first bytes "${printable(buf.subarray(at, at + 16), 40)}"`);
      throw this.#failed;
    }
    return len;
  }
}

/** One frame in one buffer: the unit of one socket write. */
export function encodeFrame(cmd: number, payload?: Buffer): Buffer {
  const n = payload ? payload.length : 0;
  const out = Buffer.allocUnsafe(5 + n);
  out.writeUInt32BE(n + 1, 0);
  out[4] = cmd;
  if (payload) payload.copy(out, 5);
  return out;
}
