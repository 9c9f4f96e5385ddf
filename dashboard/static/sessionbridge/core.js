// Built from clients/js/src by `npm run build`; do not edit.
// The engine behind every Client: one WebSocket to a sessionbridge server, its
// credentials, its reconnects and its pending requests. It knows nothing of
// tabs; hub.ts shares one Core between the tabs of a browser.
/** An error of a request or of the client: `code` is the server's error code or one of closed, not_connected, timeout. */
export class ClientError extends Error {
    constructor(code, message, frame) {
        super(message);
        this.name = 'ClientError';
        this.code = code;
        this.frame = frame;
    }
}
const isObj = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
/** The engine: start() keeps a connection up until stop() or a 4401/4403. */
export class Core {
    constructor(o, emit) {
        this.ws = null;
        this.want = false;
        this.welcomed = false;
        this.attempt = 0;
        this.gen = 0; // bumped by stop() and every new socket, so late callbacks of old ones do nothing
        this.minDelay = 0;
        this.pending = new Map();
        this.nextId = 1;
        this.visible = true;
        this.online = true;
        this.waiting = false; // a reconnect waits for the network or the page to come back
        this.state = 'closed';
        this.o = o;
        this.emit = emit;
    }
    /** Connects, unless already connected or connecting. */
    start() {
        if (this.want)
            return;
        this.want = true;
        this.attempt = 0;
        this.open();
    }
    /** Closes the socket (1000) and stops reconnecting; pending requests reject with `closed`. */
    stop() {
        if (!this.want && !this.ws)
            return;
        this.want = false;
        this.halt();
        const ws = this.ws;
        this.ws = null;
        if (ws) {
            ws.onclose = ws.onmessage = ws.onopen = null;
            try {
                ws.close(1000);
            }
            catch { /* already closing */ }
            this.emit({ k: 'close', c: { code: 1000, reason: '', reconnect: false } });
        }
        this.set('closed');
    }
    /** Tells the engine whether some page shows it and whether the browser is online; reconnects wait for both (visibility only with pauseWhenHidden). */
    activity(visible, online) {
        this.visible = visible;
        this.online = online;
        if (this.waiting && this.active()) {
            this.waiting = false;
            this.open();
        }
    }
    /** Sends a request and resolves with the reply carrying its id, or rejects with the error frame's code and message. */
    request(type, data, timeout) {
        return new Promise((resolve, reject) => {
            const ws = this.ws;
            if (!ws || !this.welcomed) {
                reject(new ClientError('not_connected', 'not connected'));
                return;
            }
            const id = String(this.nextId++);
            const frame = { type, id };
            if (data !== undefined)
                frame.data = data;
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new ClientError('timeout', 'no reply within ' + timeout + ' ms'));
            }, timeout);
            this.pending.set(id, { resolve, reject, timer });
            try {
                ws.send(JSON.stringify(frame));
            }
            catch {
                this.settle(id);
                reject(new ClientError('closed', 'the connection closed'));
            }
        });
    }
    active() {
        return this.online && (this.visible || !this.o.pauseWhenHidden);
    }
    set(s, i = {}) {
        this.state = s;
        this.emit({ k: 'state', s, i: { attempt: this.attempt, ...i } });
    }
    halt() {
        this.gen++;
        clearTimeout(this.timer);
        clearTimeout(this.refreshTimer);
        this.waiting = false;
        this.welcomed = false;
        for (const id of [...this.pending.keys()])
            this.settle(id)?.reject(new ClientError('closed', 'the connection closed'));
    }
    settle(id) {
        const p = this.pending.get(id);
        if (p) {
            this.pending.delete(id);
            clearTimeout(p.timer);
        }
        return p;
    }
    async open() {
        if (!this.want)
            return;
        if (!this.active()) {
            this.waiting = true;
            this.set('reconnecting', { paused: this.online ? 'hidden' : 'offline' });
            return;
        }
        const gen = ++this.gen;
        this.set(this.attempt ? 'reconnecting' : 'connecting');
        const o = this.o;
        let url = o.url;
        let init;
        try {
            if (o.auth === 'ticket') {
                const t = await (o.getTicket ? o.getTicket() : this.ticket());
                url += (url.includes('?') ? '&' : '?') + 'ticket=' + encodeURIComponent(t);
            }
            else if (o.auth === 'token') {
                const t = typeof o.token === 'function' ? await o.token() : o.token;
                init = { headers: { Authorization: 'Bearer ' + t } };
            }
        }
        catch (e) {
            if (gen !== this.gen)
                return;
            if (e && e.status === 401)
                return this.unauth('unauthorized', 401);
            this.emit({ k: 'problem', p: { kind: o.auth, message: String((e && e.message) || e) } });
            if (e && e.retryAfter > 0)
                this.minDelay = e.retryAfter * 1000;
            return this.retry();
        }
        if (gen !== this.gen)
            return;
        let ws;
        try {
            const WS = o.WebSocket || globalThis.WebSocket;
            ws = init ? new WS(url, init) : new WS(url);
        }
        catch (e) {
            this.emit({ k: 'problem', p: { kind: 'socket', message: String((e && e.message) || e) } });
            return this.retry();
        }
        this.ws = ws;
        ws.onerror = () => { }; // a close event follows; `ws` would throw an unhandled 'error' without a listener
        ws.onmessage = (ev) => { if (this.ws === ws)
            this.frame(ev.data); };
        ws.onclose = (ev) => { if (this.ws === ws)
            this.closed(ev.code, ev.reason || ''); };
    }
    async ticket() {
        const f = this.o.fetch || fetch;
        const res = await f(this.o.ticketUrl, { method: 'POST', credentials: 'include', headers: { Accept: 'application/json' } });
        const body = await res.json().catch(() => null);
        if (!res.ok || !isObj(body) || typeof body.ticket !== 'string') {
            const e = new ClientError((isObj(body) && body.error) || 'http_' + res.status, 'ticket request answered ' + res.status);
            e.status = res.status;
            e.retryAfter = parseInt(res.headers.get('Retry-After') || '', 10) || 0;
            throw e;
        }
        return body.ticket;
    }
    frame(raw) {
        let f;
        try {
            if (typeof raw !== 'string')
                throw new Error('binary frame');
            f = JSON.parse(raw);
            if (!isObj(f) || typeof f.type !== 'string')
                throw new Error('not a frame object');
        }
        catch (e) {
            this.emit({ k: 'problem', p: { kind: 'bad_frame', message: e.message + ': ' + String(raw).slice(0, 100) } });
            return;
        }
        const id = f.id == null ? '' : String(f.id);
        const p = id ? this.settle(id) : undefined;
        if (p) {
            if (f.type === 'error') {
                const d = isObj(f.data) ? f.data : {};
                p.reject(new ClientError(String(d.code || 'error'), String(d.message || 'error'), f));
            }
            else
                p.resolve(f);
            return;
        }
        if (id)
            return; // the reply to a request that timed out
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
    schedule(expires) {
        clearTimeout(this.refreshTimer);
        const at = typeof expires === 'string' ? Date.parse(expires) : NaN;
        if (typeof this.o.token !== 'function' || isNaN(at))
            return;
        const left = at - Date.now();
        if (left <= 0)
            return;
        const gen = this.gen;
        this.refreshTimer = setTimeout(async () => {
            try {
                const token = await this.o.token();
                if (gen !== this.gen)
                    return;
                const ack = await this.request('auth.refresh', { token }, 10000);
                this.schedule(ack.data && ack.data.expires_at);
            }
            catch (e) {
                if (gen !== this.gen)
                    return;
                this.emit({ k: 'problem', p: { kind: 'refresh', message: String((e && e.message) || e) } });
                // Try again in half the time left; the server closes 4401 token_expired at the end.
                this.schedule(expires);
            }
        }, left - Math.min(this.o.refreshBefore, left / 2));
    }
    closed(code, reason) {
        const welcomed = this.welcomed;
        this.ws = null;
        this.halt();
        const end = code === 4401 || code === 4403;
        this.emit({ k: 'close', c: { code, reason, reconnect: !end } });
        if (code === 4401)
            return this.unauth(reason, code);
        if (code === 4403) {
            this.want = false;
            return this.set('closed');
        }
        if (code === 4429)
            this.minDelay = this.o.rateLimitDelay;
        // A refused upgrade reaches a browser as a bare 1006: in cookie mode, ask
        // the HTTP API whether the session still exists before hammering /ws.
        if (!welcomed && this.o.auth === 'cookie' && this.o.sessionUrl) {
            const gen = this.gen;
            (this.o.fetch || fetch)(this.o.sessionUrl, { credentials: 'include', headers: { Accept: 'application/json' } }).then((res) => {
                if (gen !== this.gen)
                    return;
                if (res.status === 401)
                    this.unauth('unauthorized', 401);
                else
                    this.retry();
            }, () => { if (gen === this.gen)
                this.retry(); });
            return;
        }
        this.retry();
    }
    unauth(reason, code) {
        this.want = false;
        this.halt();
        this.set('closed');
        this.emit({ k: 'unauth', u: { reason, code } });
    }
    // retry waits an exponential backoff with full jitter (and at least what a
    // 429 asked for), so that the clients of a node that went away do not all
    // come back at once and a server that keeps refusing is not hammered.
    retry() {
        if (!this.want)
            return;
        const cap = Math.min(this.o.backoffMax, this.o.backoffBase * 2 ** Math.min(this.attempt, 30));
        const delay = Math.max(this.minDelay, Math.round(Math.random() * cap));
        this.attempt++;
        this.minDelay = 0;
        this.set('reconnecting', { delay });
        const gen = this.gen;
        this.timer = setTimeout(() => { if (gen === this.gen)
            this.open(); }, delay);
    }
}
