// deploy/kubernetes cannot be applied here (no cluster), so it is checked
// against Spool itself: every manifest parses; every SPOOL_* variable a pod
// gets (its own env, the values ConfigMap, the Secret's documented keys) is a
// setting and the whole environment loads without a warning; probes and
// scrape annotations point at ports the containers open and paths that answer
// on a real `spool serve --no-worker` and `spool worker` started with that
// environment (only the database, bucket, host and ports swapped for local
// ones); grace periods cover Spool's own stop; selectors match.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../helpers/ports.ts';
import { after, describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { CONFIG_ENV_ALIASES, configEnvBindings, loadConfig } from '../../src/config.ts';
import { cleanupAll, createPostgresDatabase, makeTempDir, REPO_ROOT, SKIP_POSTGRES, spawnSpool, type Json } from '../helpers/runner-harness.ts';
import { startS3rver } from '../helpers/s3rver.ts';

after(cleanupAll);

const DIR = join(REPO_ROOT, 'deploy', 'kubernetes');

function loadYaml(path: string): Json[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  for (const doc of docs) assert.deepEqual(doc.errors, [], `${path} parses`);
  return docs.map((doc) => doc.toJSON() as Json).filter(Boolean);
}

/** A kustomization's resources, recursively (a directory means its own kustomization.yaml). */
function loadKustomization(dir: string): { kustomization: Json; objects: Json[] } {
  const [kustomization] = loadYaml(join(dir, 'kustomization.yaml'));
  const objects: Json[] = [];
  for (const resource of kustomization.resources as string[]) {
    if (resource.endsWith('.yaml')) objects.push(...loadYaml(join(dir, resource)));
    else objects.push(...loadKustomization(join(dir, resource)).objects);
  }
  return { kustomization, objects };
}

function readEnvFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    const eq = line.indexOf('=');
    assert.ok(eq > 0, `${path}: "${line}" is KEY=VALUE`);
    out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

const base = loadKustomization(DIR);
const values = readEnvFile(join(DIR, (base.kustomization.configMapGenerator as Json[]).find((g) => g.name === 'spool-values')!.envs[0]));
const secrets = readEnvFile(join(DIR, 'secrets.example.env'));
const deployments = base.objects.filter((o) => o.kind === 'Deployment');
const byName = (name: string) => deployments.find((d) => d.metadata.name === name)!;

/** What the container's process sees: envFrom sources in order, then its own env. */
function podEnvironment(deployment: Json): Record<string, string> {
  const container = deployment.spec.template.spec.containers[0];
  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef) {
      assert.equal(source.configMapRef.name, 'spool-values', 'the generated ConfigMap');
      Object.assign(env, values);
    } else if (source.secretRef) {
      assert.equal(source.secretRef.name, 'spool-secrets', 'the Secret secrets.example.env documents');
      Object.assign(env, secrets);
    }
  }
  for (const entry of container.env ?? []) env[entry.name] = entry.value;
  return env;
}

function containerPort(deployment: Json, port: string | number): number {
  const container = deployment.spec.template.spec.containers[0];
  if (typeof port === 'number') return port;
  const found = (container.ports as Json[]).find((p) => p.name === port);
  assert.ok(found, `${deployment.metadata.name}: port "${port}" is a container port`);
  return found.containerPort;
}

