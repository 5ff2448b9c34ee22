// Starts a real streamgen-server subprocess on loopback (any free ports) for the
// Node tests, and stops it. Usage:
//   const server = await startServer({ buildDir, args: ['--max-batch', '4'] });
//   server.httpUrl  // http://127.0.0.1:PORT
//   server.grpcAddress  // 127.0.0.1:PORT
//   await server.metric('streamgen_engine_cancelled_total')  // a number
//   await server.stop()  // SIGTERM; resolves with the exit code
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function buildDirFromArgs() {
  const i = process.argv.indexOf('--build-dir');
  if (i >= 0 && process.argv[i + 1]) return path.resolve(process.argv[i + 1]);
  if (process.env.STREAMGEN_BUILD_DIR) return path.resolve(process.env.STREAMGEN_BUILD_DIR);
  return path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'build');
}

// The tiny random model decodes thousands of tokens a second: its longest stream
// is over in well under 100 ms, too short to act on mid-stream. A random
// model of 512 x 8 layers (made here in under a second) decodes a few hundred
// a second, so a 480-token answer lasts over a second. Returns its folder
// (remove it when done).
export async function makeSlowModel(buildDir = buildDirFromArgs()) {
  const modelDir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-slow-model-'));
  await promisify(execFile)(path.join(buildDir, 'tools', 'streamgen-make-tiny-model'), [
    '--out', modelDir,
    '--tokenizer', path.join(buildDir, 'models', 'tiny-builtin', 'tokenizer.model'),
    '--hidden-size', '512', '--intermediate-size', '1376', '--layers', '8',
    '--heads', '8', '--kv-heads', '8',
  ], { timeout: 60000 });
  return modelDir;
}

// The tiny random model unless `args` names a --model (the server's own
// default is the demo model).
export async function startServer({ buildDir = buildDirFromArgs(), args = [] } = {}) {
  if (!args.includes('--model')) {
    args = ['--model', path.join(buildDir, 'models', 'tiny-builtin'), ...args];
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-node-test-'));
  const grpcPortFile = path.join(dir, 'grpc-port');
  const httpPortFile = path.join(dir, 'http-port');
  const logPath = path.join(dir, 'server.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(path.join(buildDir, 'server', 'streamgen-server'), [
    '--listen', '127.0.0.1:0', '--port-file', grpcPortFile,
    '--http-listen', '127.0.0.1:0', '--http-port-file', httpPortFile,
    '--metrics-listen=', '--log-format=json', ...args,
  ], { stdio: ['ignore', log, log] });
  let exited = null;
  const exitPromise = new Promise((resolve) => child.on('exit', (code, signal) => {
    exited = code ?? signal;
    resolve(exited);
  }));
  const logs = () => fs.readFileSync(logPath, 'utf8');
  const read = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '');
  const deadline = Date.now() + 120000;
  while (!read(httpPortFile) || !read(grpcPortFile)) {
    if (exited !== null || Date.now() > deadline) {
      throw new Error(`streamgen-server did not start (exit ${exited}):\n${logs()}`);
    }
    await sleep(20);
  }
  const httpUrl = `http://127.0.0.1:${read(httpPortFile)}`;
  while (true) {
    try {
      const response = await fetch(`${httpUrl}/health`);
      if (response.status === 200) break;
    } catch (_) { /* not yet */ }
    if (exited !== null || Date.now() > deadline) {
      throw new Error(`streamgen-server never became healthy (exit ${exited}):\n${logs()}`);
    }
    await sleep(50);
  }
  return {
    dir,
    httpUrl,
    grpcAddress: `127.0.0.1:${read(grpcPortFile)}`,
    logs,
    // The value of one Prometheus sample (the sum over its label sets), from /metrics.
    async metric(name) {
      const text = await (await fetch(`${httpUrl}/metrics`)).text();
      let sum = 0;
      let found = false;
      for (const line of text.split('\n')) {
        if (line.startsWith('#')) continue;
        const match = line.match(/^([^\s{]+)(\{[^}]*\})?\s+(\S+)$/);
        if (match && match[1] === name) {
          sum += Number(match[3]);
          found = true;
        }
      }
      if (!found) throw new Error(`no metric ${name} in /metrics:\n${text}`);
      return sum;
    },
    // Polls `name` until predicate(value) holds (or throws after timeoutMs).
    async waitForMetric(name, predicate, timeoutMs = 20000) {
      const end = Date.now() + timeoutMs;
      let value;
      while (Date.now() < end) {
        value = await this.metric(name);
        if (predicate(value)) return value;
        await sleep(20);
      }
      throw new Error(`${name} stayed at ${value}`);
    },
    async stop() {
      if (exited === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
      const code = await exitPromise;
      clearTimeout(timer);
      return code;
    },
  };
}
