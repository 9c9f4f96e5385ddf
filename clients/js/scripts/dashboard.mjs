// Copies the compiled library into the dashboard's embedded files, so that the
// Go build needs no Node: dashboard/static/sessionbridge/ is committed, and the
// test script fails when it differs from a fresh build of src/.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

const from = new URL('../dist/', import.meta.url);
const to = new URL('../../../dashboard/static/sessionbridge/', import.meta.url);
rmSync(to, { recursive: true, force: true });
mkdirSync(to, { recursive: true });
for (const f of readdirSync(from).filter((f) => f.endsWith('.js')).sort()) {
  const src = readFileSync(new URL(f, from), 'utf8');
  writeFileSync(new URL(f, to), '// Built from clients/js/src by `npm run build`; do not edit.\n' + src);
}