describe('Kubernetes manifests (deploy/kubernetes)', () => {
  it('are an API and a worker Deployment, a Service, PodDisruptionBudgets, with service links off', () => {
    assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), ['spool-api', 'spool-worker']);
    for (const deployment of deployments) {
      assert.equal(deployment.spec.template.spec.enableServiceLinks, false, `${deployment.metadata.name}: enableServiceLinks: false`);
      assert.deepEqual(deployment.spec.selector.matchLabels, pick(deployment.spec.template.metadata.labels, Object.keys(deployment.spec.selector.matchLabels)));
    }
    const service = base.objects.find((o) => o.kind === 'Service')!;
    const api = byName('spool-api');
    assert.deepEqual(service.spec.selector, pick(api.spec.template.metadata.labels, Object.keys(service.spec.selector)), 'the Service selects the API pods');
    assert.notDeepEqual(service.spec.selector, pick(byName('spool-worker').spec.template.metadata.labels, Object.keys(service.spec.selector)), 'and not the workers');
    for (const port of service.spec.ports) containerPort(api, port.targetPort);
    const budgets = base.objects.filter((o) => o.kind === 'PodDisruptionBudget');
    for (const deployment of deployments) {
      const labels = deployment.spec.template.metadata.labels;
      assert.ok(
        budgets.some((b) => Object.entries(b.spec.selector.matchLabels).every(([k, v]) => labels[k] === v)),
        `${deployment.metadata.name} has a PodDisruptionBudget`,
      );
    }
  });

  it('every SPOOL_* variable a pod gets is a setting, and each pod environment loads without a warning', () => {
    const settings = new Set([...configEnvBindings().keys(), ...Object.keys(CONFIG_ENV_ALIASES)]);
    for (const deployment of deployments) {
      const env = podEnvironment(deployment);
      for (const name of Object.keys(env)) assert.ok(settings.has(name), `${deployment.metadata.name}: ${name} is a Spool setting`);
      const warnings: string[] = [];
      const config = loadConfig({ env, warn: (message) => warnings.push(message) });
      assert.deepEqual(warnings, [], `${deployment.metadata.name}: no variable is ignored`);
      assert.equal(config.blobs.kind, 's3', 'bytes in the bucket, shared by every pod');
      assert.match(config.databaseUrl ?? '', /^postgres:\/\//, 'metadata in PostgreSQL');
    }
  });

  it("probes and scrape annotations point at the ports Spool listens on; grace periods cover Spool's stop", () => {
    for (const deployment of deployments) {
      const name = deployment.metadata.name;
      const config = loadConfig({ env: podEnvironment(deployment), warn: () => undefined });
      const args: string[] = deployment.spec.template.spec.containers[0].args;
      // The API serves probes and metrics on its port; a worker has no API and serves them on metrics.workerPort.
      const listens = args[0] === 'worker' ? config.metrics.workerPort : config.port;
      assert.ok(listens, `${name}: Spool listens somewhere`);
      const container = deployment.spec.template.spec.containers[0];
      assert.equal(containerPort(deployment, container.livenessProbe.httpGet.port), listens, `${name}: liveness probe port`);
      assert.equal(containerPort(deployment, container.readinessProbe.httpGet.port), listens, `${name}: readiness probe port`);
      assert.equal(container.livenessProbe.httpGet.path, '/healthz');
      assert.equal(container.readinessProbe.httpGet.path, '/readyz');
      const annotations = deployment.spec.template.metadata.annotations;
      assert.equal(Number(annotations['prometheus.io/port']), listens, `${name}: scrape port`);
      assert.equal(annotations['prometheus.io/path'], '/metrics');
      assert.equal(config.host, '0.0.0.0', `${name}: reachable from the kubelet and Prometheus`);
      // HTTP requests in flight, then real-time ones, each get the grace; then the store closes.
      const grace = config.worker.shutdownGraceSeconds;
      assert.ok(deployment.spec.template.spec.terminationGracePeriodSeconds >= 2 * grace + 10, `${name}: terminationGracePeriodSeconds >= 2 x ${grace} + 10`);
    }
  });

  it('the Prometheus overlay adds monitors that scrape named ports with the admin key', () => {
    const overlay = loadKustomization(join(DIR, 'prometheus'));
    const service = overlay.objects.find((o) => o.kind === 'Service')!;
    const serviceMonitor = overlay.objects.find((o) => o.kind === 'ServiceMonitor')!;
    const podMonitor = overlay.objects.find((o) => o.kind === 'PodMonitor')!;
    for (const endpoint of serviceMonitor.spec.endpoints) {
      assert.ok(service.spec.ports.some((p: Json) => p.name === endpoint.port), `ServiceMonitor port ${endpoint.port} is a Service port`);
      assert.equal(endpoint.authorization.credentials.key, 'SPOOL_ADMIN_KEY');
    }
    const worker = overlay.objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'spool-worker')!;
    for (const endpoint of podMonitor.spec.podMetricsEndpoints) containerPort(worker, endpoint.port);
    assert.ok(Object.keys(secrets).includes('SPOOL_ADMIN_KEY'));
  });

  it('spool serve --no-worker and spool worker, started as the Deployments start them, answer their probes', { skip: SKIP_POSTGRES ? 'SPOOL_TEST_SKIP_POSTGRES=1' : false }, async () => {
    const s3 = await startS3rver();
    after(() => s3.close());
    const bucket = await s3.createBucket('spool-k8s');
    const local = s3.storeOptions(bucket);
    const databaseUrl = await createPostgresDatabase();
    for (const deployment of deployments) {
      const env = podEnvironment(deployment);
      // Local stand-ins for what the cluster would provide; everything else as the manifest says.
      const port = await freePort();
      Object.assign(env, {
        DATABASE_URL: databaseUrl,
        SPOOL_HOST: '127.0.0.1',
        SPOOL_BLOBS__S3__ENDPOINT: local.endpoint,
        SPOOL_BLOBS__S3__BUCKET: bucket,
        SPOOL_BLOBS__S3__ACCESS_KEY_ID: local.accessKeyId,
        SPOOL_BLOBS__S3__SECRET_ACCESS_KEY: local.secretAccessKey,
        SPOOL_BLOBS__S3__FORCE_PATH_STYLE: 'true',
        SPOOL_UPSTREAMS: '[]',
        SPOOL_LOG_LEVEL: 'warn',
      });
      if (env.SPOOL_PORT) env.SPOOL_PORT = String(port);
      if (env.SPOOL_METRICS__WORKER_PORT) env.SPOOL_METRICS__WORKER_PORT = String(port);
      const args: string[] = deployment.spec.template.spec.containers[0].args;
      const ready = args[0] === 'worker' ? /Spool worker running/ : /Spool listening on/;
      const child = await spawnSpool(args, { dataDir: makeTempDir('spool-k8s-'), config: {}, environment: 'clean', env }, ready);
      try {
        const container = deployment.spec.template.spec.containers[0];
        for (const probe of [container.livenessProbe, container.readinessProbe]) {
          const response = await fetch(`http://127.0.0.1:${port}${probe.httpGet.path}`);
          assert.equal(response.status, 200, `${deployment.metadata.name}: GET ${probe.httpGet.path} on the probe port`);
        }
        const metrics = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: `Bearer ${env.SPOOL_ADMIN_KEY}` } });
        assert.equal(metrics.status, 200, `${deployment.metadata.name}: /metrics with the admin key`);
        assert.doesNotMatch(child.output(), /ignoring SPOOL_/, 'no variable of the manifest is ignored');
      } finally {
        await child.kill();
      }
    }
  });
});

function pick(labels: Record<string, string>, keys: string[]): Record<string, string> {
  return Object.fromEntries(keys.map((key) => [key, labels[key]]));
}
