// Compile-time tests of the published declarations (npm run build checks
// them with tsc): typed events take the right listeners, any other push type
// takes (data, frame), and a wrong listener for a typed event is an error.
import { Client, ClientError, type Frame, type Welcome } from '../dist/index.js';

const sb = new Client({ share: { worker: false }, pauseWhenHidden: true });
sb.on('welcome', (w: Welcome, f: Frame) => [w.connection_id, f.type]);
sb.on('session.updated', ({ session, source }) => [session.version, source]);
sb.on('unauthenticated', (u) => [u.reason, u.code]);
sb.on('state', (s, i) => [s, i.delay, i.paused]);
sb.on('chat.new', (d: { text: string }) => d.text);
const dynamic: string = 'any.type';
sb.on(dynamic, (d, f) => [d, f.type]);
const off = sb.on('close', (c) => c.reconnect);
off();
sb.session.update({ theme: 'dark' }, { version: 3 }).then((a) => a.version.toFixed());
sb.session.get().then((s) => s.data);
sb.request('x', {}, { timeout: 1 }).catch((e) => e instanceof ClientError && e.code.toUpperCase());
// @ts-expect-error a typed event with a wrong listener
sb.on('welcome', (w: number) => w);
// @ts-expect-error an option of the wrong type
new Client({ share: 'yes' });
