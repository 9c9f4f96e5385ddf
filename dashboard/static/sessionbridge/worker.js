// Built from clients/js/src by `npm run build`; do not edit.
// The SharedWorker that holds one socket for every tab of an origin. The
// Client loads it (module type) when `share` is on; it must be served from the
// same origin as the page, next to the library or where `share.worker` says.
import { Hub } from './hub.js';
let hub = null;
globalThis.onconnect = (e) => {
    const port = e.ports[0];
    const post = (m) => port.postMessage(m);
    port.onmessage = (ev) => {
        const m = ev.data;
        // The first tab's options make the hub; every tab of one worker asked for the same URL.
        if (m.t === 'init')
            hub = hub || new Hub(m.o);
        else if (hub)
            hub.receive(m, post);
    };
    port.start();
};
