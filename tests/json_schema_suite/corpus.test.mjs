// Strings generated from the grammars of corpus/*.json validate with ajv (the
// independent validator, pinned in package.json): json_schema_random_walk
// compiles each schema with engine/grammar/json_schema.cc and walks llama.cpp's
// matcher over the grammar at random (many seeds); every finished walk must
// parse as JSON, validate against its schema, and be accepted by this
// project's matcher too. The API helper samples the
// same corpus from models end to end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const here = path.dirname(fileURLToPath(import.meta.url));
const buildDir = path.resolve(here, '../..', process.env.STREAMGEN_BUILD_DIR ?? 'build');
const walker = path.join(buildDir, 'tests/json_schema_random_walk');
const libllama = path.join(here, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so');
const corpus = readdirSync(path.join(here, 'corpus')).filter((f) => f.endsWith('.json')).sort();
const SEEDS = 300;

function walks(file, extraArgs = []) {
  const out = execFileSync(walker, ['--libllama', libllama, '--seeds', String(SEEDS), ...extraArgs,
    path.join(here, 'corpus', file)], { maxBuffer: 256 << 20 }).toString();
  return out.trim().split('\n').map((line) => JSON.parse(line));
}

test('the corpus has the shapes the issue asks for', () => {
  const all = corpus.map((f) => readFileSync(path.join(here, 'corpus', f), 'utf8')).join('\n');
  for (const needle of ['"$ref"', '"enum"', '"format"', '"required"', '"items"', '"anyOf"', '"prefixItems"']) {
    assert.ok(all.includes(needle), `no schema in corpus/ uses ${needle}`);
  }
  assert.ok(corpus.length >= 6);
});

for (const file of corpus) {
  for (const whitespace of ['16', '0']) {
    test(`${file}, max whitespace ${whitespace}: ${SEEDS} random walks validate with ajv`, () => {
      const schema = JSON.parse(readFileSync(path.join(here, 'corpus', file), 'utf8'));
      const ajv = new Ajv2020({ strict: false, allErrors: true });
      addFormats(ajv);
      const validate = ajv.compile(schema);
      const lines = walks(file, ['--max-whitespace', whitespace]);
      assert.equal(lines[0].error, undefined, `the compiler refused ${file}: ${lines[0].error}`);
      const finished = lines.filter((l) => l.finished);
      // Most walks end (a walk stops at 20,000 characters).
      assert.ok(finished.length >= 0.9 * SEEDS, `only ${finished.length} of ${SEEDS} walks finished`);
      const distinct = new Set(finished.map((l) => l.text));
      assert.ok(distinct.size >= 0.5 * finished.length, `only ${distinct.size} distinct outputs`);
      for (const { seed, text, ours } of finished) {
        assert.ok(ours, `seed ${seed}: llama.cpp's matcher made it, engine/grammar's rejects it: ${text}`);
        let value;
        assert.doesNotThrow(() => { value = JSON.parse(text); }, `seed ${seed}: not JSON: ${text}`);
        if (whitespace === '0') assert.ok(!/[\n\t]/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '')), `seed ${seed}: whitespace in compact output: ${text}`);
        assert.ok(validate(value), `seed ${seed}: ${text}\n${JSON.stringify(validate.errors, null, 1)}`);
      }
    });
  }
}
