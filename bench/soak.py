#!/usr/bin/python3
"""Soak: many mixed requests against one real streamgen-server on loopback.

    /usr/bin/python3 bench/soak.py --build-dir build [--requests 2000] [--concurrency 64]

Starts streamgen-server (the tiny random model, --dtype float32) on free
loopback ports, computes a reference for each distinct request alone, then
runs a warm-up and --requests requests, --concurrency at a time, drawn from a
fixed mix (see KINDS): normal gRPC streams, HTTP/SSE and HTTP JSON
completions, resumed streams (cut by the client after a few messages, resumed
with the ids received), cancels at random points, short deadlines, readers
that stop reading for a while, clients that disconnect mid-stream, malformed
and oversize requests on both faces, and prompt-length extremes.

Checks (each failure is printed; the exit code is 1 if any):
- every request ends with a status its kind allows (OK, or the documented
  refusal with its message);
- every completed stream's text (and, over gRPC, token ids, finish reason and
  completion_tokens) equals its reference; a stream cut short (cancel,
  deadline, disconnect) delivered a prefix of it; a resumed stream's
  delivered prefix + resumed part equals it;
- afterwards the engine is idle: streamgen:kv_cache_usage_perc,
  streamgen:num_requests_running, streamgen:num_requests_waiting and
  streamgen_active_streams reach 0 (the gauges are published at the end of
  each engine iteration: polled, not read once);
- the server's resident memory (VmRSS) at the end is within 10% of its level
  after the warm-up; the server is still up (health), and exits 0 on SIGTERM.

Prints a table: requests by kind and outcome, p50/p99 latencies, memory and
threads before and after, wall time. Nothing about speed is asserted.
"""
import argparse
import concurrent.futures
import http.client
import json
import math
import os
import random
import socket
import sys
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests"))
from streamgen_server import StreamgenServer, metric_value, proc_status  # noqa: E402

grpc = pb = pb_grpc = None  # imported in main() once the build dir is known

# The mix: kind -> weight (per 100 requests).
KINDS = [
    ("grpc_stream", 26), ("http_sse", 10), ("http_json", 4), ("resume", 8), ("cancel", 10),
    ("deadline", 7), ("stalled_grpc", 4), ("stalled_http", 3), ("http_disconnect", 3),
    ("malformed_grpc", 8), ("malformed_http", 4), ("oversize_grpc", 2), ("oversize_http", 1),
    ("prompt_extreme", 10),
]
# The outcomes each kind may end with (anything else is a failure).
ALLOWED = {
    "grpc_stream": {"OK"}, "http_sse": {"HTTP 200"}, "http_json": {"HTTP 200"},
    "resume": {"OK"}, "cancel": {"CANCELLED", "OK"}, "deadline": {"OK", "DEADLINE_EXCEEDED"},
    "stalled_grpc": {"OK"}, "stalled_http": {"HTTP 200"}, "http_disconnect": {"disconnected"},
    "malformed_grpc": {"INVALID_ARGUMENT", "FAILED_PRECONDITION"},
    "malformed_http": {"HTTP 400", "HTTP 404", "HTTP 415"},
    "oversize_grpc": {"RESOURCE_EXHAUSTED"}, "oversize_http": {"HTTP 413"},
    "prompt_extreme": {"OK", "INVALID_ARGUMENT", "HTTP 200", "HTTP 400"},
}
MAX_RECEIVE_BYTES = 65536
CALL_TIMEOUT_S = 180  # a "does not hang" bound for every call, not a speed target


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def differ(got, want):
    """Where two texts part: 'text differs from the reference at character N: ...'."""
    n = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return "text differs from the reference at character %d of %d/%d: got %r, reference %r" % (
        n, len(got), len(want), got[max(0, n - 10):n + 20], want[max(0, n - 10):n + 20])


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]


# ---- requests: specs (distinct requests, each with a reference) ----

class Spec:
    """One distinct request: GenerateRequest fields, and its OpenAI body
    (None where the HTTP face cannot express it)."""

    def __init__(self, name, fields, http=None, route="/v1/completions"):
        self.name, self.fields, self.http, self.route = name, fields, http, route
        self.ref = None  # Reference, computed alone

    def request(self, **extra):
        fields = dict(self.fields)
        fields.update(extra)
        return pb.GenerateRequest(**fields)


class Reference:
    def __init__(self, messages):
        self.messages = messages  # [(text, [ids])]
        self.text = "".join(t for t, _ in messages)
        self.ids = [i for _, ids in messages for i in ids]


def http_body(prompt, max_tokens, temperature=0.0, **extra):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
    body.update(extra)
    return body


