// The Hub that shares one socket between tabs, driven with the messages a tab
// sends, against a real server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Hub } from '../dist/hub.js';
import { startServer, until } from './helpers.mjs';

// tab returns a fake tab of hub: what it sends and everything it receives.
function tab(hub, name) {
  const got = [];
  const send = (m) => hub.receive({ ...m, tab: name }, (r) => got.push(r));
  const frames = () => got.filter((r) => r.t === 'ev' && r.ev.k === 'frame').map((r) => r.ev.f);
  const reply = (id) => got.find((r) => r.t === 'res' && r.id === id);
  return { got, send, frames, reply };
}

test('tabs share one socket, each gets its own replies and every event', async (t) => {
  const srv = await startServer(t);
  const s = await srv.session('alice', { theme: 'light' });
  const hub = new Hub({
    url: srv.ws, auth: 'token', token: s.token, WebSocket,
    refreshBefore: 60000, backoffBase: 500, backoffMax: 30000, rateLimitDelay: 5000, pauseWhenHidden: false,
  });
  const a = tab(hub, 'a');
  const b = tab(hub, 'b');
  a.send({ t: 'hello' });
  a.send({ t: 'on' });
  await until('welcome in tab a', () => a.frames().some((f) => f.type === 'welcome'));
  // A tab that joins later is welcomed at once with the open connection's welcome.
  b.send({ t: 'hello' });
  b.send({ t: 'on' });
  const wa = a.frames().find((f) => f.type === 'welcome');
  assert.deepEqual(b.frames().find((f) => f.type === 'welcome'), wa);
  assert.equal((await srv.connections()).length, 1);

  // Requests with the same id from two tabs: each tab gets its own reply.
  a.send({ t: 'req', id: '1', type: 'ping', timeout: 5000 });
  b.send({ t: 'req', id: '1', type: 'session.get', timeout: 5000 });
  await until('both replies', () => a.reply('1') && b.reply('1'));
  assert.equal(a.reply('1').f.type, 'pong');
  assert.equal(b.reply('1').f.type, 'session');
  assert.equal(a.got.filter((r) => r.t === 'res').length, 1);

  // A's update is acked to A only; B hears session.updated, as it would on its own socket.
  a.send({ t: 'req', id: '2', type: 'session.update', data: { data: { theme: 'dark' } }, timeout: 5000 });
  await until('session.updated in tab b', () => b.frames().some((f) => f.type === 'session.updated'));
  assert.equal(a.reply('2').f.type, 'ack');
  const upd = b.frames().find((f) => f.type === 'session.updated');
  assert.equal(upd.data.source, 'websocket');
  assert.deepEqual(upd.data.session.data, { theme: 'dark' });
  assert.equal(upd.data.session.version, a.reply('2').f.data.version);
  assert.ok(!a.frames().some((f) => f.type === 'session.updated'));

  // A third tab is welcomed with the session as it is now.
  const c = tab(hub, 'c');
  c.send({ t: 'hello' });
  c.send({ t: 'on' });
  const wc = c.frames().find((f) => f.type === 'welcome');
  assert.equal(wc.data.connection_id, wa.data.connection_id);
  assert.deepEqual(wc.data.session.data, { theme: 'dark' });
  c.send({ t: 'bye' });

  // A push reaches both tabs; an error of B's request goes to B only.
  assert.equal((await srv.admin('POST', '/api/v1/publish', { user_id: 'alice', data: 7 })).status, 202);
  await until('message in both tabs', () => [a, b].every((x) => x.frames().some((f) => f.type === 'message')));
  b.send({ t: 'req', id: '3', type: 'nope', timeout: 5000 });
  await until('error reply', () => b.reply('3'));
  assert.equal(b.reply('3').e.code, 'unknown_type');
  assert.equal(a.reply('3'), undefined);

  // The socket stays while one tab wants it, and closes with the last.
  a.send({ t: 'bye' });
  assert.equal((await srv.connections()).length, 1);
  b.send({ t: 'off' });
  await until('no connection left', async () => (await srv.connections()).length === 0);
});

test('a revoked session detaches every tab', async (t) => {
  const srv = await startServer(t);
  const s = await srv.session('alice');
  const hub = new Hub({
    url: srv.ws, auth: 'token', token: s.token, WebSocket,
    refreshBefore: 60000, backoffBase: 500, backoffMax: 30000, rateLimitDelay: 5000, pauseWhenHidden: false,
  });
  const tabs = [tab(hub, 'a'), tab(hub, 'b')];
  t.after(() => tabs[0].send({ t: 'off' }));
  for (const x of tabs) { x.send({ t: 'hello' }); x.send({ t: 'on' }); }
  await until('welcomes', () => tabs.every((x) => x.frames().some((f) => f.type === 'welcome')));
  assert.equal((await srv.admin('DELETE', '/api/v1/sessions/' + s.id)).status, 204);
  const unauth = (x) => x.got.find((r) => r.t === 'ev' && r.ev.k === 'unauth');
  await until('unauthenticated in both tabs', () => tabs.every(unauth));
  for (const x of tabs) assert.deepEqual(unauth(x).ev.u, { reason: 'session_revoked', code: 4401 });
  // Nothing more reaches a tab until it connects again on purpose.
  const before = tabs[1].got.length;
  tabs[0].send({ t: 'on' });
  await until('tab a reconnecting', () => tabs[0].got.some((r) => r.t === 'ev' && r.ev.k === 'state' && r.ev.s === 'connecting'));
  assert.equal(tabs[1].got.length, before);
});
