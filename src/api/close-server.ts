// Closing an HTTP server within a bounded time. Fastify's close() stops
// accepting, lets requests in flight finish and closes idle keep-alive
// connections, but a connection that was opened and never sent a request
// (browsers open spare ones speculatively) is neither, and close() waited on
// it indefinitely: a SIGTERM never finished. After the grace period whatever
// is still open is destroyed.
import type { FastifyInstance } from 'fastify';

/** How long requests in flight (an upload, a download) get to finish once shutdown starts; as the runner's grace. */
export const HTTP_SHUTDOWN_GRACE_MS = 10_000;

export async function closeServer(server: FastifyInstance, graceMs = HTTP_SHUTDOWN_GRACE_MS): Promise<void> {
  const timer = setTimeout(() => server.server.closeAllConnections(), graceMs);
  try {
    await server.close();
  } finally {
    clearTimeout(timer);
  }
}
