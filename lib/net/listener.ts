// listener.ts - accept connections for one protocol on its endpoints.
//
// Owns the sockets: opens inet/inet6/unix endpoints (a stale unix socket is
// removed, a live one or a path that is not a socket is refused), enforces
// the connection cap shared by all listeners, the idle timeout (idle.ts) and
// write backpressure, and writes replies once per event-loop turn
// (outbox.ts). A unix: path is made ready by unix-path.ts. Every socket
// callback runs through the shield with the connection as context.
// No state outside its objects: two daemons in one process share nothing.
// What the bytes mean is the protocol handler's business: the listener only
// hands them over.
//
// Config keys: limits.max_connections, limits.idle_timeout, policy.socket_mode.

import net from 'node:net';
import { chmod } from 'node:fs/promises';
import { asTransportError, ConfigError, type SluiceError } from '../shield/errors.js';
import { Overload } from '../shield/overload.js';
import type { Shield, ShieldContext } from '../shield/shield.js';
import { describeBound, type Endpoint } from '../config/endpoint.js';
import type { Logger } from '../log/logger.js';
import { YoungMap } from '../util/young-map.js';
import { IdleSweep } from './idle.js';
import type { Outbox } from './outbox.js';
import { explainListen, prepareUnixPath } from './unix-path.js';

/** What a protocol does with one connection. */
export interface ConnectionHandler {
  onData(chunk: Buffer): void;
  /** The peer half-closed or the socket closed; release everything. */
  onClose(): void;
  /** Answers anything held right now (drain on SIGTERM). */
  flush(): void;
  /** True while a request is being decided or held. */
  readonly busy: boolean;
  /** The shield's fail-mode answer for this connection. */
  failMode(err: SluiceError): void;
}

export interface Connection extends ShieldContext {
  readonly id: number;
  readonly socket: net.Socket;
  readonly log: Logger;
  /** Queues one reply, written in one write before this event-loop turn ends. False once the socket is gone. */
  send(data: Buffer | string): boolean;
  close(err?: SluiceError): void;
  readonly closed: boolean;
}

export type HandlerFactory = (conn: Connection) => ConnectionHandler;

/** The connection cap across every listener; refusing is reported when it starts and ends. */
export class ConnectionCounter {
  #open = 0;
  readonly #refusing: Overload;
  constructor(private readonly max: () => number, shield: Shield, log: () => Logger) {
    this.#refusing = new Overload(shield, log, 'OVERLOAD_CONNECTIONS', 'accepting connections again');
  }

  tryOpen(): boolean {
    if (this.#open >= this.max()) {
      this.#refusing.set(true, () => `refusing connections: ${this.#open} open`);
      return false;
    }
    this.#open++;
    return true;
  }

  release(): void {
    this.#open--;
    if (this.#refusing.on && this.#open < this.max()) this.#refusing.set(false, () => '', { open: this.#open });
  }

  get open(): number {
    return this.#open;
  }
}

export interface ListenerDeps {
  readonly protocol: 'policy' | 'milter' | 'control';
  readonly shield: Shield;
  readonly log: Logger;
  readonly counter: ConnectionCounter;
  readonly idleTimeout: () => number;
  readonly nextId: () => number;
  readonly factory: HandlerFactory;
  /** Cap on bytes waiting to be written before reading pauses. */
  readonly maxWriteBuffer: number;
  /** Where replies wait for the end of the event-loop turn; one for all of a daemon's listeners. */
  readonly outbox: Outbox;
}

/**
 * One accepted socket. A class, and the socket's listeners below are shared
 * by all sockets (they find their connection on the socket): ten thousand
 * connections held open should not mean a dozen closures each.
 */
class Conn implements Connection {
  #closed = false;
  /** When it last read or wrote, as the idle sweep's clock had it then. */
  activeAt: number;
  /** Replies sent this event-loop turn, not yet written (see Outbox). */
  #queued: (Buffer | string)[] | undefined;
  /** Made on first use: most connections never log. */
  #log: Logger | undefined;
  handler: ConnectionHandler | undefined;

  constructor(readonly id: number, readonly socket: net.Socket, readonly owner: Listener, readonly deps: ListenerDeps) {
    this.activeAt = owner.sweep.now;
  }

  get label(): string {
    return `${this.deps.protocol}#${this.id}`;
  }

