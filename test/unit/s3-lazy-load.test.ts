// The AWS SDK must load only when blobs.kind is "s3": the embedded default's
// start-up time and idle memory may not pay for it. Bundles the entry points
// the way scripts/build.mjs does (in memory) and follows static imports only.
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import * as esbuild from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

it('no static import chain from the entry points reaches @aws-sdk; a dynamic one does', async () => {
  const result = await esbuild.build({
    entryPoints: [join(root, 'src', 'cli', 'main.ts'), join(root, 'src', 'app.ts')],
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outdir: join(root, 'dist-lazy-load-check'),
    outbase: join(root, 'src'),
    outExtension: { '.js': '.mjs' },
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const outputs = result.metafile.outputs;
  // Chunks behind a dynamic import count as entry points too; start from the two real ones.
  const entries = Object.keys(outputs).filter((path) => /src\/(cli\/main|app)\.ts$/.test(outputs[path].entryPoint ?? ''));
  assert.equal(entries.length, 2);

  const staticallyLoaded = new Set<string>();
  const pending = [...entries];
  while (pending.length > 0) {
    const path = pending.pop()!;
    if (staticallyLoaded.has(path)) continue;
    staticallyLoaded.add(path);
    for (const imported of outputs[path]?.imports ?? []) if (imported.kind === 'import-statement') pending.push(imported.path);
  }
  const awsStatic = [...staticallyLoaded].filter((path) => path.startsWith('@aws-sdk/'));
  assert.deepEqual(awsStatic, [], 'loaded at start-up');

  const everyImport = Object.values(outputs).flatMap((output) => output.imports.map((imported) => imported.path));
  assert.ok(everyImport.includes('@aws-sdk/client-s3'), 'the S3 store is still bundled, behind a dynamic import');
});
