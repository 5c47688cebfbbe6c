// Serves the dashboard: the page at `/` and its scripts and styles under
// /dashboard/. The files are plain static assets (no build step) read once at
// start-up and kept in memory (they are a few tens of KB). Only the files
// found at start-up are routed, so any other path still gets the API's 404
// envelope. The page itself calls the public JSON API with the user's key.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export const DASHBOARD_ASSET_PREFIX = '/dashboard/';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

// Everything the page loads comes from this origin; the API key lives in
// sessionStorage, so no third-party script may ever run beside it.
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/**
 * The folder of static files. From the sources it sits beside this module;
 * from the dist/ bundle (whose chunks live in dist/, not src/web/) it is found
 * under the package root, which `npm install` and the Docker image both keep.
 */
export function findStaticDir(from: string = dirname(fileURLToPath(import.meta.url))): string {
  const candidates = [join(from, 'static')];
  for (let dir = from, depth = 0; depth < 5; dir = dirname(dir), depth++) candidates.push(join(dir, 'src', 'web', 'static'));
  const found = candidates.find((dir) => existsSync(join(dir, 'index.html')));
  if (!found) throw new Error(`the dashboard's files are missing: looked for index.html in ${candidates.join(', ')}`);
  return found;
}

export function loadAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const type = CONTENT_TYPES[extname(name)];
    if (!type || !/^[a-z0-9][a-z0-9.-]*$/.test(name)) continue;
    const body = readFileSync(join(dir, name));
    assets.set(name, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  return assets;
}

/**
 * Third-party scripts the page loads, served from this origin out of node_modules (no CDN: the CSP allows
 * 'self' only, and the dashboard must work offline). By file name under /dashboard/vendor/.
 */
export function loadVendorAssets(): Map<string, Asset> {
  const require = createRequire(import.meta.url);
  // chart.js exports no subpaths: find its dist/ from its main entry (dist/chart.cjs).
  const chartDist = dirname(require.resolve('chart.js'));
  const assets = new Map<string, Asset>();
  for (const [name, path] of [['chart.umd.min.js', join(chartDist, 'chart.umd.min.js')]]) {
    const body = readFileSync(path);
    assets.set(name, { body, type: CONTENT_TYPES['.js'], etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  return assets;
}

export interface DashboardOptions {
  /** Defaults to findStaticDir(). */
  staticDir?: string;
}

export async function dashboardRoutes(app: FastifyInstance, options: DashboardOptions = {}): Promise<void> {
  const assets = loadAssets(options.staticDir ?? findStaticDir());
  const page = assets.get('index.html');
  if (!page) throw new Error('the dashboard has no index.html');
  assets.delete('index.html');

  app.get('/', (request, reply) => sendAsset(request, reply, page));
  for (const [name, asset] of assets) {
    app.get(`${DASHBOARD_ASSET_PREFIX}${name}`, (request, reply) => sendAsset(request, reply, asset));
  }
  for (const [name, asset] of loadVendorAssets()) {
    app.get(`${DASHBOARD_ASSET_PREFIX}vendor/${name}`, (request, reply) => sendAsset(request, reply, asset));
  }
}

function sendAsset(request: FastifyRequest, reply: FastifyReply, asset: Asset): FastifyReply {
  reply.headers(SECURITY_HEADERS);
  // Revalidate every time: after an upgrade the page and its modules must not mix versions.
  reply.header('cache-control', 'no-cache').header('etag', asset.etag);
  if (request.headers['if-none-match'] === asset.etag) return reply.status(304).send();
  return reply.type(asset.type).send(asset.body);
}
