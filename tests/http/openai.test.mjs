// The official `openai` npm package (pinned in package.json) against a real
// streamgen-server on 127.0.0.1 (./server.mjs; STREAMGEN_BUILD_DIR or
// --build-dir names the build): chat and completions, streamed and not,
// stream_options.include_usage, greedy streamed text == non-streamed text,
// the server's errors as OpenAI.APIError (status, message, param, code), and a
// stream aborted mid-way cancelling its engine request.
//
//   cd tests/http && npm ci && STREAMGEN_BUILD_DIR=../../build node --test openai.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import fs from 'node:fs';
import { makeSlowModel, startServer } from './server.mjs';

const MODEL = 'tiny-builtin';
const PROMPT = 'Once upon a time';
const MESSAGES = [{ role: 'user', content: 'Tell me a story about a dragon.' }];

let server;
let client;
let slowModel;   // for the aborts: streams that are still running when aborted
let slowServer;
let slowClient;

before(async () => {
  slowModel = await makeSlowModel();
  [server, slowServer] = await Promise.all([
    startServer(),
    startServer({ args: ['--model', slowModel, '--served-model-name', MODEL] }),
  ]);
  // maxRetries 0: an error must reach the test, not be retried away.
  client = new OpenAI({ baseURL: server.httpUrl + '/v1', apiKey: 'unused', maxRetries: 0 });
  slowClient = new OpenAI({ baseURL: slowServer.httpUrl + '/v1', apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0, 'streamgen-server exit code after SIGTERM');
  if (slowServer) assert.equal(await slowServer.stop(), 0, 'the slow server exit code after SIGTERM');
  if (slowModel) fs.rmSync(slowModel, { recursive: true, force: true });
});

function assertUsage(usage, completionTokens) {
  assert.ok(usage, 'usage present');
  assert.ok(usage.prompt_tokens > 0, JSON.stringify(usage));
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  if (completionTokens !== undefined) assert.equal(usage.completion_tokens, completionTokens);
}

// Iterates a chat stream: the text, the finish reason, the usage chunk's usage.
async function collectChat(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  for (const chunk of chunks) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.id, chunks[0].id);
    assert.equal(chunk.created, chunks[0].created);
    assert.equal(chunk.model, MODEL);
  }
  let usage = null;
  let choiceChunks = chunks;
  const last = chunks[chunks.length - 1];
  if (last.choices.length === 0) {
    usage = last.usage;
    choiceChunks = chunks.slice(0, -1);
  }
  for (const chunk of choiceChunks) {
    assert.equal(chunk.choices.length, 1, JSON.stringify(chunk));
    assert.ok(!chunk.usage, 'usage only on the last chunk');
  }
  assert.deepEqual(choiceChunks[0].choices[0].delta, { role: 'assistant', content: '' });
  const final = choiceChunks[choiceChunks.length - 1].choices[0];
  assert.deepEqual(final.delta, {});
  assert.ok(['stop', 'length'].includes(final.finish_reason), final.finish_reason);
  let text = '';
  for (const chunk of choiceChunks.slice(1, -1)) {
    assert.equal(chunk.choices[0].finish_reason, null);
    assert.equal(typeof chunk.choices[0].delta.content, 'string');
    text += chunk.choices[0].delta.content;
  }
  return { text, finishReason: final.finish_reason, usage, chunks };
}

async function collectCompletion(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 1);
  for (const chunk of chunks) {
    assert.equal(chunk.object, 'text_completion');
    assert.equal(chunk.id, chunks[0].id);
    assert.equal(chunk.created, chunks[0].created);
    assert.equal(chunk.model, MODEL);
  }
  assert.ok(chunks[0].id.startsWith('cmpl-'), chunks[0].id);
  let usage = null;
  let choiceChunks = chunks;
  const last = chunks[chunks.length - 1];
  if (last.choices.length === 0) {
    usage = last.usage;
    choiceChunks = chunks.slice(0, -1);
  }
  for (const [i, chunk] of choiceChunks.entries()) {
    assert.equal(chunk.choices.length, 1);
    assert.ok(!chunk.usage, 'usage only on the last chunk');
    if (i + 1 < choiceChunks.length) assert.equal(chunk.choices[0].finish_reason, null);
  }
  const finishReason = choiceChunks[choiceChunks.length - 1].choices[0].finish_reason;
  assert.ok(['stop', 'length'].includes(finishReason), finishReason);
  return { text: choiceChunks.map((c) => c.choices[0].text).join(''), finishReason, usage };
}

