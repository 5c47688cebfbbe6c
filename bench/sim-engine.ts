// The simulated llama.cpp-like engine (test/helpers/sim-engine.ts) as a child
// process of the benchmark harness, so its CPU is not the harness's. Options
// come in SIM_ENGINE_OPTIONS (JSON); the parent can read and reset its stats.
import { pathToFileURL } from 'node:url';
import { startSimEngine, type SimEngineOptions } from '../test/helpers/sim-engine.ts';
import { serveParent } from './lib/child.ts';

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const options = JSON.parse(process.env.SIM_ENGINE_OPTIONS ?? '{}') as Partial<SimEngineOptions>;
  const engine = await startSimEngine(options);
  serveParent({ port: engine.port }, { stats: () => engine.stats(), reset: () => engine.reset() }, () => engine.close());
}
