// The client against a scripted server that misbehaves on purpose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { Client } from '../dist/index.js';
import { next, record, until } from './helpers.mjs';

// fake starts an HTTP server on a loopback port whose /ws runs onSocket(ws,
// req) for every upgrade and whose other routes answer with onHTTP(req, res).
async function fake(t, { onSocket = () => {}, onHTTP = (req, res) => { res.statusCode = 404; res.end(); } } = {}) {
  const http = createServer(onHTTP);
  const wss = new WebSocketServer({ server: http, path: '/ws' });
  const upgrades = [];
  wss.on('connection', (ws, req) => {
    upgrades.push({ url: req.url, headers: req.headers });
    onSocket(ws, req, upgrades.length);
  });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    http.closeAllConnections();
    http.close(resolve);
  }));
  const base = `127.0.0.1:${http.address().port}`;
  return { http: 'http://' + base, ws: 'ws://' + base + '/ws', upgrades };
}

const welcome = (ws) => ws.send(JSON.stringify({ type: 'welcome', data: { connection_id: 'c1', auth: 'session', user_id: 'u', session: null, scopes: [], expires_at: null } }));

function client(t, opts) {
  const c = new Client({ WebSocket, ...opts });
  t.after(() => c.close());
  return c;
}

test('frames the client cannot parse are reported and skipped; unknown push types arrive as events', async (t) => {
  const srv = await fake(t, {
    onSocket(ws) {
      welcome(ws);
      ws.send('not json');
      ws.send('[1,2]');
      ws.send('{"no":"type"}');
      ws.send(Buffer.from([1, 2, 3]), { binary: true });
      ws.send(JSON.stringify({ type: 'chat.new', data: { text: 'hi' } }));
    },
  });
  const c = client(t, { url: srv.ws, token: 'tok' });
  const problems = record(c, ['problem']);
  const chat = next(c, 'chat.new');
  c.connect();
  const [data, frame] = await chat;
  assert.deepEqual(data, { text: 'hi' });
  assert.equal(frame.type, 'chat.new');
  assert.deepEqual(problems.map(([, p]) => p.kind), ['bad_frame', 'bad_frame', 'bad_frame', 'bad_frame']);
  assert.equal(c.state, 'open');
});

test('a listener that throws is reported and does not stop the others', async (t) => {
  const srv = await fake(t, { onSocket: (ws) => { welcome(ws); ws.send('{"type":"x.y"}'); } });
  const c = client(t, { url: srv.ws, token: 'tok' });
  const reported = [];
  globalThis.reportError = (e) => reported.push(e.message);
  t.after(() => { delete globalThis.reportError; });
  c.on('x.y', () => { throw new Error('listener bug'); });
  const second = next(c, 'x.y');
  c.connect();
  await second;
  assert.deepEqual(reported, ['listener bug']);
});

test('a request whose socket closes rejects at once with closed', async (t) => {
  const srv = await fake(t, {
    onSocket(ws) {
      welcome(ws);
      // Never answers; closes the socket when the request arrives.
      ws.on('message', () => ws.close(1011, 'oops'));
    },
  });
  const c = client(t, { url: srv.ws, token: 'tok', backoffBase: 10_000 });
  const welcomed = next(c, 'welcome');
  c.connect();
  await welcomed;
  await assert.rejects(c.request('slow', {}, { timeout: 60_000 }), (e) => e.code === 'closed');
});

test('the token goes in the Authorization header, never in the URL; tickets go in the URL', async (t) => {
  const srv = await fake(t, {
    onSocket: welcome,
    onHTTP(req, res) {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ ticket: 'tkt-' + req.method, expires_at: new Date().toISOString() }));
    },
  });
  const a = client(t, { url: srv.ws, token: 'secret-token' });
  let w = next(a, 'welcome');
  a.connect();
  await w;
  const b = client(t, { url: srv.ws, ticket: srv.http + '/auth/ws-ticket' });
  w = next(b, 'welcome');
  b.connect();
  await w;
  assert.equal(srv.upgrades[0].url, '/ws');
  assert.equal(srv.upgrades[0].headers.authorization, 'Bearer secret-token');
  assert.equal(srv.upgrades[1].url, '/ws?ticket=tkt-POST');
  assert.equal(srv.upgrades[1].headers.authorization, undefined);
});

