#!/usr/bin/env node
// The Node command-line client for streamgen.v1.TextGeneration, on the library
// in ./streamgen.js. Same commands, flags, output and exit codes as the C++
// streamgen-client (client/main.cc), bench aside:
//   node client/node/cli.js [--server HOST:PORT] [--tls] [--tls-ca FILE]
//       [--tls-cert FILE --tls-key FILE] [--tls-server-name NAME] [--api-key KEY]
//       [--deadline-ms N] [--json] [--proto FILE] COMMAND
//   COMMAND: generate PROMPT [--max-new-tokens N] [--temperature T] [--top-p P]
//                   [--top-k K] [--seed S] [--stop S]... (and the C++ client's
//                   other sampling flags)
//            tokenize TEXT [--add-special-tokens] | info | health [--service NAME]
// Flags go anywhere, as --flag VALUE or --flag=VALUE, with dashes or
// underscores; `--` ends them. Exit status: 0; 1 for a failed call (stderr:
// "streamgen-client: CODE_NAME: message"), or health not SERVING; 2 for a usage
// error; 130 after Ctrl-C (SIGINT or SIGTERM cancel the call in flight).
import { createClient, statusName } from './streamgen.js';

const PROGRAM = 'streamgen-client';

// grpc-js hands Node's TLS the address's host as the server name; for an IP
// address (--server 127.0.0.1:PORT --tls) Node then prints DEP0123 on stderr,
// which is noise in a command's output.
process.noDeprecation = true;

// name -> [kind, help]. kind: bool, string, int, number, uint64, list (repeatable),
// ids (comma-separated integers).
const FLAGS = {
  server: ['string', 'server address HOST:PORT (default localhost:50051)'],
  tls: ['bool', "connect with TLS (the system's roots unless --tls-ca)"],
  tls_ca: ['string', "PEM CA bundle that signed the server's certificate"],
  tls_cert: ['string', 'PEM client certificate (mutual TLS)'],
  tls_key: ['string', 'PEM client key (mutual TLS)'],
  tls_server_name: ['string', 'expected server name, if not the host in --server'],
  api_key: ['string', "API key, sent as 'authorization: Bearer KEY' (default: $STREAMGEN_API_KEY)"],
  deadline_ms: ['int', 'deadline for the call in milliseconds (0: none)'],
  json: ['bool', 'print each response message as protobuf JSON, one per line'],
  proto: ['string', 'the contract (default: the repository\'s proto/streamgen/v1/generate.proto)'],
  // generate
  max_new_tokens: ['int', "tokens to generate (0: the server's default)"],
  temperature: ['number', '0: greedy'],
  top_k: ['int', '0: off'],
  top_p: ['number', '0: off (1.0)'],
  min_p: ['number', '0: off'],
  repetition_penalty: ['number', '0: off (1.0)'],
  presence_penalty: ['number', '0: off'],
  frequency_penalty: ['number', '0: off'],
  seed: ['uint64', 'sampling seed (-1: the server picks one and reports it)'],
  stop: ['list', 'a stop string (repeat the flag for more)'],
  stop_token_ids: ['ids', 'stop token ids, comma-separated'],
  ignore_eos: ['bool', 'keep generating past EOS'],
  top_logprobs: ['int', 'alternatives per token (0..20; shown with --json)'],
  request_id: ['string', 'request id (default: the server makes one)'],
  chat: ['bool', 'send PROMPT as a user message, rendered with the chat template'],
  system: ['string', 'with --chat: a system message first'],
  prompt_token_ids: ['ids', 'prompt as token ids, comma-separated (then no PROMPT)'],
  // tokenize, health
  add_special_tokens: ['bool', 'tokenize: add BOS/EOS as a text prompt gets them'],
  service: ['string', 'health: the service to check ("": the whole server)'],
};

const USAGE = `usage: node client/node/cli.js [flags] generate PROMPT | tokenize TEXT | info | health
Flags (anywhere; --flag VALUE or --flag=VALUE; dashes or underscores):
${Object.entries(FLAGS).map(([name, [kind, help]]) =>
    `  --${name.replace(/_/g, '-')}${kind === 'bool' ? '' : ' VALUE'}  ${help}`).join('\n')}
`;

class UsageError extends Error {}
class HelpRequested extends Error {}

