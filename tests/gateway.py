"""Real nginx (Debian's /usr/sbin/nginx) running the shipped gateway config,
docker/gateway/nginx.conf, in front of streamgen-server replicas on loopback,
for the Python tests. Needs no root: everything nginx writes is in a temp dir.

    gateway = Gateway(source_dir, grpc_upstreams=["127.0.0.1:5001", ...],
                      http_upstreams=["127.0.0.1:8001", ...])
    gateway.address       # 127.0.0.1:PORT, TLS for both faces (gRPC and HTTP)
    gateway.url           # https://127.0.0.1:PORT
    gateway.ca_file       # the CA that signed the gateway's certificate
    gateway.server_name   # a name in that certificate (so is IP 127.0.0.1)
    gateway.error_log()   # nginx's error log so far; access_log(): one line per call
    gateway.stop()        # SIGTERM (nginx's fast shutdown); the exit code

The config is the shipped file with exactly two kinds of lines changed
(render_config): the `server` lines of each upstream (one per replica given,
with the shipped line's parameters) and the `listen` port. The certificate is
written where the config expects it (certs/ next to nginx.conf), and the
runtime paths (pid, temp files) are relative to nginx's prefix (-p), the temp dir.
"""
import os
import re
import socket
import subprocess
import tempfile
import time

from streamgen_server import stop_process

NGINX = "/usr/sbin/nginx"
SERVER_NAME = "gateway.streamgen.test"

_UPSTREAM = re.compile(r"^(\s*)upstream\s+(\S+)\s*\{\s*$")
_SERVER = re.compile(r"^(\s*)server\s+(\S+)(\s[^;]*)?;(.*)$")
_LISTEN = re.compile(r"^(\s*)listen\s+(\d+)(\s[^;]*)?;(.*)$")


def render_config(text, upstreams, listen):
    """The shipped config `text` with the `server` lines of each upstream block
    replaced by one line per address in upstreams[name] (keeping the first
    shipped line's parameters, e.g. max_fails), and the listen port replaced by
    `listen` (HOST:PORT). Raises ValueError when the config no longer has the
    shape this relies on (so that the test fails instead of testing less)."""
    out, seen, listens = [], set(), 0
    upstream = None  # name of the upstream block being read, and whether its servers were written
    written = False
    for line in text.splitlines(keepends=True):
        match = _UPSTREAM.match(line)
        if match:
            upstream, written = match.group(2), False
            if upstream not in upstreams:
                raise ValueError(f"no addresses given for upstream {upstream}")
            seen.add(upstream)
            out.append(line)
            continue
        if upstream is not None:
            if line.strip() == "}":
                if not written:
                    raise ValueError(f"upstream {upstream} has no server lines")
                upstream = None
                out.append(line)
                continue
            match = _SERVER.match(line)
            if match:
                if not written:
                    indent, params = match.group(1), match.group(3) or ""
                    out.extend(f"{indent}server {address}{params};\n" for address in upstreams[upstream])
                    written = True
                continue
            out.append(line)
            continue
        match = _LISTEN.match(line)
        if match:
            listens += 1
            out.append(f"{match.group(1)}listen {listen}{match.group(3) or ''};{match.group(4)}\n")
            continue
        out.append(line)
    if seen != set(upstreams):
        raise ValueError(f"upstreams in the config: {sorted(seen)}, given: {sorted(upstreams)}")
    if listens != 1:
        raise ValueError(f"expected one listen line, found {listens}")
    return "".join(out)


def make_certificates(directory, server_name=SERVER_NAME):
    """A CA (ca.pem) and the gateway's certificate and key (certs/gateway.pem,
    certs/gateway.key) for `server_name`, localhost and IP 127.0.0.1."""
    certs = os.path.join(directory, "certs")
    os.makedirs(certs, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=streamgen-test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{server_name},DNS:localhost,IP:127.0.0.1\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={server_name}",
        "-keyout", "certs/gateway.key", "-out", "gateway.csr")
    run("x509", "-req", "-in", "gateway.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "certs/gateway.pem")
    return os.path.join(directory, "ca.pem")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Gateway:
    """nginx with docker/gateway/nginx.conf (rendered for these upstreams) until stop()."""

    def __init__(self, source_dir, grpc_upstreams, http_upstreams, nginx=NGINX):
        self.dir = tempfile.mkdtemp(prefix="streamgen-gateway-")
        self.server_name = SERVER_NAME
        self.ca_file = make_certificates(self.dir)
        with open(os.path.join(source_dir, "docker", "gateway", "nginx.conf")) as f:
            self.shipped = f.read()
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        self.access_log_path = os.path.join(self.dir, "access.log")
        self.error_log_path = os.path.join(self.dir, "error.log")
        upstreams = {"streamgen_grpc": list(grpc_upstreams), "streamgen_http": list(http_upstreams)}
        # The free port may be taken by the time nginx binds it: try another.
        for attempt in range(5):
            self.port = free_port()
            with open(self.conf_path, "w") as f:
                f.write(render_config(self.shipped, upstreams, f"127.0.0.1:{self.port}"))
            if self._start(nginx):
                break
            if "Address already in use" not in self.error_log() or attempt == 4:
                raise RuntimeError("nginx did not start:\n" + self.error_log())
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"https://127.0.0.1:{self.port}"

    def _start(self, nginx):
        test = subprocess.run([nginx, "-t", "-p", self.dir, "-c", self.conf_path],
                              capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError("nginx -t refused the rendered config:\n" + test.stderr)
        self.access_log = open(self.access_log_path, "w")
        self.errors = open(self.error_log_path, "w")
        self.process = subprocess.Popen([nginx, "-p", self.dir, "-c", self.conf_path, "-g", "daemon off;"],
                                        stdout=self.access_log, stderr=self.errors)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                self.access_log.close()
                self.errors.close()
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("nginx did not listen within 30 s:\n" + self.error_log())

    def error_log(self):
        return read_text(self.error_log_path)

    def access_log_lines(self):
        return read_text(self.access_log_path).splitlines()

    def stop(self):
        """SIGTERM (fast shutdown); returns the exit code (prints the error log when not 0)."""
        code = stop_process(self.process, 30, self.error_log)
        for f in (self.access_log, self.errors):
            if not f.closed:
                f.close()
        return code
