// Writes docs/configuration-reference.md (every setting: key, environment
// variable, type, default, description) and docs/spool.config.schema.json (the
// same schema as JSON Schema, for editors) from the one config schema in
// src/config.ts. The schema is the only source: descriptions are its
// .describe() texts, defaults and bounds its own. test/unit/config-reference
// fails when the committed files differ from what this would write.
//
//   node --import tsx scripts/config-reference.ts          write both files
//   node --import tsx scripts/config-reference.ts --check  exit 1 when either is out of date
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { CONFIG_ENV_ALIASES, configEnvBindings, configSchema } from '../src/config.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const REFERENCE_PATH = join(ROOT, 'docs', 'configuration-reference.md');
export const JSON_SCHEMA_PATH = join(ROOT, 'docs', 'spool.config.schema.json');

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minLength?: number;
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
}

export function configJsonSchema(): JsonSchema {
  // Input side: what a config file may say (before defaults fill in and URLs are normalised).
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
}

export function renderJsonSchema(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}

interface Section {
  title: string;
  description?: string;
  rows: string[];
}

export function renderConfigReference(): string {
  const envByPath = new Map<string, string[]>();
  for (const [name, binding] of configEnvBindings()) envByPath.set(binding.path.join('.'), [name]);
  for (const [name, path] of Object.entries(CONFIG_ENV_ALIASES)) envByPath.get(path.join('.'))?.push(name);

  const sections: Section[] = [];
  const walk = (schema: JsonSchema, path: string[], title: string, inList: boolean) => {
    const section: Section = { title, description: path.length > 0 ? schema.description : undefined, rows: [] };
    sections.push(section);
    const nested: Array<() => void> = [];
    for (const [key, child] of Object.entries(schema.properties ?? {})) {
      const childPath = [...path, key];
      const dotted = childPath.join('.');
      const shown = inList ? key : dotted;
      if (child.type === 'object' && child.properties) {
        nested.push(() => walk(child, childPath, `\`${shown}\``, inList));
        continue;
      }
      const env = inList ? [] : (envByPath.get(dotted) ?? []);
      section.rows.push(row([`\`${shown}\``, env.map((name) => `\`${name}\``).join(', ') || '—', typeOf(child), defaultOf(child), child.description ?? '']));
      // A list of objects (upstreams, engine models) gets a table of its entries' keys, right after.
      if (child.type === 'array' && child.items?.type === 'object' && child.items.properties) {
        nested.unshift(() => walk(child.items!, childPath, `each entry of \`${dotted}\``, true));
      }
    }
    for (const next of nested) next();
  };
  walk(configJsonSchema(), [], 'Top level', false);

  const out = [
    '# Configuration reference',
    '',
    '<!-- Generated from src/config.ts by `node --import tsx scripts/config-reference.ts`; do not edit by hand. -->',
    '',
    'Every setting Spool reads, generated from its one config schema (`src/config.ts`); a test fails when this page',
    'is out of date. How settings are read (a config file in JSON or YAML, environment variables, command-line flags,',
    'in rising precedence) is in [configuration.md](configuration.md). The same schema as JSON Schema, for editors:',
    '[spool.config.schema.json](spool.config.schema.json).',
    '',
    'Environment variables: `SPOOL_` and the key path in UPPER_SNAKE case with `__` between levels; each value is read',
    'by its key\'s type, lists and maps as JSON (a list of plain strings may also be comma-separated). Keys inside list',
    'entries have no variable of their own: set the whole list (`SPOOL_UPSTREAMS=[{...}]`) or use a config file.',
    '',
  ];
  for (const section of sections) {
    if (section.rows.length === 0 && !section.description) continue;
    out.push(`## ${section.title}`, '');
    if (section.description) out.push(section.description, '');
    if (section.rows.length > 0) out.push(row(['key', 'environment', 'type', 'default', 'description']), row(['---', '---', '---', '---', '---']), ...section.rows, '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

function row(cells: string[]): string {
  return `| ${cells.map((cell) => cell.replace(/\|/g, '\\|')).join(' | ')} |`;
}

function typeOf(schema: JsonSchema): string {
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(' or ');
  if (schema.enum) return schema.enum.map((value) => `\`${JSON.stringify(value)}\``).join(', ');
  if (schema.const !== undefined) return `\`${JSON.stringify(schema.const)}\``;
  switch (schema.type) {
    case 'integer':
    case 'number': {
      // .int() bounds every integer to the safe range: not worth a mention.
      const min = schema.minimum !== undefined && schema.minimum > Number.MIN_SAFE_INTEGER ? schema.minimum : undefined;
      const max = schema.maximum !== undefined && schema.maximum < Number.MAX_SAFE_INTEGER ? schema.maximum : undefined;
      const bounds = [
        min !== undefined ? `at least ${min}` : schema.exclusiveMinimum !== undefined ? `above ${schema.exclusiveMinimum}` : '',
        max !== undefined ? `at most ${max}` : '',
      ].filter(Boolean);
      return bounds.length > 0 ? `${schema.type}, ${bounds.join(', ')}` : String(schema.type);
    }
    case 'string':
      return schema.format === 'uri' ? 'URL' : 'string';
    case 'array':
      return `list of ${schema.items ? typeOf(schema.items) : 'values'}`;
    case 'object':
      return typeof schema.additionalProperties === 'object' ? `map of ${typeOf(schema.additionalProperties)}` : 'object';
    default:
      return schema.type ? String(schema.type) : 'any';
  }
}

function defaultOf(schema: JsonSchema): string {
  if (schema.default === undefined) return '—';
  return `\`${JSON.stringify(schema.default)}\``;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const files: Array<[string, string]> = [
    [REFERENCE_PATH, renderConfigReference()],
    [JSON_SCHEMA_PATH, renderJsonSchema()],
  ];
  if (process.argv.includes('--check')) {
    const stale = files.filter(([path, text]) => {
      try {
        return readFileSync(path, 'utf8') !== text;
      } catch {
        return true;
      }
    });
    for (const [path] of stale) process.stderr.write(`${path} is out of date: run node --import tsx scripts/config-reference.ts\n`);
    process.exit(stale.length > 0 ? 1 : 0);
  }
  for (const [path, text] of files) writeFileSync(path, text);
}
