// The reference: the smallest Node policy responder that is still correct on
// a persistent connection (answers DUNNO to each request, split anywhere).
import net from 'node:net';

const server = net.createServer((s) => {
  let buf = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      buf = buf.slice(i + 2);
      s.write('action=DUNNO\n\n');
    }
  });
  s.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as net.AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
