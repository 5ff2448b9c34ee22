// Hugging Face's Rust `tokenizers` (the @anush008/tokenizers Node binding) as
// a reference for the Python tests (tests/hf_model_e2e_test.py): one JSON
// request on stdin, one JSON answer on stdout.
//
//   {"tokenizer": "DIR/tokenizer.json", "requests": [
//     {"op": "encode_prompt", "text": s},    -> {"ids": [...], "ids_plain": [...]}
//     {"op": "encode_corpus"},               -> {"texts": [...], "ids": [[...], ...],
//                                                "ids_plain": [[...], ...]}
//     {"op": "encode_rendered", "text": s},  -> {"ids": [...]}
//     {"op": "decode", "ids": [...]},        -> {"text": s}
//   ]}
//   -> {"results": [...]}
//
// encode_prompt (and encode_corpus, on each text of corpus.mjs) is what a text prompt gets from streamgen:
// encode(text, add_special_tokens=True) with special tokens written in the
// text read as text, which is transformers' `tokenizer(text,
// split_special_tokens=True)` (the Rust library's encode_special_tokens). The
// binding does not expose that switch, so the reference is a copy of the
// tokenizer whose special added tokens can never match (their ids, and the
// post-processor's BOS, are unchanged), as tokenizers.test.mjs does.
// ids_plain: the same with add_special_tokens=False.
// encode_rendered is what a chat template's rendering gets, as transformers'
// apply_chat_template(tokenize=True) encodes it: special tokens parsed (the
// template writes them) and add_special_tokens=False (the template writes
// BOS). decode is decode(ids, skip_special_tokens=True).
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { corpus } from './corpus.mjs';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('@anush008/tokenizers');

const request = JSON.parse(fs.readFileSync(0, 'utf8'));
const json = JSON.parse(fs.readFileSync(request.tokenizer, 'utf8'));
const parsed = Tokenizer.fromString(JSON.stringify(json));
const unparsed = Tokenizer.fromString(JSON.stringify({
  ...json,
  added_tokens: json.added_tokens.map((t) =>
    t.special ? { ...t, content: `\u0001never-${t.id}\u0001` } : t),
}));

const results = [];
for (const r of request.requests) {
  if (r.op === 'encode_corpus') {
    const ids = await unparsed.encodeBatch(corpus, { addSpecialTokens: true });
    const plain = await unparsed.encodeBatch(corpus, { addSpecialTokens: false });
    results.push({
      texts: corpus, ids: ids.map((e) => e.getIds()), ids_plain: plain.map((e) => e.getIds()),
    });
  } else if (r.op === 'encode_prompt') {
    results.push({
      ids: (await unparsed.encodeBatch([r.text], { addSpecialTokens: true }))[0].getIds(),
      ids_plain: (await unparsed.encodeBatch([r.text], { addSpecialTokens: false }))[0].getIds(),
    });
  } else if (r.op === 'encode_rendered') {
    results.push({ ids: (await parsed.encodeBatch([r.text], { addSpecialTokens: false }))[0].getIds() });
  } else if (r.op === 'decode') {
    results.push({ text: (await parsed.decodeBatch([r.ids], true))[0] });
  } else {
    throw new Error(`hf_reference.mjs: unknown op ${JSON.stringify(r.op)}`);
  }
}
process.stdout.write(JSON.stringify({ results }) + '\n');
