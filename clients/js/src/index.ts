// @sessionbridge/client: the browser (and Node) client of the sessionbridge
// WebSocket protocol. See docs/client-js.md.

import { ClientError, CloseInfo, CoreOptions, Frame, Problem, State, StateInfo, Unauthenticated, WebSocketConstructor } from './core.js';
import { Hub, ToHub, ToTab } from './hub.js';

export { ClientError } from './core.js';
export type { CloseInfo, Frame, Problem, State, StateInfo, Unauthenticated, WebSocketConstructor, WebSocketLike } from './core.js';

/** Options of a Client. Every one is optional in a browser page. */
export interface ClientOptions {
  /** The WebSocket URL; default /ws on the page's origin. Relative URLs resolve against the page. Required in Node. */
  url?: string;
  /**
   * Authenticate with a single-use ticket, fetched before every (re)connect:
   * true for POST /auth/ws-ticket on the page's origin, or the URL to POST to.
   * Default: true when `url` is on another origin than the page, else the session cookie.
   */
  ticket?: boolean | string;
  /** Fetches a ticket your own way. An error with `status: 401` ends the client with `unauthenticated`. */
  getTicket?: () => Promise<string>;
  /**
   * A session token, JWT or API key, sent as `Authorization: Bearer` on the
   * upgrade (needs a WebSocket implementation that takes headers, such as `ws`).
   * A callback is asked again on every reconnect and, on JWT connections,
   * before the token expires (`auth.refresh`).
   */
  token?: string | (() => string | Promise<string>);
  /** How long before a JWT connection's expiry to refresh it, in ms (default 60000; at most half the time left). */
  refreshBefore?: number;
  /** Default request timeout in ms (default 10000). */
  timeout?: number;
  /** First reconnect delay cap in ms (default 500); it doubles per attempt up to `backoffMax`. */
  backoffBase?: number;
  /** Largest reconnect delay in ms (default 30000). */
  backoffMax?: number;
  /** Least wait after a 4429 close or a 429 without Retry-After, in ms (default 5000). */
  rateLimitDelay?: number;
  /** Wait with reconnects while no page of this client is visible (default false). Reconnects always wait while offline. */
  pauseWhenHidden?: boolean;
  /**
   * Share one socket between the tabs of this origin (default false): a
   * SharedWorker where the browser has one, else a leader tab elected with
   * Web Locks over BroadcastChannel, else this tab's own socket.
   * `worker: false` skips the SharedWorker; `worker: url` loads it from there
   * (default: worker.js next to this module).
   */
  share?: boolean | { worker?: string | URL | false };
  /** A WebSocket implementation, for Node (e.g. the `ws` package). Default: the global WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** A fetch implementation for tickets. Default: the global fetch. */
  fetch?: typeof fetch;
}

/** The data of the welcome frame. */
export interface Welcome {
  connection_id: string;
  auth: 'session' | 'jwt' | 'apikey';
  user_id: string;
  session: SessionView | null;
  scopes: string[];
  expires_at: string | null;
}

/** The public view of a session. */
export interface SessionView {
  id: string;
  user_id: string;
  data: Record<string, any>;
  device?: Record<string, string>;
  created_at: string;
  last_seen_at: string;
  expires_at: string;
  absolute_expires_at: string;
  version: number;
}

/** The arguments each event passes to its listeners. Any other type is a server push: `(data, frame)`. */
export interface Events {
  welcome: [Welcome, Frame];
  'session.updated': [{ session: SessionView; source: string }, Frame];
  'session.expiring': [{ expires_at: string }, Frame];
  message: [{ data: unknown }, Frame];
  /** Every frame this tab receives: server pushes and the replies to its own requests. */
  frame: [Frame];
  state: [State, StateInfo];
  close: [CloseInfo];
  unauthenticated: [Unauthenticated];
  problem: [Problem];
}

type Listener = (...a: any[]) => void;

const browser = typeof document === 'object' && typeof addEventListener === 'function';
let seq = 0;
const tabId = () => Date.now().toString(36) + Math.random().toString(36).slice(2) + seq++;

/**
 * A connection to a sessionbridge server. It connects on connect() and stays
 * connected (reconnecting with backoff) until close(), a 4401 (the
 * `unauthenticated` event) or a 4403.
 */
export class Client {
  private o: CoreOptions;
  private timeout: number;
  private tab = tabId();
  private ls = new Map<string, Set<Listener>>();
  private pending = new Map<string, { res: (f: Frame) => void; rej: (e: ClientError) => void; timer: ReturnType<typeof setTimeout> }>();
  private nextId = 1;
  private on_ = false;
  private to!: (m: ToHub) => void;
  private _state: State = 'closed';
  private _welcome: Welcome | null = null;

