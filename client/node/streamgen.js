// streamgen's Node client library (an ES module; Node 18 or later), on
// @grpc/grpc-js and @grpc/proto-loader. It loads the service's contract from the
// repository (proto/streamgen/v1/generate.proto) at run time: no generated code.
//
//   import { createClient } from './streamgen.js';
//   const client = createClient({ address: 'localhost:50051', apiKey: 'KEY' });
//   for await (const message of client.generate({ prompt: 'Once upon a time', maxNewTokens: 32 })) {
//     process.stdout.write(message.text);
//   }
//   client.close();
//
// Messages are plain objects with the proto3 JSON (camelCase) field names;
// 64-bit integers (seed) are strings, enums their names. Requests may use
// camelCase or the proto's snake_case names; an unknown field is a TypeError
// (protobufjs would drop it silently). A failed call throws grpc-js's error
// (err.code: the numeric status, err.details: the server's message) with
// err.codeName added ('INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', ...).
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

// The contract, relative to this file (client/node/ -> proto/).
export const DEFAULT_PROTO_PATH = fileURLToPath(
  new URL('../../proto/streamgen/v1/generate.proto', import.meta.url));

// proto-loader's options for the messages the library returns: camelCase
// names, 64-bit integers as strings, enums as names, unset scalars filled with
// their zero values (text: '', finishReason: 'FINISH_REASON_UNSPECIFIED'), unset
// messages null, proto3 `optional` fields (seed) absent unless sent.
// `loaderOptions` in createClient overrides any of them (the CLI uses
// defaults: false to print only the fields that were sent, like protobuf's
// JSON printer).
export const DEFAULT_LOADER_OPTIONS = Object.freeze({
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: false,
});

// grpc.health.v1 (grpc/health/v1/health.proto), the one method used, as a
// protobufjs JSON namespace: no file needed.
const HEALTH_JSON = {
  nested: { grpc: { nested: { health: { nested: { v1: { nested: {
    HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
    HealthCheckResponse: {
      fields: { status: { type: 'ServingStatus', id: 1 } },
      nested: {
        ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } },
      },
    },
    Health: {
      methods: { Check: { requestType: 'HealthCheckRequest', responseType: 'HealthCheckResponse' } },
    },
  } } } } } } },
};

// The default deadline of health(): a health check that hangs is a failed one.
const HEALTH_DEADLINE_MS = 5000;

// The name of a numeric gRPC status code ('INVALID_ARGUMENT'; 'UNKNOWN' for
// codes outside the table).
export function statusName(code) {
  return grpc.status[code] ?? 'UNKNOWN';
}

