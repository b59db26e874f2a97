#!/usr/bin/env node
// Copies the pinned front-end libraries out of node_modules into static/vendor/,
// so the app serves them itself and never depends on a CDN at run time.
// Usage: npm ci && npm run vendor
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const destDir = join(root, "static", "vendor");

// [source under node_modules, destination under static/vendor, text the file must contain]
// dist/sse.js is the browser (IIFE) build that registers itself on the global `htmx`;
// dist/sse.esm.js would need a bundler, so it is deliberately not used.
const files = [
  ["htmx.org/dist/htmx.min.js", "htmx.min.js", "htmx"],
  ["htmx-ext-sse/dist/sse.js", "htmx-ext-sse.js", "defineExtension('sse'"],
  // The UMD build defines the global `Chart` without a bundler (training charts).
  ["chart.js/dist/chart.umd.min.js", "chart.umd.min.js", "Chart.js v4"],
];

function fail(message) {
  console.error(`vendor-static: ERROR: ${message}`);
  process.exit(1);
}

const missing = files
  .map(([src]) => join(root, "node_modules", src))
  .filter((p) => !existsSync(p) || !statSync(p).isFile());
if (missing.length > 0) {
  fail(
    `source file(s) missing:\n  ${missing.map((p) => relative(root, p)).join("\n  ")}\n` +
      "Run `npm ci` (or `npm install`) in the repository root first.",
  );
}

mkdirSync(destDir, { recursive: true });
for (const [src, dest, marker] of files) {
  const from = join(root, "node_modules", src);
  const to = join(destDir, dest);
  if (!readFileSync(from, "utf8").includes(marker)) {
    fail(`${relative(root, from)} does not look like the expected build (no "${marker}").`);
  }
  copyFileSync(from, to);
  console.log(`vendor-static: ${relative(root, from)} -> ${relative(root, to)} (${statSync(to).size} bytes)`);
}
