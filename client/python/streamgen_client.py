#!/usr/bin/python3
"""A streamgen client in Python, from stubs generated out of
proto/streamgen/v1/generate.proto with Debian's protoc + grpc_python_plugin.

    PYTHONPATH=GEN_DIR /usr/bin/python3 client/python/streamgen_client.py \
        --server localhost:50051 "Once upon a time" --max-new-tokens 32

GEN_DIR holds streamgen/v1/generate_pb2.py and generate_pb2_grpc.py (the build
writes them to BUILD_DIR/python; README.md shows the protoc command).
Ctrl-C cancels the call.
"""
import argparse
import os
import sys

import grpc
from google.protobuf import json_format

from streamgen.v1 import generate_pb2
from streamgen.v1 import generate_pb2_grpc


def make_channel(server, tls=False, ca_file=None):
    """An insecure channel, or TLS with the system roots (or ca_file)."""
    if not tls and not ca_file:
        return grpc.insecure_channel(server)
    root = open(ca_file, "rb").read() if ca_file else None
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
    args = parser.parse_args(argv)

    fields = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k, top_p=args.top_p, stop=args.stop)
    if args.seed is not None:
        fields["seed"] = args.seed
    timeout = args.deadline_ms / 1000.0 if args.deadline_ms > 0 else None
    with make_channel(args.server, args.tls, args.tls_ca) as channel:
        stub = generate_pb2_grpc.TextGenerationStub(channel)
        call = generate(stub, args.prompt, api_key=args.api_key, timeout=timeout, **fields)
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
