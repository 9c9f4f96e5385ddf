// sessionbridge dashboard: a reference client of the HTTP API (/auth/...) and,
// through the client library (clients/js, served at /sessionbridge/), of the
// WebSocket protocol (/ws). No framework and no build step of its own;
// everything the page knows comes from those two interfaces.
import { Client } from '/sessionbridge/index.js';

(() => {
  const LOG_CAP = 100;            // event log entries kept
  const POLL_MS = 10000;          // device list refresh while someone looks
  const ACTIVE_MS = 5 * 60000;    // stop polling after this long without input

  const $ = (id) => document.getElementById(id);

  // The page's connection. Tabs of this browser share one socket (a
  // SharedWorker, else a leader tab), so ten tabs cost the server one
  // connection; each tab still gets every event and its own replies.
  // Reconnects wait while the page is hidden or the browser offline.
  const sb = new Client({ share: true, pauseWhenHidden: true });

  const state = {
    session: null,        // public view of the current session
    pollTimer: 0,
    tickTimer: 0,
    expiringAt: null,     // Date from session.expiring, until the session changes
    lastInput: Date.now(),
    lastUser: '',         // user of the last session shown, to sign in again
    devicesBusy: false,
    devicesAgain: false,  // a refresh was asked for while one was in flight
    signingOut: false,    // a logout request is in flight
    keysBusy: false,
    keysAgain: false,     // a key list refresh was asked for while one was in flight
    keysNote: '',         // outcome of the last key action, shown with the list
    myUsage: null,        // refreshes the user's own usage panel, once made
  };

  // ---------- HTTP API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api calls the HTTP API on this origin. The browser sends the HttpOnly
  // sb_session cookie and, for state-changing methods, the Origin header the
  // server checks; the page never sees the token.
  async function api(method, path, body, contentType) {
    const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['Content-Type'] = contentType || 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'The server cannot be reached.');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const code = data && typeof data.error === 'string' ? data.error : 'http_' + res.status;
      const msg = data && typeof data.message === 'string' ? data.message : res.status + ' ' + res.statusText;
      const err = new ApiError(res.status, code, msg);
      const retry = parseInt(res.headers.get('Retry-After') || '', 10);
      if (retry > 0) err.retryAfter = retry;
      throw err;
    }
    return data;
  }

  // sessionOf accepts both {session: {...}} and a bare public view.
  function sessionOf(body) {
    if (body && typeof body === 'object' && body.session && typeof body.session === 'object') return body.session;
    if (body && typeof body === 'object' && typeof body.id === 'string') return body;
    return null;
  }

  // ---------- views ----------

  function show(view) {
    $('loading').hidden = true;
    $('signin').hidden = view !== 'signin';
    $('ended').hidden = view !== 'ended';
    $('app').hidden = view !== 'app';
    document.body.dataset.view = view;
  }

  function showSignin(message) {
    stopTimers();
    forgetKeys();
    forgetUsage();
    state.session = null;
    show('signin');
    applyTheme('system');
    setError(message || '');
    $('password').value = '';
    // After a session ended on this page, the same person most likely signs
    // in again: keep the name, ask for the password.
    if (state.lastUser) $('username').value = state.lastUser;
    (state.lastUser ? $('password') : $('username')).focus();
  }

  // showEnded shows why the session ended while the page was open. It closes
  // the page's client: only signing in again reconnects.
  function showEnded(title, detail) {
    sb.close();
    stopTimers();
    forgetKeys();
    forgetUsage();
    state.session = null;
    $('ended-title').textContent = title;
    $('ended-detail').textContent = detail;
    show('ended');
    $('signin-again').focus();
  }

  function showApp(session) {
    show('app');
    renderSession(session);
    startTimers();
    refreshDevices();
    refreshKeys();
    refreshMyUsage();
  }

  function setError(text) {
    $('signin-error').textContent = text;
  }

  // ---------- formatting ----------

  function fmtTime(iso) {
    const d = toDate(iso);
    return d ? d.toLocaleString() : '—';
  }

  function toDate(v) {
    if (!v) return null;
    const d = new Date(v);
    return isNaN(d.getTime()) || d.getFullYear() < 1971 ? null : d;
  }

  function fmtLeft(ms) {
    if (ms <= 0) return 'now';
    const s = Math.ceil(ms / 1000);
    if (s >= 3600) {
      const h = Math.floor(s / 3600);
      return 'in ' + h + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    }
    const m = Math.floor(s / 60);
    return 'in ' + m + ':' + String(s % 60).padStart(2, '0');
  }

  function clock(d) {
    return d.toLocaleTimeString(undefined, { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  }

  function deviceName(dev) {
    dev = dev || {};
    const browser = dev.browser || 'Unknown browser';
    const os = dev.os ? ' on ' + dev.os : '';
    const type = dev.device_type && dev.device_type !== 'unknown' ? ' (' + dev.device_type + ')' : '';
    return browser + os + type;
  }

  // ---------- current session ----------

  function renderSession(s) {
    if (!s) return;
    const prev = state.session;
    if (prev && s.id === prev.id && typeof s.version === 'number' && typeof prev.version === 'number' &&
        s.version < prev.version) {
      return; // a late answer must not undo a newer update
    }
    // A warning stands until the deadline really moved (activity extended
    // the idle deadline); the absolute deadline never moves.
    const deadline = deadlineOf(s);
    if (state.expiringAt && deadline && deadline.getTime() > state.expiringAt.getTime() + 1000) state.expiringAt = null;
    state.session = s;
    state.lastUser = s.user_id;
    const data = s.data && typeof s.data === 'object' ? s.data : {};
    const name = typeof data.display_name === 'string' && data.display_name ? data.display_name : '';
    $('s-user').textContent = name ? name + ' (' + s.user_id + ')' : s.user_id;
    $('s-id').textContent = s.id;
    $('s-device').textContent = deviceName(s.device);
    $('s-ip').textContent = (s.device && s.device.ip) || '—';
    $('s-created').textContent = fmtTime(s.created_at);
    $('s-seen').textContent = fmtTime(s.last_seen_at);
    $('s-expires').textContent = fmtTime(s.expires_at);
    $('s-absolute').textContent = fmtTime(s.absolute_expires_at);
    $('s-version').textContent = String(s.version);
    $('s-data').textContent = JSON.stringify(data, null, 2);
    applyPrefs(data);
    tick();
  }

  // deadlineOf is when s expires unless something extends it.
  function deadlineOf(s) {
    const idle = toDate(s.expires_at), abs = toDate(s.absolute_expires_at);
    if (!idle) return abs;
    if (!abs) return idle;
    return idle < abs ? idle : abs;
  }

  function applyPrefs(data) {
    const theme = data.theme === 'light' || data.theme === 'dark' ? data.theme : 'system';
    $('theme').value = theme;
    applyTheme(theme);
    const input = $('display-name');
    const name = typeof data.display_name === 'string' ? data.display_name : '';
    // Do not overwrite what the user is typing.
    if (document.activeElement !== input || input.dataset.saved === input.value) {
      input.value = name;
    }
    input.dataset.saved = name;
  }

  function applyTheme(theme) {
    if (theme === 'light' || theme === 'dark') document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
  }

  // tick refreshes the countdowns and the expiry warning once a second.
  function tick() {
    const s = state.session;
    if (!s) return;
    const now = Date.now();
    for (const [id, iso] of [['s-expires-in', s.expires_at], ['s-absolute-in', s.absolute_expires_at]]) {
      const el = $(id);
      const d = toDate(iso);
      if (!d) { el.textContent = ''; continue; }
      const left = d.getTime() - now;
      el.textContent = '(' + (left > 0 ? fmtLeft(left) : 'expired') + ')';
      el.classList.toggle('soon', left < 60000);
    }
    const banner = $('expiring');
    if (state.expiringAt) {
      const left = state.expiringAt.getTime() - now;
      $('expiring-text').textContent = left > 0
        ? 'This session expires ' + fmtLeft(left) + ' (at ' + state.expiringAt.toLocaleTimeString() + '). Sign in again afterwards to continue.'
        : 'This session is expiring now.';
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }

  // ---------- my devices ----------

  async function refreshDevices() {
    if (!state.session) return;
    // A list in flight may predate what asked for this refresh (the
    // welcome of this page's own socket): fetch again once it is in.
    if (state.devicesBusy) {
      state.devicesAgain = true;
      return;
    }
    state.devicesBusy = true;
    state.devicesAgain = false;
    try {
      const body = await api('GET', '/auth/sessions');
      const list = body && Array.isArray(body.sessions) ? body.sessions : Array.isArray(body) ? body : [];
      renderDevices(list);
      // The list carries the current session too, with deadlines that
      // activity may have moved since the page last read it.
      const cur = list.find((x) => x && state.session && x.id === state.session.id);
      if (cur) renderSession(cur);
      $('devices-msg').textContent = list.length === 1 ? 'Signed in on this device only.' : 'Signed in on ' + list.length + ' devices.';
    } catch (e) {
      if (e.status === 401) return sessionGone();
      $('devices-msg').textContent = 'Could not load devices: ' + e.message;
    } finally {
      state.devicesBusy = false;
      if (state.devicesAgain) refreshDevices();
    }
  }

  function renderDevices(list) {
    const ul = $('devices-list');
    const tpl = $('device-template');
    const cur = state.session ? state.session.id : '';
    list = list.slice().sort((a, b) => {
      const ac = a.current || a.id === cur, bc = b.current || b.id === cur;
      if (ac !== bc) return ac ? -1 : 1;
      return String(b.last_seen_at).localeCompare(String(a.last_seen_at));
    });
    const items = list.map((s) => {
      const li = tpl.content.firstElementChild.cloneNode(true);
      const current = s.current === true || s.id === cur;
      li.dataset.sessionId = s.id;
      li.dataset.current = String(current);
      const name = deviceName(s.device);
      li.querySelector('.device-name').textContent = name;
      li.querySelector('[data-testid=device-this]').hidden = !current;
      const n = typeof s.connections === 'number' ? s.connections : 0;
      const conns = li.querySelector('[data-testid=device-conns]');
      conns.textContent = n === 1 ? '1 live connection' : n + ' live connections';
      conns.dataset.count = String(n);
      const ip = (s.device && s.device.ip) || 'unknown IP';
      li.querySelector('[data-testid=device-meta]').textContent =
        ip + ' · signed in ' + fmtTime(s.created_at) + ' · last seen ' + fmtTime(s.last_seen_at);
      const btn = li.querySelector('[data-testid=device-revoke]');
      if (current) {
        btn.remove();
      } else {
        btn.setAttribute('aria-label', 'Revoke ' + name + ' (' + ip + ')');
        btn.addEventListener('click', () => revoke(s.id, btn));
      }
      return li;
    });
    ul.replaceChildren(...items);
  }

  async function revoke(id, btn) {
    btn.disabled = true;
    try {
      await api('DELETE', '/auth/sessions/' + encodeURIComponent(id));
      $('devices-msg').textContent = 'Device signed out.';
    } catch (e) {
      if (e.status === 401) return sessionGone();
      btn.disabled = false;
      $('devices-msg').textContent = 'Could not revoke: ' + e.message;
      return;
    }
    refreshDevices();
  }

  async function revokeOthers() {
    const btn = $('revoke-others');
    btn.disabled = true;
    try {
      const body = await api('POST', '/auth/sessions/revoke-others');
      const n = body && Array.isArray(body.revoked) ? body.revoked.length : body && typeof body.revoked === 'number' ? body.revoked : null;
      $('devices-msg').textContent = n === null ? 'Signed out everywhere else.' : 'Signed out ' + n + ' other ' + (n === 1 ? 'device.' : 'devices.');
    } catch (e) {
      if (e.status === 401) return sessionGone();
      $('devices-msg').textContent = 'Could not sign out other devices: ' + e.message;
    } finally {
      btn.disabled = false;
    }
    refreshDevices();
  }

  // ---------- usage ----------

  // The periods a usage panel switches between, as the usage routes'
  // steps: each step's default span is the period (an hour of minutes, a
  // day of hours, 30 days).
  const RANGES = {
    hour: { step: '1m', label: 'last hour' },
    day: { step: '1h', label: 'last day' },
    month: { step: '1d', label: 'last month' },
  };

  // The charts of a panel: two stacked series each (a, b), or one.
  const CHARTS = [
    { metric: 'frames', title: 'Frames', a: ['frames_in', 'in'], b: ['frames_out', 'out'], fmt: fmtCount },
    { metric: 'bytes', title: 'Bytes', a: ['bytes_in', 'in'], b: ['bytes_out', 'out'], fmt: fmtBytes },
    { metric: 'connections', title: 'Connections', a: ['peak_connections', 'most at once'], fmt: fmtCount, peak: true },
  ];

  const SVG = 'http://www.w3.org/2000/svg';
  const CHART_W = 300, CHART_H = 80;

  function fmtCount(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + ' G';
    if (n >= 1e6) return (n / 1e6).toFixed(1) + ' M';
    if (n >= 1e4) return (n / 1e3).toFixed(1) + ' k';
    return String(n);
  }

  function fmtBytes(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + ' GiB';
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
    return n + ' B';
  }

  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  // bucketLabel names a bucket for a bar's tooltip.
  function bucketLabel(iso, step) {
    const d = toDate(iso);
    if (!d) return '';
    if (step === '1d') return d.toLocaleDateString();
    if (step === '1h') return d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
    return clock(d);
  }

  // drawChart draws one chart of the points as plain SVG bars (series b
  // stacked on a). The SVG carries the totals in data attributes, and an
  // accessible description in its label.
  function drawChart(def, points, step, range) {
    const wrap = document.createElement('figure');
    wrap.className = 'chart';
    wrap.dataset.metric = def.metric;
    const h = document.createElement('h3');
    h.textContent = def.title;
    wrap.append(h);
    const val = (p, name) => (p && p.counts && typeof p.counts[name] === 'number' ? p.counts[name] : 0);
    let totalA = 0, totalB = 0, top = 0;
    for (const p of points) {
      const a = val(p, def.a[0]), b = def.b ? val(p, def.b[0]) : 0;
      totalA = def.peak ? Math.max(totalA, a) : totalA + a;
      totalB += b;
      top = Math.max(top, a + b);
    }
    const svg = svgEl('svg', { viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: 'none', role: 'img' });
    svg.dataset.testid = 'usage-chart';
    svg.dataset.metric = def.metric;
    svg.dataset.total = String(totalA + totalB);
    svg.dataset.points = String(points.length);
    const sumText = def.b
      ? `${def.fmt(totalA)} ${def.a[1]}, ${def.fmt(totalB)} ${def.b[1]}`
      : `${def.fmt(totalA)} ${def.a[1]}`;
    svg.setAttribute('aria-label', `${def.title}, ${range.label}: ${sumText}`);
    svg.append(svgEl('line', { class: 'axis', x1: 0, y1: CHART_H - 0.5, x2: CHART_W, y2: CHART_H - 0.5 }));
    const n = Math.max(points.length, 1);
    const slot = CHART_W / n;
    const scale = top > 0 ? (CHART_H - 4) / top : 0;
    points.forEach((p, i) => {
      const a = val(p, def.a[0]), b = def.b ? val(p, def.b[0]) : 0;
      if (a + b === 0) return;
      const g = svgEl('g');
      g.dataset.value = String(a + b);
      const title = svgEl('title');
      title.textContent = bucketLabel(p.start, step) + ': ' +
        (def.b ? `${def.fmt(a)} ${def.a[1]}, ${def.fmt(b)} ${def.b[1]}` : `${def.fmt(a)} ${def.a[1]}`);
      g.append(title);
      const x = i * slot + slot * 0.1, w = Math.max(slot * 0.8, 0.5);
      // At least a pixel, so that a small count next to a big one shows.
      const ha = a > 0 ? Math.max(a * scale, 1) : 0;
      const hb = b > 0 ? Math.max(b * scale, 1) : 0;
      if (ha) g.append(svgEl('rect', { class: 'bar-a', x, y: CHART_H - ha, width: w, height: ha }));
      if (hb) g.append(svgEl('rect', { class: 'bar-b', x, y: CHART_H - ha - hb, width: w, height: hb }));
      svg.append(g);
    });
    wrap.append(svg);
    const sum = document.createElement('figcaption');
    sum.className = 'chart-sum muted';
    const ka = document.createElement('span');
    ka.className = 'key-a';
    ka.textContent = `${def.fmt(totalA)} ${def.a[1]}`;
    sum.append(ka);
    if (def.b) {
      const kb = document.createElement('span');
      kb.className = 'key-b';
      kb.textContent = `${def.fmt(totalB)} ${def.b[1]}`;
      sum.append(' · ', kb);
    }
    wrap.append(sum);
    return wrap;
  }

  // mountUsage fills el with a usage panel reading path (/auth/usage or
  // /auth/keys/{id}/usage) and returns a function that refreshes it.
  function mountUsage(el, path) {
    const panel = $('usage-template').content.firstElementChild.cloneNode(true);
    el.replaceChildren(panel);
    let range = 'hour', busy = false, again = false;
    const buttons = panel.querySelectorAll('[data-range]');
    async function refresh() {
      if (!state.session) return;
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      again = false;
      const r = RANGES[range];
      panel.setAttribute('aria-busy', 'true');
      try {
        const body = await api('GET', path + '?step=' + r.step);
        const points = body && Array.isArray(body.points) ? body.points : [];
        panel.querySelector('[data-testid=usage-charts]').replaceChildren(...CHARTS.map((d) => drawChart(d, points, body.step, r)));
        const live = body && typeof body.live_connections === 'number' ? body.live_connections : 0;
        const badge = panel.querySelector('[data-testid=usage-live]');
        badge.textContent = live === 1 ? '1 live connection' : live + ' live connections';
        badge.dataset.count = String(live);
        const t = body && body.totals ? body.totals : {};
        const connects = t.connects || 0;
        let refused = 0;
        for (const [m, n] of Object.entries(t)) if (m.startsWith('connects_refused:')) refused += n;
        panel.querySelector('[data-testid=usage-msg]').textContent =
          `${fmtCount(connects)} ${connects === 1 ? 'connection' : 'connections'} opened` +
          (refused ? `, ${fmtCount(refused)} refused` : '') + ` in the ${r.label}.`;
        panel.dataset.range = range;
        panel.dataset.loaded = 'true';
      } catch (e) {
        if (e.status === 401) return sessionGone();
        panel.querySelector('[data-testid=usage-msg]').textContent =
          e.status === 404 ? 'Usage is not available here.' : 'Could not load usage: ' + e.message;
      } finally {
        panel.removeAttribute('aria-busy');
        busy = false;
        if (again) refresh();
      }
    }
    for (const b of buttons) {
      b.addEventListener('click', () => {
        range = b.dataset.range;
        for (const x of buttons) x.setAttribute('aria-pressed', String(x === b));
        refresh();
      });
    }
    refresh();
    return refresh;
  }

  // refreshMyUsage loads the signed-in user's own panel, making it first.
  function refreshMyUsage() {
    if (!state.session) return;
    if (!state.myUsage) state.myUsage = mountUsage($('usage-me'), '/auth/usage');
    else state.myUsage();
  }

  function forgetUsage() {
    state.myUsage = null;
    $('usage-me').replaceChildren();
  }

  // ---------- API keys ----------

  // A new key is shown once, in the read-only field of the key-new panel,
  // until the user dismisses it or leaves; it is never kept anywhere else.
  function showNewKey(key, what) {
    $('key-new-title').textContent = what + ' Copy it now: it will not be shown again.';
    $('key-new-value').value = key;
    $('key-new').hidden = false;
    $('key-new-value').focus();
    $('key-new-value').select();
  }

  function hideNewKey() {
    $('key-new-value').value = '';
    $('key-new').hidden = true;
  }

  function forgetKeys() {
    hideNewKey();
    $('keys-list').replaceChildren();
    $('keys-msg').textContent = '';
  }

  async function copyNewKey() {
    const input = $('key-new-value');
    input.focus();
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      $('keys-msg').textContent = 'Key copied to the clipboard.';
    } catch (e) {
      // No clipboard permission: the key is selected, ready for Ctrl+C.
      $('keys-msg').textContent = 'Copying was refused by the browser: the key is selected, copy it with the keyboard.';
    }
  }

  // refreshKeys reloads the list; note, when given, is shown instead of the
  // count (the outcome of the action that asked for the refresh).
  async function refreshKeys(note) {
    if (!state.session) return;
    if (typeof note === 'string') state.keysNote = note;
    if (state.keysBusy) {
      state.keysAgain = true;
      return;
    }
    state.keysBusy = true;
    state.keysAgain = false;
    try {
      const body = await api('GET', '/auth/keys');
      const list = body && Array.isArray(body.keys) ? body.keys : [];
      renderKeys(list);
      $('keys-msg').textContent = state.keysNote ||
        (list.length === 0 ? 'No API keys yet.' : list.length === 1 ? '1 API key.' : list.length + ' API keys.');
      state.keysNote = '';
    } catch (e) {
      if (e.status === 401) return sessionGone();
      $('keys-msg').textContent = e.status === 404 ? 'API keys are not enabled on this server.' : 'Could not load API keys: ' + e.message;
    } finally {
      state.keysBusy = false;
      if (state.keysAgain) refreshKeys();
    }
  }

  function renderKeys(list) {
    const tpl = $('key-template');
    const now = Date.now();
    list = list.slice().sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    const items = list.map((k) => {
      const li = tpl.content.firstElementChild.cloneNode(true);
      li.dataset.keyId = k.id;
      li.querySelector('.key-label').textContent = k.name;
      li.querySelector('.key-id').textContent = k.id;
      const expires = toDate(k.expires_at);
      const expired = expires !== null && expires.getTime() <= now;
      li.dataset.expired = String(expired);
      li.querySelector('[data-testid=key-expired]').hidden = !expired;
      const scopes = Array.isArray(k.scopes) && k.scopes.length ? k.scopes.join(' ') : '(no scopes)';
      li.querySelector('[data-testid=key-scopes-shown]').textContent = 'Scopes: ' + scopes;
      const used = toDate(k.last_used_at);
      li.querySelector('[data-testid=key-meta]').textContent =
        'created ' + fmtTime(k.created_at) +
        ' · ' + (expires ? (expired ? 'expired ' : 'expires ') + fmtTime(k.expires_at) : 'never expires') +
        ' · ' + (used ? 'last used ' + fmtTime(k.last_used_at) + (k.last_ip ? ' from ' + k.last_ip : '') : 'never used');
      const roll = li.querySelector('[data-testid=key-roll]');
      const revoke = li.querySelector('[data-testid=key-revoke]');
      roll.setAttribute('aria-label', 'Roll key ' + k.name);
      revoke.setAttribute('aria-label', 'Revoke key ' + k.name);
      if (expired) roll.remove();
      else roll.addEventListener('click', () => rollKey(k, roll));
      // A key's usage loads when its panel is first opened.
      const details = li.querySelector('[data-testid=key-usage]');
      details.addEventListener('toggle', () => {
        if (!details.open) return;
        if (details.refresh) details.refresh();
        else details.refresh = mountUsage(details.querySelector('.key-usage-body'), '/auth/keys/' + encodeURIComponent(k.id) + '/usage');
      });
      revoke.addEventListener('click', () => revokeKey(k, revoke));
      return li;
    });
    $('keys-list').replaceChildren(...items);
  }

  async function createKey(ev) {
    ev.preventDefault();
    const name = $('key-name').value.trim();
    if (!name) {
      $('keys-msg').textContent = 'Give the key a name.';
      $('key-name').focus();
      return;
    }
    const scopes = $('key-scopes').value.split(/[\s,]+/).filter(Boolean);
    const ttl = parseInt($('key-ttl').value, 10) || 0;
    const btn = $('key-create');
    btn.disabled = true;
    hideNewKey();
    try {
      const body = await api('POST', '/auth/keys', { name, scopes, ttl_seconds: ttl });
      $('key-name').value = '';
      showNewKey(body.key, 'Key "' + body.name + '" created.');
      refreshKeys('Key "' + body.name + '" created.');
    } catch (e) {
      if (e.status === 401) return sessionGone();
      $('keys-msg').textContent = 'Could not create the key: ' + e.message;
    } finally {
      btn.disabled = false;
    }
  }

  // Rolling keeps the old key working for an hour, so that programs using
  // it can switch to the new one.
  const ROLL_GRACE_SECONDS = 3600;

  async function rollKey(k, btn) {
    btn.disabled = true;
    hideNewKey();
    try {
      const body = await api('POST', '/auth/keys/' + encodeURIComponent(k.id) + '/roll', { grace_seconds: ROLL_GRACE_SECONDS });
      showNewKey(body.key, 'Key "' + k.name + '" rolled; the old one keeps working for an hour at most.');
    } catch (e) {
      if (e.status === 401) return sessionGone();
      btn.disabled = false;
      $('keys-msg').textContent = 'Could not roll the key: ' + e.message;
      return;
    }
    refreshKeys('Key "' + k.name + '" rolled.');
  }

  async function revokeKey(k, btn) {
    btn.disabled = true;
    try {
      await api('DELETE', '/auth/keys/' + encodeURIComponent(k.id));
    } catch (e) {
      if (e.status === 401) return sessionGone();
      btn.disabled = false;
      $('keys-msg').textContent = 'Could not revoke the key: ' + e.message;
      return;
    }
    refreshKeys('Key "' + k.name + '" revoked.');
  }

  // ---------- preferences ----------

  async function saveTheme() {
    const theme = $('theme').value;
    applyTheme(theme);
    const patch = { theme: theme === 'system' ? null : theme };
    $('prefs-msg').textContent = 'Saving theme…';
    try {
      if (sb.state === 'open') {
        // The ack carries the new version only (the other sockets of the
        // session get session.updated), so read the session back.
        await request('session.update', { data: patch });
        const reply = await request('session.get');
        const s = reply && reply.data ? sessionOf(reply.data) : null;
        if (s) renderSession(s);
      } else {
        renderSession(sessionOf(await api('PATCH', '/auth/session', patch, 'application/merge-patch+json')));
      }
      $('prefs-msg').textContent = 'Theme saved.';
    } catch (e) {
      if (e.status === 401) return sessionGone();
      $('prefs-msg').textContent = 'Could not save the theme: ' + e.message;
    }
  }

  async function saveName(ev) {
    ev.preventDefault();
    const input = $('display-name');
    const name = input.value.trim();
    const btn = $('display-name-save');
    btn.disabled = true;
    $('prefs-msg').textContent = 'Saving display name…';
    try {
      const body = await api('PATCH', '/auth/session', { display_name: name || null }, 'application/merge-patch+json');
      input.dataset.saved = name;
      renderSession(sessionOf(body));
      $('prefs-msg').textContent = 'Display name saved.';
    } catch (e) {
      if (e.status === 401) return sessionGone();
      $('prefs-msg').textContent = 'Could not save the display name: ' + e.message;
    } finally {
      btn.disabled = false;
    }
  }

  // ---------- WebSocket ----------

  function setStatus(st, text) {
    const el = $('ws-status');
    el.dataset.state = st;
    el.textContent = text;
  }

  // request sends a frame on the page's socket and resolves with its reply.
  function request(type, data) {
    logEntry(type, data === undefined ? { type } : { type, data }, 'out');
    return sb.request(type, data);
  }

  // Every frame this tab receives (pushes, and the replies to its requests).
  sb.on('frame', (f) => logEntry(f.type, f, 'in'));

  sb.on('state', (st, info) => {
    if (state.signingOut) return;
    switch (st) {
      case 'connecting':
        setStatus('connecting', 'Connecting…');
        break;
      case 'reconnecting':
        if (info.paused) setStatus('reconnecting', info.paused === 'offline' ? 'Offline · waiting for the network' : 'Paused while the page is hidden');
        else if (info.delay !== undefined) setStatus('reconnecting', 'Reconnecting in ' + Math.ceil(info.delay / 1000) + ' s (attempt ' + info.attempt + ')');
        else setStatus('reconnecting', 'Connecting…');
        break;
      case 'closed':
        setStatus('closed', 'Disconnected');
        break;
      // 'open' shows with the welcome, which names the connection.
    }
  });

  sb.on('welcome', (w) => {
    setStatus('open', 'Live · connection ' + (w.connection_id || '?'));
    if (sessionOf(w)) renderSession(sessionOf(w));
    refreshDevices();
  });

  sb.on('session.updated', (d) => {
    renderSession(sessionOf(d));
    refreshDevices();
  });

  sb.on('session.expiring', (d) => {
    const at = toDate(d.expires_at);
    if (at) {
      state.expiringAt = at;
      tick();
    }
  });

  // An error frame without an id answers no request of this page.
  sb.on('error', (d) => {
    $('prefs-msg').textContent = 'Server error: ' + (d.message || d.code || 'unknown');
  });

  sb.on('close', (c) => logEntry('close', { code: c.code, reason: c.reason }, 'in', 'close'));

  sb.on('problem', (p) => logEntry('problem', p, 'in'));

  // Why the session ended, for the person looking at the page. The library
  // does not reconnect after these; only signing in again does.
  const ENDED = {
    session_revoked: ['Signed out (revoked)', 'This session was signed out from another device or by an administrator.'],
    session_expired: ['Session expired', 'This session reached its time limit.'],
    token_expired: ['Session expired', 'The token this page used has expired.'],
    api_key_revoked: ['Signed out (key revoked)', 'The API key this page used was revoked.'],
    // A refused upgrade, after which GET /auth/session answered 401.
    unauthorized: ['Signed out', 'This session is no longer valid.'],
  };

  sb.on('unauthenticated', ({ reason }) => {
    // Signing out closes this page's socket too (4401): expected, not news.
    if (state.signingOut || !state.session) return;
    const [title, detail] = ENDED[reason] || ['Signed out', 'The server ended this session (' + (reason || 'no reason given') + ').'];
    showEnded(title, detail);
    setStatus('closed', 'Closed · ' + title);
  });

  // sessionGone handles an HTTP 401 while signed in: the session ended
  // without this page's socket telling why.
  function sessionGone() {
    if (!state.session) return;
    showEnded('Signed out', 'This session is no longer valid.');
    setStatus('closed', 'Signed out');
  }

  // ---------- event log ----------

  function logEntry(type, payload, dir, kind) {
    const ol = $('event-log');
    const li = $('log-template').content.firstElementChild.cloneNode(true);
    const now = new Date();
    const t = li.querySelector('.log-time');
    t.dateTime = now.toISOString();
    t.textContent = clock(now);
    li.querySelector('.log-type').textContent = (dir === 'out' ? '→ ' : '← ') + type;
    let body = typeof payload === 'string' ? payload : JSON.stringify(payload);
    if (body.length > 4000) body = body.slice(0, 4000) + '…';
    li.querySelector('.log-body').textContent = body;
    li.dataset.type = type;
    li.dataset.dir = dir;
    if (kind) li.dataset.kind = kind;
    ol.prepend(li);
    while (ol.children.length > LOG_CAP) ol.lastElementChild.remove();
  }

  // ---------- timers ----------

  function startTimers() {
    stopTimers();
    state.tickTimer = setInterval(tick, 1000);
    // Polling keeps the connection counts fresh, but only while somebody is
    // looking: requests extend the session, and an abandoned tab must not
    // keep it alive.
    state.pollTimer = setInterval(() => {
      if (document.visibilityState === 'visible' && Date.now() - state.lastInput < ACTIVE_MS) {
        refreshDevices();
        refreshMyUsage();
      }
    }, POLL_MS);
  }

  function stopTimers() {
    clearInterval(state.tickTimer);
    clearInterval(state.pollTimer);
    state.tickTimer = state.pollTimer = 0;
    state.expiringAt = null;
    $('expiring').hidden = true;
  }

  // ---------- actions ----------

  function startSession(session) {
    state.lastInput = Date.now();
    showApp(session);
    sb.connect();
  }

  async function signIn(ev) {
    ev.preventDefault();
    const username = $('username').value.trim();
    const password = $('password').value;
    if (!username || !password) {
      setError('Enter your username and password.');
      (username ? $('password') : $('username')).focus();
      return;
    }
    const btn = $('signin-submit');
    btn.disabled = true;
    setError('');
    try {
      const body = await api('POST', '/auth/login', { username, password });
      $('password').value = '';
      let s = sessionOf(body);
      if (!s) s = sessionOf(await api('GET', '/auth/session'));
      if (!s) throw new ApiError(0, 'bad_answer', 'The server answered without a session.');
      startSession(s);
      $('main').focus();
    } catch (e) {
      $('password').value = '';
      if (e.status === 401) setError('Wrong username or password.');
      else if (e.status === 429) {
        setError('Too many attempts. ' + (e.retryAfter
          ? 'Try again in ' + fmtLeft(e.retryAfter * 1000).replace(/^in /, '') + '.'
          : 'Wait a moment and try again.'));
      }
      else if (e.status === 503) setError('The server is unavailable right now. Try again shortly.');
      else setError('Sign-in failed: ' + e.message);
      $('password').focus();
    } finally {
      btn.disabled = false;
    }
  }

  async function signOut() {
    const btn = $('signout');
    btn.disabled = true;
    $('session-msg').textContent = '';
    // The server closes this page's socket too (4401): that close is
    // expected, not news to show.
    state.signingOut = true;
    try {
      await api('POST', '/auth/logout');
    } catch (e) {
      if (e.status !== 401) {
        // Not signed out (the store may be unreachable): the cookie is kept,
        // so stay and let the user retry.
        state.signingOut = false;
        btn.disabled = false;
        $('session-msg').textContent = 'Could not sign out: ' + e.message;
        sb.connect();
        return;
      }
    }
    state.signingOut = false;
    btn.disabled = false;
    sb.close();
    setStatus('idle', 'Not connected');
    showSignin('');
  }

  async function boot() {
    $('signin-form').addEventListener('submit', signIn);
    $('signin-again').addEventListener('click', () => { setStatus('idle', 'Not connected'); showSignin(''); });
    $('signout').addEventListener('click', signOut);
    $('revoke-others').addEventListener('click', revokeOthers);
    $('devices-refresh').addEventListener('click', refreshDevices);
    $('keys-refresh').addEventListener('click', () => refreshKeys());
    $('usage-refresh').addEventListener('click', refreshMyUsage);
    $('key-form').addEventListener('submit', createKey);
    $('key-copy').addEventListener('click', copyNewKey);
    $('key-dismiss').addEventListener('click', hideNewKey);
    $('theme').addEventListener('change', saveTheme);
    $('name-form').addEventListener('submit', saveName);
    $('log-clear').addEventListener('click', () => $('event-log').replaceChildren());
    $('ping').addEventListener('click', () => {
      request('ping').catch((e) => logEntry('ping failed', e.message, 'out'));
    });
    for (const t of ['pointerdown', 'keydown']) {
      document.addEventListener(t, () => { state.lastInput = Date.now(); }, { passive: true });
    }
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && state.session) refreshDevices();
    });

    try {
      const s = sessionOf(await api('GET', '/auth/session'));
      if (s) startSession(s);
      else showSignin('');
    } catch (e) {
      showSignin(e.status === 401 ? '' : 'Could not check your session: ' + e.message);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
