// The one esbuild configuration for everything that runs Spool from a bundle:
// dist/ (scripts/build.mjs, run on npm install) and the benchmark's Spool
// children (bench/run.ts), so the bench measures what ships.
//
// Pure-JS dependencies are bundled in: loaded as one file instead of ~1,000
// ESM modules they cost ~11 MiB less resident memory (bench: idle RSS
// 98 -> 87 MiB, which is what a 150 MB peak during a 100 MB upload and
// validation has to fit around). What cannot be bundled stays an import:
// native addons (better-sqlite3, node-llama-cpp, @napi-rs/*), pino (its
// transports start worker threads by file path), the optional pg-native,
// and the AWS SDK (large, and only loaded when S3 is configured).
import * as esbuild from 'esbuild';

export const EXTERNAL_PACKAGES = ['better-sqlite3', 'node-llama-cpp', '@node-llama-cpp/*', '@napi-rs/*', 'pino', 'pino-pretty', 'pg-native', '@aws-sdk/*', '@smithy/*'];

/** Bundles the entry points into ESM files under outdir; dynamic imports become chunks loaded on first use. */
export async function bundle({ entryPoints, outdir, outbase }) {
  await esbuild.build({
    entryPoints,
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: EXTERNAL_PACKAGES,
    // Bundled CommonJS packages call require() for Node built-ins; ESM has no require of its own.
    banner: { js: "import { createRequire as __spoolCreateRequire } from 'node:module'; const require = __spoolCreateRequire(import.meta.url);" },
    outdir,
    outbase,
    outExtension: { '.js': '.mjs' },
    logLevel: 'warning',
  });
}