  get log(): Logger {
    return (this.#log ??= this.deps.log.child({ conn: this.id, proto: this.deps.protocol }));
  }

  get closed(): boolean {
    return this.#closed;
  }

  get busy(): boolean {
    return this.handler!.busy;
  }

  send(data: Buffer | string): boolean {
    if (this.#closed || this.socket.destroyed) return false;
    this.activeAt = this.owner.sweep.now;
    if (this.#queued !== undefined) {
      this.#queued.push(data);
    } else if (this.deps.counter.open < 2) {
      // The only connection: no other reply to gather, so no turn's wait.
      this.socket.write(data);
      this.#backpressure();
    } else {
      this.#queued = [data];
      this.deps.outbox.add(this);
    }
    return true;
  }

  /** Writes what send() queued, each reply in one write, in the order sent. */
  writeQueued(): void {
    const queued = this.#queued;
    if (queued === undefined) return;
    this.#queued = undefined;
    if (this.socket.destroyed) return;
    for (const data of queued) this.socket.write(data);
    this.#backpressure();
  }

  /** A peer that does not read its replies stops being read from. */
  #backpressure(): void {
    const socket = this.socket;
    if (socket.writableLength > this.deps.maxWriteBuffer && !socket.isPaused()) {
      socket.pause();
      socket.once('drain', () => { if (!this.#closed) socket.resume(); });
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // A reply sent just before (a last answer, then QUIT's close) still goes out.
    this.writeQueued();
    this.socket.destroy();
  }

  /** The socket is gone. */
  gone(): void {
    this.#closed = true;
  }

  failMode(err: SluiceError): void {
    this.handler?.failMode(err);
  }
}

const CONN = Symbol('sluice.connection');
type Tagged = net.Socket & { [CONN]: Conn };

function onData(this: Tagged, chunk: Buffer): void {
  const c = this[CONN];
  c.activeAt = c.owner.sweep.now;
  c.deps.shield.guard(c, 'read', handData, c, chunk);
}

function handData(c: Conn, chunk: Buffer): void {
  c.handler!.onData(chunk);
}

function onError(this: Tagged, err: Error): void {
  const c = this[CONN];
  c.deps.shield.raise(c, asTransportError(err), 'read', [err]);
}

function onEnd(this: Tagged): void {
  const c = this[CONN];
  c.deps.shield.guard(c, 'read', closeIt, c);
}

function closeIt(c: Conn): void {
  c.close();
}

function onClose(this: Tagged): void {
  const c = this[CONN];
  c.deps.shield.guard(c, 'read', release, c);
}

function release(c: Conn): void {
  c.owner.released(c);
}

export class Listener {
  readonly #deps: ListenerDeps;
  readonly #servers: net.Server[] = [];
  readonly #live = new YoungMap<number, Conn>();
  readonly bound: string[] = [];
  readonly sweep: IdleSweep<Conn>;

  constructor(deps: ListenerDeps) {
    this.#deps = deps;
    this.sweep = new IdleSweep(deps.shield, () => this.#live.values());
  }

  /** Opens every endpoint, or throws a CONFIG_LISTEN error naming the one that failed. */
  async open(endpoints: readonly Endpoint[], socketMode: number): Promise<void> {
    for (const ep of endpoints) {
      const server = net.createServer({ noDelay: true });
      const ctx: ShieldContext = { label: `${this.#deps.protocol}:${ep.text}` };
      server.on('connection', this.#deps.shield.wrap(ctx, 'accept', (s: net.Socket) => this.#accept(s)));
      if (ep.kind === 'unix') await prepareUnixPath(ep.path, ep.text);
      await new Promise<void>((resolve, reject) => {
        const fail = (err: NodeJS.ErrnoException): void => {
          reject(new ConfigError('CONFIG_LISTEN', `${this.#deps.protocol} ${ep.text}: cannot listen: ${explainListen(err)}`));
        };
        server.once('error', fail);
        const done = (): void => {
          server.off('error', fail);
          // From now on a server error (rare: EMFILE on accept) goes to the shield.
          server.on('error', this.#deps.shield.wrap(ctx, 'accept', (err: Error) => { throw asTransportError(err); }));
          resolve();
        };
        if (ep.kind === 'unix') server.listen(ep.path, done);
        else server.listen({ host: ep.host, port: ep.port, exclusive: true }, done);
      });
      if (ep.kind === 'unix') {
        try {
          await chmod(ep.path, socketMode);
        } catch (err) {
          server.close();
          throw new ConfigError('CONFIG_LISTEN', `${ep.text}: cannot set mode: ${(err as Error).message}`);
        }
      }
      this.#servers.push(server);
      this.bound.push(describeBound(ep, server.address()));
    }
    this.sweep.set(this.#deps.idleTimeout());
  }

  #accept(socket: net.Socket): void {
    const { counter, log } = this.#deps;
    if (!counter.tryOpen()) {
      socket.destroy();
      return;
    }
    const conn = new Conn(this.#deps.nextId(), socket, this, this.#deps);
    conn.handler = this.#deps.factory(conn);
    this.#live.set(conn.id, conn);
    if (log.isLevelEnabled('debug')) conn.log.debug({ peer: `${socket.remoteAddress ?? 'local'}:${socket.remotePort ?? ''}` }, 'connection opened');
    (socket as Tagged)[CONN] = conn;
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('close', onClose);
  }

  /** The socket of `conn` closed: its place under the cap and its handler are released. */
  released(conn: Conn): void {
    conn.gone();
    this.#live.delete(conn.id);
    this.#deps.counter.release();
    conn.handler!.onClose();
    if (this.#deps.log.isLevelEnabled('debug')) conn.log.debug('connection closed');
  }

  /** Stops accepting; open connections carry on. */
  stopAccepting(): void {
    // close()'s callback waits for every open connection to end; policy
    // connections are persistent, so the drain does not wait for it.
    for (const s of this.#servers) s.close();
    this.#servers.length = 0;
  }

  /** Answers every held reply now. */
  flushAll(): void {
    for (const conn of this.#live.values()) this.#deps.shield.guard(conn, 'signal', () => conn.handler!.flush());
  }

  /** Connections still deciding or holding. */
  get busy(): number {
    let n = 0;
    for (const conn of this.#live.values()) if (conn.handler!.busy) n++;
    return n;
  }

  get connections(): number {
    return this.#live.size;
  }

  closeAll(): void {
    this.sweep.stop();
    for (const conn of this.#live.values()) conn.close();
  }

  setIdleTimeout(ms: number): void {
    this.sweep.set(ms);
  }
}