test('models.list names the served model', async () => {
  const models = [];
  for await (const model of client.models.list()) models.push(model);
  assert.equal(models.length, 1);
  assert.equal(models[0].id, MODEL);
  assert.equal(models[0].object, 'model');
  assert.equal(models[0].owned_by, 'streamgen');
  assert.ok(models[0].max_model_len > 0);
});

test('chat: streamed greedy text equals the non-streamed text, usage on the last chunk', async () => {
  const request = { model: MODEL, messages: MESSAGES, temperature: 0, max_tokens: 24, ignore_eos: true };
  const completion = await client.chat.completions.create(request);
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.model, MODEL);
  assert.equal(completion.choices.length, 1);
  assert.equal(completion.choices[0].message.role, 'assistant');
  assert.equal(typeof completion.choices[0].message.content, 'string');
  assert.equal(completion.choices[0].finish_reason, 'length');
  assertUsage(completion.usage, 24);

  const streamed = await collectChat(await client.chat.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  }));
  assert.equal(streamed.text, completion.choices[0].message.content);
  assert.equal(streamed.finishReason, 'length');
  assertUsage(streamed.usage, 24);
  assert.equal(streamed.usage.prompt_tokens, completion.usage.prompt_tokens);

  const plain = await collectChat(await client.chat.completions.create({ ...request, stream: true }));
  assert.equal(plain.text, completion.choices[0].message.content);
  assert.equal(plain.usage, null, 'no usage chunk without include_usage');
});

test('completions: streamed greedy text equals the non-streamed text, usage on the last chunk', async () => {
  const request = { model: MODEL, prompt: PROMPT, temperature: 0, max_tokens: 30, ignore_eos: true };
  const completion = await client.completions.create(request);
  assert.equal(completion.object, 'text_completion');
  assert.ok(completion.id.startsWith('cmpl-'));
  assert.equal(completion.choices.length, 1);
  assert.equal(typeof completion.choices[0].text, 'string');
  assert.equal(completion.choices[0].finish_reason, 'length');
  assertUsage(completion.usage, 30);

  const streamed = await collectCompletion(await client.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  }));
  assert.equal(streamed.text, completion.choices[0].text);
  assert.equal(streamed.finishReason, 'length');
  assertUsage(streamed.usage, 30);
  assert.equal(streamed.usage.prompt_tokens, completion.usage.prompt_tokens);

  const plain = await collectCompletion(await client.completions.create({ ...request, stream: true }));
  assert.equal(plain.text, completion.choices[0].text);
  assert.equal(plain.usage, null);
});

test('seeded sampling: the same seed gives the same text streamed and not', async () => {
  const request = { model: MODEL, messages: MESSAGES, temperature: 1, top_k: 50, seed: 4242, max_tokens: 20 };
  const first = await client.chat.completions.create(request);
  const second = await client.chat.completions.create(request);
  assert.equal(second.choices[0].message.content, first.choices[0].message.content);
  const streamed = await collectChat(await client.chat.completions.create({ ...request, stream: true }));
  assert.equal(streamed.text, first.choices[0].message.content);
});

test('chat logprobs through the client', async () => {
  const completion = await client.chat.completions.create({
    model: MODEL, messages: MESSAGES, temperature: 0, max_tokens: 6, ignore_eos: true,
    logprobs: true, top_logprobs: 2,
  });
  const content = completion.choices[0].logprobs.content;
  assert.equal(content.length, 6);
  for (const entry of content) {
    assert.equal(typeof entry.token, 'string');
    assert.ok(entry.logprob <= 0);
    assert.equal(entry.top_logprobs.length, 2);
    assert.ok(Math.abs(entry.logprob - Math.max(...entry.top_logprobs.map((t) => t.logprob))) < 1e-4);
  }
});

