// /usage (a Spool extension, under both prefixes): tokens, requests and cost
// by UTC day and model for the caller's key. Admin keys may name any user
// (?user_id=NAME), every user (?user_id=*), and group by user.
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';
import { ApiError, badRequest } from '../../errors.ts';
import type { Database } from '../../store/sql/schema.ts';
import { queryUsage, type UsageRow } from '../../store/sql/usage.ts';
import { nanosToAmount } from '../../usage/pricing.ts';
import { asFields, optionalString } from '../request-fields.ts';

const DAY_MS = 86_400_000;
// Long enough for a year's report, short enough that a typo cannot ask for ten thousand years of days.
const MAX_DAYS = 400;

export async function usageRoutes(app: FastifyInstance, options: { db: Kysely<Database> }): Promise<void> {
  app.get('/usage', async (request) => {
    const query = asFields(request.query);
    const today = new Date().toISOString().slice(0, 10);
    const to = day(optionalString(query, 'end_date') ?? today, 'end_date');
    const from = day(optionalString(query, 'start_date') ?? isoDay(Date.parse(to) - 29 * DAY_MS), 'start_date');
    if (from > to) throw badRequest(`'start_date' ${from} is after 'end_date' ${to}.`, 'start_date');
    if ((Date.parse(to) - Date.parse(from)) / DAY_MS >= MAX_DAYS) throw badRequest(`Ask for at most ${MAX_DAYS} days at a time.`, 'start_date');
    const groupBy = optionalString(query, 'group_by');
    if (groupBy !== undefined && groupBy !== 'user') throw badRequest(`'group_by' may only be "user" (got "${groupBy}").`, 'group_by');
    const named = optionalString(query, 'user_id');
    const wantsOthers = (named !== undefined && named !== request.principal.userId) || groupBy === 'user';
    if (wantsOthers && !request.principal.isAdmin) {
      throw new ApiError(403, "Only admin keys may see other users' usage: leave out 'user_id' and 'group_by' for your own.", {
        type: 'permission_error',
        code: 'admin_required',
        param: named !== undefined ? 'user_id' : 'group_by',
      });
    }
    const userId = named === '*' ? undefined : (named ?? request.principal.userId);
    const rows = await queryUsage(options.db, { userId, from, to, groupByUser: groupBy === 'user' });
    return { object: 'list', start_date: from, end_date: to, user_id: userId ?? '*', data: rows.map(present) };
  });
}

function day(value: string, param: string): string {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(Date.parse(value)) || isoDay(Date.parse(value)) !== value) {
    throw badRequest(`'${param}' must be a date as YYYY-MM-DD (got "${value}").`, param);
  }
  return value;
}

const isoDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

function present(row: UsageRow) {
  return {
    object: 'usage',
    date: row.day,
    model: row.model,
    ...(row.user_id !== undefined ? { user_id: row.user_id } : {}),
    requests: row.requests,
    input_tokens: row.input_tokens,
    output_tokens: row.output_tokens,
    total_tokens: row.input_tokens + row.output_tokens,
    cost: { amount: nanosToAmount(row.cost_nanos), currency: row.currency },
  };
}
