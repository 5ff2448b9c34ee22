// The Node client (client/node: the library and cli.js) against real
// streamgen-server subprocesses on loopback, next to the C++ streamgen-client
// for the same requests: greedy text, info, tokenize, health, errors with the
// server's messages, Ctrl-C and AbortSignal cancels seen by the server,
// deadlines, API keys, TLS and mutual TLS. Run by ctest (node_client_test)
// after `npm ci` in client/node (the node_client_npm fixture).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { createClient, statusName } from '../../client/node/streamgen.js';
import {
  makeCertificates, makeSlowModel, runCppCli, runNodeCli, startServer,
} from './server.mjs';

const PROMPT = 'Once upon a time';
// The C++ client's summary line with the server-side timings blanked.
const blankTimings = (stderr) => stderr.replace(/ ttft_ms=\S+ tokens_per_s=[^\]]+\]/, ' ttft_ms=T tokens_per_s=T]');

async function collect(iterable) {
  const messages = [];
  for await (const message of iterable) messages.push(message);
  return messages;
}

describe('plaintext, the tiny model', () => {
  let server;
  let client;
  before(async () => {
    server = await startServer();
    client = createClient({ address: server.address });
  });
  after(async () => {
    client?.close();
    assert.equal(await server?.stop(), 0);
  });

  test('generate: the streamed text and the summary equal the C++ client\'s', async () => {
    const args = ['--server', server.address, 'generate', PROMPT, '--max-new-tokens', '24',
      '--request-id', 'node-cli-1'];
    const node = await runNodeCli(args);
    const cpp = await runCppCli(args);
    assert.equal(node.code, 0, node.stderr);
    assert.equal(cpp.code, 0, cpp.stderr);
    assert.ok(node.stdout.length > 2, node.stdout);
    assert.equal(node.stdout, cpp.stdout);
    assert.match(node.stderr, /^\[FINISH_REASON_LENGTH request_id=node-cli-1 prompt_tokens=\d+ completion_tokens=24 seed=\d+ ttft_ms=[\d.e+-]+ tokens_per_s=[\d.e+-]+\]\n$/);
    // The seed differs per call (greedy ignores it); the rest is the same.
    const noSeed = (s) => blankTimings(s).replace(/ seed=\d+/, ' seed=S');
    assert.equal(noSeed(node.stderr), noSeed(cpp.stderr));

    // The library: the concatenation of the messages' text is the CLI's text.
    const messages = await collect(client.generate({ prompt: PROMPT, maxNewTokens: 24 }));
    assert.equal(messages.map((m) => m.text).join('') + '\n', node.stdout);
    const last = messages.at(-1);
    assert.equal(last.finishReason, 'FINISH_REASON_LENGTH');
    assert.equal(last.usage.completionTokens, 24);
    assert.match(last.seed, /^\d+$/);
    for (const m of messages.slice(0, -1)) assert.equal(m.finishReason, 'FINISH_REASON_UNSPECIFIED');
    // snake_case names work as well; an unknown field is refused.
    const snake = await collect(client.generate({ prompt: PROMPT, max_new_tokens: 24 }));
    assert.equal(snake.map((m) => m.text).join(''), messages.map((m) => m.text).join(''));
    assert.throws(() => client.generate({ prompt: PROMPT, maxTokens: 3 }),
      { name: 'TypeError', message: "GenerateRequest has no field 'maxTokens'" });
  });

  test('generate --json: one protobuf-JSON object per message, as the C++ client prints', async () => {
    const args = ['--server', server.address, '--json', 'generate', PROMPT, '--max-new-tokens', '12',
      '--seed', '7', '--top-logprobs', '2'];
    const node = await runNodeCli(args);
    const cpp = await runCppCli(args);
    assert.equal(node.code, 0, node.stderr);
    assert.equal(node.stderr, '');
    const parse = (out) => out.trim().split('\n').map((line) => JSON.parse(line));
    const ours = parse(node.stdout);
    const theirs = parse(cpp.stdout);
    // Messages may be merged differently (a slower reader gets bigger ones); the
    // text, the tokens and the last message's fields are the same.
    const text = (ms) => ms.map((m) => m.text ?? '').join('');
    const tokens = (ms) => ms.flatMap((m) => m.tokens ?? []);
    assert.equal(text(ours), text(theirs));
    assert.deepEqual(tokens(ours).map((t) => t.id), tokens(theirs).map((t) => t.id));
    tokens(ours).forEach((t, i) => {
      // C++ prints float32 in 9 digits, JavaScript the double it decoded.
      assert.equal(Math.fround(t.logprob), Math.fround(tokens(theirs)[i].logprob));
      assert.equal(t.topLogprobs.length, 2);
    });
    const [a, b] = [ours.at(-1), theirs.at(-1)];
    assert.equal(a.finishReason, 'FINISH_REASON_LENGTH');
    assert.equal(a.seed, '7');
    assert.deepEqual(a.usage, b.usage);
    // The same fields as the C++ client shows (unset ones left out, as
    // protobuf's JSON printer does), over the whole stream and on the last message
    // (whose text may be empty, depending on how the messages were merged).
    const keys = (ms) => [...new Set(ms.flatMap((m) => Object.keys(m)))].sort();
    const notText = (ms) => keys(ms).filter((k) => k !== 'text');
    assert.deepEqual(keys(ours), keys(theirs));
    assert.deepEqual(notText([a]), notText([b]));
    assert.deepEqual(Object.keys(a.timings).sort(), Object.keys(b.timings).sort());
    for (const m of ours.slice(0, -1)) {
      assert.equal(m.finishReason, undefined);
      assert.equal(m.usage, undefined);
    }
  });

  test('info and tokenize print what the C++ client prints', async () => {
    for (const args of [['info'], ['--json', 'info'], ['tokenize', PROMPT],
      ['tokenize', PROMPT, '--add-special-tokens'], ['--json', 'tokenize', PROMPT]]) {
      const node = await runNodeCli(['--server', server.address, ...args]);
      const cpp = await runCppCli(['--server', server.address, ...args]);
      assert.equal(node.code, 0, node.stderr);
      assert.equal(node.stdout, cpp.stdout, args.join(' '));
    }
    const info = await client.getModelInfo();
    assert.equal(info.name, 'tiny-builtin');
    assert.equal(info.limits.maxBatch, 16);
    assert.match(info.limits.kvCacheTokens, /^\d+$/);
    const tokens = await client.tokenize(PROMPT);
    const cli = await runNodeCli(['--server', server.address, 'tokenize', PROMPT]);
    assert.deepEqual(tokens.tokenIds, cli.stdout.trim().split('\n').map((line) => Number(line.split('\t')[0])));
    assert.equal(tokens.pieces.length, tokens.tokenIds.length);
  });

  test('health prints SERVING; an unknown service is NOT_FOUND', async () => {
    const node = await runNodeCli(['--server', server.address, 'health']);
    assert.deepEqual([node.code, node.stdout, node.stderr], [0, 'SERVING\n', '']);
    const named = await runNodeCli(['--server', server.address, 'health', '--service', 'streamgen.v1.TextGeneration']);
    assert.deepEqual([named.code, named.stdout], [0, 'SERVING\n']);
    const unknown = await runNodeCli(['--server', server.address, 'health', '--service', 'no.Such']);
    const cpp = await runCppCli(['--server', server.address, 'health', '--service', 'no.Such']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^streamgen-client: NOT_FOUND: /);
    assert.equal(unknown.stderr, cpp.stderr);
    assert.equal(await client.health(), 'SERVING');
  });

  test('a bad request: INVALID_ARGUMENT with the server\'s message, exit 1', async () => {
    const args = ['--server', server.address, 'generate', PROMPT, '--temperature=-1'];
    const node = await runNodeCli(args);
    const cpp = await runCppCli(args);
    assert.equal(node.code, 1);
    assert.equal(node.stderr, 'streamgen-client: INVALID_ARGUMENT: temperature must be in [0, 100], got -1\n');
    assert.equal(node.stderr, cpp.stderr);
    assert.equal(node.stdout, cpp.stdout);
    await assert.rejects(collect(client.generate({ prompt: PROMPT, topP: 1.5 })), (err) => {
      assert.equal(err.codeName, 'INVALID_ARGUMENT');
      assert.equal(statusName(err.code), 'INVALID_ARGUMENT');
      assert.match(err.details, /^top_p must be in \(0, 1\]/);
      return true;
    });
  });

  test('usage errors exit 2', async () => {
    const cases = [
      [['generate'], /generate takes one PROMPT/],
      [['generate', 'a', 'b'], /generate takes one PROMPT/],
      [['generate', PROMPT, '--bogus', '1'], /unknown flag --bogus/],
      [['generate', PROMPT, '--max-new-tokens', 'many'], /--max-new-tokens: 'many' is not an integer/],
      [['generate', PROMPT, '--max-new-tokens'], /--max-new-tokens needs a value/],
      [['frobnicate'], /usage: /],
      [[], /usage: /],
      [['--tls-cert', '/nonexistent.pem', 'info'], /--tls-cert and --tls-key go together/],
      [['--tls-ca', '/nonexistent/ca.pem', 'info'], /cannot read the CA bundle \/nonexistent\/ca.pem/],
    ];
    for (const [args, message] of cases) {
      const result = await runNodeCli(['--server', server.address, ...args]);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
      assert.equal(result.stdout, '');
    }
    const help = await runNodeCli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--tls-server-name VALUE/);
  });

  test('nothing listening: UNAVAILABLE, exit 1', async () => {
    // A port that was free a moment ago: the server's after it stopped.
    const gone = await startServer();
    const address = gone.address;
    await gone.stop();
    const result = await runNodeCli(['--server', address, '--deadline-ms', '5000', 'info']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^streamgen-client: UNAVAILABLE: /);
  });
});

