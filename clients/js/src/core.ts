// The engine behind every Client: one WebSocket to a sessionbridge server, its
// credentials, its reconnects and its pending requests. It knows nothing of
// tabs; hub.ts shares one Core between the tabs of a browser.

/** A frame of the protocol: `{type, id?, data?}` (docs/protocol.md). */
export interface Frame {
  type: string;
  id?: string;
  data?: any;
}

/** Where the connection stands. */
export type State = 'closed' | 'connecting' | 'open' | 'reconnecting';

/** What accompanies a state change. */
export interface StateInfo {
  /** Reconnect attempts since the last welcome. */
  attempt: number;
  /** While reconnecting: milliseconds until the next attempt. */
  delay?: number;
  /** While reconnecting: why attempts wait ('offline', or 'hidden' with pauseWhenHidden). */
  paused?: 'offline' | 'hidden';
}

/** A closed socket: its code and reason, and what the client does next. */
export interface CloseInfo {
  code: number;
  reason: string;
  /** false after 4401, 4403 and close(): the client stays closed. */
  reconnect: boolean;
}

/** Why the server stopped accepting this client's credential. */
export interface Unauthenticated {
  /** session_expired, session_revoked, token_expired, api_key_revoked (4401), or unauthorized (a refused upgrade or ticket). */
  reason: string;
  /** The close code (4401) or the HTTP status (401) that said so. */
  code: number;
}

/** Something the client skipped or could not do; never thrown into the application. */
export interface Problem {
  /** bad_frame, stray_error, ticket, refresh, token. */
  kind: string;
  message: string;
}

/** What a Core tells its hub. */
export type CoreEvent =
  | { k: 'frame'; f: Frame }
  | { k: 'state'; s: State; i: StateInfo }
  | { k: 'close'; c: CloseInfo }
  | { k: 'unauth'; u: Unauthenticated }
  | { k: 'problem'; p: Problem };

/** The part of a WebSocket the client uses: the browser's, or one passed in (the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor; the second argument carries `{headers}` only when a token is used (as `ws` and undici accept). */
export type WebSocketConstructor = new (url: string, init?: any) => WebSocketLike;

/** Options of the engine, already resolved by the Client (absolute URLs, defaults filled). */
export interface CoreOptions {
  url: string;
  /** 'cookie': the browser's session cookie; 'ticket': ?ticket= from ticketUrl or getTicket; 'token': Authorization: Bearer. */
  auth: 'cookie' | 'ticket' | 'token';
  ticketUrl?: string;
  getTicket?: () => Promise<string>;
  token?: string | (() => string | Promise<string>);
  /** GET here after a refused upgrade in cookie mode: 401 means the session is gone. */
  sessionUrl?: string;
  refreshBefore: number;
  backoffBase: number;
  backoffMax: number;
  rateLimitDelay: number;
  pauseWhenHidden: boolean;
  WebSocket?: WebSocketConstructor;
  fetch?: typeof fetch;
}

/** An error of a request or of the client: `code` is the server's error code or one of closed, not_connected, timeout. */
export class ClientError extends Error {
  code: string;
  frame?: Frame;
  /** HTTP status, for errors of the ticket request. */
  status?: number;
  /** Seconds the server asked to wait (429 Retry-After). */
  retryAfter?: number;
  constructor(code: string, message: string, frame?: Frame) {
    super(message);
    this.name = 'ClientError';
    this.code = code;
    this.frame = frame;
  }
}

interface Pending {
  resolve: (f: Frame) => void;
  reject: (e: ClientError) => void;
  timer: ReturnType<typeof setTimeout>;
}

const isObj = (v: any): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The engine: start() keeps a connection up until stop() or a 4401/4403. */
export class Core {
  private o: CoreOptions;
  private emit: (ev: CoreEvent) => void;
  private ws: WebSocketLike | null = null;
  private want = false;
  private welcomed = false;
  private attempt = 0;
  private gen = 0; // bumped by stop() and every new socket, so late callbacks of old ones do nothing
  private timer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private minDelay = 0;
  private pending = new Map<string, Pending>();
  private nextId = 1;
  private visible = true;
  private online = true;
  private waiting = false; // a reconnect waits for the network or the page to come back
  state: State = 'closed';

  constructor(o: CoreOptions, emit: (ev: CoreEvent) => void) {
    this.o = o;
    this.emit = emit;
  }