  /** The session helpers: `session.get()` and `session.update(patch, {version})`. */
  readonly session = {
    /** The session as the server's node knows it now. */
    get: async (): Promise<SessionView> => (await this.request('session.get')).data.session,
    /** Applies a JSON merge patch to the session data, only at `version` if given; resolves with the new version. */
    update: async (patch: Record<string, unknown>, opt: { version?: number; timeout?: number } = {}): Promise<{ version: number }> => {
      const data: Record<string, unknown> = { data: patch };
      if (opt.version !== undefined) data.version = opt.version;
      return (await this.request('session.update', data, opt)).data;
    },
  };

  constructor(opts: ClientOptions = {}) {
    const page = typeof location === 'object' && location.href ? location.href : undefined;
    if (!opts.url && !page) throw new TypeError('sessionbridge: the url option is required outside a browser page');
    const wsUrl = new URL(opts.url || '/ws', page);
    wsUrl.protocol = wsUrl.protocol.replace(/^http/, 'ws');
    const httpOrigin = wsUrl.origin.replace(/^ws/, 'http');
    const cross = !!page && httpOrigin !== new URL(page).origin;
    // Relative URLs resolve against the page, or in Node against the server.
    const abs = (u: string) => new URL(u, page || httpOrigin).href;
    let ticket = opts.ticket ?? (cross && !opts.token && !opts.getTicket);
    this.timeout = opts.timeout || 10000;
    this.o = {
      url: wsUrl.href,
      auth: opts.token ? 'token' : ticket || opts.getTicket ? 'ticket' : 'cookie',
      ticketUrl: ticket ? abs(typeof ticket === 'string' ? ticket : '/auth/ws-ticket') : undefined,
      getTicket: opts.getTicket,
      token: opts.token,
      sessionUrl: page && !cross ? abs('/auth/session') : undefined,
      refreshBefore: opts.refreshBefore ?? 60000,
      backoffBase: opts.backoffBase || 500,
      backoffMax: opts.backoffMax || 30000,
      rateLimitDelay: opts.rateLimitDelay ?? 5000,
      pauseWhenHidden: !!opts.pauseWhenHidden,
      WebSocket: opts.WebSocket,
      fetch: opts.fetch,
    };
    this.link(opts.share);
    if (browser) {
      const vis = () => this.vis();
      document.addEventListener('visibilitychange', vis);
      addEventListener('online', vis);
      addEventListener('offline', vis);
      addEventListener('pagehide', () => this.to({ t: 'bye', tab: this.tab }));
      addEventListener('pageshow', (e) => { if ((e as PageTransitionEvent).persisted) this.hello(); });
      vis();
    }
  }

  /** The connection's state: closed, connecting, open, reconnecting. */
  get state(): State {
    return this._state;
  }

  /** The welcome of the current connection, or null while not open. */
  get welcome(): Welcome | null {
    return this._welcome;
  }

  /** Starts connecting; a no-op while already connected or connecting. */
  connect(): void {
    this.on_ = true;
    this.to({ t: 'on', tab: this.tab });
  }

  /** Stops this client: its pending requests reject with `closed`. A shared socket stays open while another tab uses it. */
  close(): void {
    this.on_ = false;
    this.to({ t: 'off', tab: this.tab });
    this.status('closed', { attempt: 0 });
    this.fail('closed', 'the client was closed');
  }

  /**
   * Sends a request and resolves with the reply frame of the same id; rejects
   * with a ClientError carrying the error frame's code and message, or the
   * code not_connected (nothing was sent), closed (the socket closed before
   * the reply) or timeout.
   */
  request(type: string, data?: unknown, opt: { timeout?: number } = {}): Promise<Frame> {
    return new Promise((res, rej) => {
      if (this._state !== 'open') return rej(new ClientError('not_connected', 'not connected'));
      const id = String(this.nextId++);
      const timeout = opt.timeout || this.timeout;
      // The hub times out first; this one only covers a hub that went away.
      const timer = setTimeout(() => this.settle(id, { t: 'res', id, e: { code: 'timeout', message: 'no reply within ' + timeout + ' ms' } }), timeout + 1000);
      this.pending.set(id, { res, rej, timer });
      this.to({ t: 'req', tab: this.tab, id, type, data, timeout });
    });
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, fn: (...a: Events[K]) => void): () => void;
  /** Any other push type: `(data, frame)`. */
  on<T extends string>(type: T extends keyof Events ? never : T, fn: (data: any, frame: Frame) => void): () => void;
  on(type: string, fn: Listener): () => void {
    if (!this.ls.has(type)) this.ls.set(type, new Set());
    this.ls.get(type)!.add(fn);
    return () => this.off(type, fn);
  }

  /** Removes a listener. */
  off(type: string, fn: Listener): void {
    this.ls.get(type)?.delete(fn);
  }

  private emit(type: string, ...a: unknown[]): void {
    for (const fn of [...(this.ls.get(type) || [])]) {
      try {
        fn(...a);
      } catch (e) {
        // A listener's bug must not stop the others; it is still reported, as uncaught errors are.
        const g = globalThis as any;
        if (g.reportError) g.reportError(e);
        else setTimeout(() => { throw e; });
      }
    }
  }