test('a server that keeps refusing gets capped, jittered backoff', async (t) => {
  const srv = await fake(t, { onSocket: (ws) => ws.close(1011) });
  const c = client(t, { url: srv.ws, token: 'tok', backoffBase: 2, backoffMax: 16 });
  const delays = [];
  c.on('state', (s, i) => { if (s === 'reconnecting' && i.delay !== undefined) delays.push([i.attempt, i.delay]); });
  c.connect();
  await until('12 attempts', () => delays.length >= 12);
  c.close();
  for (const [attempt, delay] of delays) {
    // attempt counts this retry: its cap is base·2^(attempt-1), at most backoffMax.
    assert.ok(delay >= 0 && delay <= Math.min(16, 2 * 2 ** (attempt - 1)), `attempt ${attempt}: delay ${delay}`);
  }
  assert.deepEqual(delays.map(([a]) => a), delays.map((_, i) => i + 1), 'attempts count up');
  assert.ok(new Set(delays.slice(4).map(([, d]) => d)).size > 1, 'capped delays are jittered: ' + delays);
});

test('4429 waits at least rateLimitDelay; a 429 ticket answer waits for Retry-After', async (t) => {
  const srv = await fake(t, {
    onSocket: (ws) => ws.close(4429, 'rate_limited'),
    onHTTP(req, res) {
      res.statusCode = 429;
      res.setHeader('Retry-After', '7');
      res.end('{"error":"rate_limited","message":"slow down"}');
    },
  });
  const a = client(t, { url: srv.ws, token: 'tok', backoffBase: 1, rateLimitDelay: 4000 });
  const log = record(a, ['close']);
  let wait = next(a, 'state', (s, i) => s === 'reconnecting' && i.delay !== undefined);
  a.connect();
  assert.ok((await wait)[1].delay >= 4000);
  assert.deepEqual(log[0][1], { code: 4429, reason: 'rate_limited', reconnect: true });

  const b = client(t, { url: srv.ws, ticket: srv.http + '/auth/ws-ticket', backoffBase: 1 });
  const problem = next(b, 'problem');
  wait = next(b, 'state', (s, i) => s === 'reconnecting' && i.delay !== undefined);
  b.connect();
  assert.equal((await problem)[0].kind, 'ticket');
  assert.ok((await wait)[1].delay >= 7000);
  assert.equal(srv.upgrades.length, 1, 'no upgrade without a ticket');
});

test('timeouts reject; a late reply is dropped', async (t) => {
  let socket;
  const srv = await fake(t, { onSocket: (ws) => { socket = ws; welcome(ws); } });
  const c = client(t, { url: srv.ws, token: 'tok' });
  const welcomed = next(c, 'welcome');
  c.connect();
  await welcomed;
  const got = new Promise((resolve) => socket.once('message', (m) => resolve(JSON.parse(m))));
  await assert.rejects(c.request('slow', { a: 1 }, { timeout: 50 }), (e) => e.code === 'timeout');
  const req = await got;
  assert.deepEqual(req, { type: 'slow', id: req.id, data: { a: 1 } });
  const frames = record(c, ['frame', 'problem']);
  socket.send(JSON.stringify({ type: 'slow.result', id: req.id, data: {} }));
  socket.send(JSON.stringify({ type: 'after' }));
  await next(c, 'after');
  assert.deepEqual(frames.map(([k, f]) => k + ':' + f.type), ['frame:after']);
});

test('close() closes the socket and stays closed', async (t) => {
  const srv = await fake(t, { onSocket: welcome });
  const c = client(t, { url: srv.ws, token: 'tok' });
  const welcomed = next(c, 'welcome');
  c.connect();
  await welcomed;
  const log = record(c, ['state', 'close']);
  c.close();
  assert.equal(c.state, 'closed');
  await assert.rejects(c.request('ping'), (e) => e.code === 'not_connected');
  assert.deepEqual(log.map(([k, a]) => k + ':' + (a.code ?? a)), ['state:closed']);
});
