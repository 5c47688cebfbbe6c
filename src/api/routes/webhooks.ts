// /webhooks/secret: a user's own webhook signing secret (a Spool extension, under both prefixes). Each user
// verifies their events with it, and only that user's key (or an admin key, naming the user) can read or
// rotate it; rotating one user's secret leaves every other user's as it was.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import { ApiError } from '../../errors.ts';
import type { Database, WebhookSecretsTable } from '../../store/sql/schema.ts';
import { rotateUserWebhookSecret, userWebhookSecret } from '../../store/sql/webhook-secrets.ts';
import { asFields, optionalString } from '../request-fields.ts';
import { unixSeconds } from '../presenters/time.ts';

export async function webhooksRoutes(app: FastifyInstance, options: { db: Kysely<Database> }): Promise<void> {
  app.get('/webhooks/secret', async (request) => present(await userWebhookSecret(options.db, secretOwner(request))));
  app.post('/webhooks/secret/rotate', async (request) => present(await rotateUserWebhookSecret(options.db, secretOwner(request))));
}

/** The caller's own user, or (admin keys only) the user named by ?user_id=. */
function secretOwner(request: FastifyRequest): string {
  const named = optionalString(asFields(request.query), 'user_id');
  if (named === undefined || named === request.principal.userId) return request.principal.userId;
  if (!request.principal.isAdmin) {
    throw new ApiError(403, "Only admin keys may read or rotate another user's webhook secret: leave out 'user_id' for your own.", {
      type: 'permission_error',
      code: 'admin_required',
      param: 'user_id',
    });
  }
  return named;
}

function present(row: WebhookSecretsTable) {
  return { object: 'webhook_secret', user_id: row.user_id, secret: row.secret, created_at: unixSeconds(row.created_at) };
}