function snakeToCamel(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

// Returns `request` with snake_case keys renamed to camelCase, checked against
// the message's fields (`fields`: the camelCase names). Nested messages
// (messages: [{role, content}]) have one-word names and need no renaming.
function normalizeRequest(request, fields, typeName) {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    throw new TypeError(`${typeName} must be an object`);
  }
  const out = {};
  for (const [key, value] of Object.entries(request)) {
    const name = snakeToCamel(key);
    if (!fields.has(name)) throw new TypeError(`${typeName} has no field '${key}'`);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

function fieldNames(packageDefinition, typeName) {
  const definition = packageDefinition[typeName];
  if (!definition?.type?.field) throw new Error(`the proto defines no message ${typeName}`);
  return new Set(definition.type.field.map((field) => snakeToCamel(field.name)));
}

function readPem(value, file, what) {
  if (value) return Buffer.from(value);
  if (!file) return null;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read the ${what} ${file}: ${err.message}`);
  }
}

// The channel's credentials and options. `tls`: false (plaintext), true (the
// system's roots) or { ca | caFile, cert | certFile, key | keyFile, serverName }.
function channelSettings(tls) {
  if (!tls) return { credentials: grpc.credentials.createInsecure(), options: {} };
  const settings = tls === true ? {} : tls;
  const ca = readPem(settings.ca, settings.caFile, 'CA bundle');
  const cert = readPem(settings.cert, settings.certFile, 'client certificate');
  const key = readPem(settings.key, settings.keyFile, 'client key');
  if (Boolean(cert) !== Boolean(key)) {
    throw new TypeError('a client certificate needs its key, and a key its certificate');
  }
  const options = {};
  if (settings.serverName) {
    options['grpc.ssl_target_name_override'] = settings.serverName;
    options['grpc.default_authority'] = settings.serverName;
  }
  return { credentials: grpc.credentials.createSsl(ca, key, cert), options };
}

function withCodeName(err) {
  if (err && typeof err.code === 'number' && err.codeName === undefined) {
    err.codeName = statusName(err.code);
  }
  return err;
}

// Cancels `call` when `signal` aborts (at once if it already has); returns the
// function that removes the listener.
function cancelOnAbort(call, signal) {
  if (!signal) return () => {};
  const onAbort = () => call.cancel();
  if (signal.aborted) {
    call.cancel();
    return () => {};
  }
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

// The messages of a server stream; leaving the loop early (break, an exception
// in its body) cancels the call.
async function* streamMessages(call, detach) {
  let finished = false;
  try {
    for await (const message of call) yield message;
    finished = true;
  } catch (err) {
    finished = true;
    throw withCodeName(err);
  } finally {
    detach();
    if (!finished) call.cancel();
  }
}

// Makes a client. Options:
//   address        'HOST:PORT' (default 'localhost:50051')
//   tls            false | true | { ca | caFile, cert | certFile, key | keyFile, serverName }
//   apiKey         sent as 'authorization: Bearer KEY' on every call (default: none)
//   protoPath      the contract (default: DEFAULT_PROTO_PATH)
//   loaderOptions  overrides of DEFAULT_LOADER_OPTIONS
//   channelOptions extra grpc-js channel options
// The methods take per-call options { deadlineMs, signal }: a deadline in
// milliseconds from now, an AbortSignal that cancels the call. Not thread-bound;
// close() when done (an open channel keeps Node's event loop alive).
export function createClient({
  address = 'localhost:50051',
  tls = false,
  apiKey = '',
  protoPath = DEFAULT_PROTO_PATH,
  loaderOptions = {},
  channelOptions = {},
} = {}) {
  // keepCase stays false: requests and messages use camelCase names.
  const options = { ...DEFAULT_LOADER_OPTIONS, ...loaderOptions, keepCase: false };
  const definition = protoLoader.loadSync(protoPath, options);
  const { streamgen } = grpc.loadPackageDefinition(definition);
  if (!streamgen?.v1?.TextGeneration) {
    throw new Error(`${protoPath} defines no streamgen.v1.TextGeneration service`);
  }
  const health = grpc.loadPackageDefinition(protoLoader.fromJSON(HEALTH_JSON, options));
  const settings = channelSettings(tls);
  const allOptions = { ...settings.options, ...channelOptions };
  const stub = new streamgen.v1.TextGeneration(address, settings.credentials, allOptions);
  // The health stub shares the stub's channel.
  const healthStub = new health.grpc.health.v1.Health(address, settings.credentials, {
    ...allOptions, channelOverride: stub.getChannel(),
  });
  const fields = {
    GenerateRequest: fieldNames(definition, 'streamgen.v1.GenerateRequest'),
    TokenizeRequest: fieldNames(definition, 'streamgen.v1.TokenizeRequest'),
  };

  const metadata = () => {
    const md = new grpc.Metadata();
    if (apiKey) md.set('authorization', `Bearer ${apiKey}`);
    return md;
  };
  const callOptions = (deadlineMs) => (deadlineMs > 0 ? { deadline: Date.now() + deadlineMs } : {});
  const unary = (target, method, request, { deadlineMs = 0, signal } = {}) =>
    new Promise((resolve, reject) => {
      const call = target[method](request, metadata(), callOptions(deadlineMs), (err, response) => {
        detach();
        if (err) reject(withCodeName(err));
        else resolve(response);
      });
      const detach = cancelOnAbort(call, signal);
    });

  return {
    address,
    // proto-loader's package definition of the contract (message descriptors).
    definition,
    // streamgen.v1.TextGeneration/Generate: an async iterator of GenerateResponse
    // messages. The call starts at once; its error (status not OK) is thrown by
    // the iteration, after the messages that came before it.
    generate(request, { deadlineMs = 0, signal } = {}) {
      const message = normalizeRequest(request, fields.GenerateRequest, 'GenerateRequest');
      const call = stub.Generate(message, metadata(), callOptions(deadlineMs));
      return streamMessages(call, cancelOnAbort(call, signal));
    },
    // Tokenize: resolves with { tokenIds, pieces }.
    tokenize(request, callOpts) {
      if (typeof request === 'string') request = { text: request };
      const message = normalizeRequest(request, fields.TokenizeRequest, 'TokenizeRequest');
      return unary(stub, 'Tokenize', message, callOpts);
    },
    // GetModelInfo: resolves with the ModelInfo (name, limits, ...).
    getModelInfo(callOpts) {
      return unary(stub, 'GetModelInfo', {}, callOpts);
    },
    // grpc.health.v1.Health/Check: resolves with the status name ('SERVING',
    // 'NOT_SERVING', ...). `service` '' is the whole server. Without deadlineMs, 5 s.
    async health(service = '', { deadlineMs = HEALTH_DEADLINE_MS, signal } = {}) {
      const response = await unary(healthStub, 'Check', { service }, { deadlineMs, signal });
      return response.status ?? 'UNKNOWN';
    },
    close() {
      stub.close();
    },
  };
}