function parseValue(name, kind, text) {
  const fail = (what) => { throw new UsageError(`--${name.replace(/_/g, '-')}: '${text}' is not ${what}`); };
  switch (kind) {
    case 'bool':
      if (text === 'true' || text === '1') return true;
      if (text === 'false' || text === '0') return false;
      return fail('true or false');
    case 'int':
      if (!/^-?\d+$/.test(text)) fail('an integer');
      return Number(text);
    case 'number':
      if (text.trim() === '' || !Number.isFinite(Number(text))) fail('a number');
      return Number(text);
    case 'uint64':
      if (text === '-1') return null;
      if (!/^\d+$/.test(text) || BigInt(text) >= 2n ** 64n) fail('an unsigned 64-bit integer');
      return text;
    case 'ids':
      return text === '' ? [] : text.split(',').map((id) => {
        if (!/^-?\d+$/.test(id)) fail('a comma-separated list of integers');
        return Number(id);
      });
    default:
      return text;
  }
}

// argv -> { flags, positional }.
export function parseArgs(argv) {
  const flags = { stop: [] };
  const positional = [];
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i];
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = (eq < 0 ? arg.slice(2) : arg.slice(2, eq)).replace(/-/g, '_');
    if (name === 'help') throw new HelpRequested();
    const spec = FLAGS[name];
    if (!spec) throw new UsageError(`unknown flag ${arg.slice(0, eq < 0 ? undefined : eq)}`);
    const [kind] = spec;
    let text;
    if (eq >= 0) {
      text = arg.slice(eq + 1);
    } else if (kind === 'bool') {
      text = 'true';
    } else if (i + 1 < argv.length) {
      text = argv[++i];
    } else {
      throw new UsageError(`--${name.replace(/_/g, '-')} needs a value`);
    }
    const value = parseValue(name, kind, text);
    if (kind === 'list') flags[name].push(value);
    else flags[name] = value;
  }
  return { flags, positional };
}

function buildGenerateRequest(flags, prompt) {
  const request = {};
  if (flags.prompt_token_ids?.length) {
    request.promptTokenIds = flags.prompt_token_ids;
  } else if (flags.chat) {
    request.messages = [];
    if (flags.system) request.messages.push({ role: 'system', content: flags.system });
    request.messages.push({ role: 'user', content: prompt });
  } else {
    request.prompt = prompt;
  }
  const copy = {
    max_new_tokens: 'maxNewTokens', temperature: 'temperature', top_k: 'topK', top_p: 'topP',
    min_p: 'minP', repetition_penalty: 'repetitionPenalty', presence_penalty: 'presencePenalty',
    frequency_penalty: 'frequencyPenalty', stop_token_ids: 'stopTokenIds', ignore_eos: 'ignoreEos',
    top_logprobs: 'topLogprobs', request_id: 'requestId',
  };
  for (const [flag, field] of Object.entries(copy)) {
    if (flags[flag] !== undefined) request[field] = flags[flag];
  }
  if (flags.seed !== undefined && flags.seed !== null) request.seed = flags.seed;
  if (flags.stop.length) request.stop = flags.stop;
  return request;
}