describe('long streams on a slow model: Ctrl-C, AbortSignal, deadlines', () => {
  let modelDir;
  let server;
  let client;
  const longRequest = ['generate', PROMPT, '--max-new-tokens', '480', '--ignore-eos'];
  before(async () => {
    modelDir = await makeSlowModel();
    server = await startServer({ args: ['--model', modelDir], metrics: true });
    client = createClient({ address: server.address });
  });
  after(async () => {
    client?.close();
    assert.equal(await server?.stop(), 0);
    fs.rmSync(modelDir, { recursive: true, force: true });
  });

  test('SIGINT cancels the call: "cancelled", exit 130, the server cancels the sequence', async () => {
    const cancelledBefore = await server.metric('streamgen_engine_cancelled_total');
    let sent = false;
    const result = await runNodeCli(['--server', server.address, ...longRequest, '--request-id', 'sigint-1'], {
      onStdout: (text, child) => {
        if (!sent && text.length > 0) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    });
    assert.ok(sent, 'no text streamed before the end');
    assert.equal(result.code, 130, result.stderr);
    assert.equal(result.stderr, 'streamgen-client: cancelled\n');
    const line = await server.waitForRequestLog((l) => l.request_id === 'sigint-1');
    assert.equal(line.code, 'CANCELLED');
    assert.equal(line.finish_reason, 'cancelled');
    assert.ok(line.completion_tokens < 480, JSON.stringify(line));
    const end = Date.now() + 20000;
    while (await server.metric('streamgen_engine_cancelled_total') < cancelledBefore + 1) {
      assert.ok(Date.now() < end, 'the engine never counted the cancel');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });

  test('an AbortSignal cancels the library\'s stream; leaving the loop early does too', async () => {
    const controller = new AbortController();
    const seen = [];
    await assert.rejects(async () => {
      for await (const message of client.generate(
        { prompt: PROMPT, maxNewTokens: 480, ignoreEos: true, requestId: 'abort-1' },
        { signal: controller.signal })) {
        seen.push(message);
        controller.abort();
      }
    }, (err) => {
      assert.equal(err.codeName, 'CANCELLED');
      return true;
    });
    assert.ok(seen.length >= 1 && seen.length < 480);
    const aborted = await server.waitForRequestLog((l) => l.request_id === 'abort-1');
    assert.equal(aborted.code, 'CANCELLED');
    assert.ok(aborted.completion_tokens < 480);

    for await (const message of client.generate(
      { prompt: PROMPT, maxNewTokens: 480, ignoreEos: true, requestId: 'break-1' })) {
      assert.equal(message.requestId, 'break-1');
      break;
    }
    const broken = await server.waitForRequestLog((l) => l.request_id === 'break-1');
    assert.equal(broken.code, 'CANCELLED');
    assert.ok(broken.completion_tokens < 480);
  });

  test('--deadline-ms: DEADLINE_EXCEEDED after the text so far, exit 1', async () => {
    const started = Date.now();
    // 3 s: long enough for the first tokens even on a loaded 2-core CI
    // machine, far shorter than the 480 tokens of the slow model.
    const result = await runNodeCli(['--server', server.address, '--deadline-ms', '3000', ...longRequest,
      '--request-id', 'deadline-1']);
    const elapsed = Date.now() - started;
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^streamgen-client: DEADLINE_EXCEEDED: /);
    assert.ok(elapsed >= 3000, `${elapsed} ms`);
    assert.ok(result.stdout.trim().length > 0, 'no text before the deadline');
    const line = await server.waitForRequestLog((l) => l.request_id === 'deadline-1');
    assert.equal(line.code, 'DEADLINE_EXCEEDED');
    assert.ok(line.completion_tokens < 480);

    await assert.rejects(collect(client.generate(
      { prompt: PROMPT, maxNewTokens: 480, ignoreEos: true }, { deadlineMs: 300 })),
    (err) => err.codeName === 'DEADLINE_EXCEEDED');
  });
});

describe('API keys', () => {
  let server;
  let dir;
  const key = 'node-test-key-0123';
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-node-keys-'));
    fs.writeFileSync(path.join(dir, 'keys'), `# test keys\n${key}\n`);
    server = await startServer({ args: ['--api-key-file', path.join(dir, 'keys')] });
  });
  after(async () => {
    assert.equal(await server?.stop(), 0);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('without a key UNAUTHENTICATED; --api-key, $STREAMGEN_API_KEY and apiKey work', async () => {
    const request = ['--server', server.address, 'generate', PROMPT, '--max-new-tokens', '4'];
    const env = { STREAMGEN_API_KEY: '' };
    const missing = await runNodeCli(request, { env });
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, "streamgen-client: UNAUTHENTICATED: missing API key: send 'authorization: Bearer <key>' (gRPC metadata or HTTP header)\n");
    const wrong = await runNodeCli(['--api-key', 'nope', ...request], { env });
    assert.equal(wrong.code, 1);
    assert.equal(wrong.stderr, 'streamgen-client: UNAUTHENTICATED: invalid API key\n');

    const flag = await runNodeCli(['--api-key', key, ...request], { env });
    assert.equal(flag.code, 0, flag.stderr);
    assert.match(flag.stderr, /^\[FINISH_REASON_LENGTH .* completion_tokens=4 /);
    const fromEnv = await runNodeCli(request, { env: { STREAMGEN_API_KEY: key } });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.equal(fromEnv.stdout, flag.stdout);
    // Health needs no key.
    const health = await runNodeCli(['--server', server.address, 'health'], { env });
    assert.deepEqual([health.code, health.stdout], [0, 'SERVING\n']);

    const keyed = createClient({ address: server.address, apiKey: key });
    const anonymous = createClient({ address: server.address });
    try {
      assert.equal((await keyed.getModelInfo()).name, 'tiny-builtin');
      await assert.rejects(anonymous.getModelInfo(), (err) => err.codeName === 'UNAUTHENTICATED' &&
        err.details.startsWith('missing API key'));
    } finally {
      keyed.close();
      anonymous.close();
    }
  });
});

describe('TLS', () => {
  let dir;
  let certs;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-node-tls-'));
    certs = makeCertificates(dir);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('server TLS: --tls-ca with --tls-server-name; refused without the name, the CA or TLS', async () => {
    const server = await startServer({ args: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey] });
    try {
      const request = ['generate', PROMPT, '--max-new-tokens', '8'];
      const ok = await runNodeCli(['--server', server.address, '--tls-ca', certs.ca,
        '--tls-server-name', 'streamgen.test', ...request]);
      assert.equal(ok.code, 0, ok.stderr);
      const cpp = await runCppCli(['--server', server.address, '--tls-ca', certs.ca,
        '--tls-server-name', 'streamgen.test', ...request]);
      assert.equal(ok.stdout, cpp.stdout);
      // The certificate names streamgen.test, not 127.0.0.1.
      const wrongName = await runNodeCli(['--server', server.address, '--tls-ca', certs.ca,
        '--deadline-ms', '5000', ...request]);
      assert.equal(wrongName.code, 1);
      assert.match(wrongName.stderr, /^streamgen-client: UNAVAILABLE: /);
      // The system's roots do not know the test CA.
      const untrusted = await runNodeCli(['--server', server.address, '--tls',
        '--tls-server-name', 'streamgen.test', '--deadline-ms', '5000', ...request]);
      assert.equal(untrusted.code, 1);
      assert.match(untrusted.stderr, /^streamgen-client: UNAVAILABLE: /);
      const plain = await runNodeCli(['--server', server.address, '--deadline-ms', '5000', ...request]);
      assert.equal(plain.code, 1);
      assert.match(plain.stderr, /^streamgen-client: (UNAVAILABLE|DEADLINE_EXCEEDED): /);

      const client = createClient({ address: server.address, tls: { caFile: certs.ca, serverName: 'streamgen.test' } });
      try {
        const messages = await collect(client.generate({ prompt: PROMPT, maxNewTokens: 8 }));
        assert.equal(messages.map((m) => m.text).join('') + '\n', ok.stdout);
        assert.equal(await client.health(), 'SERVING');
      } finally {
        client.close();
      }
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('mutual TLS: a client certificate is required', async () => {
    const server = await startServer({ args: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey,
      '--tls-client-ca', certs.ca] });
    try {
      const base = ['--server', server.address, '--tls-ca', certs.ca, '--tls-server-name', 'streamgen.test'];
      const withCert = await runNodeCli([...base, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey,
        'health']);
      assert.deepEqual([withCert.code, withCert.stdout], [0, 'SERVING\n'], withCert.stderr);
      const info = await runNodeCli([...base, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey,
        '--json', 'info']);
      assert.equal(info.code, 0, info.stderr);
      assert.equal(JSON.parse(info.stdout).name, 'tiny-builtin');
      const without = await runNodeCli([...base, '--deadline-ms', '5000', 'info']);
      assert.equal(without.code, 1);
      assert.match(without.stderr, /^streamgen-client: UNAVAILABLE: /);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});
