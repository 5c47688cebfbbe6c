#!/usr/bin/env node
// Runs the bundle that `npm install` builds (scripts/build.mjs) when it is at
// least as new as every source file; otherwise runs the TypeScript sources
// directly through tsx. Either way `npx spool` works right after install with
// no manual build step, and an edited source is never shadowed by a stale bundle.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bundle = join(root, 'dist', 'cli', 'main.mjs');

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

if (process.env.SPOOL_FROM_SOURCE !== '1' && existsSync(bundle) && statSync(bundle).mtimeMs >= newestMtime(join(root, 'src'))) {
  await import(bundle);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