// A double as C++'s `std::ostream << double` prints it (%g, 6 significant digits).
export function formatG(x) {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const [mantissa, exponentText] = x.toExponential(5).split('e');
  const exponent = Number(exponentText);
  const trim = (s) => (s.includes('.') ? s.replace(/\.?0+$/, '') : s);
  if (exponent < -4 || exponent >= 6) {
    const sign = exponent < 0 ? '-' : '+';
    return `${trim(mantissa)}e${sign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  return trim(x.toFixed(5 - exponent));
}

// A message in protobuf's text format, as the C++ client's DebugString() prints
// `info`: snake_case names, strings quoted, nested messages in braces, one
// line per repeated element. `message` holds only the fields that were sent;
// `definition` is the client's package definition, `typeName` the message's
// full name.
function textFormat(message, definition, typeName, indent = '') {
  const fields = new Map(definition[typeName].type.field.map((field) => [field.name, field]));
  const pkg = typeName.slice(0, typeName.lastIndexOf('.'));
  let out = '';
  for (const [key, value] of Object.entries(message)) {
    const field = fields.get(key);
    const name = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    for (const item of Array.isArray(value) ? value : [value]) {
      if (field?.type === 'TYPE_MESSAGE') {
        const nested = definition[field.typeName] ? field.typeName : `${pkg}.${field.typeName}`;
        out += `${indent}${name} {\n${textFormat(item, definition, nested, `${indent}  `)}${indent}}\n`;
      } else if (field?.type === 'TYPE_STRING' || field?.type === 'TYPE_BYTES') {
        out += `${indent}${name}: ${JSON.stringify(String(item))}\n`;
      } else {
        out += `${indent}${name}: ${item}\n`;
      }
    }
  }
  return out;
}

function summaryLine(last) {
  const usage = last.usage ?? {};
  const timings = last.timings ?? {};
  return `[${last.finishReason} request_id=${last.requestId ?? ''}` +
    ` prompt_tokens=${usage.promptTokens ?? 0} completion_tokens=${usage.completionTokens ?? 0}` +
    ` seed=${last.seed ?? 0} ttft_ms=${formatG(timings.ttftMs ?? 0)}` +
    ` tokens_per_s=${formatG(timings.decodeTokensPerS ?? 0)}]\n`;
}

async function run(argv) {
  const { flags, positional } = parseArgs(argv);
  const [command, ...rest] = positional;
  const ids = Boolean(flags.prompt_token_ids?.length);
  if (command === 'generate' && rest.length !== (ids ? 0 : 1)) {
    throw new UsageError('generate takes one PROMPT (or --prompt-token-ids)');
  }
  const arity = { generate: rest.length, tokenize: 1, info: 0, health: 0 };
  if (!(command in arity) || rest.length !== arity[command]) throw new UsageError('');

  const tlsWanted = Boolean(flags.tls || flags.tls_ca || flags.tls_cert);
  if (Boolean(flags.tls_cert) !== Boolean(flags.tls_key)) {
    throw new UsageError('--tls-cert and --tls-key go together');
  }
  let client;
  try {
    client = createClient({
      address: flags.server ?? 'localhost:50051',
      tls: tlsWanted && {
        caFile: flags.tls_ca, certFile: flags.tls_cert, keyFile: flags.tls_key,
        serverName: flags.tls_server_name,
      },
      apiKey: flags.api_key || process.env.STREAMGEN_API_KEY || '',
      ...(flags.proto ? { protoPath: flags.proto } : {}),
      // Only the fields that were sent, as protobuf's JSON printer shows them.
      loaderOptions: { defaults: false },
    });
  } catch (err) {
    throw new UsageError(err.message);
  }

  // Ctrl-C: cancel the call in flight (or the one about to start).
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const callOpts = { deadlineMs: flags.deadline_ms ?? 0, signal: interrupt.signal };
  const out = (text) => process.stdout.write(text);
  try {
    if (command === 'generate') {
      let last = null;
      try {
        for await (const message of client.generate(buildGenerateRequest(flags, rest[0]), callOpts)) {
          out(flags.json ? `${JSON.stringify(message)}\n` : (message.text ?? ''));
          if (message.finishReason && message.finishReason !== 'FINISH_REASON_UNSPECIFIED') last = message;
        }
      } finally {
        if (!flags.json) {
          out('\n');
          if (last) process.stderr.write(summaryLine(last));
        }
      }
      return 0;
    }
    if (command === 'tokenize') {
      const response = await client.tokenize(
        { text: rest[0], addSpecialTokens: Boolean(flags.add_special_tokens) }, callOpts);
      if (flags.json) {
        out(`${JSON.stringify(response)}\n`);
      } else {
        const pieces = response.pieces ?? [];
        (response.tokenIds ?? []).forEach((id, i) => out(`${id}\t${pieces[i] ?? ''}\n`));
      }
      return 0;
    }
    if (command === 'info') {
      const info = await client.getModelInfo(callOpts);
      out(flags.json ? `${JSON.stringify(info)}\n`
                    : textFormat(info, client.definition, 'streamgen.v1.ModelInfo'));
      return 0;
    }
    // health: a 5 s deadline unless --deadline-ms.
    const status = await client.health(flags.service ?? '', {
      ...callOpts, deadlineMs: flags.deadline_ms > 0 ? flags.deadline_ms : undefined,
    });
    out(`${status}\n`);
    return status === 'SERVING' ? 0 : 1;
  } catch (err) {
    if (typeof err.code !== 'number') throw err;
    if (interrupt.signal.aborted) {
      process.stderr.write(`${PROGRAM}: cancelled\n`);
      return 130;
    }
    process.stderr.write(`${PROGRAM}: ${statusName(err.code)}: ${err.details ?? err.message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    client.close();
  }
}

run(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    if (err instanceof HelpRequested) {
      process.stdout.write(USAGE);
      process.exitCode = 0;
    } else if (err instanceof UsageError) {
      if (err.message) process.stderr.write(`${PROGRAM}: ${err.message}\n`);
      process.stderr.write(USAGE);
      process.exitCode = 2;
    } else {
      process.stderr.write(`${PROGRAM}: ${err.stack ?? err}\n`);
      process.exitCode = 1;
    }
  });
