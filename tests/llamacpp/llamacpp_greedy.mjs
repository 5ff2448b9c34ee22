// llama.cpp's greedy continuations, through node-llama-cpp's prebuilt CPU binary.
//
//   node llamacpp_greedy.mjs MODEL.gguf PROMPTS.json N
//
// PROMPTS.json is a list of prompts (each a list of token ids). Prints one JSON
// list: for each prompt {prompt, ids (N greedy ids), gaps (each step's top-2
// logit gap, in logits), min_gap (the smallest of them)}.
//
// Each step is evaluated with temperature 1 and no other sampling option, so the
// probabilities llama.cpp reports are its softmax over the logits (top-k only
// renormalizes, which keeps the ratio of the top two); the greedy id is their
// argmax, fed back to llama.cpp in place of its sampled token, and
// log(p1) - log(p2) is the top-2 logit gap.
import fs from "node:fs";
import {getLlama} from "node-llama-cpp";

const [modelPath, promptsPath, countText] = process.argv.slice(2);
if (!modelPath || !promptsPath || !countText) {
  console.error("usage: node llamacpp_greedy.mjs MODEL.gguf PROMPTS.json N");
  process.exit(2);
}
const prompts = JSON.parse(fs.readFileSync(promptsPath, "utf8"));
const count = Number(countText);

// gpu: false and build: "never": the prebuilt CPU binary or an error, never a
// local compile.
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const results = [];
for (const prompt of prompts) {
  const context = await model.createContext({
    contextSize: prompt.length + count + 8, batchSize: prompt.length + count + 8,
    sequences: 1, threads: 1, flashAttention: false,
    // llama.cpp keeps its KV cache in F16 unless told: float32 end to end.
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
  const sequence = context.getSequence();
  const ids = [];
  const gaps = [];
  const steps = sequence.evaluateWithMetadata(prompt, {probabilities: true},
    // yieldEogToken: the generator would end when its own (random) sample is
    // an end-of-generation token; the greedy id replaces that sample anyway,
    // and an EOS argmax is fed back like any id (as --ignore-eos does, where
    // llama.cpp's own ignore_eos would forbid EOS instead).
    {temperature: 1, topK: 0, topP: 1, minP: 0, seed: 0, yieldEogToken: true});
  let step = await steps.next();
  while (!step.done) {
    const ranked = [...step.value.probabilities.entries()].sort((a, b) => b[1] - a[1]);
    const [best, p1] = ranked[0];
    const p2 = ranked.length > 1 ? ranked[1][1] : 0;
    gaps.push(Math.log(p1) - Math.log(p2));
    ids.push(best);
    if (ids.length === count) break;
    step = await steps.next(best);
  }
  await steps.return();
  await context.dispose();
  results.push({prompt, ids, gaps, min_gap: Math.min(...gaps)});
}
await model.dispose();
await llama.dispose();
console.log(JSON.stringify(results));
