// A minimal Postfix-like policy client for tests: one request at a time, reads `action=...\n\n`.
import net from 'node:net';
import { encodeRequest } from '../../dist/policy/codec.js';

export function rcptRequest(over: Record<string, string> = {}): Record<string, string> {
  return {
    request: 'smtpd_access_policy', protocol_state: 'RCPT', protocol_name: 'ESMTP',
    client_address: '192.0.2.10', client_name: 'mx.example.net', client_port: '41234',
    reverse_client_name: 'mx.example.net', server_address: '127.0.0.1', server_port: '25',
    helo_name: 'mx.example.net', sender: 'alice@example.net', recipient: 'bob@example.org',
    recipient_count: '0', queue_id: '', instance: '1a2b.66f0c1d2.8e4a1.0', size: '0', stress: '',
    ...over,
  };
}

export class PolicyClient {
  readonly socket: net.Socket;
  #buf = '';
  #waiters: ((s: string) => void)[] = [];
  #closed = false;
  readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.#buf += d;
      let i;
      while ((i = this.#buf.indexOf('\n\n')) >= 0) {
        const reply = this.#buf.slice(0, i + 2);
        this.#buf = this.#buf.slice(i + 2);
        this.#waiters.shift()?.(reply);
      }
    });
    socket.on('error', () => {});
    this.closedPromise = new Promise((r) => socket.on('close', () => { this.#closed = true; r(); for (const w of this.#waiters.splice(0)) w(''); }));
  }

  static connect(target: { port: number; host?: string } | { path: string }): Promise<PolicyClient> {
    return new Promise((resolve, reject) => {
      const s = 'path' in target ? net.connect(target.path) : net.connect(target.port, target.host ?? '127.0.0.1');
      s.once('connect', () => resolve(new PolicyClient(s)));
      s.once('error', reject);
    });
  }

  /** Sends one request; resolves with the raw reply, or '' if the server closed. */
  ask(attrs: Record<string, string>): Promise<string> {
    return this.send(encodeRequest(Object.entries(attrs)));
  }

  send(bytes: Buffer | string): Promise<string> {
    if (this.#closed) return Promise.resolve('');
    const p = new Promise<string>((r) => this.#waiters.push(r));
    this.socket.write(bytes);
    return p;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Port of an "inet:HOST:PORT" endpoint string. */
export function portOf(endpoint: string | undefined): number {
  const m = /:(\d+)$/.exec(endpoint ?? '');
  if (!m) throw new Error(`no port in ${endpoint}`);
  return Number(m[1]);
}
