// The SharedWorker that holds one socket for every tab of an origin. The
// Client loads it (module type) when `share` is on; it must be served from the
// same origin as the page, next to the library or where `share.worker` says.

import { CoreOptions } from './core.js';
import { Hub, ToHub } from './hub.js';

let hub: Hub | null = null;

(globalThis as any).onconnect = (e: MessageEvent) => {
  const port = e.ports[0];
  const post = (m: unknown) => port.postMessage(m);
  port.onmessage = (ev: MessageEvent) => {
    const m = ev.data as ToHub | { t: 'init'; o: CoreOptions };
    // The first tab's options make the hub; every tab of one worker asked for the same URL.
    if (m.t === 'init') hub = hub || new Hub(m.o);
    else if (hub) hub.receive(m, post);
  };
  port.start();
};