def make_specs(info, rng, stub):
    """The distinct requests of the soak (their references come later)."""
    vocab, context = info.vocab_size, info.context_length
    max_prompt = info.limits.max_prompt_tokens
    tokenizer_vocab = info.tokenizer_vocab_size

    def random_ids(n):
        return [info.bos_token_id] + [rng.randrange(3, tokenizer_vocab) for _ in range(n - 1)]

    ids30, ids300, ids_room = random_ids(30), random_ids(300), random_ids(context - 32)
    ids_limit = random_ids(max_prompt)
    # A text prompt that encodes to exactly the limit (this tokenizer: BOS,
    # then one piece per space after the dummy prefix), checked here.
    spaces = " " * (max_prompt - 2)
    got = len(stub.Tokenize(pb.TokenizeRequest(text=spaces, add_special_tokens=True)).token_ids)
    check(got == max_prompt, "setup: %d spaces encode to %d tokens, not %d" %
          (len(spaces), got, max_prompt))
    chat = [{"role": "user", "content": "Tell me a story about a cat"}]
    specs = [
        Spec("greedy", dict(prompt="Once upon a time", max_new_tokens=48),
             http_body("Once upon a time", 48)),
        Spec("greedy_ids", dict(prompt_token_ids=ids30, max_new_tokens=64, ignore_eos=True),
             http_body(ids30, 64, ignore_eos=True)),
        Spec("sampled", dict(prompt="The lighthouse keeper", max_new_tokens=64, temperature=0.8,
                             top_p=0.9, seed=7),
             http_body("The lighthouse keeper", 64, 0.8, top_p=0.9, seed=7)),
        Spec("sampled_penalties",
             dict(prompt="In the beginning", max_new_tokens=80, temperature=1.0, top_k=40,
                  presence_penalty=0.5, frequency_penalty=0.3, repetition_penalty=1.2, seed=123,
                  ignore_eos=True),
             http_body("In the beginning", 80, 1.0, top_k=40, presence_penalty=0.5,
                       frequency_penalty=0.3, repetition_penalty=1.2, seed=123, ignore_eos=True)),
        Spec("min_p", dict(prompt="Hello world", max_new_tokens=40, temperature=0.7, min_p=0.05,
                           seed=99),
             http_body("Hello world", 40, 0.7, min_p=0.05, seed=99)),
        Spec("long_prompt", dict(prompt_token_ids=ids300, max_new_tokens=32, ignore_eos=True),
             http_body(ids300, 32, ignore_eos=True)),
        Spec("logprobs", dict(prompt="Once upon a time", max_new_tokens=160, top_logprobs=20,
                              ignore_eos=True),
             http_body("Once upon a time", 160, logprobs=20, ignore_eos=True)),
        Spec("chat", dict(messages=[pb.ChatMessage(**m) for m in chat], max_new_tokens=48),
             {"messages": chat, "max_tokens": 48, "temperature": 0}, route="/v1/chat/completions"),
        Spec("long_output", dict(prompt="A", max_new_tokens=256, temperature=0.9, seed=5,
                                 ignore_eos=True),
             http_body("A", 256, 0.9, seed=5, ignore_eos=True)),
        # Prompt-length extremes that are accepted.
        Spec("at_limit_ids", dict(prompt_token_ids=ids_limit, max_new_tokens=1),
             http_body(ids_limit, 1)),
        Spec("at_limit_text", dict(prompt=spaces, max_new_tokens=1), http_body(spaces, 1)),
        Spec("bos_only", dict(prompt_token_ids=[info.bos_token_id], max_new_tokens=32),
             http_body([info.bos_token_id], 32)),
        Spec("fills_context", dict(prompt_token_ids=ids_room, max_new_tokens=32, ignore_eos=True),
             http_body(ids_room, 32, ignore_eos=True)),
    ]
    # Prompt-length extremes that are refused: (fields or HTTP body, status, message).
    over = max_prompt + 1
    refused = [
        ("grpc", dict(prompt_token_ids=random_ids(over), max_new_tokens=1), "INVALID_ARGUMENT",
         "prompt_token_ids is %d tokens; at most %d are allowed" % (over, max_prompt)),
        ("grpc", dict(prompt=spaces + " ", max_new_tokens=1), "INVALID_ARGUMENT",
         "prompt is %d tokens; at most %d are allowed" % (over, max_prompt)),
        ("grpc", dict(prompt_token_ids=ids_room, max_new_tokens=33), "INVALID_ARGUMENT",
         "the prompt (%d tokens) + max_new_tokens (33) exceeds the model's context length %d" %
         (len(ids_room), context)),
        ("grpc", dict(prompt="", max_new_tokens=4), "INVALID_ARGUMENT",
         "exactly one of prompt, prompt_token_ids, messages must be set; none is"),
        # The HTTP face names its own field: token ids come as "prompt".
        ("http", http_body(random_ids(over), 1), "HTTP 400",
         "prompt is %d tokens; at most %d are allowed" % (over, max_prompt)),
        ("http", http_body("", 4), "HTTP 400",
         "prompt is empty: send at least one character or the prompt as token ids"),
    ]
    # A stop string from the middle of the greedy run's text: a stop that fires.
    base = collect(stub.Generate(pb.GenerateRequest(prompt="It was a dark and stormy night",
                                                    max_new_tokens=96), timeout=CALL_TIMEOUT_S))
    text = base.text
    stop = text[len(text) // 2: len(text) // 2 + 3] if len(text) > 12 else "zzz"
    specs.append(Spec("stop", dict(prompt="It was a dark and stormy night", max_new_tokens=96,
                                   stop=[stop, "\n\n\n"]),
                      http_body("It was a dark and stormy night", 96, stop=[stop, "\n\n\n"])))
    return specs, refused, vocab


def malformed_grpc_cases(vocab):
    """(fields, status, message substring); None fields: bytes that are not a GenerateRequest."""
    return [
        (dict(prompt="Hi", temperature=-1.0), "INVALID_ARGUMENT", "temperature must be in [0, 100]"),
        (dict(prompt="Hi", temperature=float("nan")), "INVALID_ARGUMENT", "temperature must be in"),
        (dict(prompt="Hi", top_p=1.5), "INVALID_ARGUMENT", "top_p must be in (0, 1]"),
        (dict(prompt="Hi", prompt_token_ids=[1, 5]), "INVALID_ARGUMENT",
         "exactly one of prompt, prompt_token_ids, messages must be set; got prompt and "
         "prompt_token_ids"),
        (dict(prompt_token_ids=[1, vocab + 5]), "INVALID_ARGUMENT",
         "prompt_token_ids[1] = %d is outside the vocabulary [0, %d)" % (vocab + 5, vocab)),
        (dict(prompt="Hi", max_new_tokens=5000), "INVALID_ARGUMENT",
         "max_new_tokens 5000 exceeds the server's limit 4096"),
        (dict(prompt="Hi", stop=["ok", ""]), "INVALID_ARGUMENT", "stop[1] is empty"),
        (dict(prompt="Hi", stop_token_ids=[-3]), "INVALID_ARGUMENT", "stop_token_ids[0] = -3"),
        (dict(prompt="Hi", top_logprobs=21), "INVALID_ARGUMENT", "top_logprobs must be in [0, 20]"),
        (dict(prompt="Hi", request_id="r" * 200), "INVALID_ARGUMENT",
         "request_id is 200 bytes; at most 128"),
        (dict(prompt="Hi", temperature=0.5, resume_token_ids=[5, 6]), "INVALID_ARGUMENT",
         "resume_token_ids: a sampled stream (temperature > 0) resumes exactly only with the seed"),
        (dict(prompt="Hi", max_new_tokens=2, resume_token_ids=[5, 6]), "INVALID_ARGUMENT",
         "resume_token_ids"),
        (dict(prompt="Hi", model_fingerprint="sg1-00000000000000000000000000000000"),
         "FAILED_PRECONDITION", "model_fingerprint: the request is for model"),
        (dict(messages=[pb.ChatMessage(role="", content="x")]), "INVALID_ARGUMENT",
         "messages[0].role is empty"),
        # Bytes that do not parse as a GenerateRequest: refused by the service, named.
        (None, "INVALID_ARGUMENT", "the request is not a streamgen.v1.GenerateRequest message"),
    ]


MALFORMED_HTTP = [
    # (path, body bytes, content type, status, message substring)
    ("/v1/completions", b'{"prompt": "Hi", "max_tokens": 4', "application/json", 400,
     "the body is not valid JSON"),
    ("/v1/completions", b'{"prompt": "Hi", "max_tokens": "ten"}', "application/json", 400,
     "max_tokens must be an integer, got a string"),
    ("/v1/completions", b'{"prompt": "Hi"}', "text/plain", 415,
     "Content-Type must be application/json, got text/plain"),
    ("/v1/completions", b'{"prompt": "Hi", "n": 9}', "application/json", 400, "[1, 8]"),
    ("/v1/completions", b'{"prompt": "Hi", "temperature": 500}', "application/json", 400,
     "temperature must be in [0, 100], got 500"),
    ("/v1/chat/completions", b'{"messages": "hi"}', "application/json", 400,
     "messages must be an array"),
    ("/v1/completions", b'[1, 2]', "application/json", 400, "the body must be a JSON object"),
    ("/v1/completions", b'{"prompt": "Hi", "model": "other"}', "application/json", 404, "other"),
    ("/v1/nothing-here", b'{}', "application/json", 404, ""),
    (None, b"GARBAGE\r\n\r\n", None, 400, "the request could not be read"),
]


# ---- gRPC ----

class Stream:
    """What a Generate call delivered: messages, and how it ended."""

    def __init__(self):
        self.messages = []
        self.code = "OK"
        self.details = ""
        self.ttft = None

    @property
    def text(self):
        return "".join(m.text for m in self.messages)

    @property
    def ids(self):
        return [t.id for m in self.messages for t in m.tokens]

    @property
    def last(self):
        return self.messages[-1] if self.messages else None

    def finished(self):
        return bool(self.messages) and self.messages[-1].finish_reason != 0


def collect(call, stop_after=None, on_message=None, start=None):
    """Reads a call's messages; after `stop_after` messages cancels it. A
    grpc.RpcError becomes the Stream's code."""
    stream = Stream()
    start = start if start is not None else time.time()
    try:
        if stop_after == 0:
            call.cancel()
        for message in call:
            if stream.ttft is None:
                stream.ttft = time.time() - start
            stream.messages.append(message)
            if on_message is not None:
                on_message(stream)
            if stop_after is not None and len(stream.messages) >= stop_after:
                call.cancel()
    except grpc.RpcError as error:
        stream.code = error.code().name
        stream.details = error.details() or ""
    return stream


def check_complete(stream, ref, what):
    check(stream.text == ref.text, "%s: %s" % (what, differ(stream.text, ref.text)))
    check(stream.ids == ref.ids, "%s: token ids differ from the reference" % what)
    check(stream.last.finish_reason == ref.finish_reason,
          "%s: finish_reason %d != reference %d" % (what, stream.last.finish_reason,
                                                    ref.finish_reason))
    check(stream.last.usage.completion_tokens == len(ref.ids),
          "%s: completion_tokens %d != %d" % (what, stream.last.usage.completion_tokens,
                                              len(ref.ids)))


def check_prefix(text, ids, ref, what):
    check(ref.text.startswith(text), "%s: delivered text %r is not a prefix of the reference" %
          (what, text[:80]))
    if ids is not None:
        check(ref.ids[:len(ids)] == ids, "%s: delivered ids are not a prefix of the reference" % what)


# ---- HTTP ----

def http_connection(port, rcvbuf=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT_S)
    if rcvbuf is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(CALL_TIMEOUT_S)
        sock.connect(("127.0.0.1", port))
        connection.sock = sock
    return connection


def http_post(port, path, body, content_type="application/json", rcvbuf=None):
    connection = http_connection(port, rcvbuf)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request("POST", path, body=data, headers={"Content-Type": content_type})
    return connection


def sse_events(response):
    """Yields the JSON of each `data:` event until [DONE] (then None)."""
    for line in iter(response.readline, b""):
        line = line.decode().rstrip("\n")
        if not line.startswith("data: "):
            continue
        payload = line[len("data: "):]
        if payload == "[DONE]":
            yield None
            return
        yield json.loads(payload)


def sse_text(event, route):
    if not event.get("choices"):
        return ""
    choice = event["choices"][0]
    if route == "/v1/chat/completions":
        return choice.get("delta", {}).get("content") or ""
    return choice.get("text") or ""


FINISH_NAMES = {1: "length", 2: "stop", 3: "stop"}


def check_http_sse(response, spec, what, start):
    if response.status != 200:
        raise Failure("%s: HTTP %d %s" % (what, response.status, response.read()[:300]))
    text, finish, usage, done, ttft = "", None, None, False, None
    for event in sse_events(response):
        if event is None:
            done = True
            break
        check("error" not in event, "%s: error event %s" % (what, event))
        piece = sse_text(event, spec.route)
        if piece and ttft is None:
            ttft = time.time() - start
        text += piece
        if event.get("choices") and event["choices"][0].get("finish_reason"):
            finish = event["choices"][0]["finish_reason"]
        if event.get("usage"):
            usage = event["usage"]
    check(done, "%s: the stream ended without [DONE]" % what)
    ref = spec.ref
    check(text == ref.text, "%s: %s" % (what, differ(text, ref.text)))
    check(finish == FINISH_NAMES[ref.finish_reason],
          "%s: finish_reason %r, reference %d" % (what, finish, ref.finish_reason))
    check(usage is not None and usage["completion_tokens"] == len(ref.ids),
          "%s: usage %s, reference %d tokens" % (what, usage, len(ref.ids)))
    return ttft


# ---- the soak ----

class Soak:
    def __init__(self, args, server):
        self.args = args
        self.server = server
        self.channels = [grpc.insecure_channel(server.grpc_address,
                                               options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(4)]
        self.stubs = [pb_grpc.TextGenerationStub(c) for c in self.channels]
        self.raw_generate = self.channels[0].unary_stream(
            "/streamgen.v1.TextGeneration/Generate", request_serializer=lambda b: b,
            response_deserializer=lambda b: b)
        self.info = self.stubs[0].GetModelInfo(pb.GetModelInfoRequest(), timeout=60)
        rng = random.Random(args.seed)
        self.specs, self.refused, vocab = make_specs(self.info, rng, self.stubs[0])
        self.malformed_grpc = malformed_grpc_cases(vocab)
        self.http_specs = [s for s in self.specs if s.http is not None]
        self.stream_specs = [s for s in self.specs if not s.name.startswith("at_limit")]
        self.accepted_extremes = [s for s in self.specs if s.name in
                                  ("at_limit_ids", "at_limit_text", "bos_only", "fills_context")]
        kinds = set(args.kinds.split(",")) if args.kinds else {k for k, _ in KINDS}
        check(kinds <= {k for k, _ in KINDS}, "--kinds: unknown %s" % (kinds - {k for k, _ in KINDS}))
        self.mix = [kind for kind, weight in KINDS for _ in range(weight) if kind in kinds]

    # The reference of each spec: run alone (nothing else in flight).
    def compute_references(self):
        stub = self.stubs[0]
        for spec in self.specs:
            stream = collect(stub.Generate(spec.request(), timeout=CALL_TIMEOUT_S))
            check(stream.code == "OK" and stream.finished(),
                  "reference %s: %s %s" % (spec.name, stream.code, stream.details))
            ref = Reference([(m.text, [t.id for t in m.tokens]) for m in stream.messages])
            ref.finish_reason = stream.last.finish_reason
            ref.seed = stream.messages[0].seed
            spec.ref = ref
            check(len(ref.ids) > 0, "reference %s generated nothing" % spec.name)
        # The stop spec must end by its stop string, or it checks nothing more than greedy.
        stop_spec = [s for s in self.specs if s.name == "stop"][0]
        check(stop_spec.ref.finish_reason == 3, "setup: the stop string %r did not fire" %
              stop_spec.fields["stop"][0])

    def job(self, index):
        rng = random.Random(self.args.seed * 1_000_003 + index)
        return rng, self.mix[rng.randrange(len(self.mix))]

    def run_one(self, index):
        rng, kind = self.job(index)
        start = time.time()
        result = {"kind": kind, "outcome": None, "error": None, "ttft": None}
        try:
            getattr(self, "do_" + kind)(rng, result, start)
            check(result["outcome"] in ALLOWED[kind],
                  "outcome %s is not one %s may end with" % (result["outcome"], kind))
        except Failure as failure:
            result["error"] = str(failure)
        except Exception as error:  # a client-side error is a failure too
            result["error"] = "%s: %r" % (type(error).__name__, error)
        result["latency"] = time.time() - start
        if result["outcome"] is None:
            result["outcome"] = "client error"
        if result["error"]:
            result["error"] = "request %d (%s): %s" % (index, kind, result["error"])
        return result

    def stub(self, rng):
        return self.stubs[rng.randrange(len(self.stubs))]

    # -- kinds --

    def do_grpc_stream(self, rng, result, start):
        spec = rng.choice(self.stream_specs)
        stream = collect(self.stub(rng).Generate(spec.request(), timeout=CALL_TIMEOUT_S), start=start)
        result["outcome"], result["ttft"] = stream.code, stream.ttft
        check(stream.code == "OK", "%s: %s %s" % (spec.name, stream.code, stream.details))
        check_complete(stream, spec.ref, spec.name)

    def do_http_sse(self, rng, result, start):
        spec = rng.choice(self.http_specs)
        body = dict(spec.http, stream=True, stream_options={"include_usage": True})
        connection = http_post(self.server.http_port, spec.route, body)
        try:
            response = connection.getresponse()
            result["outcome"] = "HTTP %d" % response.status
            result["ttft"] = check_http_sse(response, spec, "SSE " + spec.name, start)
        finally:
            connection.close()

    def do_http_json(self, rng, result, start):
        spec = rng.choice(self.http_specs)
        connection = http_post(self.server.http_port, spec.route, spec.http)
        try:
            response = connection.getresponse()
            result["outcome"] = "HTTP %d" % response.status
            body = json.loads(response.read())
        finally:
            connection.close()
        check(response.status == 200, "JSON %s: %s" % (spec.name, body))
        choice = body["choices"][0]
        text = choice["message"]["content"] if spec.route == "/v1/chat/completions" else choice["text"]
        check(text == spec.ref.text, "JSON %s: %s" % (spec.name, differ(text, spec.ref.text)))
        check(body["usage"]["completion_tokens"] == len(spec.ref.ids),
              "JSON %s: usage %s" % (spec.name, body["usage"]))

    def do_resume(self, rng, result, start):
        """Cut after a few messages (the client cancels), then resumed with
        the ids received, the first message's seed and fingerprint."""
        spec = rng.choice([s for s in self.stream_specs if len(s.ref.messages) > 2])
        stub = self.stub(rng)
        cut = rng.randint(1, min(8, len(spec.ref.messages) - 1))
        first = collect(stub.Generate(spec.request(), timeout=CALL_TIMEOUT_S), stop_after=cut,
                        start=start)
        result["ttft"] = first.ttft
        if first.code == "OK" and first.finished():  # it ended before the cut
            result["outcome"] = "OK"
            check_complete(first, spec.ref, "resume %s (not cut)" % spec.name)
            return
        check(first.code == "CANCELLED", "resume %s: the cut stream ended %s %s" %
              (spec.name, first.code, first.details))
        check_prefix(first.text, first.ids, spec.ref, "resume %s (cut)" % spec.name)
        head = first.messages[0]
        check(head.model_fingerprint == self.info.fingerprint and head.HasField("seed"),
              "resume %s: the first message lacks the seed or the fingerprint" % spec.name)
        resumed = collect(stub.Generate(spec.request(resume_token_ids=first.ids, seed=head.seed,
                                                     model_fingerprint=head.model_fingerprint),
                                        timeout=CALL_TIMEOUT_S))
        result["outcome"] = resumed.code
        check(resumed.code == "OK", "resume %s after %d ids: %s %s" %
              (spec.name, len(first.ids), resumed.code, resumed.details))
        what = "resume %s after %d ids" % (spec.name, len(first.ids))
        check(first.text + resumed.text == spec.ref.text, "%s (delivered + resumed): %s" %
              (what, differ(first.text + resumed.text, spec.ref.text)))
        check(first.ids + resumed.ids == spec.ref.ids, "%s: ids differ" % what)
        check(resumed.last.finish_reason == spec.ref.finish_reason, "%s: finish_reason" % what)
        check(resumed.last.usage.completion_tokens == len(spec.ref.ids),
              "%s: completion_tokens %d" % (what, resumed.last.usage.completion_tokens))

    def do_cancel(self, rng, result, start):
        spec = rng.choice([s for s in self.stream_specs if len(s.ref.messages) > 1])
        after = rng.randint(0, min(12, len(spec.ref.messages) - 1))
        stream = collect(self.stub(rng).Generate(spec.request(), timeout=CALL_TIMEOUT_S),
                         stop_after=after, start=start)
        result["ttft"] = stream.ttft
        if stream.code == "OK" and stream.finished():
            # Merged messages: it ended within `after` messages, before the cancel.
            check_complete(stream, spec.ref, "cancel %s (ended first)" % spec.name)
            result["outcome"] = "OK"
            return
        result["outcome"] = stream.code
        check_prefix(stream.text, stream.ids, spec.ref, "cancel %s" % spec.name)

    def do_deadline(self, rng, result, start):
        spec = rng.choice(self.stream_specs)
        timeout = rng.uniform(0.002, 1.5)
        stream = collect(self.stub(rng).Generate(spec.request(), timeout=timeout), start=start)
        result["outcome"], result["ttft"] = stream.code, stream.ttft
        if stream.code == "OK":
            check_complete(stream, spec.ref, "deadline %s" % spec.name)
        else:
            check_prefix(stream.text, stream.ids, spec.ref, "deadline %s" % spec.name)

    def do_stalled_grpc(self, rng, result, start):
        """Reads one message, stops reading for a while, then reads the rest."""
        spec = rng.choice([s for s in self.specs if s.name in ("logprobs", "long_output")])
        pause = rng.uniform(0.2, 1.5)

        def stall(stream):
            if len(stream.messages) == 1:
                time.sleep(pause)
        stream = collect(self.stub(rng).Generate(spec.request(), timeout=CALL_TIMEOUT_S),
                         on_message=stall, start=start)
        result["outcome"], result["ttft"] = stream.code, stream.ttft
        check(stream.code == "OK", "stalled %s: %s %s" % (spec.name, stream.code, stream.details))
        check_complete(stream, spec.ref, "stalled %s" % spec.name)

    def do_stalled_http(self, rng, result, start):
        """A 4 KiB receive buffer left unread for a while, then read to the end."""
        spec = [s for s in self.specs if s.name == "logprobs"][0]
        body = dict(spec.http, stream=True, stream_options={"include_usage": True})
        connection = http_post(self.server.http_port, spec.route, body, rcvbuf=4096)
        try:
            time.sleep(rng.uniform(0.2, 1.5))
            response = connection.getresponse()
            result["outcome"] = "HTTP %d" % response.status
            result["ttft"] = check_http_sse(response, spec, "stalled SSE", start)
        finally:
            connection.close()

    def do_http_disconnect(self, rng, result, start):
        """Reads a few events (or none), then closes the connection."""
        spec = rng.choice([s for s in self.http_specs if len(s.ref.messages) > 2])
        body = dict(spec.http, stream=True)
        connection = http_post(self.server.http_port, spec.route, body)
        events = rng.randint(0, 4)
        text = ""
        try:
            if events > 0:
                response = connection.getresponse()
                check(response.status == 200, "disconnect: HTTP %d" % response.status)
                for n, event in enumerate(sse_events(response)):
                    if event is None:
                        break
                    text += sse_text(event, spec.route)
                    if n + 1 >= events:
                        break
        finally:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        result["outcome"] = "disconnected"
        check_prefix(text, None, spec.ref, "disconnect %s" % spec.name)

    def do_malformed_grpc(self, rng, result, start):
        fields, code, message = rng.choice(self.malformed_grpc)
        if fields is None:
            stream = collect(self.raw_generate(b"\xff\xff\xff\xff not a message",
                                               timeout=CALL_TIMEOUT_S))
        else:
            stream = collect(self.stub(rng).Generate(pb.GenerateRequest(**fields),
                                                     timeout=CALL_TIMEOUT_S))
        result["outcome"] = stream.code
        check(stream.code == code and message in stream.details and not stream.messages,
              "malformed %s: %s %r (expected %s %r)" % (sorted(fields or {}), stream.code,
                                                        stream.details, code, message))

    def do_malformed_http(self, rng, result, start):
        path, body, content_type, status, message = rng.choice(MALFORMED_HTTP)
        if path is None:  # not HTTP at all
            with socket.create_connection(("127.0.0.1", self.server.http_port),
                                          timeout=CALL_TIMEOUT_S) as sock:
                sock.sendall(body)
                data = b""
                while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            got = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
            text = data.decode(errors="replace")
        else:
            connection = http_post(self.server.http_port, path, body, content_type)
            try:
                response = connection.getresponse()
                got, text = response.status, response.read().decode(errors="replace")
            finally:
                connection.close()
        result["outcome"] = "HTTP %d" % got
        check(got == status and message in text, "malformed HTTP %s %r: %d %s (expected %d %r)" %
              (path, body[:40], got, text[:200], status, message))

    def do_oversize_grpc(self, rng, result, start):
        size = MAX_RECEIVE_BYTES + rng.randint(1, 4096)
        stream = collect(self.stub(rng).Generate(pb.GenerateRequest(prompt="x" * size,
                                                                    max_new_tokens=4),
                                                 timeout=CALL_TIMEOUT_S))
        result["outcome"] = stream.code
        check(stream.code == "RESOURCE_EXHAUSTED" and "larger than max" in stream.details,
              "oversize gRPC: %s %r" % (stream.code, stream.details))

    def do_oversize_http(self, rng, result, start):
        size = MAX_RECEIVE_BYTES + rng.randint(1, 4096)
        connection = http_post(self.server.http_port, "/v1/completions",
                               {"prompt": "x" * size, "max_tokens": 4})
        try:
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        result["outcome"] = "HTTP %d" % response.status
        check(response.status == 413 and "larger than --max-receive-message-bytes" in text,
              "oversize HTTP: %d %s" % (response.status, text[:200]))

    def do_prompt_extreme(self, rng, result, start):
        choices = len(self.accepted_extremes) * 2 + len(self.refused)
        pick = rng.randrange(choices)
        if pick < 2 * len(self.accepted_extremes):
            spec = self.accepted_extremes[pick // 2]
            if pick % 2 == 0:
                stream = collect(self.stub(rng).Generate(spec.request(), timeout=CALL_TIMEOUT_S),
                                 start=start)
                result["outcome"], result["ttft"] = stream.code, stream.ttft
                check(stream.code == "OK", "%s: %s %s" % (spec.name, stream.code, stream.details))
                check_complete(stream, spec.ref, spec.name)
            else:
                body = dict(spec.http, stream=True, stream_options={"include_usage": True})
                connection = http_post(self.server.http_port, spec.route, body)
                try:
                    response = connection.getresponse()
                    result["outcome"] = "HTTP %d" % response.status
                    result["ttft"] = check_http_sse(response, spec, "SSE " + spec.name, start)
                finally:
                    connection.close()
            return
        face, fields, code, message = self.refused[pick - 2 * len(self.accepted_extremes)]
        if face == "grpc":
            stream = collect(self.stub(rng).Generate(pb.GenerateRequest(**fields),
                                                     timeout=CALL_TIMEOUT_S))
            result["outcome"] = stream.code
            check(stream.code == code and message in stream.details,
                  "extreme: %s %r (expected %s %r)" % (stream.code, stream.details, code, message))
        else:
            connection = http_post(self.server.http_port, "/v1/completions", fields)
            try:
                response = connection.getresponse()
                text = response.read().decode()
            finally:
                connection.close()
            result["outcome"] = "HTTP %d" % response.status
            check(result["outcome"] == code and message in text,
                  "extreme HTTP: %d %s (expected %s %r)" % (response.status, text[:200], code,
                                                            message))

    # -- phases --

    def run_phase(self, first_index, count):
        with concurrent.futures.ThreadPoolExecutor(self.args.concurrency) as pool:
            return list(pool.map(self.run_one, range(first_index, first_index + count)))

    def metrics(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=30)
        try:
            connection.request("GET", "/metrics")
            return connection.getresponse().read().decode()
        finally:
            connection.close()

    IDLE_GAUGES = ("streamgen:kv_cache_usage_perc", "streamgen:num_requests_running",
                   "streamgen:num_requests_waiting", "streamgen_active_streams")

    def wait_idle(self, timeout=60):
        """Polls /metrics until every idle gauge is 0; returns their last values."""
        end = time.time() + timeout
        while True:
            text = self.metrics()
            values = {name: metric_value(text, name) for name in self.IDLE_GAUGES}
            if all(v == 0 for v in values.values()) or time.time() > end:
                return values, text
            time.sleep(0.05)

    def healthy(self):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=10)
            connection.request("GET", "/health")
            http_ok = connection.getresponse().status == 200
            connection.close()
            self.stubs[0].GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            return http_ok and self.server.process.poll() is None
        except (OSError, grpc.RpcError):
            return False


def summarize(results):
    """Rows: kind, count, outcomes, latency p50 / p99 (ms), TTFT p50 / p99 (ms)."""
    rows = []
    by_kind = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)
    for kind, _ in KINDS + [("all", 0)]:
        group = results if kind == "all" else by_kind.get(kind, [])
        if not group:
            continue
        outcomes = {}
        for r in group:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        latencies = [r["latency"] * 1000 for r in group]
        ttfts = [r["ttft"] * 1000 for r in group if r["ttft"] is not None]
        rows.append((kind, len(group), ", ".join("%s %d" % kv for kv in sorted(outcomes.items())),
                     percentile(latencies, 50), percentile(latencies, 99),
                     percentile(ttfts, 50), percentile(ttfts, 99)))
    return rows


def fmt(value):
    return "-" if value != value else "%.0f" % value


def main():
    global grpc, pb, pb_grpc
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", default=os.path.join(SOURCE_DIR, "build"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=256, help="requests before the memory baseline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="the server's --threads (1: the tiny model gains nothing from more, "
                             "and OpenMP's spin-waits cost much on a shared 2-core machine)")
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--rss-samples", type=int, default=4,
                        help="also read VmRSS this many times during the soak (engine idle)")
    parser.add_argument("--server-flag", action="append", default=[],
                        help="one more streamgen-server flag (repeatable), e.g. --server-flag=--http-threads=80")
    parser.add_argument("--sabotage-reference", action="store_true",
                        help="append to one reference after computing it: the checks must fail")
    parser.add_argument("--kinds", help="comma-separated kinds: only these (to look into one)")
    parser.add_argument("--json", help="write the summary here too")
    args = parser.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    sys.path.insert(0, os.path.join(args.build_dir, "python"))
    import grpc as grpc_module  # Debian's python3-grpcio
    from streamgen.v1 import generate_pb2, generate_pb2_grpc
    grpc, pb, pb_grpc = grpc_module, generate_pb2, generate_pb2_grpc

    def http_healthy(url):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]),
                                                    timeout=5)
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False

    # Queue room for every client (--concurrency) and the cancelled calls the
    # engine has not retired yet: a full queue would be a RESOURCE_EXHAUSTED
    # that this mix does not expect.
    # One HTTP worker per client and some to spare (the default, max-batch +
    # max-queue + 16, would be 288 here: workers first used late in the run
    # would show up as memory growth after the warm-up).
    flags = ["--dtype", "float32", "--threads", str(args.threads),
             "--max-queue", str(max(256, 4 * args.concurrency)),
             "--http-threads", str(args.concurrency + 16),
             "--max-receive-message-bytes", str(MAX_RECEIVE_BYTES)] + args.server_flag
    wall_start = time.time()
    server = StreamgenServer(args.build_dir, flags, healthy=http_healthy, prefix="streamgen-soak-")
    failures = []
    summary = {}
    try:
        soak = Soak(args, server)
        soak.compute_references()
        if args.sabotage_reference:
            # Shows the comparison at work: every completed "greedy" stream must now fail.
            ref = [s for s in soak.specs if s.name == "greedy"][0].ref
            ref.text += "!"
            ref.ids.append(0)
        print("server pid %d, %s, flags %s; %d distinct requests, references computed alone" %
              (server.process.pid, soak.info.name, " ".join(flags), len(soak.specs)), flush=True)

        warm_start = time.time()
        warm = soak.run_phase(0, args.warmup)
        failures += [r["error"] for r in warm if r["error"]]
        values, _ = soak.wait_idle()
        rss_before, threads_before, _ = proc_status(server.process.pid)
        print("warm-up: %d requests in %.1f s, %d failed; RSS %.1f MiB, %d threads" %
              (len(warm), time.time() - warm_start, sum(1 for r in warm if r["error"]),
               rss_before / 1024, threads_before), flush=True)

        soak_start = time.time()
        results, trend = [], []
        chunk = max(1, math.ceil(args.requests / max(1, args.rss_samples)))
        for first in range(0, args.requests, chunk):
            results += soak.run_phase(args.warmup + first, min(chunk, args.requests - first))
            if first + chunk < args.requests:
                soak.wait_idle()
                trend.append(proc_status(server.process.pid)[0])
        soak_wall = time.time() - soak_start
        failures += [r["error"] for r in results if r["error"]]

        values, metrics_text = soak.wait_idle()
        for name, value in values.items():
            if value != 0:
                failures.append("after the soak %s = %s (expected 0 within 60 s)" % (name, value))
        rss_after, threads_after, _ = proc_status(server.process.pid)
        growth = (rss_after - rss_before) / rss_before
        if abs(growth) > args.max_rss_growth:
            failures.append("RSS %.1f MiB after the soak vs %.1f MiB after the warm-up (%+.1f%%)" %
                            (rss_after / 1024, rss_before / 1024, 100 * growth))
        if not soak.healthy():
            failures.append("the server is not healthy after the soak")
        preemptions = metric_value(metrics_text, "streamgen:num_preemptions_total")
        engine_cancelled = metric_value(metrics_text, "streamgen_engine_cancelled_total")

        http_codes = {}
        for line in metrics_text.splitlines():
            if line.startswith("streamgen_http_responses_total{"):
                code = line.split('code="', 1)[1].split('"', 1)[0]
                http_codes[code] = http_codes.get(code, 0) + int(float(line.rsplit(" ", 1)[1]))
        rows = summarize(results)
        print()
        print("soak: %d requests at concurrency %d in %.1f s (after %d warm-up requests); "
              "server --threads %d, float32" % (args.requests, args.concurrency, soak_wall,
                                                args.warmup, args.threads))
        print()
        print("| kind | requests | outcomes | latency p50 ms | p99 ms | TTFT p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for kind, n, outcomes, p50, p99, t50, t99 in rows:
            print("| %s | %d | %s | %s | %s | %s | %s |" % (kind, n, outcomes, fmt(p50), fmt(p99),
                                                           fmt(t50), fmt(t99)))
        print()
        print("| server | after warm-up | after the soak |")
        print("|---|---|---|")
        print("| VmRSS | %.1f MiB | %.1f MiB (%+.1f%%) |" % (rss_before / 1024, rss_after / 1024,
                                                         100 * growth))
        print("| threads | %d | %d |" % (threads_before, threads_after))
        if trend:
            print("| VmRSS every %d requests | | %s MiB |" % (
                chunk, ", ".join("%.1f" % (v / 1024) for v in trend + [rss_after])))
        print("| engine gauges | | %s |" % ", ".join("%s %g" % kv for kv in values.items()))
        print()
        print("engine: %g requests cancelled, %g preemptions; the server's HTTP responses "
              "(references and warm-up included): %s" % (
                  engine_cancelled or 0, preemptions or 0,
                  ", ".join("%s %d" % kv for kv in sorted(http_codes.items()))))
        summary = {"requests": args.requests, "concurrency": args.concurrency,
                   "warmup": args.warmup, "wall_s": soak_wall, "rows": rows,
                   "rss_kib": [rss_before] + trend + [rss_after], "threads": [threads_before, threads_after],
                   "gauges": values, "failures": failures}
    except Failure as failure:
        failures.append(str(failure))
    except Exception as error:  # the soak itself broke (the server gone, ...): a failure too
        failures.append("the soak stopped: %s: %r" % (type(error).__name__, error))
    finally:
        code = server.stop()
        if code != 0:
            failures.append("the server exited %s on SIGTERM (expected 0)" % code)
    print("total wall time %.1f s (server start, references, warm-up, soak, stop)" %
          (time.time() - wall_start))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    if failures:
        print("\n%d FAILED CHECKS:" % len(failures))
        for failure in failures[:50]:
            print("  " + failure)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
