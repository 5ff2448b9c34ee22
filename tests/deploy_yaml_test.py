#!/usr/bin/python3
"""The deployment files against the server they deploy: docker/compose.yaml
and docker/k8s/*.yaml parse (python3-yaml), every --flag they pass exists in
`streamgen-server --help`, the ports they name are the ports the server
listens on (its defaults, or the flags they pass) and the Dockerfiles EXPOSE,
the probes ask grpc.health.v1 on the gRPC port, grace periods are longer than
the drain timeout in use, the gateway's upstreams are the compose replicas'
ports, and the InferencePool selects the Deployment's pods on the port whose
/metrics carries the vllm: names. Then each check is shown to fail, with its
message, on a copy of the files with one thing wrong.

    /usr/bin/python3 tests/deploy_yaml_test.py --server BUILD_DIR/server/streamgen-server
"""
import argparse
import copy
import os
import re
import subprocess
import sys
import unittest

import yaml

from streamgen_server import flag_defaults

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER_DIR = os.path.join(SOURCE_DIR, "docker")
PORT_FLAGS = ("listen", "http_listen", "metrics_listen")  # gRPC, HTTP face, metrics


# ---- what the server and the Dockerfiles say ----

def server_defaults(server):
    """{flag name (underscores): default} from `streamgen-server --help`."""
    shown = subprocess.run([server, "--help"], capture_output=True, text=True, timeout=60)
    text = shown.stdout + shown.stderr
    defaults = flag_defaults(text)
    if "listen" not in defaults or "drain_timeout" not in defaults:
        raise AssertionError("cannot read the flags from %s --help:\n%s" % (server, text[:2000]))
    return defaults


