"""A real streamgen-server subprocess on loopback for the Python tests of the
HTTP face: gRPC and HTTP on free ports (port files), JSON logs, started and
stopped the way a user would (SIGTERM). Imported by tests/http_*_test.py.

    server = StreamgenServer(build_dir, ["--max-batch", "1"], healthy=lambda url: ...)
    (the tiny random model unless the flags name a --model; model=None: the
    server's default, the demo model)
    server.url            # http://127.0.0.1:PORT (https with scheme="https")
    server.grpc_address   # 127.0.0.1:PORT
    server.stop()         # SIGTERM; the exit code
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def metric_value(text, name, labels=None):
    """The sum of the samples of `name` in Prometheus text whose labels include
    `labels`; None when there is no such sample."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name != name:
            continue
        sample_labels = {}
        for part in label_text.rstrip("}").split(","):
            if "=" in part:
                key, _, v = part.partition("=")
                sample_labels[key.strip()] = v.strip().strip('"')
        if labels and any(sample_labels.get(k) != v for k, v in labels.items()):
            continue
        total += float(value)
        found = True
    return total if found else None


def stop_process(process, timeout, logs):
    """SIGTERM `process` (unless it has exited), SIGKILL it after `timeout`
    seconds; returns the exit code and prints logs() when it is not 0."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if code != 0:
        print(logs(), file=sys.stderr)
    return code


def proc_status(pid):
    """VmRSS (KiB), Threads and open descriptors of a process, from /proc."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return (int(fields["VmRSS"].split()[0]), int(fields["Threads"]),
            len(os.listdir("/proc/%d/fd" % pid)))


class StreamgenServer:
    """streamgen-server with `flags` until stop(). `healthy(url)` says whether
    GET url/health answered 200 (each test asks with its own client)."""

    def __init__(self, build_dir, flags=(), healthy=None, scheme="http", prefix="streamgen-test-",
                 model="tiny"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        grpc_port_file = os.path.join(self.dir, "grpc-port")
        http_port_file = os.path.join(self.dir, "http-port")
        self.log_path = os.path.join(self.dir, "server.log")
        self.log = open(self.log_path, "w+")
        self.process = subprocess.Popen(
            [os.path.join(build_dir, "server", "streamgen-server"),
             "--listen", "127.0.0.1:0", "--port-file", grpc_port_file,
             "--http-listen", "127.0.0.1:0", "--http-port-file", http_port_file,
             "--metrics-listen=", "--log-format=json"] + self.model_flags(build_dir, model, flags)
            + list(flags),
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not read_text(http_port_file).strip() or not read_text(grpc_port_file).strip():
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server did not start:\n" + self.logs())
            time.sleep(0.02)
        self.http_port = int(read_text(http_port_file))
        self.url = "%s://127.0.0.1:%d" % (scheme, self.http_port)
        self.grpc_address = "127.0.0.1:" + read_text(grpc_port_file).strip()
        while healthy is not None and not healthy(self.url):
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server never became healthy:\n" + self.logs())
            time.sleep(0.05)

    @staticmethod
    def model_flags(build_dir, model, flags):
        """The tiny random model (model="tiny") unless `flags` name a --model;
        model=None: the server's default (the demo model)."""
        if model is None or "--model" in flags:
            return []
        return ["--model", os.path.join(build_dir, "models", "tiny-builtin")]

    def logs(self):
        self.log.flush()
        return read_text(self.log_path)

    def stop(self):
        """SIGTERM; returns the exit code (and prints the log when it is not 0)."""
        code = stop_process(self.process, 120, self.logs)
        if not self.log.closed:
            self.log.close()
        return code


def flag_defaults(help_text):
    """{flag name (underscores): default} from a program's --help
    (common/cli_flags.cc FlagsHelp: "  --http-listen  (default: 0.0.0.0:8000)")."""
    return {m.group(1).replace("-", "_"): m.group(2).strip().strip('"')
            for m in re.finditer(r"^  --([\w-]+)  \(default: (.*)\)$", help_text, re.M)}


# ---- small HTTP helpers for the tests that call the HTTP face ----

def post_json(url, body, headers=None, timeout=60):
    """POSTs `body` as JSON: (status, parsed body); a body that is not JSON
    comes back as {"raw": text}."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"raw": text.decode(errors="replace")}


def post_sse(url, body, timeout=60):
    """The data events of a streamed POST, parsed, up to [DONE]."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for raw in response:
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return events
            events.append(json.loads(line[len("data: "):]))
    raise AssertionError("the stream ended without data: [DONE]")


def http_healthy(url):
    """True when GET URL/health answers 200 (a StreamgenServer `healthy`)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
