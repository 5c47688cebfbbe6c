#!/usr/bin/env node
// Bundles src/ into dist/ with esbuild (see bundle.mjs for what stays an import), run by npm's
// `prepare` on every `npm install` / `npm ci`, so `spool` runs on plain node
// without the tsx loader: ~60 MiB less memory and no transpiling at start-up
// (bench: idle RSS 161 -> 97 MiB, upload 154-197 -> 213 MB/s).
// bin/spool.js falls back to running src/ through tsx whenever dist/ is
// missing or older than src/, so an edit never runs stale code.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundle } from './bundle.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist');
rmSync(outdir, { recursive: true, force: true });
// The embedded engine is a dynamic import: a separate chunk, loaded only when a model is configured.
await bundle({ entryPoints: [join(root, 'src', 'cli', 'main.ts'), join(root, 'src', 'app.ts')], outdir, outbase: join(root, 'src') });