def seconds(duration):
    """abseil's duration text (30s, 1m30s, 1h, 500ms) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        raise ValueError("not a duration: %r" % (duration,))
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def port_of(address):
    """The port of HOST:PORT; None for "" (off)."""
    return int(address.rsplit(":", 1)[1]) if address else None


def dockerfile_facts(path):
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    exposed = set()
    for line in re.findall(r"^EXPOSE (.*)$", text, re.M):
        exposed |= {int(p.split("/")[0]) for p in line.split()}
    health = re.search(r"^HEALTHCHECK .*--server=[\d.]+:(\d+)", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    return {"exposed": exposed, "health_port": int(health.group(1)) if health else None,
            "user": user[-1] if user else None}


def load_yaml(path):
    """Every document of the file; AssertionError naming the file when it does not parse."""
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        raise AssertionError("%s does not parse: %s" % (os.path.relpath(path, SOURCE_DIR), e))


# ---- the checks: each returns a list of problems (empty: fine) ----

def effective_flags(args, defaults, where, problems):
    """The server's flag values with `args` applied (the last value wins);
    unknown flags and stray arguments are problems."""
    values = dict(defaults)
    for arg in args or []:
        if not isinstance(arg, str) or not arg.startswith("--"):
            problems.append("%s: %r is not a --flag (the image's entry point is the server)"
                            % (where, arg))
            continue
        name, equals, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key not in defaults:
            problems.append("%s: unknown flag --%s (not in streamgen-server --help)"
                            % (where, name))
            continue
        values[key] = value if equals else "true"
    return values


def check_dockerfile(facts, defaults, name):
    problems = []
    ports = {port_of(defaults[f]) for f in PORT_FLAGS}
    if facts["exposed"] != ports:
        problems.append("%s: EXPOSE %s is not the server's default ports %s"
                        % (name, sorted(facts["exposed"]), sorted(ports)))
    if facts["health_port"] != port_of(defaults["listen"]):
        problems.append("%s: HEALTHCHECK asks port %s, the server's gRPC port is %d"
                        % (name, facts["health_port"], port_of(defaults["listen"])))
    if facts["user"] in (None, "root", "0", "0:0"):
        problems.append("%s: runs as root (no USER)" % name)
    return problems


def nginx_upstreams(path):
    """[(host, port)] of the `server` lines in upstream blocks, and the listen ports."""
    with open(path) as f:
        text = re.sub(r"#.*", "", f.read())
    servers = []
    for block in re.findall(r"upstream\s+\w+\s*\{(.*?)\}", text, re.S):
        servers += [(h, int(p)) for h, p in re.findall(r"\bserver\s+([\w.-]+):(\d+)", block)]
    listens = {int(p) for p in re.findall(r"\blisten\s+(?:[\d.]+:)?(\d+)", text)}
    return servers, listens


def check_compose(doc, defaults, dockerfile, compose_dir):
    problems = []
    services = doc.get("services") or {}
    replicas = {n: s for n, s in services.items()
                if isinstance(s, dict) and (s.get("build") or "streamgen" in str(s.get("image")))}
    if len(replicas) < 2:
        problems.append("compose: %d streamgen replicas, want at least two" % len(replicas))
    replica_ports = {}
    for name, service in replicas.items():
        where = "compose: %s" % name
        build = service.get("build") or {}
        if build and not os.path.isfile(os.path.join(compose_dir, build.get("context", "."),
                                                     build.get("dockerfile", "Dockerfile"))):
            problems.append("%s: build.dockerfile %s is not in the context %s"
                            % (where, build.get("dockerfile"), build.get("context")))
        values = effective_flags(service.get("command"), defaults, where, problems)
        ports = {port_of(values[f]) for f in PORT_FLAGS} - {None}
        replica_ports[name] = ports
        expose = {int(p) for p in service.get("expose", [])}
        for port in sorted(ports - expose):
            problems.append("%s: the server listens on %d, which is not in expose %s"
                            % (where, port, sorted(expose)))
        for port in sorted(ports - dockerfile["exposed"]):
            problems.append("%s: the server listens on %d, which the Dockerfile does not EXPOSE"
                            % (where, port))
        if port_of(values["listen"]) != dockerfile["health_port"]:
            problems.append("%s: gRPC on %s, but the image's HEALTHCHECK asks port %s"
                            % (where, port_of(values["listen"]), dockerfile["health_port"]))
        grace, drain = service.get("stop_grace_period"), values["drain_timeout"]
        if grace is None or seconds(grace) <= seconds(drain):
            problems.append("%s: stop_grace_period %s is not longer than --drain-timeout %s"
                            % (where, grace, drain))
    gateway = services.get("gateway")
    if not isinstance(gateway, dict):
        return problems + ["compose: no gateway service"]
    for other in gateway.get("depends_on") or {}:
        if other not in services:
            problems.append("compose: gateway depends on %s, which is no service" % other)
    config = None
    for volume in gateway.get("volumes", []):
        source = volume.split(":")[0]
        if not os.path.exists(os.path.join(compose_dir, source)) and not source.endswith("certs"):
            problems.append("compose: gateway mounts %s, which does not exist" % source)
        if source.endswith("nginx.conf"):
            config = os.path.join(compose_dir, source)
    if config is None:
        return problems + ["compose: the gateway mounts no nginx.conf"]
    if not os.path.exists(config):
        return problems
    servers, listens = nginx_upstreams(config)
    if not servers:
        problems.append("compose: %s has no upstream servers" % os.path.relpath(config, SOURCE_DIR))
    for host, port in servers:
        if host not in replicas:
            problems.append("compose: nginx.conf's upstream %s:%d is not a replica of compose.yaml"
                            % (host, port))
        elif port not in replica_ports[host]:
            problems.append("compose: nginx.conf's upstream %s:%d, but %s listens on %s"
                            % (host, port, host, sorted(replica_ports[host])))
    published = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in gateway.get("ports", [])}
    for port in sorted(listens - published):
        problems.append("compose: nginx listens on %d, which the gateway does not publish" % port)
    return problems


def by_kind(docs, kind):
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]
    return found[0] if found else None


def check_kubernetes(docs, defaults, dockerfile):
    problems = []
    deployment = by_kind(docs, "Deployment")
    if deployment is None:
        return ["k8s: no Deployment"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    if deployment["spec"]["selector"].get("matchLabels", {}).items() - labels.items():
        problems.append("k8s: the Deployment's selector does not match its pod labels")
    spec = pod["spec"]
    container = spec["containers"][0]
    values = effective_flags(container.get("args"), defaults, "k8s: args", problems)
    grpc_port, http_port = port_of(values["listen"]), port_of(values["http_listen"])
    ports = {p["containerPort"]: p.get("name") for p in container.get("ports", [])}
    wanted = {port_of(values[f]) for f in PORT_FLAGS} - {None}
    if set(ports) != wanted:
        problems.append("k8s: containerPorts %s are not the ports the server listens on %s"
                        % (sorted(ports), sorted(wanted)))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = (container.get(probe) or {}).get("grpc")
        if grpc is None:
            problems.append("k8s: no %s on grpc.health.v1 (grpc: port:)" % probe)
        elif grpc.get("port") != grpc_port:
            problems.append("k8s: %s grpc port %s is not the gRPC port %d"
                            % (probe, grpc.get("port"), grpc_port))
    limits = container.get("resources", {}).get("limits", {})
    if str(limits.get("nvidia.com/gpu")) != "1":
        problems.append("k8s: resources.limits nvidia.com/gpu is %s, want 1 (one replica per GPU)"
                        % limits.get("nvidia.com/gpu"))
    model = values["model"]
    volumes = {v["name"] for v in spec.get("volumes", [])}
    mounts = [m for m in container.get("volumeMounts", [])
              if (model + "/").startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        problems.append("k8s: --model=%s is on no volumeMount" % model)
    elif mounts[0]["name"] not in volumes:
        problems.append("k8s: volumeMount %s names no volume" % mounts[0]["name"])
    pre_stop = container.get("lifecycle", {}).get("preStop")
    pause = 0
    if pre_stop is None:
        problems.append("k8s: no preStop (endpoints should drop the pod before the drain)")
    else:
        command = pre_stop.get("exec", {}).get("command", [])
        pause = float(command[1]) if command[:1] == ["sleep"] and len(command) == 2 else \
            float(pre_stop.get("sleep", {}).get("seconds", 0))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    drain = seconds(values["drain_timeout"])
    if grace <= pause + drain:
        problems.append("k8s: terminationGracePeriodSeconds %s is not longer than preStop %g s + "
                        "--drain-timeout %g s" % (grace, pause, drain))
    user = spec.get("securityContext", {}).get("runAsUser")
    if dockerfile["user"] and str(user) != dockerfile["user"].split(":")[0]:
        problems.append("k8s: runAsUser %s is not the image's USER %s" % (user, dockerfile["user"]))

    service = by_kind(docs, "Service")
    if service is None:
        problems.append("k8s: no Service")
    else:
        if service["spec"].get("selector", {}).items() - labels.items():
            problems.append("k8s: the Service's selector does not match the pod labels")
        names = {name: port for port, name in ports.items()}
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if (names.get(target) if isinstance(target, str) else target) not in ports:
                problems.append("k8s: Service port %s targets %s, which is no containerPort"
                                % (port.get("name"), target))

    pool = by_kind(docs, "InferencePool")
    if pool is None:
        return problems + ["k8s: no InferencePool"]
    if pool.get("apiVersion") != "inference.networking.k8s.io/v1":
        problems.append("k8s: InferencePool apiVersion %s, written against "
                        "inference.networking.k8s.io/v1" % pool.get("apiVersion"))
    pool_spec = pool["spec"]
    if pool_spec.get("selector", {}).get("matchLabels", {}).items() - labels.items():
        problems.append("k8s: the InferencePool's selector does not match the pod labels")
    targets = [p.get("number") for p in pool_spec.get("targetPorts", [])]
    # The endpoint picker scrapes /metrics on the first target port: the HTTP face's.
    if targets[:1] != [http_port]:
        problems.append("k8s: InferencePool targetPorts[0] %s is not the HTTP face's port %s "
                        "(requests and /metrics)" % (targets[:1], http_port))
    if values.get("metrics_vllm_aliases") != "true":
        problems.append("k8s: without --metrics-vllm-aliases the endpoint picker finds none of "
                        "its default vllm: metrics")
    ref = pool_spec.get("endpointPickerRef") or {}
    if not ref.get("name") or not (ref.get("port") or {}).get("number"):
        problems.append("k8s: endpointPickerRef needs a name and a port number")
    return problems


# ---- the tests ----

class DeployYamlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.defaults = server_defaults(ARGS.server)
        cls.dockerfile = dockerfile_facts(os.path.join(DOCKER_DIR, "Dockerfile"))
        cls.dockerfile_cuda = dockerfile_facts(os.path.join(DOCKER_DIR, "Dockerfile.cuda"))
        (cls.compose,) = load_yaml(os.path.join(DOCKER_DIR, "compose.yaml"))
        k8s_dir = os.path.join(DOCKER_DIR, "k8s")
        cls.k8s = [d for name in sorted(os.listdir(k8s_dir)) if name.endswith(".yaml")
                   for d in load_yaml(os.path.join(k8s_dir, name))]

    def compose_problems(self, doc=None, dockerfile=None):
        return check_compose(self.compose if doc is None else doc, self.defaults,
                             dockerfile or self.dockerfile, DOCKER_DIR)

    def k8s_problems(self, docs=None):
        return check_kubernetes(self.k8s if docs is None else docs, self.defaults,
                                self.dockerfile_cuda)

    def test_the_files_match_the_server(self):
        self.assertEqual(check_dockerfile(self.dockerfile, self.defaults, "Dockerfile"), [])
        self.assertEqual(check_dockerfile(self.dockerfile_cuda, self.defaults, "Dockerfile.cuda"),
                         [])
        self.assertEqual(self.compose_problems(), [])
        self.assertEqual(self.k8s_problems(), [])
        kinds = sorted(d["kind"] for d in self.k8s)
        self.assertEqual(kinds, ["Deployment", "HTTPRoute", "InferencePool",
                                 "PersistentVolumeClaim", "Service"])

    def test_gateway_config_is_checked_when_present(self):
        config = os.path.join(DOCKER_DIR, "gateway", "nginx.conf")
        if not os.path.exists(config):
            self.skipTest("docker/gateway/nginx.conf is not there yet")
        servers, listens = nginx_upstreams(config)
        self.assertTrue(servers)
        self.assertTrue(listens)

    def mutated_compose(self, change):
        doc = copy.deepcopy(self.compose)
        change(doc["services"])
        return self.compose_problems(doc)

    def mutated_k8s(self, kind, change):
        docs = copy.deepcopy(self.k8s)
        change(by_kind(docs, kind))
        return self.k8s_problems(docs)

    def assertProblem(self, problems, message):
        self.assertTrue(any(message in p for p in problems),
                        "%r not among the problems %r" % (message, problems))

    def test_compose_mistakes_are_caught(self):
        self.assertProblem(
            self.mutated_compose(lambda s: s["streamgen-1"].update(command=["--no-such-flag=1"])),
            "compose: streamgen-1: unknown flag --no-such-flag (not in streamgen-server --help)")
        self.assertProblem(
            self.mutated_compose(lambda s: s["streamgen-2"].update(command=["serve"])),
            "compose: streamgen-2: 'serve' is not a --flag")
        self.assertProblem(
            self.mutated_compose(lambda s: s["streamgen-1"].update(stop_grace_period="20s")),
            "compose: streamgen-1: stop_grace_period 20s is not longer than --drain-timeout")
        self.assertProblem(
            self.mutated_compose(
                lambda s: s["streamgen-1"].update(command=["--drain-timeout=1m"])),
            "stop_grace_period 40s is not longer than --drain-timeout 1m")
        moved = self.mutated_compose(
            lambda s: s["streamgen-2"].update(command=["--http-listen=0.0.0.0:8080"]))
        self.assertProblem(moved, "compose: streamgen-2: the server listens on 8080, which is not "
                                  "in expose")
        self.assertProblem(moved, "which the Dockerfile does not EXPOSE")
        self.assertProblem(moved, "compose: nginx.conf's upstream streamgen-2:8000, but "
                                  "streamgen-2 listens on [8080, 9090, 50051]")
        self.assertProblem(
            self.mutated_compose(lambda s: s.pop("streamgen-2")),
            "compose: 1 streamgen replicas, want at least two")
        self.assertProblem(
            self.mutated_compose(lambda s: s["gateway"].update(ports=[])),
            "compose: nginx listens on 8443, which the gateway does not publish")

    def test_dockerfile_mistakes_are_caught(self):
        wrong = dict(self.dockerfile, exposed={50051, 8000}, health_port=50052, user=None)
        problems = check_dockerfile(wrong, self.defaults, "Dockerfile")
        self.assertProblem(problems, "Dockerfile: EXPOSE [8000, 50051] is not the server's "
                                     "default ports [8000, 9090, 50051]")
        self.assertProblem(problems, "Dockerfile: HEALTHCHECK asks port 50052")
        self.assertProblem(problems, "Dockerfile: runs as root")

    def test_kubernetes_mistakes_are_caught(self):
        def container(deployment):
            return deployment["spec"]["template"]["spec"]["containers"][0]

        self.assertProblem(
            self.mutated_k8s("Deployment", lambda d: container(d)["args"].append("--gpus=1")),
            "k8s: args: unknown flag --gpus")
        self.assertProblem(
            self.mutated_k8s("Deployment",
                             lambda d: container(d)["readinessProbe"]["grpc"].update(port=50052)),
            "k8s: readinessProbe grpc port 50052 is not the gRPC port 50051")
        self.assertProblem(
            self.mutated_k8s("Deployment", lambda d: container(d).pop("startupProbe")),
            "k8s: no startupProbe on grpc.health.v1")
        self.assertProblem(
            self.mutated_k8s("Deployment",
                             lambda d: d["spec"]["template"]["spec"].update(
                                 terminationGracePeriodSeconds=30)),
            "k8s: terminationGracePeriodSeconds 30 is not longer than preStop 5 s + "
            "--drain-timeout 30 s")
        self.assertProblem(
            self.mutated_k8s("Deployment",
                             lambda d: container(d)["args"].append("--drain-timeout=1m")),
            "k8s: terminationGracePeriodSeconds 45 is not longer than preStop 5 s + "
            "--drain-timeout 60 s")
        self.assertProblem(
            self.mutated_k8s("Deployment",
                             lambda d: container(d)["resources"]["limits"].pop("nvidia.com/gpu")),
            "k8s: resources.limits nvidia.com/gpu is None, want 1")
        self.assertProblem(
            self.mutated_k8s("Deployment",
                             lambda d: container(d)["args"].append("--listen=0.0.0.0:6000")),
            "k8s: containerPorts [8000, 9090, 50051] are not the ports the server listens on "
            "[6000, 8000, 9090]")
        self.assertProblem(
            self.mutated_k8s("Deployment",
                             lambda d: container(d)["args"].append("--model=/data/m")),
            "k8s: --model=/data/m is on no volumeMount")
        self.assertProblem(
            self.mutated_k8s("Deployment",
                             lambda d: container(d)["args"].remove("--metrics-vllm-aliases")),
            "k8s: without --metrics-vllm-aliases")
        self.assertProblem(
            self.mutated_k8s("InferencePool",
                             lambda p: p["spec"].update(targetPorts=[{"number": 50051}])),
            "k8s: InferencePool targetPorts[0] [50051] is not the HTTP face's port 8000")
        self.assertProblem(
            self.mutated_k8s("InferencePool",
                             lambda p: p.update(
                                 apiVersion="inference.networking.x-k8s.io/v1alpha2")),
            "k8s: InferencePool apiVersion inference.networking.x-k8s.io/v1alpha2")
        self.assertProblem(
            self.mutated_k8s("InferencePool",
                             lambda p: p["spec"]["selector"]["matchLabels"].update(app="other")),
            "k8s: the InferencePool's selector does not match the pod labels")
        self.assertProblem(
            self.mutated_k8s("Service",
                             lambda s: s["spec"]["ports"][0].update(targetPort="grpc-web")),
            "k8s: Service port grpc targets grpc-web, which is no containerPort")

    def test_unparsable_yaml_names_the_file(self):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                            "deploy_yaml_test_%d.yaml" % os.getpid())
        with open(path, "w") as f:
            f.write("services:\n  a: [1, 2\n")
        try:
            with self.assertRaises(AssertionError) as raised:
                load_yaml(path)
            self.assertIn("deploy_yaml_test_%d.yaml does not parse" % os.getpid(),
                          str(raised.exception))
        finally:
            os.remove(path)

    def test_durations(self):
        self.assertEqual([seconds(d) for d in ("30s", "1m30s", "1h", "500ms", "40s")],
                         [30, 90, 3600, 0.5, 40])
        with self.assertRaises(ValueError):
            seconds("30 seconds")


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="the built streamgen-server")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