  private status(s: State, i: StateInfo): void {
    if (s !== 'open') this._welcome = null;
    this._state = s;
    this.emit('state', s, i);
  }

  private fail(code: string, message: string): void {
    for (const id of [...this.pending.keys()]) this.settle(id, { t: 'res', id, e: { code, message } });
  }

  private settle(id: string, m: ToTab & { t: 'res' }): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (m.f) {
      this.emit('frame', m.f);
      p.res(m.f);
    } else {
      if (m.e!.frame) this.emit('frame', m.e!.frame);
      p.rej(new ClientError(m.e!.code, m.e!.message, m.e!.frame));
    }
  }

  // receive handles a message of the hub.
  private receive(m: ToTab): void {
    if (m.t === 'res') return this.settle(m.id, m);
    if (!this.on_) return;
    const ev = m.ev;
    switch (ev.k) {
      case 'state':
        return this.status(ev.s, ev.i);
      case 'frame':
        if (ev.f.type === 'welcome') this._welcome = ev.f.data;
        this.emit('frame', ev.f);
        return this.emit(ev.f.type, ev.f.data, ev.f);
      case 'close':
        this.fail('closed', 'the connection closed');
        return this.emit('close', ev.c);
      case 'unauth':
        this.on_ = false;
        return this.emit('unauthenticated', ev.u);
      case 'problem':
        return this.emit('problem', ev.p);
    }
  }

  // hello introduces this tab to a (new) hub: its visibility, and whether it wants the connection.
  private hello(): void {
    this.to({ t: 'hello', tab: this.tab });
    this.vis();
    if (this.on_) this.to({ t: 'on', tab: this.tab });
  }

  private vis(): void {
    if (browser) this.to({ t: 'vis', tab: this.tab, vis: document.visibilityState !== 'hidden', online: navigator.onLine !== false });
  }

  // link connects this client to its hub: its own, a SharedWorker's or the leader tab's.
  private link(share: ClientOptions['share']): void {
    const g = globalThis as any;
    const local = () => {
      const hub = new Hub(this.o);
      this.to = (m) => hub.receive(m, (r) => this.receive(r));
    };
    if (!share || !g.BroadcastChannel) return local();
    // The version keeps tabs of another release (a SharedWorker still
    // running old code after a deploy) from speaking a different hub protocol.
    const name = 'sessionbridge/1 ' + this.o.url;
    const o = this.o;
    const plain = !o.getTicket && typeof o.token !== 'function' && !o.WebSocket && !o.fetch;
    const worker = typeof share === 'object' ? share.worker : undefined;
    if (g.SharedWorker && plain && worker !== false) {
      try {
        const w = new SharedWorker(worker || new URL('./worker.js', import.meta.url), { type: 'module', name });
        const port = w.port;
        let ok = false;
        let queue: ToHub[] | null = [];
        port.onmessage = (e) => {
          ok = true;
          queue = null;
          this.receive(e.data);
        };
        // Falls back to leader election when the worker cannot load.
        w.onerror = () => {
          if (ok) return;
          const q = queue || [];
          queue = null;
          this.elect(name);
          q.forEach((m) => this.to(m));
        };
        this.to = (m) => {
          if (queue) queue.push(m);
          port.postMessage(m);
        };
        port.start();
        port.postMessage({ t: 'init', o });
        this.hello(); // answered at once: from then on the worker is known to run
        return;
      } catch {
        // No module SharedWorker here: elect a leader instead.
      }
    }
    if (!g.navigator || !navigator.locks) return local();
    this.elect(name);
  }

  // elect joins the tabs of this origin over a BroadcastChannel; the tab that
  // holds the Web Lock runs the hub, and when it closes the lock (and the
  // socket) passes to the next tab in line.
  private elect(name: string): void {
    const bc = new BroadcastChannel(name);
    let hub: Hub | null = null;
    const post = (to: string) => (r: ToTab) => bc.postMessage({ to, r });
    this.to = (m) => bc.postMessage({ to: '', m });
    bc.onmessage = (e) => {
      const d = e.data;
      if (!d) return;
      if (d.leader && d.leader !== this.tab) {
        // A new leader: requests sent to the old one will never be answered.
        this.fail('closed', 'the tab holding the connection closed');
        this.hello();
      } else if (d.m && hub) hub.receive(d.m, post(d.m.tab));
      else if (d.to === this.tab) this.receive(d.r);
    };
    navigator.locks.request(name, () => {
      hub = new Hub(this.o);
      const h = hub;
      this.fail('closed', 'the tab holding the connection closed');
      this.to = (m) => h.receive(m, (r) => this.receive(r));
      this.hello();
      bc.postMessage({ leader: this.tab });
      return new Promise(() => {}); // held while this tab lives
    });
    this.hello();
  }
}
