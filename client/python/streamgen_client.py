#!/usr/bin/python3
"""A streamgen client in Python, from stubs generated out of
proto/streamgen/v1/generate.proto with Debian's protoc + grpc_python_plugin.

    PYTHONPATH=GEN_DIR /usr/bin/python3 client/python/streamgen_client.py \
        --server localhost:50051 "Once upon a time" --max-new-tokens 32

GEN_DIR holds streamgen/v1/generate_pb2.py and generate_pb2_grpc.py (the build
writes them to BUILD_DIR/python; README.md shows the protoc command).
Ctrl-C cancels the call. A stream cut short after at least one message (its
server died, behind a gateway or not) is resumed (--resume-retries, default
3): see ResumableStream.
"""
import argparse
import os
import sys
import time

import grpc
from google.protobuf import json_format

from streamgen.v1 import generate_pb2
from streamgen.v1 import generate_pb2_grpc


def make_channel(server, tls=False, ca_file=None):
    """An insecure channel, or TLS with the system roots (or ca_file)."""
    if not tls and not ca_file:
        return grpc.insecure_channel(server)
    root = None
    if ca_file:
        with open(ca_file, "rb") as f:
            root = f.read()
    return grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=root))


def generate(stub, prompt, api_key=None, timeout=None, **fields):
    """Yields the GenerateResponse messages of one Generate call.

    fields are GenerateRequest fields (max_new_tokens=16, temperature=0.7,
    seed=1, stop=["\\n"], ...). The last message carries finish_reason, usage
    and seed.
    """
    request = generate_pb2.GenerateRequest(prompt=prompt, **fields)
    metadata = [("authorization", "Bearer " + api_key)] if api_key else None
    return stub.Generate(request, timeout=timeout, metadata=metadata)


def cut_short(error):
    """True when a Generate call that failed with `error` (a grpc.RpcError)
    was cut short rather than ended, so that resuming it elsewhere makes sense:
    UNAVAILABLE (the server or the connection died, or a drain timed out), or
    INTERNAL "Received RST_STREAM ..." (a gateway such as nginx whose upstream
    died after the response began: it can only reset the HTTP/2 stream). The
    server's own INTERNAL comes after a FINISH_REASON_ERROR message and is not
    resumed."""
    code = error.code()
    return code == grpc.StatusCode.UNAVAILABLE or (
        code == grpc.StatusCode.INTERNAL and "RST_STREAM" in (error.details() or ""))


