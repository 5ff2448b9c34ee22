// The playground page (GET /) driven in headless Chromium against a real streamgen-server:
// a greedy completion streams the same text as gRPC, Stop cancels the request on the engine,
// the server's error message is shown, chat mode keeps the conversation, the API key is sent
// and remembered.
//   STREAMGEN_BUILD_DIR=build node --test tests/http/playground.test.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { buildDirFromArgs, makeSlowModel, startServer } from './server.mjs';

const buildDir = buildDirFromArgs();
const screenshotDir = path.join(buildDir, 'http-test');
const WAIT_MS = 30000;  // the longest any one wait may take

const API_KEY = 'playground-test-key';
let server;      // the tiny random model
let slowServer;  // a bigger random model, for Stop; it wants API_KEY
let modelDir;
let browser;

before(async () => {
  // A slower model, so that Stop lands mid-stream (server.mjs).
  modelDir = await makeSlowModel(buildDir);
  const keyFile = path.join(modelDir, 'api-key');
  fs.writeFileSync(keyFile, `${API_KEY}\n`);
  [server, slowServer] = await Promise.all([
    startServer({ buildDir }),
    startServer({ buildDir, args: [
      '--model', modelDir, '--served-model-name', 'slow-model', '--api-key-file', keyFile,
    ] }),
  ]);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', timeout: WAIT_MS });
});

after(async () => {
  await browser?.close();
  await Promise.all([server?.stop(), slowServer?.stop()]);
  if (modelDir) fs.rmSync(modelDir, { recursive: true, force: true });
});

// A fresh page (its own browser context) on `target`'s playground; once it shows
// `modelName` unless that is null. `apiKey` goes into localStorage first, where the page keeps it.
async function openPage(t, target, modelName, { apiKey } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  t.after(() => context.close());
  if (apiKey) {
    await context.addInitScript((key) => localStorage.setItem('streamgen.apiKey', key), apiKey);
  }
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (error) => console.log(`page error: ${error.message}`));
  await page.goto(`${target.httpUrl}/`);
  if (modelName !== null) await waitForText(page, '#model-name', modelName);
  return page;
}

// Waits until `selector`'s textContent is `expected` (a string) or matches it (a RegExp).
async function waitForText(page, selector, expected) {
  const pattern = expected instanceof RegExp ? [expected.source, expected.flags] : null;
  try {
    await page.waitForFunction(([s, e, p]) => {
      const text = document.querySelector(s)?.textContent ?? '';
      return p ? new RegExp(p[0], p[1]).test(text) : text === e;
    }, [selector, pattern ? null : expected, pattern], { timeout: WAIT_MS });
  } catch (error) {
    const actual = await page.locator(selector).textContent().catch(() => '?');
    const errorText = await page.locator('#error').textContent().catch(() => '?');
    throw new Error(`${selector} never became ${expected}: it is ` +
                    `${JSON.stringify(actual)} (#error: ${JSON.stringify(errorText)})`, { cause: error });
  }
}

const text = (page, selector) => page.locator(selector).textContent();

// The text of a greedy generation over gRPC (the C++ client), its messages' `text` joined.
async function grpcText(target, prompt, maxNewTokens, extraFlags = []) {
  const { stdout } = await promisify(execFile)(path.join(buildDir, 'client', 'streamgen-client'), [
    '--server', target.grpcAddress, '--json', ...extraFlags,
    'generate', prompt, '--max-new-tokens', String(maxNewTokens),
  ], { timeout: WAIT_MS });
  return stdout.split('\n').filter((line) => line.trim())
    .map((line) => JSON.parse(line).text ?? '').join('');
}

test('a greedy completion streams the same text as gRPC', { timeout: 120000 }, async (t) => {
  const page = await openPage(t, server, 'tiny-builtin');
  assert.match(await text(page, '#context-length'), /^\d+$/);
  await page.selectOption('#mode', 'completion');
  await page.fill('#prompt', 'Once upon a time');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '24');
  await page.press('#prompt', 'Control+Enter');
  await waitForText(page, '#status', 'done');

  const expected = await grpcText(server, 'Once upon a time', 24);
  assert.ok(expected.length > 0);
  assert.equal(await text(page, '#output'), expected);
  assert.equal(await text(page, '#finish-reason'), 'length');
  assert.equal(await text(page, '#completion-tokens'), '24');
  assert.match(await text(page, '#prompt-tokens'), /^[1-9]\d*$/);
  assert.match(await text(page, '#ttft'), /^\d+$/);
  assert.match(await text(page, '#tps'), /^\d+(\.\d+)?$/);
  assert.equal(await text(page, '#error'), '');

  fs.mkdirSync(screenshotDir, { recursive: true });
  const shot = path.join(screenshotDir, 'playground.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  await page.setViewportSize({ width: 390, height: 844 });
  const phoneShot = path.join(screenshotDir, 'playground-phone.png');
  await page.screenshot({ path: phoneShot, fullPage: true });
  console.log(`screenshot (phone): ${phoneShot}`);
});

