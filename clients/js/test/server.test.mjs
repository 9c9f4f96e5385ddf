// The client against a real `sessionbridge serve`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, connect as tcpConnect } from 'node:net';
import WebSocket from 'ws';
import { Client, ClientError } from '../dist/index.js';
import { JWT_SECRET, next, record, startRedis, startServer, until } from './helpers.mjs';

function client(t, opts) {
  const c = new Client({ WebSocket, ...opts });
  t.after(() => c.close());
  return c;
}

test('a session token connects; requests get their own replies and errors', async (t) => {
  const srv = await startServer(t);
  const s = await srv.session('alice', { theme: 'light' });
  const c = client(t, { url: srv.ws, token: s.token });
  const welcomed = next(c, 'welcome');
  c.connect();
  const [w, frame] = await welcomed;
  assert.equal(frame.type, 'welcome');
  assert.equal(w.auth, 'session');
  assert.equal(w.user_id, 'alice');
  assert.equal(w.session.id, s.id);
  assert.equal(c.state, 'open');
  assert.deepEqual(c.welcome, w);

  // Several requests in flight: each resolves with the reply of its own id.
  const [pong, got] = await Promise.all([c.request('ping'), c.session.get()]);
  assert.equal(pong.type, 'pong');
  assert.equal(got.id, s.id);
  assert.deepEqual(got.data, { theme: 'light' });

  const ack = await c.session.update({ theme: 'dark' }, { version: got.version });
  assert.equal(ack.version, got.version + 1);
  assert.deepEqual((await c.session.get()).data, { theme: 'dark' });

  // The error frame's code and message reject the request; the socket stays.
  await assert.rejects(c.session.update({ theme: 'x' }, { version: got.version }), (e) =>
    e instanceof ClientError && e.code === 'bad_request' && e.message === 'version conflict' && e.frame.type === 'error');
  await assert.rejects(c.request('no.such.type'), (e) => e.code === 'unknown_type');
  assert.equal((await c.request('ping')).type, 'pong');

  // The token went in the Authorization header only: never in a URL, never in the logs.
  assert.ok(!srv.logs().includes(s.token.split('.')[1]));
});

test('server pushes arrive as typed events', async (t) => {
  const srv = await startServer(t);
  const s = await srv.session('alice');
  const c = client(t, { url: srv.ws, token: s.token });
  const welcomed = next(c, 'welcome');
  c.connect();
  await welcomed;
  const frames = record(c, ['frame']);

  const msg = next(c, 'message');
  assert.equal((await srv.admin('POST', '/api/v1/publish', { user_id: 'alice', data: { text: 'hello' } })).status, 202);
  const [m] = await msg;
  assert.deepEqual(m, { data: { text: 'hello' } });

  const upd = next(c, 'session.updated');
  assert.equal((await srv.admin('PATCH', '/api/v1/sessions/' + s.id, { data: { plan: 'pro' } })).status, 200);
  const [u] = await upd;
  assert.equal(u.source, 'api');
  assert.deepEqual(u.session.data, { plan: 'pro' });
  // The frame tap saw both pushes, in order.
  assert.deepEqual(frames.map(([, f]) => f.type), ['message', 'session.updated']);
});

test('4401 ends the client with unauthenticated and no reconnect', async (t) => {
  const srv = await startServer(t);
  const s = await srv.session('alice');
  const c = client(t, { url: srv.ws, token: s.token });
  const welcomed = next(c, 'welcome');
  c.connect();
  await welcomed;
  const log = record(c, ['state', 'close', 'unauthenticated']);
  const gone = next(c, 'unauthenticated');
  assert.equal((await srv.admin('DELETE', '/api/v1/sessions/' + s.id)).status, 204);
  const [u] = await gone;
  assert.deepEqual(u, { reason: 'session_revoked', code: 4401 });
  assert.equal(c.state, 'closed');
  assert.deepEqual(log.map(([type, a]) => type === 'state' ? 'state:' + a : type === 'close' ? 'close:' + a.code + ':' + a.reconnect : type),
    ['close:4401:false', 'state:closed', 'unauthenticated']);
  await assert.rejects(c.request('ping'), (e) => e.code === 'not_connected');
  assert.equal((await srv.connections()).length, 0);
});

