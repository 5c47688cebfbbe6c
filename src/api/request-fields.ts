// Small readers for query and body fields that answer a 400 naming the field.
import { badRequest } from '../errors.ts';

export type Fields = Record<string, unknown>;

export function asFields(value: unknown): Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Fields) : {};
}

export function optionalString(fields: Fields, name: string): string | undefined {
  const value = fields[name];
  if (value === undefined || value === null || value === '') return undefined;
  if (Array.isArray(value)) return optionalString({ [name]: value[value.length - 1] }, name);
  if (typeof value !== 'string') throw badRequest(`'${name}' must be a string.`, name);
  return value;
}

export function queryInteger(fields: Fields, name: string, bounds: { min: number; max: number; fallback: number }): number {
  const raw = optionalString(fields, name);
  if (raw === undefined) return bounds.fallback;
  if (!/^\d+$/.test(raw)) throw badRequest(`'${name}' must be an integer between ${bounds.min} and ${bounds.max}.`, name);
  const value = Number(raw);
  if (value < bounds.min || value > bounds.max) throw badRequest(`'${name}' must be between ${bounds.min} and ${bounds.max}.`, name);
  return value;
}

export function queryOrder(fields: Fields): 'asc' | 'desc' {
  const raw = optionalString(fields, 'order') ?? 'desc';
  if (raw !== 'asc' && raw !== 'desc') throw badRequest(`'order' must be "asc" or "desc".`, 'order');
  return raw;
}

/** A query switch: true/false (also 1/0), absent as undefined. */
export function optionalBoolean(fields: Fields, name: string): boolean | undefined {
  const raw = optionalString(fields, name);
  if (raw === undefined) return undefined;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw badRequest(`'${name}' must be true or false (got "${raw}").`, name);
}