test('X-Request-Id: given one is echoed, else one is generated', async () => {
  const { response } = await client.completions
    .create({ model: MODEL, prompt: PROMPT, max_tokens: 2 }, { headers: { 'X-Request-Id': 'node-openai-1' } })
    .withResponse();
  assert.equal(response.headers.get('x-request-id'), 'node-openai-1');
  const generated = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 2 }).withResponse();
  assert.ok(generated.response.headers.get('x-request-id'));
});

async function assertApiError(promise, check) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
    check(err);
    return true;
  });
}

test('a validator error is an APIError with status, message and param', async () => {
  const message = 'temperature must be in [0, 100], got 500';
  for (const call of [
    () => client.chat.completions.create({ model: MODEL, messages: MESSAGES, temperature: 500 }),
    () => client.chat.completions.create({ model: MODEL, messages: MESSAGES, temperature: 500, stream: true }),
    () => client.completions.create({ model: MODEL, prompt: PROMPT, temperature: 500 }),
  ]) {
    await assertApiError(call(), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.equal(err.status, 400);
      assert.ok(err.message.includes(message), err.message);
      assert.equal(err.param, 'temperature');
      assert.equal(err.type, 'invalid_request_error');
    });
  }
  await assertApiError(client.completions.create({ model: MODEL, prompt: PROMPT, n: 9 }), (err) => {
    assert.equal(err.status, 400);
    assert.equal(err.param, 'n');
  });
  await assertApiError(client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 'ten' }), (err) => {
    assert.equal(err.status, 400);
    assert.equal(err.param, 'max_tokens');
  });
});

test('an unknown model is a 404 APIError with code model_not_found', async () => {
  for (const call of [
    () => client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES }),
    () => client.completions.create({ model: 'gpt-4o', prompt: PROMPT, stream: true }),
  ]) {
    await assertApiError(call(), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
    });
  }
});

// Aborts a long stream after a few chunks; true once the server counted a
// cancellation. The tiny model is fast, so a stream can end before the abort
// reaches the server: the caller tries a bounded number of times.
// Runs `abort` (a stream aborted after a few chunks) on the slow server: the
// engine must count one more cancel and run nothing afterwards.
async function abortCancels(abort) {
  const before = await slowServer.metric('streamgen_engine_cancelled_total');
  const tokensBefore = await slowServer.metric('streamgen:generation_tokens_total');
  await abort();
  await slowServer.waitForMetric('streamgen_engine_cancelled_total', (v) => v === before + 1);
  await slowServer.waitForMetric('streamgen_engine_running_requests', (v) => v === 0);
  // It was cut short: fewer tokens than the 480 asked for were generated.
  const generated = (await slowServer.metric('streamgen:generation_tokens_total')) - tokensBefore;
  assert.ok(generated < 480, `${generated} tokens generated`);
}

const LONG = { model: MODEL, messages: MESSAGES, temperature: 0, max_tokens: 480, ignore_eos: true, stream: true };

test('stream.controller.abort() mid-stream cancels the engine request', async () => {
  await abortCancels(async () => {
    const stream = await slowClient.chat.completions.create(LONG);
    let chunks = 0;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (++chunks === 3) {
        stream.controller.abort();
        break;
      }
    }
    assert.equal(chunks, 3);
  });
});

test('an AbortController signal mid-stream cancels the engine request', async () => {
  await abortCancels(async () => {
    const controller = new AbortController();
    const stream = await slowClient.completions.create(
      { model: MODEL, prompt: PROMPT, temperature: 0, max_tokens: 480, ignore_eos: true, stream: true },
      { signal: controller.signal });
    let chunks = 0;
    // The package ends the iteration quietly on an abort (no error).
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'text_completion');
      if (++chunks === 3) controller.abort();
    }
    assert.ok(chunks >= 3);
    assert.ok(controller.signal.aborted);
  });
  assert.equal(await slowServer.metric('streamgen_engine_running_requests'), 0);
  // and the server still serves
  const completion = await slowClient.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 2 });
  assert.ok(completion.usage.completion_tokens >= 1 && completion.usage.completion_tokens <= 2);
});

