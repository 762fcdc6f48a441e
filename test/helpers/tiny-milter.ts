// A milter of a few lines for the end-to-end tests: it speaks the protocol
// to a real MTA, answers go on to everything, records the headers it is
// sent and, where told, adds headers at end of message (as a content
// scanner's milter does: spamass-milter's X-Spam-Flag, rspamd's X-Spam).
import net from 'node:net';
import type { Test } from 'tap';
import { encodeFrame, FrameDecoder } from '../../dist/milter/codec.js';
import * as C from '../../dist/milter/constants.js';

export interface TinyMilter {
  readonly endpoint: string;
  /** Every header the MTA sent, as "Name: value", per message. */
  readonly messages: string[][];
}

const NO_REPLY = new Set([C.SMFIC_MACRO, C.SMFIC_ABORT, C.SMFIC_QUIT, C.SMFIC_QUIT_NC]);

function cstrings(b: Buffer): string[] {
  return b.toString('latin1').split('\0').slice(0, -1);
}

/** Listens on a free loopback port; `add` are headers added at end of message. */
export async function startTinyMilter(t: Test, add: [string, string][] = []): Promise<TinyMilter> {
  const messages: string[][] = [];
  const server = net.createServer((sock) => {
    const dec = new FrameDecoder(1 << 20);
    let headers: string[] = [];
    sock.on('error', () => undefined);
    sock.on('data', (chunk: Buffer) => {
      for (const f of dec.push(chunk)) {
        if (f.cmd === C.SMFIC_OPTNEG) {
          const p = Buffer.alloc(12);
          p.writeUInt32BE(6, 0);
          p.writeUInt32BE(C.SMFIF_ADDHDRS, 4);
          p.writeUInt32BE(0, 8);
          sock.write(encodeFrame(C.SMFIC_OPTNEG, p));
          continue;
        }
        if (f.cmd === C.SMFIC_HEADER) {
          const [name, value] = cstrings(f.payload);
          headers.push(`${name}: ${value}`);
        }
        if (f.cmd === C.SMFIC_BODYEOB) {
          messages.push(headers);
          headers = [];
          for (const [name, value] of add) sock.write(encodeFrame(C.SMFIR_ADDHEADER, Buffer.from(`${name}\0${value}\0`, 'latin1')));
        }
        if (f.cmd === C.SMFIC_ABORT) headers = [];
        if (!NO_REPLY.has(f.cmd)) sock.write(encodeFrame(C.SMFIR_CONTINUE));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  return { endpoint: `inet:127.0.0.1:${port}`, messages };
}
