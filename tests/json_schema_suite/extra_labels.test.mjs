// The labels ("valid") of extra/*.json, this project's additions in the JSON
// Schema Test Suite's format for what draft 4 lacks (prefixItems, const,
// $defs, numeric exclusive bounds, formats, ...), are ajv's (draft 2020-12,
// with ajv-formats), not our own: json_schema_suite_test then checks the
// compiled grammars against them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const here = path.dirname(fileURLToPath(import.meta.url));
for (const file of readdirSync(path.join(here, 'extra')).filter((f) => f.endsWith('.json'))) {
  test(`extra/${file}: every label is ajv's`, () => {
    const groups = JSON.parse(readFileSync(path.join(here, 'extra', file), 'utf8'));
    let n = 0;
    for (const group of groups) {
      const ajv = new Ajv2020({ strict: false });
      addFormats(ajv);
      const validate = ajv.compile(group.schema);
      for (const t of group.tests) {
        assert.equal(validate(t.data), t.valid, `${group.description} / ${t.description}`);
        ++n;
      }
    }
    assert.ok(n >= 50, `only ${n} instances`);
  });
}