class ResumableStream:
    """Iterates over the GenerateResponse messages of one generation, resuming
    it when the stream is cut short (cut_short: the server, the connection or a
    gateway's upstream died) after at least one message, up to `retries` times: the
    next call carries every token id received so far as resume_token_ids, with
    the seed and model_fingerprint of the first message and its request_id, so
    the server (another replica, behind a gateway) goes on exactly where the
    text stopped. The caller sees one seamless sequence of messages.

    `request` is a GenerateRequest; `timeout` (seconds) bounds the whole
    generation, every attempt included. cancel() cancels the call in flight.
    A call cut short before its first message (a draining replica refused it)
    is simply made again. `resumes` counts the retries and resumes made;
    on_resume(error, tokens_received) is called before each one. Other errors,
    and those after the last retry, are raised as grpc.RpcError.
    """

    def __init__(self, stub, request, api_key=None, timeout=None, retries=3, on_resume=None):
        self._stub = stub
        self._request = generate_pb2.GenerateRequest()
        self._request.CopyFrom(request)
        self._metadata = [("authorization", "Bearer " + api_key)] if api_key else None
        self._deadline = time.monotonic() + timeout if timeout else None
        self._retries = retries
        self._on_resume = on_resume
        self._call = None
        self._cancelled = False
        self.resumes = 0

    def cancel(self):
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    def __iter__(self):
        received = []
        messages = 0
        while True:
            timeout = None
            if self._deadline is not None:
                timeout = max(0.0, self._deadline - time.monotonic())
            self._call = self._stub.Generate(self._request, timeout=timeout,
                                             metadata=self._metadata)
            try:
                for response in self._call:
                    if messages == 0:
                        # The first message names the seed and the model.
                        if not self._request.HasField("seed") and response.HasField("seed"):
                            self._request.seed = response.seed
                        self._request.model_fingerprint = response.model_fingerprint
                        if not self._request.request_id:
                            self._request.request_id = response.request_id
                    messages += 1
                    received.extend(token.id for token in response.tokens)
                    yield response
                    # CANCELLED (a drain that timed out) is followed by the
                    # call's UNAVAILABLE: read on, and resume.
                    if response.finish_reason not in (generate_pb2.FINISH_REASON_UNSPECIFIED,
                                                      generate_pb2.FINISH_REASON_CANCELLED):
                        return
                return
            except grpc.RpcError as error:
                if self._cancelled or self.resumes >= self._retries or not cut_short(error):
                    raise
                self.resumes += 1
                if self._on_resume is not None:
                    self._on_resume(error, len(received))
                # Before the first message (a draining replica behind a
                # gateway refused it) nothing was generated: the same request
                # again. After it: resume.
                if messages > 0:
                    del self._request.resume_token_ids[:]
                    self._request.resume_token_ids.extend(received)
                # A short back-off: a gateway needs a moment to eject the dead replica.
                time.sleep(min(2.0, 0.1 * 2 ** (self.resumes - 1)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--server", default="localhost:50051")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--tls-ca")
    parser.add_argument("--api-key", default=os.environ.get("STREAMGEN_API_KEY"))
    parser.add_argument("--deadline-ms", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=0.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--stop", action="append", default=[])
    parser.add_argument("--json", action="store_true",
                        help="print each response message as JSON, one per line")
    parser.add_argument("--resume-retries", type=int, default=3,
                        help="resume a stream cut short (UNAVAILABLE, or a gateway's "
                             "RST_STREAM) after at least one message up to this many times "
                             "(0: never)")
    args = parser.parse_args(argv)

    fields = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, stop=args.stop)
    if args.seed is not None:
        fields["seed"] = args.seed
    timeout = args.deadline_ms / 1000.0 if args.deadline_ms > 0 else None
    with make_channel(args.server, args.tls, args.tls_ca) as channel:
        stub = generate_pb2_grpc.TextGenerationStub(channel)
        def on_resume(error, tokens):
            if tokens == 0:
                print("[%s: %s; retrying, %d of %d]" % (
                    error.code().name, error.details(), call.resumes, args.resume_retries),
                    file=sys.stderr)
            else:
                print("\n[stream broke after %d tokens (%s: %s); resuming, %d of %d]" % (
                    tokens, error.code().name, error.details(), call.resumes,
                    args.resume_retries), file=sys.stderr)

        call = ResumableStream(stub, generate_pb2.GenerateRequest(prompt=args.prompt, **fields),
                               api_key=args.api_key, timeout=timeout,
                               retries=max(0, args.resume_retries), on_resume=on_resume)
        last = None
        try:
            for response in call:
                if args.json:
                    print(json_format.MessageToJson(response, indent=None), flush=True)
                else:
                    sys.stdout.write(response.text)
                    sys.stdout.flush()
                last = response
        except KeyboardInterrupt:
            call.cancel()
            print("\ncancelled", file=sys.stderr)
            return 130
        except grpc.RpcError as error:
            print("\n%s: %s" % (error.code().name, error.details()), file=sys.stderr)
            return 1
    if not args.json:
        print()
        if last is not None:
            print("[%s prompt_tokens=%d completion_tokens=%d seed=%d]" % (
                generate_pb2.FinishReason.Name(last.finish_reason),
                last.usage.prompt_tokens, last.usage.completion_tokens, last.seed),
                file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