  /** Connects, unless already connected or connecting. */
  start(): void {
    if (this.want) return;
    this.want = true;
    this.attempt = 0;
    this.open();
  }

  /** Closes the socket (1000) and stops reconnecting; pending requests reject with `closed`. */
  stop(): void {
    if (!this.want && !this.ws) return;
    this.want = false;
    this.halt();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onopen = null;
      try { ws.close(1000); } catch { /* already closing */ }
      this.emit({ k: 'close', c: { code: 1000, reason: '', reconnect: false } });
    }
    this.set('closed');
  }

  /** Tells the engine whether some page shows it and whether the browser is online; reconnects wait for both (visibility only with pauseWhenHidden). */
  activity(visible: boolean, online: boolean): void {
    this.visible = visible;
    this.online = online;
    if (this.waiting && this.active()) {
      this.waiting = false;
      this.open();
    }
  }

  /** Sends a request and resolves with the reply carrying its id, or rejects with the error frame's code and message. */
  request(type: string, data: unknown, timeout: number): Promise<Frame> {
    return new Promise((resolve, reject) => {
      const ws = this.ws;
      if (!ws || !this.welcomed) {
        reject(new ClientError('not_connected', 'not connected'));
        return;
      }
      const id = String(this.nextId++);
      const frame: Frame = { type, id };
      if (data !== undefined) frame.data = data;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ClientError('timeout', 'no reply within ' + timeout + ' ms'));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify(frame));
      } catch {
        this.settle(id);
        reject(new ClientError('closed', 'the connection closed'));
      }
    });
  }

  private active(): boolean {
    return this.online && (this.visible || !this.o.pauseWhenHidden);
  }

  private set(s: State, i: Partial<StateInfo> = {}): void {
    this.state = s;
    this.emit({ k: 'state', s, i: { attempt: this.attempt, ...i } });
  }

  private halt(): void {
    this.gen++;
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    this.waiting = false;
    this.welcomed = false;
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(new ClientError('closed', 'the connection closed'));
  }

  private settle(id: string): Pending | undefined {
    const p = this.pending.get(id);
    if (p) {
      this.pending.delete(id);
      clearTimeout(p.timer);
    }
    return p;
  }

  private async open(): Promise<void> {
    if (!this.want) return;
    if (!this.active()) {
      this.waiting = true;
      this.set('reconnecting', { paused: this.online ? 'hidden' : 'offline' });
      return;
    }
    const gen = ++this.gen;
    this.set(this.attempt ? 'reconnecting' : 'connecting');
    const o = this.o;
    let url = o.url;
    let init: unknown;
    try {
      if (o.auth === 'ticket') {
        const t = await (o.getTicket ? o.getTicket() : this.ticket());
        url += (url.includes('?') ? '&' : '?') + 'ticket=' + encodeURIComponent(t);
      } else if (o.auth === 'token') {
        const t = typeof o.token === 'function' ? await o.token() : o.token;
        init = { headers: { Authorization: 'Bearer ' + t } };
      }
    } catch (e: any) {
      if (gen !== this.gen) return;
      if (e && e.status === 401) return this.unauth('unauthorized', 401);
      this.emit({ k: 'problem', p: { kind: o.auth, message: String((e && e.message) || e) } });
      if (e && e.retryAfter > 0) this.minDelay = e.retryAfter * 1000;
      return this.retry();
    }
    if (gen !== this.gen) return;
    let ws: WebSocketLike;
    try {
      const WS = o.WebSocket || (globalThis as any).WebSocket;
      ws = init ? new WS(url, init) : new WS(url);
    } catch (e: any) {
      this.emit({ k: 'problem', p: { kind: 'socket', message: String((e && e.message) || e) } });
      return this.retry();
    }
    this.ws = ws;
    ws.onerror = () => {}; // a close event follows; `ws` would throw an unhandled 'error' without a listener
    ws.onmessage = (ev) => { if (this.ws === ws) this.frame(ev.data); };
    ws.onclose = (ev) => { if (this.ws === ws) this.closed(ev.code, ev.reason || ''); };
  }

  private async ticket(): Promise<string> {
    const f = this.o.fetch || fetch;
    const res = await f(this.o.ticketUrl!, { method: 'POST', credentials: 'include', headers: { Accept: 'application/json' } });
    const body = await res.json().catch(() => null);
    if (!res.ok || !isObj(body) || typeof body.ticket !== 'string') {
      const e = new ClientError((isObj(body) && body.error) || 'http_' + res.status, 'ticket request answered ' + res.status);
      e.status = res.status;
      e.retryAfter = parseInt(res.headers.get('Retry-After') || '', 10) || 0;
      throw e;
    }
    return body.ticket;
  }

  private frame(raw: unknown): void {
    let f: any;
    try {
      if (typeof raw !== 'string') throw new Error('binary frame');
      f = JSON.parse(raw);
      if (!isObj(f) || typeof f.type !== 'string') throw new Error('not a frame object');
    } catch (e: any) {
      this.emit({ k: 'problem', p: { kind: 'bad_frame', message: e.message + ': ' + String(raw).slice(0, 100) } });
      return;
    }
    const id = f.id == null ? '' : String(f.id);
    const p = id ? this.settle(id) : undefined;
    if (p) {
      if (f.type === 'error') {
        const d = isObj(f.data) ? f.data : {};
        p.reject(new ClientError(String(d.code || 'error'), String(d.message || 'error'), f));
      } else p.resolve(f);
      return;
    }
    if (id) return; // the reply to a request that timed out
    if (f.type === 'welcome') {
      this.welcomed = true;
      this.attempt = 0;
      this.minDelay = 0;
      this.set('open');
      this.emit({ k: 'frame', f });
      this.schedule(isObj(f.data) && f.data.auth === 'jwt' ? f.data.expires_at : null);
      return;
    }
    this.emit({ k: 'frame', f });
  }

  // schedule refreshes a JWT connection before `expires`, when the token is a callback.
  private schedule(expires: unknown): void {
    clearTimeout(this.refreshTimer);
    const at = typeof expires === 'string' ? Date.parse(expires) : NaN;
    if (typeof this.o.token !== 'function' || isNaN(at)) return;
    const left = at - Date.now();
    if (left <= 0) return;
    const gen = this.gen;
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await (this.o.token as () => string | Promise<string>)();
        if (gen !== this.gen) return;
        const ack = await this.request('auth.refresh', { token }, 10000);
        this.schedule(ack.data && ack.data.expires_at);
      } catch (e: any) {
        if (gen !== this.gen) return;
        this.emit({ k: 'problem', p: { kind: 'refresh', message: String((e && e.message) || e) } });
        // Try again in half the time left; the server closes 4401 token_expired at the end.
        this.schedule(expires);
      }
    }, left - Math.min(this.o.refreshBefore, left / 2));
  }

  private closed(code: number, reason: string): void {
    const welcomed = this.welcomed;
    this.ws = null;
    this.halt();
    const end = code === 4401 || code === 4403;
    this.emit({ k: 'close', c: { code, reason, reconnect: !end } });
    if (code === 4401) return this.unauth(reason, code);
    if (code === 4403) {
      this.want = false;
      return this.set('closed');
    }
    if (code === 4429) this.minDelay = this.o.rateLimitDelay;
    // A refused upgrade reaches a browser as a bare 1006: in cookie mode, ask
    // the HTTP API whether the session still exists before hammering /ws.
    if (!welcomed && this.o.auth === 'cookie' && this.o.sessionUrl) {
      const gen = this.gen;
      (this.o.fetch || fetch)(this.o.sessionUrl, { credentials: 'include', headers: { Accept: 'application/json' } }).then(
        (res) => {
          if (gen !== this.gen) return;
          if (res.status === 401) this.unauth('unauthorized', 401);
          else this.retry();
        },
        () => { if (gen === this.gen) this.retry(); },
      );
      return;
    }
    this.retry();
  }

  private unauth(reason: string, code: number): void {
    this.want = false;
    this.halt();
    this.set('closed');
    this.emit({ k: 'unauth', u: { reason, code } });
  }

  // retry waits an exponential backoff with full jitter (and at least what a
  // 429 asked for), so that the clients of a node that went away do not all
  // come back at once and a server that keeps refusing is not hammered.
  private retry(): void {
    if (!this.want) return;
    const cap = Math.min(this.o.backoffMax, this.o.backoffBase * 2 ** Math.min(this.attempt, 30));
    const delay = Math.max(this.minDelay, Math.round(Math.random() * cap));
    this.attempt++;
    this.minDelay = 0;
    this.set('reconnecting', { delay });
    const gen = this.gen;
    this.timer = setTimeout(() => { if (gen === this.gen) this.open(); }, delay);
  }
}
