// A second, independent consumer of streamgen's server reflection
// (grpc.reflection.v1alpha, what Debian's gRPC 1.51 serves), in place of
// grpcurl, which cannot be installed here: the npm package grpc-reflection-js
// lists the services and fetches the descriptors; @grpc/grpc-js then calls
// streamgen.v1.TextGeneration/Generate (streaming) and grpc.health.v1.Health/Check
// with serializers built from those descriptors alone — no .proto file is read
// and no generated code is used. The greedy text must equal the C++
// streamgen-client's for the same request. Run by ctest (node_reflection_test)
// after `npm ci` here (the node_reflection_npm fixture).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import grpc from '@grpc/grpc-js';
import reflection from 'grpc-reflection-js';

import { runCppCli, startServer } from './server.mjs';

let server;
let reflectionClient;
before(async () => {
  server = await startServer();
  reflectionClient = new reflection.Client(server.address, grpc.credentials.createInsecure());
});
after(async () => {
  reflectionClient?.grpcClient.close();
  assert.equal(await server?.stop(), 0);
});

// A grpc-js client class for `serviceName`, from the protobufjs Root that the
// reflection service's descriptors became. Messages are plain objects with the
// proto's own (snake_case) field names, enums as names, 64-bit integers as strings.
function clientFromDescriptors(root, serviceName) {
  const service = root.lookupService(serviceName);
  service.resolveAll();
  const definition = {};
  for (const method of service.methodsArray) {
    const request = method.resolvedRequestType;
    const response = method.resolvedResponseType;
    definition[method.name] = {
      path: `/${serviceName}/${method.name}`,
      requestStream: Boolean(method.requestStream),
      responseStream: Boolean(method.responseStream),
      requestSerialize: (object) => Buffer.from(request.encode(request.fromObject(object)).finish()),
      requestDeserialize: (bytes) => request.decode(bytes),
      responseSerialize: (message) => Buffer.from(response.encode(message).finish()),
      responseDeserialize: (bytes) =>
        response.toObject(response.decode(bytes), { enums: String, longs: String }),
    };
  }
  const Client = grpc.makeGenericClientConstructor(definition, serviceName);
  return new Client(server.address, grpc.credentials.createInsecure());
}

test('lists the services', async () => {
  const services = await reflectionClient.listServices();
  assert.deepEqual([...services].sort(), [
    'grpc.health.v1.Health',
    'grpc.reflection.v1alpha.ServerReflection',
    'streamgen.v1.TextGeneration',
  ]);
});

test('describes the service and the request as the contract says', async () => {
  const root = await reflectionClient.fileContainingSymbol('streamgen.v1.TextGeneration');
  const service = root.lookupService('streamgen.v1.TextGeneration');
  assert.deepEqual(Object.keys(service.methods).sort(), ['Generate', 'GetModelInfo', 'Tokenize']);
  const generate = service.methods.Generate;
  assert.equal(generate.requestType.replace(/^\./, ''), 'streamgen.v1.GenerateRequest');
  assert.equal(generate.responseType.replace(/^\./, ''), 'streamgen.v1.GenerateResponse');
  assert.equal(generate.responseStream, true);
  assert.ok(!generate.requestStream);

  const request = root.lookupType('streamgen.v1.GenerateRequest');
  const field = (name) => request.fields[name];
  assert.deepEqual([field('prompt').id, field('prompt').type], [1, 'string']);
  assert.deepEqual([field('prompt_token_ids').id, field('prompt_token_ids').repeated], [2, true]);
  assert.deepEqual([field('max_new_tokens').id, field('max_new_tokens').type], [4, 'uint32']);
  assert.deepEqual([field('temperature').id, field('temperature').type], [5, 'float']);
  assert.deepEqual([field('stop').id, field('stop').repeated], [13, true]);
  // proto3 `optional`: a synthetic oneof, as protoc describes it.
  assert.deepEqual([field('seed').id, field('seed').type, field('seed').partOf?.name], [12, 'uint64', '_seed']);
  const finish = root.lookupEnum('streamgen.v1.FinishReason');
  assert.equal(finish.values.FINISH_REASON_UNSPECIFIED, 0);
  assert.equal(finish.values.FINISH_REASON_LENGTH, 1);

  // The same file by its name.
  const byName = await reflectionClient.fileByFilename('streamgen/v1/generate.proto');
  assert.ok(byName.lookupService('streamgen.v1.TextGeneration'));
});

test('streams a generation from the reflected descriptors alone; the text equals the C++ client\'s', async () => {
  const root = await reflectionClient.fileContainingSymbol('streamgen.v1.TextGeneration');
  const client = clientFromDescriptors(root, 'streamgen.v1.TextGeneration');
  try {
    const messages = [];
    for await (const message of client.Generate({ prompt: 'Once upon a time', max_new_tokens: 16 })) {
      messages.push(message);
    }
    assert.ok(messages.length >= 2, JSON.stringify(messages));
    const last = messages.at(-1);
    assert.equal(last.finish_reason, 'FINISH_REASON_LENGTH');
    assert.equal(last.usage.completion_tokens, 16);
    assert.match(last.seed, /^\d+$/);
    assert.equal(messages.flatMap((m) => m.tokens ?? []).length, 16);
    const cpp = await runCppCli(['--server', server.address, 'generate', 'Once upon a time',
      '--max-new-tokens', '16']);
    assert.equal(cpp.code, 0, cpp.stderr);
    assert.equal(messages.map((m) => m.text ?? '').join('') + '\n', cpp.stdout);

    // The server's validation message comes through the reflected client too.
    await assert.rejects(async () => {
      for await (const _ of client.Generate({ prompt: 'x', temperature: -1 })) { /* nothing */ }
    }, (err) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.details, 'temperature must be in [0, 100], got -1');
      return true;
    });
  } finally {
    client.close();
  }
});

test('health check from the reflected descriptors: SERVING', async () => {
  const root = await reflectionClient.fileContainingSymbol('grpc.health.v1.Health');
  const client = clientFromDescriptors(root, 'grpc.health.v1.Health');
  try {
    const check = (service) => new Promise((resolve, reject) => {
      client.Check({ service }, { deadline: Date.now() + 5000 }, (err, response) => (err ? reject(err) : resolve(response)));
    });
    assert.deepEqual(await check(''), { status: 'SERVING' });
    assert.deepEqual(await check('streamgen.v1.TextGeneration'), { status: 'SERVING' });
    await assert.rejects(check('no.Such'), (err) => err.code === grpc.status.NOT_FOUND);
  } finally {
    client.close();
  }
});
