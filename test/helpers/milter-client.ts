// The MTA side of the milter protocol, for tests and benchmarks: builds
// command frames and reads replies (PROGRESS and modifications collected).
import net from 'node:net';
import { FrameDecoder, encodeFrame, type Frame } from '../../dist/milter/codec.js';
import * as C from '../../dist/milter/constants.js';

const z = (s: string): Buffer => Buffer.from(s + '\0', 'utf8');

export const mta = {
  optneg(version = 6, actions = 0x1ff, protocol = 0x1fffff): Buffer {
    const b = Buffer.alloc(12);
    b.writeUInt32BE(version, 0);
    b.writeUInt32BE(actions, 4);
    b.writeUInt32BE(protocol, 8);
    return encodeFrame(C.SMFIC_OPTNEG, b);
  },
  macro(stage: number, pairs: Record<string, string> = {}): Buffer {
    return encodeFrame(C.SMFIC_MACRO, Buffer.concat([Buffer.from([stage]), ...Object.entries(pairs).flatMap(([k, v]) => [z(k), z(v)])]));
  },
  connect(host: string, address: string, port = 41234, family = address.includes(':') ? '6' : '4'): Buffer {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(port, 0);
    return encodeFrame(C.SMFIC_CONNECT, Buffer.concat([z(host), Buffer.from(family), p, z(address)]));
  },
  helo: (h: string): Buffer => encodeFrame(C.SMFIC_HELO, z(h)),
  mail: (...args: string[]): Buffer => encodeFrame(C.SMFIC_MAIL, Buffer.concat(args.map(z))),
  rcpt: (...args: string[]): Buffer => encodeFrame(C.SMFIC_RCPT, Buffer.concat(args.map(z))),
  data: (): Buffer => encodeFrame(C.SMFIC_DATA),
  header: (n: string, v: string): Buffer => encodeFrame(C.SMFIC_HEADER, Buffer.concat([z(n), z(v)])),
  eoh: (): Buffer => encodeFrame(C.SMFIC_EOH),
  body: (b: Buffer): Buffer => encodeFrame(C.SMFIC_BODY, b),
  eob: (): Buffer => encodeFrame(C.SMFIC_BODYEOB),
  abort: (): Buffer => encodeFrame(C.SMFIC_ABORT),
  quit: (): Buffer => encodeFrame(C.SMFIC_QUIT),
};

export interface Reply {
  /** The final reply frame ('c', 'a', 'r', 't', 'y', 'O'). */
  final: Frame;
  /** PROGRESS frames and modifications that came before it, in order. */
  before: Frame[];
  ms: number;
}

export class MilterClient {
  readonly socket: net.Socket;
  readonly #decoder = new FrameDecoder(1 << 24);
  readonly #frames: Frame[] = [];
  #wake: (() => void) | undefined;
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.#frames.push(...this.#decoder.push(d));
      this.#wake?.();
    });
    socket.on('error', () => {});
    socket.on('close', () => { this.closed = true; this.#wake?.(); });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<MilterClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host);
      s.setNoDelay(true);
      s.once('connect', () => resolve(new MilterClient(s)));
      s.once('error', reject);
    });
  }

  /** Sends frames; no reply expected (MACRO, ABORT, QUIT). */
  send(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** Sends frames and reads until a final reply; undefined if the connection closed first. */
  async ask(...frames: Buffer[]): Promise<Reply | undefined> {
    const t0 = Date.now();
    this.send(...frames);
    const before: Frame[] = [];
    for (;;) {
      const f = this.#frames.shift();
      if (f) {
        if ([C.SMFIR_PROGRESS, C.SMFIR_ADDHEADER, C.SMFIR_INSHEADER, C.SMFIR_QUARANTINE].includes(f.cmd)) {
          before.push(f);
          continue;
        }
        return { final: f, before, ms: Date.now() - t0 };
      }
      if (this.closed) return undefined;
      await new Promise<void>((r) => { this.#wake = r; });
      this.#wake = undefined;
    }
  }

  /** Negotiates as Postfix 3.7 does and sends the CONNECT macros with `v`. */
  async open(v = 'Postfix 3.7.11', client = '192.0.2.10', host = 'mx.example.net'): Promise<Reply | undefined> {
    const opt = await this.ask(mta.optneg());
    if (!opt) return undefined;
    return this.ask(mta.macro(C.SMFIC_CONNECT, { j: 'mx.rig.test', v, '{daemon_name}': 'mx.rig.test' }), mta.connect(host, client));
  }

  close(): void {
    this.socket.destroy();
  }

  get idle(): Promise<void> {
    return new Promise((r) => (this.closed ? r() : this.socket.once('close', () => r())));
  }
}

export function text(f: Frame | undefined): string {
  if (!f) return '(closed)';
  return String.fromCharCode(f.cmd) + (f.payload.length ? ' ' + f.payload.toString('latin1').replace(/\0$/, '').replace(/\0/g, '|') : '');
}
