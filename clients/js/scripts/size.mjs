// Prints the minified and gzipped size of each entry point, bundled with its
// imports as an application's bundler would, and fails above the budget.
import { buildSync } from 'esbuild';
import { gzipSync } from 'node:zlib';

const budget = 5 * 1024;
let over = false;
for (const entry of ['dist/index.js', 'dist/worker.js']) {
  const out = buildSync({ entryPoints: [entry], bundle: true, minify: true, format: 'esm', write: false, target: 'es2020' });
  const min = out.outputFiles[0].contents;
  const gz = gzipSync(min, { level: 9 }).length;
  console.log(`${entry}: ${min.length} B minified, ${gz} B minified and gzipped`);
  if (gz > budget) over = true;
}
if (over) {
  console.error(`over the budget of ${budget} B`);
  process.exit(1);
}
