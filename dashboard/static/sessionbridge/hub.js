// Built from clients/js/src by `npm run build`; do not edit.
// A Hub shares one Core between tabs. It lives in a SharedWorker, in the
// leader tab, or (without sharing) next to its only Client. Tabs talk to it
// with the messages below; every reply goes to the tab that asked, every event
// to every tab that wants the connection.
import { Core } from './core.js';
export class Hub {
    constructor(o) {
        this.tabs = new Map();
        this.last = { s: 'closed', i: { attempt: 0 } };
        this.welcome = null;
        this.version = -1; // of the session, as the tabs last heard it
        this.core = new Core(o, (ev) => this.fan(ev));
    }
    /** Handles a message of a tab; post sends to that tab. */
    receive(m, post) {
        let tab = this.tabs.get(m.tab);
        if (!tab)
            this.tabs.set(m.tab, (tab = { post, on: false, vis: true, online: true }));
        tab.post = post;
        switch (m.t) {
            case 'hello':
                post({ t: 'ev', ev: { k: 'state', ...this.last } }); // tells a new tab the hub runs
                break;
            case 'on':
                tab.on = true;
                post({ t: 'ev', ev: { k: 'state', ...this.last } });
                if (this.welcome)
                    post({ t: 'ev', ev: { k: 'frame', f: this.welcome } });
                this.core.start();
                break;
            case 'off':
            case 'bye':
                tab.on = false;
                if (m.t === 'bye')
                    this.tabs.delete(m.tab);
                if (![...this.tabs.values()].some((x) => x.on))
                    this.core.stop();
                break;
            case 'vis':
                tab.vis = m.vis;
                tab.online = m.online;
                break;
            case 'req':
                this.request(m.tab, tab, m);
                return;
        }
        const all = [...this.tabs.values()];
        this.core.activity(all.some((x) => x.vis), all.length === 0 || all.some((x) => x.online));
    }
    request(from, tab, m) {
        this.core.request(m.type, m.data, m.timeout).then((f) => {
            tab.post({ t: 'res', id: m.id, f });
            // The server does not echo a socket's own session.update back to it;
            // with one socket for many tabs, the other tabs would miss the change.
            // Read the session and tell them, as separate sockets would have heard.
            if (m.type === 'session.update' && this.tabs.size > 1) {
                this.core.request('session.get', undefined, m.timeout).then((g) => {
                    const s = g.data && g.data.session;
                    if (s && s.version > this.version) {
                        this.version = s.version;
                        this.fan({ k: 'frame', f: { type: 'session.updated', data: { session: s, source: 'websocket' } } }, from);
                    }
                }, () => { });
            }
        }, (e) => tab.post({ t: 'res', id: m.id, e: { code: e.code, message: e.message, frame: e.frame } }));
    }
    fan(ev, except) {
        if (ev.k === 'state')
            this.last = { s: ev.s, i: ev.i };
        if (ev.k === 'close')
            this.welcome = null;
        if (ev.k === 'frame') {
            const d = ev.f.data;
            if (ev.f.type === 'welcome')
                this.welcome = ev.f;
            if (d && d.session && typeof d.session.version === 'number') {
                this.version = d.session.version;
                // A tab that joins later is welcomed with the session as it is now.
                const w = this.welcome;
                if (w && w !== ev.f && w.data.session && w.data.session.id === d.session.id)
                    this.welcome = { ...w, data: { ...w.data, session: d.session } };
            }
        }
        for (const [id, tab] of this.tabs) {
            if (tab.on && id !== except)
                tab.post({ t: 'ev', ev });
        }
        // After a 4401 every tab must connect again on purpose.
        if (ev.k === 'unauth')
            for (const tab of this.tabs.values())
                tab.on = false;
    }
}
