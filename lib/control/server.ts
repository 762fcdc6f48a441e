// server.ts - one control connection: a JSON line in, a JSON line out.
//
// Lines are bounded (MAX_LINE); a line that is not a request gets a
// bad_request answer and the connection stays open, since the peer is a
// local admin tool. Commands run through the shield like any other event
// (kind "control"); a command that fails answers "failed" and is logged.
// Commands reach the daemon only through the Controller interface
// (commands.ts): the engine, the store, the lists, reload and snapshot.

import type { Connection, ConnectionHandler } from '../net/listener.js';
import type { Shield } from '../shield/shield.js';
import { PeerError, type SluiceError } from '../shield/errors.js';
import { CONTROL_VERSION, MAX_LINE, CommandError, type Request, type Response } from './protocol.js';

export type Dispatch = (req: Request) => Promise<unknown> | unknown;

export function controlHandler(shield: Shield, dispatch: Dispatch): (conn: Connection) => ConnectionHandler {
  return (conn) => new ControlSession(conn, shield, dispatch);
}

class ControlSession implements ConnectionHandler {
  #buf = '';
  #busy = false;
  readonly #queue: string[] = [];

  constructor(readonly conn: Connection, readonly shield: Shield, readonly dispatch: Dispatch) {}

  get busy(): boolean {
    return this.#busy;
  }

  onData(chunk: Buffer): void {
    this.#buf += chunk.toString('utf8');
    let nl;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      this.#queue.push(this.#buf.slice(0, nl));
      this.#buf = this.#buf.slice(nl + 1);
    }
    if (this.#buf.length > MAX_LINE) throw new PeerError('PEER_LINE_TOO_LONG', `control line longer than ${MAX_LINE} bytes`);
    this.#next();
  }

  onClose(): void {
    this.#queue.length = 0;
  }

  flush(): void {}

  failMode(_err: SluiceError): void {
    this.#answer({ v: CONTROL_VERSION, ok: false, error: { code: 'failed', message: 'internal error; see the daemon log' } });
  }

  #next(): void {
    if (this.#busy) return;
    const line = this.#queue.shift();
    if (line === undefined) return;
    this.#busy = true;
    this.shield.guard(this.conn, 'control', () => this.#run(line));
  }

  async #run(line: string): Promise<void> {
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
      if (typeof req !== 'object' || req === null || typeof req.cmd !== 'string') throw new Error('not a request');
    } catch {
      this.#answer({ v: CONTROL_VERSION, ok: false, error: { code: 'bad_request', message: 'expected one JSON request per line: {"v":1,"cmd":"status"}' } });
      return;
    }
    if (req.v !== CONTROL_VERSION) {
      this.#answer({ v: CONTROL_VERSION, ok: false, error: { code: 'version', message: `control protocol version ${String(req.v)}; this sluiced speaks ${CONTROL_VERSION}` } });
      return;
    }
    try {
      const data = await this.dispatch(req);
      this.#answer({ v: CONTROL_VERSION, ok: true, data: data ?? null });
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      this.#answer({ v: CONTROL_VERSION, ok: false, error: { code: err.code, message: err.message } });
    }
  }

  #answer(r: Response): void {
    this.#busy = false;
    this.conn.send(`${JSON.stringify(r)}\n`);
    this.#next();
  }
}
