// The reference: the smallest Node milter responder that is still correct:
// it frames the stream, answers OPTNEG with version 6 and no flags, sends
// nothing for MACRO/ABORT/QUIT, and CONTINUE to everything else.
import net from 'node:net';

const OPTNEG = Buffer.from('0000000d4f000000060000000000000000', 'hex');
const CONTINUE = Buffer.from('0000000163', 'hex');

const server = net.createServer((s) => {
  let buf: Buffer = Buffer.alloc(0);
  s.on('data', (d: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    let pos = 0;
    while (buf.length - pos >= 5) {
      const len = buf.readUInt32BE(pos);
      if (buf.length - pos < 4 + len) break;
      const cmd = buf[pos + 4];
      pos += 4 + len;
      if (cmd === 0x4f) s.write(OPTNEG);
      else if (cmd === 0x51) s.end();
      else if (cmd !== 0x44 && cmd !== 0x41) s.write(CONTINUE);
    }
    buf = buf.subarray(pos);
  });
  s.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as net.AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