// ---- issue 22: structured outputs, n, logit_bias through the client ----

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 8 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    pet: { enum: ['cat', 'dog'] },
  },
  required: ['name', 'age'],
  additionalProperties: false,
};

// The schema's rules, checked by hand (maxLength in characters).
function assertPerson(text) {
  const value = JSON.parse(text);
  assert.equal(typeof value, 'object', text);
  assert.ok(value !== null && !Array.isArray(value), text);
  assert.equal(typeof value.name, 'string', text);
  assert.ok([...value.name].length <= 8, text);
  assert.ok(Number.isInteger(value.age) && value.age >= 0 && value.age <= 120, text);
  for (const key of Object.keys(value)) assert.ok(['name', 'age', 'pet'].includes(key), text);
  if ('pet' in value) assert.ok(['cat', 'dog'].includes(value.pet), text);
}

test('response_format json_schema: the content parses and keeps the schema, streamed and not', async () => {
  for (const seed of [1, 2, 3]) {
    const request = {
      model: MODEL, messages: MESSAGES, temperature: 1, seed, max_tokens: 160,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } },
    };
    const completion = await client.chat.completions.create(request);
    const content = completion.choices[0].message.content;
    assert.notEqual(completion.choices[0].finish_reason, 'length', content);
    assertPerson(content);
    const streamed = await collectChat(await client.chat.completions.create({ ...request, stream: true }));
    assert.equal(streamed.text, content);
  }
  // A schema keyword the compiler does not support is a 400 naming it.
  await assert.rejects(
    client.chat.completions.create({
      model: MODEL, messages: MESSAGES, max_tokens: 4,
      response_format: { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'object', patternProperties: { '^a': {} } } } },
    }),
    (error) => error instanceof OpenAI.APIError && error.status === 400 && /patternProperties/.test(error.message));
});

test('n = 3: three choices, each the request with seed + i, the prompt counted once', async () => {
  const request = { model: MODEL, prompt: PROMPT, temperature: 1, seed: 99, max_tokens: 6, ignore_eos: true };
  const three = await client.completions.create({ ...request, n: 3 });
  assert.equal(three.choices.length, 3);
  const single = await client.completions.create(request);
  assert.equal(three.usage.prompt_tokens, single.usage.prompt_tokens);
  assert.equal(three.usage.completion_tokens, 18);
  for (let i = 0; i < 3; ++i) {
    assert.equal(three.choices[i].index, i);
    const alone = await client.completions.create({ ...request, seed: 99 + i });
    assert.equal(three.choices[i].text, alone.choices[0].text, `choice ${i}`);
  }
  // Streamed: the chunks of the three choices interleave, each with its index.
  const texts = ['', '', ''];
  const finished = new Set();
  for await (const chunk of await client.completions.create({ ...request, n: 3, stream: true })) {
    for (const choice of chunk.choices) {
      texts[choice.index] += choice.text;
      if (choice.finish_reason) finished.add(choice.index);
    }
  }
  assert.deepEqual([...finished].sort(), [0, 1, 2]);
  assert.deepEqual(texts, three.choices.map((c) => c.text));
  await assert.rejects(client.completions.create({ ...request, n: 9 }),
    (error) => error.status === 400 && error.param === 'n' && error.message.includes('n must be in [1, 8], got 9'));
});

test('logit_bias: +100 forces a token, out of the vocabulary is a 400 naming it', async () => {
  const tokenize = await fetch(server.httpUrl + '/tokenize', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ prompt: 'dragon' }),
  }).then((r) => r.json());
  const id = tokenize.tokens[tokenize.tokens.length - 1];
  const forced = await client.completions.create({
    model: MODEL, prompt: PROMPT, temperature: 0, max_tokens: 3, ignore_eos: true, logit_bias: { [id]: 100 },
  });
  const expected = await fetch(server.httpUrl + '/detokenize', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ tokens: [id, id, id] }),
  }).then((r) => r.json());
  assert.equal(forced.choices[0].text.trim(), expected.prompt.trim());
  await assert.rejects(
    client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 2, logit_bias: { 99999999: 5 } }),
    (error) => error.status === 400 && error.param === 'logit_bias' &&
      error.message.includes('logit_bias[99999999]: the token id is outside the vocabulary'));
});