test('Stop cancels the request on the engine', { timeout: 120000 }, async (t) => {
  const page = await openPage(t, slowServer, 'slow-model', { apiKey: API_KEY });
  const cancelledBefore = await slowServer.metric('streamgen_engine_cancelled_total');
  await page.selectOption('#mode', 'completion');
  await page.fill('#prompt', 'Once upon a time');
  await page.fill('#temperature', '0');  // greedy: this model runs to max tokens, no early EOS
  await page.fill('#max-tokens', '480');
  await page.click('#send');
  await waitForText(page, '#output', /./s);
  assert.equal(await text(page, '#status'), 'running');
  await page.click('#stop-button');
  await waitForText(page, '#status', 'stopped');
  assert.equal(await text(page, '#finish-reason'), 'stopped');
  assert.equal(await text(page, '#error'), '');
  assert.ok((await text(page, '#output')).length > 0);
  // Issue 18: the cards show what was produced (no usage chunk came): the
  // tokens received, the prompt's count (from /tokenize), the rate.
  assert.match(await text(page, '#completion-tokens'), /^[1-9]\d*$/);
  assert.ok(Number(await text(page, '#completion-tokens')) < 480);
  await waitForText(page, '#prompt-tokens', /^[1-9]\d*$/);
  assert.match(await text(page, '#ttft'), /^\d+$/);
  await slowServer.waitForMetric('streamgen_engine_cancelled_total', (v) => v >= cancelledBefore + 1);
  await slowServer.waitForMetric('streamgen_engine_running_requests', (v) => v === 0);
  assert.ok(await page.locator('#send').isEnabled());
});

test("the server's error message is shown", { timeout: 120000 }, async (t) => {
  const page = await openPage(t, server, 'tiny-builtin');
  await page.selectOption('#mode', 'completion');
  await page.fill('#prompt', 'Once upon a time');
  await page.fill('#temperature', '500');
  await page.click('#send');
  await waitForText(page, '#status', 'error');
  const error = await text(page, '#error');
  assert.ok(error.includes('temperature must be in [0, 100], got 500'), error);
  assert.ok(error.includes('400'), error);
  assert.ok(await page.locator('#error').isVisible());
  assert.equal(await text(page, '#output'), '');
});

test('chat mode keeps the conversation', { timeout: 120000 }, async (t) => {
  const page = await openPage(t, server, 'tiny-builtin');
  // Completion is the default mode (the demo model is a base model, not a chat model).
  assert.equal(await page.inputValue('#mode'), 'completion');
  await page.selectOption('#mode', 'chat');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '12');
  await page.fill('#prompt', 'Hello there');
  await page.press('#prompt', 'Control+Enter');
  await waitForText(page, '#status', 'done');
  const first = await text(page, '#output');
  // Issue 18: the reply is shown without the whitespace its text starts with.
  assert.equal(first, (await grpcText(server, 'Hello there', 12, ['--chat'])).trimStart());
  assert.doesNotMatch(first, /^\s/);
  assert.match(await text(page, '#completion-tokens'), /^[1-9]\d*$/);
  assert.equal(await page.inputValue('#prompt'), '');

  await page.fill('#prompt', 'And then?');
  await page.press('#prompt', 'Meta+Enter');
  await waitForText(page, '#status', 'done');
  const turns = await page.locator('#history .turn').allTextContents();
  assert.equal(turns.length, 3);
  assert.ok(turns[0].endsWith('Hello there'), turns[0]);
  assert.ok(turns[1].endsWith(first), turns[1]);
  assert.ok(turns[2].endsWith('And then?'), turns[2]);
  assert.ok((await text(page, '#output')).length > 0);

  await page.click('#clear');
  assert.equal(await page.locator('#history .turn').count(), 0);
  assert.equal(await text(page, '#output'), '');
});

test('the API key is sent as a Bearer token and remembered', { timeout: 120000 }, async (t) => {
  const page = await openPage(t, slowServer, null);
  await waitForText(page, '#error', /HTTP 401: .*API key/);
  assert.equal(await text(page, '#model-name'), '…');
  await page.fill('#api-key', API_KEY);
  await page.press('#api-key', 'Tab');  // change: the page lists the models again, with the key
  await waitForText(page, '#model-name', 'slow-model');
  assert.equal(await text(page, '#error'), '');
  await page.selectOption('#mode', 'completion');
  await page.fill('#prompt', 'Once upon a time');
  await page.fill('#max-tokens', '2');
  await page.click('#send');
  await waitForText(page, '#status', 'done');
  assert.equal(await text(page, '#completion-tokens'), '2');

  await page.reload();
  await waitForText(page, '#model-name', 'slow-model');
  assert.equal(await page.inputValue('#api-key'), API_KEY);
});
