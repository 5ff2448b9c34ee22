// Helpers for the Node client's and the reflection consumer's tests: a real
// streamgen-server subprocess on loopback (gRPC on any free port, the HTTP face
// off, metrics on request), the CLIs as child processes, test certificates.
//   const server = await startServer({ args: ['--max-batch', '4'], metrics: true });
//   server.address                 // 127.0.0.1:PORT
//   server.requestLogs()           // the per-request log lines, parsed
//   await server.metric('streamgen_engine_cancelled_total')
//   await server.stop()            // SIGTERM; resolves with the exit code
// No npm packages: both tests' packages import it.
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export const SOURCE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const NODE_CLI = path.join(SOURCE_DIR, 'client', 'node', 'cli.js');

export function buildDir() {
  if (process.env.STREAMGEN_BUILD_DIR) return path.resolve(process.env.STREAMGEN_BUILD_DIR);
  return path.join(SOURCE_DIR, 'build');
}

export const cppClient = () => path.join(buildDir(), 'client', 'streamgen-client');
export const tinyModel = () => path.join(buildDir(), 'models', 'tiny-builtin');

// The tiny random model decodes thousands of tokens a second: a stream is over
// before a test can act on it. A random 512 x 8-layer model (made in under a
// second) decodes a few hundred a second, so 480 tokens last over a second.
// Returns its folder (remove it when done).
export async function makeSlowModel() {
  const modelDir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-node-slow-model-'));
  await promisify(execFile)(path.join(buildDir(), 'tools', 'streamgen-make-tiny-model'), [
    '--out', modelDir,
    '--tokenizer', path.join(tinyModel(), 'tokenizer.model'),
    // ~85M parameters: 480 tokens take several seconds even with the fastest
    // CPU kernels (the deadline test needs more than 3 s of output).
    '--hidden-size', '768', '--intermediate-size', '2048', '--layers', '12',
    '--heads', '12', '--kv-heads', '12',
  ], { timeout: 60000 });
  return modelDir;
}

// node:http rather than fetch(), which is experimental (and warns) on Node 18.
function httpGet(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { body += chunk; });
      response.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

// Starts streamgen-server with the tiny random model unless `args` names a
// --model; resolves once it logs "serving" (the model is loaded, health SERVING).
// `metrics`: serve /metrics on a free port (server.metric()).
export async function startServer({ args = [], metrics = false } = {}) {
  if (!args.includes('--model')) args = ['--model', tinyModel(), ...args];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-node-client-test-'));
  const portFile = path.join(dir, 'grpc-port');
  const logPath = path.join(dir, 'server.log');
  const log = fs.openSync(logPath, 'w');
  const child = spawn(path.join(buildDir(), 'server', 'streamgen-server'), [
    '--listen', '127.0.0.1:0', '--port-file', portFile, '--http-listen=',
    metrics ? '--metrics-listen=127.0.0.1:0' : '--metrics-listen=', '--log-format=json', ...args,
  ], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = code ?? signal;
      resolve(exited);
    });
    // Not started at all (no binary: build first).
    child.on('error', (err) => {
      exited = err.message;
      resolve(exited);
    });
  });
  const logs = () => fs.readFileSync(logPath, 'utf8');
  const logLines = () => logs().split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line));
  const deadline = Date.now() + 120000;
  while (!logLines().some((line) => line.msg === 'serving')) {
    if (exited !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`streamgen-server did not start (exit ${exited}):\n${logs()}`);
    }
    await sleep(20);
  }
  const listening = logLines().find((line) => line.msg === 'listening');
  const port = fs.readFileSync(portFile, 'utf8').trim();
  return {
    dir,
    address: `127.0.0.1:${port}`,
    logs,
    // The per-request log lines (msg 'Generate', 'Tokenize', ...), parsed.
    requestLogs: (method = 'Generate') => logLines().filter((line) => line.msg === method),
    // Polls the log until a Generate line satisfies `predicate`; returns it.
    async waitForRequestLog(predicate, timeoutMs = 20000) {
      const end = Date.now() + timeoutMs;
      while (Date.now() < end) {
        const line = this.requestLogs().find(predicate);
        if (line) return line;
        await sleep(20);
      }
      throw new Error(`no such request log line in:\n${logs()}`);
    },
    // One Prometheus sample (the sum over its label sets), from /metrics.
    async metric(name) {
      if (!metrics) throw new Error('started without metrics');
      const text = await httpGet(`http://127.0.0.1:${listening.metrics_port}/metrics`);
      let sum = 0;
      let found = false;
      for (const line of text.split('\n')) {
        const match = line.match(/^([^\s{#]+)(\{[^}]*\})?\s+(\S+)$/);
        if (match && match[1] === name) {
          sum += Number(match[3]);
          found = true;
        }
      }
      if (!found) throw new Error(`no metric ${name} in /metrics:\n${text}`);
      return sum;
    },
    async stop() {
      if (exited === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
      const code = await exitPromise;
      clearTimeout(timer);
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}

// Runs a program to its end: { code, signal, stdout, stderr }. `onStdout(text,
// child)` sees the output as it comes (to signal the child mid-stream).
export function run(file, args, { env = {}, onStdout, timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      if (onStdout) onStdout(stdout, child);
    });
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// client/node/cli.js under the Node that runs the test (so a Node 18 run tests
// the CLI on Node 18), and the C++ streamgen-client.
export const runNodeCli = (args, options) => run(process.execPath, [NODE_CLI, ...args], options);
export const runCppCli = (args, options) => run(cppClient(), args, options);

// A CA, a server certificate for the name `streamgen.test` (not the address the
// tests dial, so that --tls-server-name matters) and a client certificate, in
// `dir`. Returns their paths.
export function makeCertificates(dir) {
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=streamgen-test-ca',
    '-keyout', 'ca.key', '-out', 'ca.pem');
  fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=DNS:streamgen.test\n');
  fs.writeFileSync(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const name of ['server', 'client']) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`,
      '-keyout', `${name}.key`, '-out', `${name}.csr`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
  }
  const at = (name) => path.join(dir, name);
  return {
    ca: at('ca.pem'), serverCert: at('server.pem'), serverKey: at('server.key'),
    clientCert: at('client.pem'), clientKey: at('client.key'),
  };
}
