// The configuration reference in docs/ is generated from the config schema;
// these fail when someone changes a setting without regenerating it, or adds
// one without saying what it does.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { configEnvBindings } from '../../src/config.ts';
import { configJsonSchema, JSON_SCHEMA_PATH, REFERENCE_PATH, renderConfigReference, renderJsonSchema } from '../../scripts/config-reference.ts';

const REGENERATE = 'out of date: run `npm run docs:config` and commit the result';

describe('configuration reference', () => {
  it('docs/configuration-reference.md is what the schema generates', () => {
    assert.equal(readFileSync(REFERENCE_PATH, 'utf8'), renderConfigReference(), `${REFERENCE_PATH} is ${REGENERATE}`);
  });

  it('docs/spool.config.schema.json is what the schema generates', () => {
    assert.equal(readFileSync(JSON_SCHEMA_PATH, 'utf8'), renderJsonSchema(), `${JSON_SCHEMA_PATH} is ${REGENERATE}`);
  });

  it('every setting says what it does, and every environment variable is listed', () => {
    const undescribed: string[] = [];
    const walk = (schema: { properties?: Record<string, any>; items?: any }, path: string) => {
      for (const [key, child] of Object.entries(schema.properties ?? {})) {
        const here = path ? `${path}.${key}` : key;
        const isSection = child.type === 'object' && child.properties;
        if (!isSection && !child.description) undescribed.push(here);
        if (isSection) walk(child, here);
        if (child.type === 'array' && child.items?.properties) walk(child.items, `${here}[]`);
      }
    };
    walk(configJsonSchema(), '');
    assert.deepEqual(undescribed, [], 'add a .describe() to each of these in src/config.ts');
    const page = renderConfigReference();
    for (const name of configEnvBindings().keys()) assert.ok(page.includes(`\`${name}\``), `${name} is on the page`);
  });
});
