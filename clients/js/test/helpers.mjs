// Test helpers: a real `sessionbridge serve` (the binary named by
// SESSIONBRIDGE_BIN, else built here with go build), a private redis-server,
// and waiting for client events with a deadline.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ADMIN = 'client-test-admin-token';
export const JWT_SECRET = 'client-test-jwt-secret-of-at-least-32-bytes';
const repo = fileURLToPath(new URL('../../../', import.meta.url));

let built;
function binary(t) {
  if (process.env.SESSIONBRIDGE_BIN) return process.env.SESSIONBRIDGE_BIN;
  if (!built) {
    const dir = mkdtempSync(join(tmpdir(), 'sb-client-bin-'));
    built = join(dir, 'sessionbridge');
    execFileSync('go', ['build', '-o', built, './cmd/sessionbridge'], { cwd: repo, stdio: 'inherit' });
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return built;
}

/** A free loopback port (closed again at once). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts `sessionbridge serve` on a loopback port with the admin API, plain
 * HTTP cookies and a JWT secret; stops it when the test ends. args are added
 * to the command line.
 */
export async function startServer(t, { port = 0, args = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sb-client-'));
  const proc = spawn(binary(t), [
    'serve', '--addr', `127.0.0.1:${port}`, '--dev', '--admin-token', ADMIN, '--demo=false',
    '--users', join(dir, 'users.json'), '--jwt-secret', JWT_SECRET, '--jwt-leeway', '0',
    '--shutdown-grace', '5s', '--log-level', 'warn', ...args,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve({ code, sig })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start within 20 s: ' + stderr)), 20000);
    proc.stderr.on('data', (b) => {
      stderr += b;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code }) => reject(new Error(`server exited (${code}): ${stderr}`)));
  });
  const srv = {
    url,
    ws: url.replace(/^http/, 'ws') + '/ws',
    port: Number(new URL(url).port),
    logs: () => stderr,
    /** Stops the server with SIGTERM (it drains: sockets close 1001) and waits for it to exit. */
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
    /** Calls the admin API; returns {status, body}. */
    async admin(method, path, body) {
      const res = await fetch(url + path, {
        method,
        headers: { Authorization: 'Bearer ' + ADMIN, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    /** Creates a session of user through the admin API; returns {id, token}. */
    async session(user = 'alice', data = {}) {
      const r = await srv.admin('POST', '/api/v1/sessions', { user_id: user, data });
      if (r.status !== 201) throw new Error('creating a session: ' + r.status);
      return r.body;
    },
    /** A fresh single-use WebSocket ticket for a session token. */
    async ticket(token) {
      const res = await fetch(url + '/auth/ws-ticket', { method: 'POST', headers: { 'X-Session-Token': token } });
      if (!res.ok) {
        const e = new Error('ticket: ' + res.status);
        e.status = res.status;
        throw e;
      }
      return (await res.json()).ticket;
    },
    /** The live connections of a user, as the server counts them. */
    async connections(user = 'alice') {
      return (await srv.admin('GET', '/api/v1/connections?user_id=' + encodeURIComponent(user))).body.connections;
    },
  };
  t.after(async () => {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return srv;
}

/** Starts a private redis-server without persistence on a free port; stopped when the test ends. */
export async function startRedis(t) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sb-client-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('redis-server did not start: ' + out)), 20000);
    proc.on('error', (e) => reject(new Error('redis-server not found (scripts/test installs it): ' + e.message)));
    proc.stdout.on('data', (b) => {
      out += b;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  t.after(() => {
    proc.kill('SIGKILL');
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  });
  return `redis://127.0.0.1:${port}/0`;
}

/**
 * Resolves with the arguments of the next `type` event of client for which
 * pred holds; rejects after timeout ms.
 */
export function next(client, type, pred = () => true, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${timeout} ms`));
    }, timeout);
    const off = client.on(type, (...a) => {
      if (!pred(...a)) return;
      clearTimeout(timer);
      off();
      resolve(a);
    });
  });
}

/** Records every event of the given types, in order, as [type, ...args]. */
export function record(client, types) {
  const log = [];
  for (const type of types) client.on(type, (...a) => log.push([type, ...a]));
  return log;
}

/** Polls cond until it returns a truthy value or timeout ms pass. */
export async function until(what, cond, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 20));
  }
}