// A TCP relay between client and server, whose connections the test can cut
// as a network loss would.
async function relay(t, port) {
  const socks = new Set();
  const r = createServer((a) => {
    const b = tcpConnect(port, '127.0.0.1');
    socks.add(a).add(b);
    a.pipe(b).pipe(a);
    const end = () => { a.destroy(); b.destroy(); socks.delete(a); socks.delete(b); };
    a.on('error', end).on('close', end);
    b.on('error', end).on('close', end);
  });
  await new Promise((resolve) => r.listen(0, '127.0.0.1', resolve));
  t.after(() => { for (const s of socks) s.destroy(); r.close(); });
  return { port: r.address().port, cut: () => { for (const s of socks) s.destroy(); } };
}

test('tickets: a new one for every connect; the client reconnects after a network loss', async (t) => {
  const srv = await startServer(t);
  const s = await srv.session('alice');
  const net = await relay(t, srv.port);
  const tickets = [];
  const c = client(t, {
    url: `ws://127.0.0.1:${net.port}/ws`,
    getTicket: async () => { tickets.push(await srv.ticket(s.token)); return tickets.at(-1); },
    backoffBase: 50,
  });
  let welcomed = next(c, 'welcome');
  c.connect();
  const [first] = await welcomed;
  welcomed = next(c, 'welcome');
  const closed = next(c, 'close');
  net.cut();
  const [close] = await closed;
  assert.equal(close.code, 1006);
  assert.equal(close.reconnect, true);
  const [second] = await welcomed;
  assert.notEqual(second.connection_id, first.connection_id);
  assert.equal(second.session.id, s.id);
  // Tickets are single-use: the reconnect needed, and got, a fresh one.
  assert.equal(tickets.length, 2);
  assert.notEqual(tickets[0], tickets[1]);
});

test('a ticket refused with 401 ends the client with unauthenticated', async (t) => {
  const srv = await startServer(t);
  const s = await srv.session('alice');
  assert.equal((await srv.admin('DELETE', '/api/v1/sessions/' + s.id)).status, 204);
  const c = client(t, { url: srv.ws, getTicket: () => srv.ticket(s.token) });
  const gone = next(c, 'unauthenticated');
  c.connect();
  assert.deepEqual((await gone)[0], { reason: 'unauthorized', code: 401 });
  assert.equal(c.state, 'closed');
});

test('a node restart (1001) reconnects to the same session', async (t) => {
  const redis = await startRedis(t);
  const a = await startServer(t, { args: ['--redis-url', redis] });
  const s = await a.session('alice', { n: 1 });
  const c = client(t, { url: a.ws, token: s.token, backoffBase: 50, backoffMax: 200 });
  let welcomed = next(c, 'welcome');
  c.connect();
  const [first] = await welcomed;
  welcomed = next(c, 'welcome');
  const closed = next(c, 'close');
  const reconnecting = next(c, 'state', (st) => st === 'reconnecting');
  await a.stop();
  const [close] = await closed;
  assert.deepEqual(close, { code: 1001, reason: 'server_shutdown', reconnect: true });
  await reconnecting;
  // The node comes back at the same address; the session lives in Redis.
  await startServer(t, { port: a.port, args: ['--redis-url', redis] });
  const [second] = await welcomed;
  assert.notEqual(second.connection_id, first.connection_id);
  assert.equal(second.session.id, s.id);
  assert.deepEqual((await c.session.get()).data, { n: 1 });
});

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return body + '.' + createHmac('sha256', JWT_SECRET).update(body).digest('base64url');
}

test('a JWT connection is refreshed through the token callback before it expires', async (t) => {
  const srv = await startServer(t);
  const exps = [];
  const token = () => {
    const exp = Math.floor(Date.now() / 1000) + 3;
    exps.push(exp);
    return jwt({ sub: 'bob', exp, scope: 'ws:connect auth.refresh chat' });
  };
  const c = client(t, { url: srv.ws, token });
  const log = record(c, ['close', 'problem']);
  const welcomed = next(c, 'welcome');
  c.connect();
  const [w] = await welcomed;
  assert.equal(w.auth, 'jwt');
  assert.equal(w.user_id, 'bob');
  // Outlive the first token by a margin: only auth.refresh can keep the socket.
  await until('two refreshes and the first token expired', () => exps.length >= 3 && Date.now() > exps[0] * 1000 + 1500, 15000);
  assert.equal((await c.request('ping')).type, 'pong');
  assert.deepEqual(log, [], 'no close and no problem while refreshing');
  assert.equal(c.welcome.connection_id, w.connection_id);
});
