#!/usr/bin/python3
"""docker/Dockerfile built and run with podman, and used the way a user would:
the image's configuration (non-root user, the ports the server listens on by
default, the grpc.health.v1 HEALTHCHECK, the exec-form entry point), a
runtime stage without the build tools, flags appended at `run` (a bad one is
refused with its message), then a container on free host ports: its own
HEALTHCHECK turns healthy, the C++ client on the host streams the demo model's
greedy continuation (equal to models/demo-brown/greedy.json), the metrics port
carries the vllm: names with --metrics-vllm-aliases, and `podman stop`'s
SIGTERM reaches the server, which drains and exits 0.

Two ways to build the image:
  default  the `prebuilt` target: the runtime stage fed with the binaries this
           build tree already built (a staged context: prebuilt/bin/ and
           models/demo-brown/), a minute or less once the base image exists;
  --full   the default target, whose builder runs scripts/install-deps.sh and
           scripts/build.sh itself (the whole project from scratch: README,
           "Deployment", says how long that took here).
The base image (debian:bookworm-slim) is made from Debian's archive by
docker/make-base-image.sh unless it exists. Containers are removed even when a
check fails; the image is untagged at the end (its layers stay as podman's cache)
and the images of earlier runs are removed.

    /usr/bin/python3 tests/container_test.py --build-dir BUILD_DIR [--full | --image IMAGE]
                                             [--keep-image]

Exits 77 (ctest: skipped) with a message where podman is not installed.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from streamgen_server import flag_defaults

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# runc and cgroupfs: crun and systemd's cgroup manager fail on these VMs
# (cgroup hybrid mode, no CAP_SYS_RESOURCE); the ulimits too (README, Deployment).
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
LIMITS = ["--ulimit", "nofile=8192:8192", "--ulimit", "nproc=8192:8192"]
IMAGE_ROOT = "/opt/streamgen"
LABEL = "streamgen.test=container_test"              # on the test's containers
IMAGE_LABEL = "streamgen.test.image=container_test"  # on the images it builds
BINARIES = ["server/streamgen-server", "client/streamgen-client", "tools/streamgen-generate",
            "lib/libstreamgen_sentencepiece.so"]


def podman(*args, check=True, timeout=600, **kwargs):
    result = subprocess.run(PODMAN + list(args), capture_output=True, text=True,
                            timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError("podman %s failed (%d):\n%s%s" % (
            " ".join(args[:3]), result.returncode, result.stdout[-4000:], result.stderr[-4000:]))
    return result


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def remove_stale_containers():
    """Containers of earlier runs of this test whose process is gone (a run
    killed by ctest's timeout cannot clean up after itself)."""
    listing = podman("ps", "-a", "--filter", "label=" + LABEL, "--format",
                     '{{.Names}} {{index .Labels "streamgen.test.pid"}}', check=False)
    for line in listing.stdout.split("\n"):
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and not os.path.exists("/proc/" + parts[1]):
            podman("rm", "-f", parts[0], check=False)


class ContainerTest(unittest.TestCase):
    image = None
    containers = []

    @classmethod
    def setUpClass(cls):
        remove_stale_containers()
        made = subprocess.run([os.path.join(SOURCE_DIR, "docker", "make-base-image.sh")],
                              capture_output=True, text=True, timeout=900)
        if made.returncode != 0:
            raise AssertionError("docker/make-base-image.sh failed:\n" + made.stdout + made.stderr)
        cls.image = ARGS.image or "localhost/streamgen:container-test-%d" % os.getpid()
        build = ["build", "--format", "docker", "--network=host", "--label", IMAGE_LABEL,
                 *LIMITS, "-f", os.path.join(SOURCE_DIR, "docker", "Dockerfile"), "-t", cls.image]
        started = time.time()
        if ARGS.image:
            pass  # built before (e.g. the full build, timed on its own)
        elif ARGS.full:
            podman(*(build + [SOURCE_DIR]), timeout=7200)
        else:
            context = tempfile.mkdtemp(prefix="streamgen-container-context-")
            try:
                os.makedirs(os.path.join(context, "prebuilt", "bin"))
                for binary in BINARIES:
                    shutil.copy2(os.path.join(ARGS.build_dir, binary),
                                 os.path.join(context, "prebuilt", "bin"))
                shutil.copytree(os.path.join(SOURCE_DIR, "models", "demo-brown"),
                                os.path.join(context, "models", "demo-brown"))
                podman(*(build + ["--target", "prebuilt", context]), timeout=1800)
            finally:
                shutil.rmtree(context, ignore_errors=True)
        cls.build_seconds = time.time() - started
        inspect = json.loads(podman("image", "inspect", cls.image).stdout)[0]
        cls.config = inspect["Config"]
        cls.healthcheck = inspect.get("Healthcheck") or {}
        kind = "given" if ARGS.image else "full" if ARGS.full else "prebuilt"
        print("container_test: %s image built in %.1f s, %.0f MB" % (
            kind, cls.build_seconds, inspect["Size"] / 1e6), file=sys.stderr)
        # The image's own server says which flags and defaults it has.
        shown = podman("run", "--rm", "--network=none", *LIMITS, cls.image, "--help", check=False)
        cls.help = shown.stdout + shown.stderr
        cls.defaults = flag_defaults(cls.help)

    @classmethod
    def tearDownClass(cls):
        for name in cls.containers:
            podman("rm", "-f", "-t", "0", name, check=False)
        if cls.image and not ARGS.keep_image and not ARGS.image:
            # Untagged, not removed: `podman rmi` would take the build's
            # intermediate images (the cache of the runtime stage's packages)
            # with it. The images of earlier runs go now: their layers that
            # this one shares stay.
            own = podman("image", "inspect", "--format", "{{.Id}}", cls.image,
                         check=False).stdout.strip()
            podman("untag", cls.image, check=False)
            earlier = podman("images", "-a", "--no-trunc", "--filter", "label=" + IMAGE_LABEL,
                             "--filter", "dangling=true", "--format", "{{.ID}}", check=False)
            for image in earlier.stdout.split():
                if own not in (image, image.replace("sha256:", "")):
                    podman("rmi", image, check=False)

    def start(self, *args, ports=(), extra=()):
        """A detached container of the image with `args` appended to the
        server's command line; removed in tearDownClass whatever happens."""
        name = "streamgen-container-test-%d-%d" % (os.getpid(), len(self.containers))
        self.containers.append(name)
        publish = []
        for host_port, container_port in ports:
            publish += ["-p", "127.0.0.1:%d:%d" % (host_port, container_port)]
        podman("run", "-d", "--name", name, "--label", LABEL,
               "--label", "streamgen.test.pid=%d" % os.getpid(), *LIMITS, *extra, *publish,
               self.image, *args)
        return name

    def model_flags(self):
        """--model only where the server's default (a path compiled in) is not
        in the image: the prebuilt binaries were compiled in another source
        directory than the builder's /opt/streamgen."""
        default = self.defaults.get("model", "")
        inside = podman("run", "--rm", "--network=none", *LIMITS, "--entrypoint", "/bin/sh",
                        self.image, "-c", 'test -f "$1/config.json"', "sh", default, check=False)
        if inside.returncode not in (0, 1):
            self.fail("cannot look into the image:\n" + inside.stderr)
        if default and inside.returncode == 0:
            return []
        return ["--model=%s/models/demo-brown" % IMAGE_ROOT]

    def test_image_configuration(self):
        self.assertIn("listen", self.defaults, self.help)
        self.assertEqual(self.config.get("User"), "10001:10001")
        self.assertEqual(self.config.get("Entrypoint"), ["%s/bin/streamgen-server" % IMAGE_ROOT])
        self.assertEqual(self.config.get("StopSignal"), "SIGTERM")
        # EXPOSE == the ports the server listens on by default.
        default_ports = {port_of(self.defaults[flag])
                         for flag in ("listen", "http_listen", "metrics_listen")}
        self.assertEqual(default_ports, {50051, 8000, 9090})
        self.assertEqual(set(self.config.get("ExposedPorts", {})),
                         {"%d/tcp" % p for p in default_ports})
        self.assertEqual(self.healthcheck.get("Test"),
                         ["CMD", "%s/bin/streamgen-client" % IMAGE_ROOT,
                          "--server=127.0.0.1:%d" % port_of(self.defaults["listen"]), "health"])

    def test_runtime_stage_holds_no_build_tools(self):
        probe = podman("run", "--rm", "--network=none", *LIMITS, "--entrypoint", "/bin/sh",
                       self.image, "-c",
                       "id -u; ls %s; ls %s/bin; for p in g++ cmake ninja; do command -v $p; done; "
                       "dpkg-query -W -f='${Package}\\n' libtorch-dev libgrpc++-dev 2>/dev/null; "
                       "true" % (IMAGE_ROOT, IMAGE_ROOT)).stdout.split()
        self.assertEqual(probe[0], "10001")
        self.assertEqual(probe[1:], ["bin", "models", "libstreamgen_sentencepiece.so",
                                     "streamgen-client", "streamgen-generate", "streamgen-server"])

    def test_bad_flag_is_refused_with_its_message(self):
        result = podman("run", "--rm", "--network=none", *LIMITS, self.image, "--max-queue=0",
                        check=False)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("--max-queue must be > 0", result.stdout + result.stderr)

    def test_threads_follow_the_cpu_quota(self):
        # A container limited to 1.5 CPUs (and one limited to CPU 0) runs the
        # model on 1 thread, not on the host's core count.
        for limit in (["--cpus=1.5"], ["--cpuset-cpus=0"]):
            name = self.start(*self.model_flags(), "--http-listen=", "--metrics-listen=",
                              extra=limit)
            deadline = time.time() + 120
            while True:
                logs = podman("logs", name, check=False)
                text = logs.stdout + logs.stderr
                if " serving " in text:
                    break
                if time.time() > deadline:
                    self.fail("%s: never serving:\n%s" % (limit, text))
                time.sleep(0.5)
            self.assertRegex(text, r" threads=1 ", text)
            if limit[0].startswith("--cpus="):
                self.assertIn("cgroup quota 1.50 CPUs", text)
            podman("rm", "-f", "-t", "0", name, check=False)

    def test_serves_streams_and_drains_on_sigterm(self):
        grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
        started = time.time()
        appended = self.model_flags() + ["--metrics-vllm-aliases"]
        print("container_test: run %s %s" % (self.image, " ".join(appended)), file=sys.stderr)
        name = self.start(*appended,
                          ports=[(grpc_port, port_of(self.defaults["listen"])),
                                 (http_port, port_of(self.defaults["http_listen"])),
                                 (metrics_port, port_of(self.defaults["metrics_listen"]))])
        # The image's HEALTHCHECK (the client inside, on the container's own
        # 127.0.0.1:50051) until it reports healthy.
        deadline = time.time() + 180
        while True:
            check = podman("healthcheck", "run", name, check=False)
            if check.returncode == 0:
                break
            running = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            if running != "true" or time.time() > deadline:
                self.fail("never healthy (%s):\n%s" % (check.stdout + check.stderr,
                                                       podman("logs", name).stderr))
            time.sleep(0.5)
        healthy_seconds = time.time() - started
        client = os.path.join(ARGS.build_dir, "client", "streamgen-client")
        server = "127.0.0.1:%d" % grpc_port
        health = subprocess.run([client, "--server", server, "health"], capture_output=True,
                                text=True, timeout=30)
        self.assertEqual((health.returncode, health.stdout), (0, "SERVING\n"), health.stderr)

        # The server process is PID 1 and not root.
        status = podman("exec", name, "cat", "/proc/1/status").stdout
        self.assertRegex(status, r"\nUid:\s+10001\s")
        self.assertIn("%s/bin/streamgen-server" % IMAGE_ROOT,
                      podman("exec", name, "cat", "/proc/1/cmdline").stdout.replace("\0", " "))

        # The demo model's greedy continuation, streamed through the C++ client.
        with open(os.path.join(SOURCE_DIR, "models", "demo-brown", "greedy.json")) as f:
            golden = json.load(f)
        expected = golden["outputs"][0]
        generate = subprocess.run(
            [client, "--server", server, "generate", expected["prompt"],
             "--max-new-tokens", str(len(expected["ids"])), "--temperature", "0"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(generate.returncode, 0, generate.stderr)
        self.assertEqual(generate.stdout, expected["text"] + "\n")
        self.assertIn("FINISH_REASON_LENGTH", generate.stderr)
        self.assertIn("completion_tokens=%d" % len(expected["ids"]), generate.stderr)

        # Metrics through the published port, vLLM's names included.
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port,
                                         timeout=10).read().decode()
        self.assertIn("streamgen:generation_tokens_total %d\n" % len(expected["ids"]), metrics)
        self.assertRegex(metrics,
                         r'\nvllm:cache_config_info\{block_size="16",num_gpu_blocks="\d+"\} 1\n')
        self.assertIn("\nvllm:num_requests_waiting 0\n", metrics)
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % http_port, timeout=10) as r:
            self.assertEqual(r.status, 200)

        # podman stop sends the image's STOPSIGNAL (SIGTERM) to PID 1: the
        # server drains and exits 0.
        stop_started = time.time()
        podman("stop", "-t", "60", name)
        stop_seconds = time.time() - stop_started
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name)
        self.assertEqual(state["ExitCode"], 0, logs.stdout + logs.stderr)
        output = logs.stdout + logs.stderr
        self.assertIn("signal received: draining signal=15", output)
        self.assertIn("stopped", output)
        self.assertLess(stop_seconds, 30, "the server did not stop on SIGTERM (podman killed it?)")
        print("container_test: healthy %.1f s after run, stopped %.1f s after SIGTERM" % (
            healthy_seconds, stop_seconds), file=sys.stderr)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--full", action="store_true",
                        help="build the default target (the builder compiles everything)")
    parser.add_argument("--keep-image", action="store_true")
    parser.add_argument("--image", help="check this image, built before, instead of building one")
    ARGS, rest = parser.parse_known_args()
    if shutil.which("podman") is None:
        print("container_test: SKIPPED: podman is not installed (scripts/install-deps.sh "
              "installs it on Debian 12)", file=sys.stderr)
        return 77
    for binary in BINARIES:
        if not os.path.exists(os.path.join(ARGS.build_dir, binary)):
            print("container_test: %s is not built" % binary, file=sys.stderr)
            return 1
    started = time.time()
    result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    print("container_test: %.1f s in all" % (time.time() - started), file=sys.stderr)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
