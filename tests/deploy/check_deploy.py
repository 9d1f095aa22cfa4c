#!/usr/bin/python3
"""Checks examples/deploy against its pipeline file, so the cluster examples cannot drift
from it unnoticed:

- every YAML file parses (all documents);
- the ConfigMap's pipeline file is byte-for-byte examples/deploy/pipeline.yaml (the nodes
  compare a hash of the file's bytes at the handshake);
- every node of the file has exactly one Deployment whose STAGECRAFT_NODE names it, which
  runs `stagecraft worker` on the ConfigMap's file as mounted, binds its endpoint's port
  (STAGECRAFT_LISTEN), mounts the model folder, and has a GPU exactly when one of its
  stages is on cuda; the head has its job and HTTP ports off loopback, /readyz as its
  readiness probe and a Service for clients;
- every endpoint tcp://HOST:PORT is a Service named HOST with port PORT that reaches that
  node's pod, published before the pod is ready;
- the other nodes' preStop sleep outlasts the head's drain (all deleted at once);
- the Slurm script passes `bash -n`, starts `stagecraft worker` once per node of the file
  with the GPU in the het component of the cuda node, and, run with a stand-in `srun` and
  `scontrol`, starts every step from one file naming the hosts the steps got, binding
  their ports, stops the head before the others on SIGTERM, and stops the rest (head
  first) and fails when a step ends on its own;
- `stagecraft validate` accepts the file (on a copy whose model is the repository's
  models/tiny-shapes, as /models/... exists only in the containers).

    check_deploy.py            check examples/deploy; exit 1 naming every problem
    check_deploy.py --serve    run the Slurm script's workers for real on this host (srun
                               stood in for, every stage on the CPU): they bind tcp://*:PORT,
                               serve a job with the one-process PNG bytes, and drain a job
                               in flight on SIGTERM
    check_deploy.py --broken   break copies of it one way at a time, and fail unless the
                               check reports each breakage (so the check itself can fail)

STAGECRAFT_BIN names the binary (ctest sets it); STAGECRAFT_SOURCE_DIR the source tree.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from free_port import free_port  # noqa: E402  (one port never handed out twice)

SOURCE = os.path.abspath(os.environ.get("STAGECRAFT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("STAGECRAFT_BIN", os.path.join(SOURCE, "build", "release", "cli", "stagecraft"))
DEPLOY = os.path.join(SOURCE, "examples", "deploy")
MODEL = os.path.join(SOURCE, "models", "tiny-shapes")
SBATCH = os.path.join("slurm", "stagecraft.sbatch")
ENDPOINT = re.compile(r"^tcp://([A-Za-z0-9.-]+):(\d+)$")


def load_all(path: str) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files(deploy: str) -> list[str]:
    out = []
    for root, _, files in os.walk(deploy):
        out += [os.path.join(root, f) for f in sorted(files) if f.endswith((".yaml", ".yml"))]
    return sorted(out)


class Checker:
    """Collects problems as sentences naming the file and what is wrong."""

    def __init__(self, deploy: str):
        self.deploy = deploy
        self.problems: list[str] = []

    def bad(self, what: str) -> None:
        self.problems.append(what)

    # ------------------------------------------------------------ the pipeline file
    def pipeline(self) -> dict | None:
        path = os.path.join(self.deploy, "pipeline.yaml")
        spec = yaml.safe_load(open(path))
        nodes = {}
        for name, n in (spec.get("nodes") or {}).items():
            m = ENDPOINT.match(str((n or {}).get("endpoint", "")))
            if not m:
                self.bad(f"pipeline.yaml: node '{name}' endpoint {n} is not tcp://HOST:PORT, which a Service "
                         "name or a Slurm host can stand in for")
                continue
            nodes[name] = (m.group(1), int(m.group(2)))
        stages = spec.get("stages") or []
        if not nodes or not stages:
            self.bad("pipeline.yaml: needs `nodes:` and `stages:`")
            return None
        cuda_nodes = {s.get("node") for s in stages if str(s.get("device", "cpu")).startswith("cuda")}
        if not str(spec.get("model", "")).startswith("/"):
            self.bad(f"pipeline.yaml: model '{spec.get('model')}' is relative: it would be resolved against "
                     "the file's folder (/etc/stagecraft in a pod); give the mounted path")
        return {"nodes": nodes, "head": stages[0].get("node"), "cuda": cuda_nodes, "model": str(spec.get("model"))}

    # ------------------------------------------------------------ Kubernetes
    def kubernetes(self, p: dict) -> None:
        docs = []
        for path in yaml_files(os.path.join(self.deploy, "kubernetes")):
            docs += [(os.path.relpath(path, self.deploy), d) for d in load_all(path)]
        # `kubectl apply -k` applies what kustomization.yaml lists: every other manifest.
        kdir = os.path.join(self.deploy, "kubernetes")
        kust = [d for f, d in docs if d.get("kind") == "Kustomization"]
        listed = set(kust[0].get("resources") or []) if kust else set()
        others = {os.path.relpath(f, kdir) for f in yaml_files(kdir)} - {"kustomization.yaml"}
        if listed != others:
            self.bad(f"kubernetes/kustomization.yaml: resources {sorted(listed)}; want every manifest {sorted(others)}")
        elif shutil.which("kubectl"):  # render it as kubectl would (offline); optional, as CI may lack kubectl
            r = subprocess.run(["kubectl", "kustomize", kdir], capture_output=True, text=True, timeout=60)
            rendered = list(yaml.safe_load_all(r.stdout)) if r.returncode == 0 else []
            images = {c["image"] for d in rendered if d and d.get("kind") == "Deployment"
                      for c in d["spec"]["template"]["spec"]["containers"]}
            if r.returncode != 0 or len(images) != 1 or "stagecraft" in images:
                self.bad(f"kubernetes: `kubectl kustomize` gives images {sorted(images)} (want one, set by "
                         f"kustomization.yaml): {r.stderr.strip()}")
        configmaps = {d["metadata"]["name"]: (f, d) for f, d in docs if d.get("kind") == "ConfigMap"}
        services = {d["metadata"]["name"]: (f, d) for f, d in docs if d.get("kind") == "Service"}
        deployments = [(f, d) for f, d in docs if d.get("kind") == "Deployment"]

        # The ConfigMap's file, byte for byte.
        with open(os.path.join(self.deploy, "pipeline.yaml"), "rb") as f:
            want = f.read()
        cm_files = {}  # (configmap, key) -> the text
        for name, (f, d) in configmaps.items():
            for key, text in (d.get("data") or {}).items():
                cm_files[(name, key)] = text
                if key.endswith((".yaml", ".yml")) and text.encode() != want:
                    self.bad(f"{f}: ConfigMap {name} key {key} differs from pipeline.yaml; every node must run "
                             "byte-for-byte the same file (regenerate it as its comment says)")
        if not cm_files:
            self.bad("kubernetes: no ConfigMap holds the pipeline file")

        by_node: dict[str, list] = {n: [] for n in p["nodes"]}
        for f, d in deployments:
            dname = d["metadata"]["name"]
            pod = d["spec"]["template"]
            containers = pod["spec"]["containers"]
            workers = [c for c in containers if any(e.get("name") == "STAGECRAFT_NODE" for e in c.get("env", []))]
            if len(workers) != 1:
                self.bad(f"{f}: Deployment {dname} has {len(workers)} containers setting STAGECRAFT_NODE; want one")
                continue
            c = workers[0]
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            node = env["STAGECRAFT_NODE"]
            if node not in by_node:
                self.bad(f"{f}: Deployment {dname} runs node '{node}', which pipeline.yaml does not have "
                         f"(nodes: {', '.join(p['nodes'])})")
                continue
            by_node[node].append((f, d, pod, c, env))

        for node, found in by_node.items():
            if len(found) != 1:
                self.bad(f"kubernetes: node '{node}' has {len(found)} Deployments with STAGECRAFT_NODE={node}; "
                         "want exactly one")
                continue
            self.deployment(p, node, *found[0], cm_files, services)

        for node, (host, port) in p["nodes"].items():
            if host not in services:
                self.bad(f"kubernetes: node '{node}' endpoint tcp://{host}:{port}: no Service named {host}")
                continue
            f, s = services[host]
            ports = [q for q in s["spec"].get("ports", []) if q.get("port") == port]
            if not ports:
                self.bad(f"{f}: Service {host} has no port {port}, which node '{node}' endpoint names "
                         f"(it has {[q.get('port') for q in s['spec'].get('ports', [])]})")
            if s["spec"].get("clusterIP") == "None":
                self.bad(f"{f}: Service {host} is headless: a replaced pod gets a new address, which ZeroMQ "
                         "would not look up again; keep a ClusterIP")
            # The nodes reach each other before the head is ready (it waits for them).
            if s["spec"].get("publishNotReadyAddresses") is not True:
                self.bad(f"{f}: Service {host} lacks publishNotReadyAddresses: true; the nodes must connect "
                         "before the head turns ready")
            sel = s["spec"].get("selector") or {}
            reached = [n for n, fd in by_node.items() if len(fd) == 1
                       and sel and all(fd[0][2]["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
            if reached != [node]:
                self.bad(f"{f}: Service {host} selects the pods of {reached or 'no node'}; want node '{node}' only")
            elif ports:
                c = by_node[node][0][3]
                target = ports[0].get("targetPort", port)
                cports = {q.get("name"): q["containerPort"] for q in c.get("ports", [])}
                tport = cports.get(target, target) if isinstance(target, str) else target
                if tport != port:
                    self.bad(f"{f}: Service {host} port {port} goes to container port {target} ({tport}), "
                             f"not {port}, the port node '{node}' binds")

        # When everything is deleted at once, the other nodes must outlive the head's drain:
        # a preStop sleep at least as long as the head's grace period, within their own.
        head = p["head"]
        if len(by_node.get(head, [])) == 1:
            head_grace = by_node[head][0][2]["spec"].get("terminationGracePeriodSeconds", 30)
            for node, found in by_node.items():
                if node == head or len(found) != 1:
                    continue
                f, d, pod, c, env = found[0]
                cmd = ((((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or [])
                wait = int(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" and cmd[1].isdigit() else 0
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                if wait < head_grace or grace <= wait:
                    self.bad(f"{f}: Deployment {d['metadata']['name']} (node '{node}') stops {wait} s after being "
                             f"told (preStop sleep, grace {grace} s) while the head may drain {head_grace} s: "
                             "deleted together, the head's jobs in flight here would fail with node_lost")

        # The head's clients: a Service on its job and HTTP ports, following readiness.
        if len(by_node.get(head, [])) == 1:
            pod = by_node[head][0][2]
            c = by_node[head][0][3]
            cports = {q.get("name"): q["containerPort"] for q in c.get("ports", [])}
            env = by_node[head][0][4]
            want_ports = {int(env.get("STAGECRAFT_BIND", ":0").rsplit(":", 1)[1]),
                          int(env.get("STAGECRAFT_HTTP", ":0").rsplit(":", 1)[1])}
            ok = False
            for name, (f, s) in services.items():
                sel = s["spec"].get("selector") or {}
                if not sel or not all(pod["metadata"].get("labels", {}).get(k) == v for k, v in sel.items()):
                    continue
                targets = {cports.get(q.get("targetPort"), q.get("targetPort", q.get("port")))
                           for q in s["spec"].get("ports", [])}
                if want_ports <= targets and not s["spec"].get("publishNotReadyAddresses"):
                    ok = True
            if not ok:
                self.bad(f"kubernetes: no Service reaches the head '{head}' on its job and HTTP ports "
                         f"{sorted(want_ports)} following readiness")

    def deployment(self, p, node, f, d, pod, c, env, cm_files, services) -> None:
        dname = d["metadata"]["name"]
        where = f"{f}: Deployment {dname} (node '{node}')"
        host, port = p["nodes"][node]
        if d["spec"].get("replicas", 1) != 1:
            self.bad(f"{where}: replicas {d['spec'].get('replicas')}; a node is one process")
        if (d["spec"].get("strategy") or {}).get("type") != "Recreate":
            self.bad(f"{where}: strategy is not Recreate; a rolling update runs two pods of one node")
        # command: stagecraft worker FILE, FILE being the ConfigMap's pipeline as mounted.
        cmd = list(c.get("command") or []) + list(c.get("args") or [])
        if len(cmd) < 3 or os.path.basename(cmd[0]) != "stagecraft" or cmd[1] != "worker":
            self.bad(f"{where}: runs {cmd}, not `stagecraft worker FILE`")
            return
        if "--node" in cmd:
            self.bad(f"{where}: passes --node as well as STAGECRAFT_NODE")
        mounted = {}
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            if "configMap" in v:
                cm = v["configMap"]["name"]
                items = v["configMap"].get("items")
                keys = {i["path"]: i["key"] for i in items} if items else {k: k for (n, k) in cm_files if n == cm}
                for path, key in keys.items():
                    mounted[os.path.join(m["mountPath"], path)] = (cm, key)
        if mounted.get(cmd[2]) not in cm_files:
            self.bad(f"{where}: runs `stagecraft worker {cmd[2]}`, which is not the ConfigMap's pipeline file "
                     f"as mounted (mounted: {sorted(mounted) or 'none'})")
        listen = env.get("STAGECRAFT_LISTEN")
        if listen != f"tcp://*:{port}":
            self.bad(f"{where}: STAGECRAFT_LISTEN is {listen!r}; want 'tcp://*:{port}', the port of its "
                     f"endpoint tcp://{host}:{port} on every interface (the endpoint's name is a Service)")
        if port not in [q["containerPort"] for q in c.get("ports", [])]:
            self.bad(f"{where}: no containerPort {port}")
        if not any(p["model"] == m["mountPath"] or p["model"].startswith(m["mountPath"].rstrip("/") + "/")
                   for m in c.get("volumeMounts", [])):
            self.bad(f"{where}: nothing is mounted at the model folder {p['model']}")
        gpus = int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
        if node in p["cuda"] and gpus < 1:
            self.bad(f"{where}: a stage of node '{node}' is on cuda, but the container has no nvidia.com/gpu "
                     "limit (no GPU)")
        if node not in p["cuda"] and gpus:
            self.bad(f"{where}: asks for a GPU that none of its stages uses")
        if pod["spec"].get("enableServiceLinks", True):
            self.bad(f"{where}: enableServiceLinks is on: the Service `stagecraft` would add STAGECRAFT_* "
                     "variables to the environment stagecraft reads")
        if node == p["head"]:
            for var, loopback in (("STAGECRAFT_BIND", "127.0.0.1"), ("STAGECRAFT_HTTP", "127.0.0.1")):
                if not env.get(var) or loopback in env[var] or "localhost" in env[var]:
                    self.bad(f"{where}: the head's {var} is {env.get(var)!r}; the default is loopback, "
                             "which a Service cannot reach")
            http_port = int((env.get("STAGECRAFT_HTTP") or ":0").rsplit(":", 1)[1])
            cports = {q.get("name"): q["containerPort"] for q in c.get("ports", [])}
            probe = (c.get("readinessProbe") or {}).get("httpGet") or {}
            pport = cports.get(probe.get("port"), probe.get("port"))
            if probe.get("path") != "/readyz" or pport != http_port:
                self.bad(f"{where}: the head's readiness probe is {probe or 'missing'}; want GET /readyz on "
                         f"its HTTP port {http_port}")
            if pod["spec"].get("terminationGracePeriodSeconds", 30) < 60:
                self.bad(f"{where}: the head gets under 60 s to drain before SIGKILL")
        elif env.get("STAGECRAFT_METRICS_HTTP"):
            # Another node's own /metrics, /healthz, /readyz: the kubelet and Prometheus reach
            # the pod's address, never its loopback.
            page = env["STAGECRAFT_METRICS_HTTP"]
            if "127.0.0.1" in page or "localhost" in page:
                self.bad(f"{where}: STAGECRAFT_METRICS_HTTP is {page!r}, loopback: its probes and scrapes "
                         "cannot reach it")
            http_port = int(page.rsplit(":", 1)[1])
            cports = {q.get("name"): q["containerPort"] for q in c.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = (c.get(kind) or {}).get("httpGet")
                if probe and cports.get(probe.get("port"), probe.get("port")) != http_port:
                    self.bad(f"{where}: its {kind} asks port {probe.get('port')!r}, not its HTTP port {http_port}")

    # ------------------------------------------------------------ Slurm
    def slurm_static(self, p: dict) -> None:
        path = os.path.join(self.deploy, SBATCH)
        r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        if r.returncode != 0:
            self.bad(f"{SBATCH}: bash -n fails: {r.stderr.strip()}")
        text = open(path).read()
        joined = re.sub(r"\\\n\s*", " ", text)
        steps = {}  # node -> het group
        for line in joined.splitlines():
            if not line.lstrip().startswith("srun "):
                continue
            m = re.search(r"STAGECRAFT_NODE=([^,\s\"]+)", line)
            if not m:
                self.bad(f"{SBATCH}: an srun step sets no STAGECRAFT_NODE: {line.strip()}")
                continue
            node = m.group(1)
            if not re.search(r"(stagecraft|\"\$STAGECRAFT\"|\$STAGECRAFT)\s+worker\s", line):
                self.bad(f"{SBATCH}: the step of node '{node}' does not run `stagecraft worker`")
            if node in steps:
                self.bad(f"{SBATCH}: node '{node}' is started twice")
            g = re.search(r"--het-group=(\d+)", line)
            steps[node] = int(g.group(1)) if g else 0
        if sorted(steps) != sorted(p["nodes"]):
            self.bad(f"{SBATCH}: the Slurm script starts nodes {sorted(steps)}, but pipeline.yaml has "
                     f"{sorted(p['nodes'])}")
        # The #SBATCH options of each het component, in order.
        comps = [""]
        for line in text.splitlines():
            if line.startswith("#SBATCH"):
                if line.split()[1:2] == ["hetjob"]:
                    comps.append("")
                else:
                    comps[-1] += line + "\n"
        for node, g in steps.items():
            gpu = g < len(comps) and "--gres=gpu" in comps[g]
            if node in p["cuda"] and not gpu:
                self.bad(f"{SBATCH}: node '{node}' has a stage on cuda, but its het component {g} asks for "
                         "no GPU (--gres=gpu:N)")
            if node not in p["cuda"] and gpu:
                self.bad(f"{SBATCH}: node '{node}' runs on het component {g}, which asks for a GPU it does not use")

    @contextlib.contextmanager
    def sbatch(self, p: dict, hosts: dict, **env_extra):
        """Runs the script as Slurm would, with a stand-in srun (STANDIN_SRUN) and scontrol (the
        host list as given): yields (process, the steps' events, the script's output)."""
        with tempfile.TemporaryDirectory(prefix="sc-sbatch-") as tmp:
            bindir = os.path.join(tmp, "bin")
            os.mkdir(bindir)
            log = os.path.join(tmp, "steps.jsonl")
            with open(os.path.join(bindir, "srun"), "w") as f:
                f.write(STANDIN_SRUN)
            with open(os.path.join(bindir, "scontrol"), "w") as f:
                f.write('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] || exit 2\necho "$3" | tr , "\\n"\n')
            for n in ("srun", "scontrol"):
                os.chmod(os.path.join(bindir, n), 0o755)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGECRAFT", "SLURM", "STANDIN_SRUN"))}
            env.update(PATH=bindir + os.pathsep + os.environ["PATH"], STANDIN_SRUN_LOG=log, STANDIN_SRUN_HEAD=p["head"],
                       SLURM_JOB_ID="4242", SLURM_SUBMIT_DIR=tmp, STAGECRAFT=BIN,
                       STAGECRAFT_TEMPLATE=os.path.join(self.deploy, "pipeline.yaml"), STAGECRAFT_MODEL=MODEL,
                       STAGECRAFT_RUN_DIR=os.path.join(tmp, "run"))
            for g, h in hosts.items():
                env[f"SLURM_JOB_NODELIST_HET_GROUP_{g}"] = h
            env.update(env_extra)
            # Output to a file, not a pipe: steps the script left running would hold a pipe open.
            out_path = os.path.join(tmp, "sbatch.out")
            with open(out_path, "w") as out:
                proc = subprocess.Popen(["bash", os.path.join(self.deploy, SBATCH)], env=env, cwd=tmp,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

            def events():
                try:
                    return [json.loads(line) for line in open(log)]
                except FileNotFoundError:
                    return []
            try:
                yield proc, events, lambda: open(out_path).read().strip()[-3000:]
            finally:
                try:  # the script and any step it left behind: the session this test started
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()

    def wait_for_steps(self, p, proc, events, output) -> bool:
        deadline = time.monotonic() + 30
        while len([e for e in events() if e["event"] == "start"]) < len(p["nodes"]):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.bad(f"{SBATCH}: run with a stand-in srun, it started "
                         f"{len([e for e in events() if e['event'] == 'start'])} steps of {len(p['nodes'])}"
                         f"{'' if proc.poll() is not None else ' in 30 s'}; its output: {output()}")
                return False
            time.sleep(0.05)
        return True

    def head_first(self, p, events, why) -> None:
        t = {(e["event"], e["env"].get("STAGECRAFT_NODE")): e["t"] for e in events()}
        head_exit = t.get(("exit", p["head"]))
        for node in p["nodes"]:
            if ("exit", node) not in t:
                self.bad(f"{SBATCH}: node '{node}' was not stopped {why}")
            elif node != p["head"] and ("term", node) in t and (head_exit is None or t[("term", node)] < head_exit):
                self.bad(f"{SBATCH}: node '{node}' was stopped before the head '{p['head']}' had drained ({why})")

    def slurm_run(self, p: dict) -> None:
        """The steps as Slurm would start them; SIGTERM to the batch shell stops the head first."""
        hosts = {g: f"host{g}x" for g in range(3)}
        with self.sbatch(p, hosts) as (proc, events, output):
            if self.wait_for_steps(p, proc, events, output):
                self.slurm_steps(p, proc, events, hosts, output)

    def slurm_lost(self, p: dict) -> None:
        """A worker that ends on its own: the script stops the rest (the head first) and fails."""
        lost = next(n for n in p["nodes"] if n != p["head"])
        with self.sbatch(p, {g: "localhost" for g in range(3)}, STANDIN_SRUN_EXIT=lost) as (proc, events, output):
            if not self.wait_for_steps(p, proc, events, output):
                return
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.bad(f"{SBATCH}: still running 30 s after the step of node '{lost}' ended")
                return
            if proc.returncode == 0:
                self.bad(f"{SBATCH}: the step of node '{lost}' ended on its own, yet the job exited 0")
            self.head_first(p, events, f"after the step of '{lost}' ended on its own")

    def slurm_steps(self, p, proc, events, hosts, output) -> None:
        starts = [e for e in events() if e["event"] == "start"]
        files = {e["argv"][-1] for e in starts}
        if len(files) != 1:
            self.bad(f"{SBATCH}: the steps were started from different files {sorted(files)}")
            return
        run_file = files.pop()
        with open(os.path.join(self.deploy, "pipeline.yaml")) as f:
            template = f.read()
        written = open(run_file).read() if os.path.isfile(run_file) else ""
        spec = yaml.safe_load(written) if written else {}
        for e in starts:
            node, g = e["env"].get("STAGECRAFT_NODE"), e["het_group"]
            if node not in p["nodes"]:
                self.bad(f"{SBATCH}: a step ran with STAGECRAFT_NODE={node!r}, not a node of pipeline.yaml")
                continue
            if e["argv"][-3:-1] != [BIN, "worker"]:
                self.bad(f"{SBATCH}: the step of node '{node}' ran {e['argv']}, not `$STAGECRAFT worker FILE`")
            ep = ((spec.get("nodes") or {}).get(node) or {}).get("endpoint", "")
            port = p["nodes"][node][1]
            if ep != f"tcp://{hosts.get(g)}:{port}":
                self.bad(f"{SBATCH}: node '{node}' ran in het component {g} on {hosts.get(g)}, but its file "
                         f"gives it endpoint {ep!r}; want tcp://{hosts.get(g)}:{port}")
            if e["env"].get("STAGECRAFT_LISTEN") != f"tcp://*:{port}":
                self.bad(f"{SBATCH}: node '{node}' binds {e['env'].get('STAGECRAFT_LISTEN')!r}; want "
                         f"'tcp://*:{port}', its endpoint's port")
        # Nothing else of the file may change: the model line and the endpoint hosts only.
        def normal(text):
            text = re.sub(r"^model: .*$", "model: M", text, flags=re.M)
            return re.sub(r"(endpoint: tcp://)[^:]+:", r"\1H:", text)
        if normal(written) != normal(template):
            self.bad(f"{SBATCH}: the file it wrote ({run_file}) differs from pipeline.yaml in more than the "
                     "endpoint hosts and the model")
        if spec.get("model") != MODEL:
            self.bad(f"{SBATCH}: STAGECRAFT_MODEL={MODEL} did not become the written file's model "
                     f"({spec.get('model')!r})")
        # SIGTERM to the batch shell: the head first, and the others only once it has exited.
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.bad(f"{SBATCH}: still running 30 s after SIGTERM")
            return
        if proc.returncode != 0:
            self.bad(f"{SBATCH}: exited {proc.returncode} after SIGTERM: {output()}")
        self.head_first(p, events, "by SIGTERM to the batch shell")

    def slurm_serve(self, p: dict) -> None:
        """The script's workers for real, on this host (srun stand-in exec's each step with its
        --export variables, every host is localhost): they bind tcp://*:PORT as told, the head
        serves a job whose PNG is the one-process file's, and SIGTERM drains the head first."""
        with tempfile.TemporaryDirectory(prefix="sc-serve-") as tmp:
            # The file with every stage on the CPU and free ports: this host may have no GPU,
            # and another test may hold the shipped ports.
            text = open(os.path.join(self.deploy, "pipeline.yaml")).read()
            text = re.sub(r"device: cuda(:\d+)?", "device: cpu", text)
            for node in p["nodes"]:
                text = re.sub(rf"^(  {node}: {{endpoint: tcp://[^:]+:)\d+", rf"\g<1>{free_port()}", text, flags=re.M)
            template = os.path.join(tmp, "pipeline.yaml")
            with open(template, "w") as f:
                f.write(text)
            ports = {n: int(ENDPOINT.match(e["endpoint"]).group(2)) for n, e in yaml.safe_load(text)["nodes"].items()}
            jobs, http = free_port(), free_port()
            with self.sbatch(p, {g: "localhost" for g in range(3)}, STANDIN_SRUN_EXEC="1", STAGECRAFT_TEMPLATE=template,
                             STAGECRAFT_BIND=f"tcp://127.0.0.1:{jobs}", STAGECRAFT_HTTP=f"127.0.0.1:{http}",
                             STAGECRAFT_CPUS="1") as (proc, events, output):
                deadline = time.monotonic() + 60
                while "serving " not in output():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        self.bad(f"{SBATCH}: its workers did not come up serving on this host: {output()}")
                        return
                    time.sleep(0.1)
                for node, port in ports.items():
                    if f"node {node} on tcp://0.0.0.0:{port}" not in output():
                        self.bad(f"{SBATCH}: node '{node}' did not bind tcp://*:{port} (STAGECRAFT_LISTEN); "
                                 f"does `stagecraft worker` take --listen? {output()}")
                try:
                    ready = urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=10).status
                except OSError as e:
                    ready = e
                if ready != 200:
                    self.bad(f"{SBATCH}: the head's /readyz answered {ready}, not 200")
                got, want = os.path.join(tmp, "got.png"), os.path.join(tmp, "want.png")
                r = subprocess.run([BIN, "submit", "--server", f"tcp://127.0.0.1:{jobs}", "--prompt", "a red circle",
                                    "--seed", "5", "--out", got, "--quiet", "--timeout-s", "60"],
                                   capture_output=True, text=True, timeout=90)
                if r.returncode != 0:
                    self.bad(f"{SBATCH}: stagecraft submit to its head failed: {r.stderr.strip()} {output()}")
                    return
                one = subprocess.run([BIN, "run", os.path.join(SOURCE, "pipelines", "tiny-shapes.yaml"), "--prompt",
                                      "a red circle", "--seed", "5", "--out", want], capture_output=True, text=True,
                                     timeout=90)
                if one.returncode != 0 or open(got, "rb").read() != open(want, "rb").read():
                    self.bad(f"{SBATCH}: the job's PNG is not the bytes of the one-process pipeline "
                             f"(stagecraft run pipelines/tiny-shapes.yaml) {one.stderr.strip()[-300:]}")
                # Stop the job while a second job is in flight (it has stepped on dit): the head drains
                # it, which needs the other nodes up until it is done.
                late_log = os.path.join(tmp, "late.log")
                with open(late_log, "w") as f:
                    late = subprocess.Popen([BIN, "submit", "--server", f"tcp://127.0.0.1:{jobs}", "--prompt",
                                             "a blue square", "--n", "4", "--steps", "200", "--out",
                                             os.path.join(tmp, "late.png"), "--timeout-s", "60"],
                                            stdout=f, stderr=subprocess.STDOUT)
                deadline = time.monotonic() + 30
                while "progress:" not in open(late_log).read():
                    if late.poll() is not None or time.monotonic() > deadline:
                        self.bad(f"{SBATCH}: a second job never started stepping: {open(late_log).read()}")
                        late.kill()
                        late.wait()
                        return
                    time.sleep(0.02)
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                    late.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.bad(f"{SBATCH}: still running 60 s after SIGTERM: {output()}")
                    late.kill()
                    late.wait()
                    return
                out = output()
                if late.returncode != 0:
                    self.bad(f"{SBATCH}: the job in flight at SIGTERM failed: {open(late_log).read().strip()}")
                if proc.returncode != 0 or "drained: 2 jobs accepted, 2 results, 0 errors" not in out:
                    self.bad(f"{SBATCH}: after SIGTERM it exited {proc.returncode} without the head draining both "
                             f"jobs (the second was in flight): {out}")
                drained = out.find("drained:")
                for node in p["nodes"]:
                    stats = re.search(rf"^node {node}: \d+ packets in", out, flags=re.M)  # printed as it stops
                    if node != p["head"] and not (stats and 0 <= drained < stats.start()):
                        self.bad(f"{SBATCH}: node '{node}' stopped before the head drained: {out}")

    # ------------------------------------------------------------ stagecraft validate
    def validate(self) -> None:
        with tempfile.TemporaryDirectory(prefix="sc-deploy-") as tmp:
            text = open(os.path.join(self.deploy, "pipeline.yaml")).read()
            copy, n = re.subn(r"^model: .*$", f"model: {MODEL}", text, flags=re.M)
            if n != 1:
                self.bad("pipeline.yaml: no single `model:` line to point at the repository's model")
                return
            path = os.path.join(tmp, "pipeline.yaml")
            with open(path, "w") as f:
                f.write(copy)
            r = subprocess.run([BIN, "validate", path], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                self.bad(f"pipeline.yaml: stagecraft validate refuses it: {r.stderr.strip()}")

    def run(self) -> list[str]:
        for path in yaml_files(self.deploy):
            try:
                load_all(path)
            except yaml.YAMLError as e:
                self.bad(f"{os.path.relpath(path, self.deploy)}: does not parse: {e}")
        if self.problems:
            return self.problems
        p = self.pipeline()
        if p is None:
            return self.problems
        self.validate()
        self.kubernetes(p)
        self.slurm_static(p)
        self.slurm_run(p)
        self.slurm_lost(p)
        return self.problems


# The stand-in srun (no Slurm on CI machines; the real srun runs the same script on a
# cluster): records its step (het group, the --export variables, the command),
# then waits like a worker. On SIGTERM it records that; the head's "drains" for 0.3 s.
STANDIN_SRUN = r'''#!/usr/bin/python3
import json, os, signal, sys, time
args = sys.argv[1:]
opts, i = {}, 0
while i < len(args) and args[i].startswith("--"):
    k, _, v = args[i][2:].partition("=")
    opts[k] = v
    i += 1
env = {}
for kv in opts.get("export", "ALL").split(",")[1:]:
    k, _, v = kv.partition("=")
    env[k] = v
log = os.environ["STANDIN_SRUN_LOG"]
def note(event):
    with open(log, "a") as f:
        f.write(json.dumps({"event": event, "t": time.monotonic(), "het_group": int(opts.get("het-group", 0)),
                            "env": env, "argv": args[i:]}) + "\n")
def term(*_):
    note("term")
    if env.get("STAGECRAFT_NODE") == os.environ["STANDIN_SRUN_HEAD"]:
        time.sleep(0.3)
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
note("start")
if os.environ.get("STANDIN_SRUN_EXEC"):  # run the step here, as srun would on its node
    os.execvpe(args[i], args[i:], dict(os.environ, **env))
if env.get("STAGECRAFT_NODE") == os.environ.get("STANDIN_SRUN_EXIT"):
    time.sleep(0.3)
    note("exit")
    sys.exit(3)
while True:
    time.sleep(1)
'''

# Breakages --broken applies to a copy, one at a time: (what, [(file, old, new)], what the
# report must say). `old` must occur in the file, so a stale entry fails instead of passing.
BREAKAGES = [
    ("a node renamed in the pipeline file (and its ConfigMap copy)",
     [("pipeline.yaml", "  dit: {endpoint", "  dyt: {endpoint"), ("pipeline.yaml", "node: dit", "node: dyt"),
      ("kubernetes/configmap.yaml", "  dit: {endpoint", "  dyt: {endpoint"),
      ("kubernetes/configmap.yaml", "node: dit", "node: dyt")],
     "node 'dyt' has 0 Deployments"),
    ("the ConfigMap's copy edited",
     [("kubernetes/configmap.yaml", "max_pending_jobs: 256", "max_pending_jobs: 255")],
     "differs from pipeline.yaml"),
    ("a Deployment naming another node",
     [("kubernetes/deployments.yaml", "{name: STAGECRAFT_NODE, value: vae}", "{name: STAGECRAFT_NODE, value: vea}")],
     "node 'vae' has 0 Deployments"),
    ("a Deployment running serve",
     [("kubernetes/deployments.yaml", "command: [stagecraft, worker, /etc/stagecraft/pipeline.yaml]\n"
                                      "          env:\n            - {name: STAGECRAFT_NODE, value: dit}",
       "command: [stagecraft, serve, /etc/stagecraft/pipeline.yaml]\n"
       "          env:\n            - {name: STAGECRAFT_NODE, value: dit}")],
     "not `stagecraft worker FILE`"),
    ("a Deployment running a file that is not the ConfigMap's",
     [("kubernetes/deployments.yaml", "command: [stagecraft, worker, /etc/stagecraft/pipeline.yaml]\n"
                                      "          env:\n            - {name: STAGECRAFT_NODE, value: vae}",
       "command: [stagecraft, worker, /etc/stagecraft/pipeline.yml]\n"
       "          env:\n            - {name: STAGECRAFT_NODE, value: vae}")],
     "not the ConfigMap's pipeline file"),
    ("a worker binding another port",
     [("kubernetes/deployments.yaml", '"tcp://*:7103"', '"tcp://*:7104"')], "STAGECRAFT_LISTEN"),
    ("a Service on another port",
     [("kubernetes/services.yaml", "port: 7102, targetPort", "port: 7112, targetPort")],
     "Service stagecraft-dit has no port 7102"),
    ("a node Service gated on readiness",
     [("kubernetes/services.yaml", "publishNotReadyAddresses: true", "publishNotReadyAddresses: false")],
     "publishNotReadyAddresses"),
    ("a non-head node not outliving the head's drain",
     [("kubernetes/deployments.yaml", 'exec: {command: [sleep, "120"]}', 'exec: {command: [sleep, "20"]}')],
     "would fail with node_lost"),
    ("the head probed on /healthz for readiness",
     [("kubernetes/deployments.yaml", "path: /readyz", "path: /healthz")], "/readyz"),
    ("a worker's HTTP side on loopback",
     [("kubernetes/deployments.yaml", '{name: STAGECRAFT_METRICS_HTTP, value: "0.0.0.0:9100"}',
       '{name: STAGECRAFT_METRICS_HTTP, value: "127.0.0.1:9100"}')],
     "loopback: its probes"),
    ("the denoiser's pod without a GPU",
     [("kubernetes/deployments.yaml", "limits: {memory: 4Gi, nvidia.com/gpu: 1}", "limits: {memory: 4Gi}")],
     "no nvidia.com/gpu"),
    ("a manifest left out of kustomization.yaml",
     [("kubernetes/kustomization.yaml", "  - services.yaml\n", "")], "want every manifest"),
    ("a YAML file that does not parse",
     [("kubernetes/services.yaml", "- {name: http, port: 8080, targetPort: http, protocol: TCP}",
       "- {name: http, port: 8080, targetPort: http, protocol: TCP")], "does not parse"),
    ("the Slurm script naming another node",
     [(SBATCH, "STAGECRAFT_NODE=vae,", "STAGECRAFT_NODE=vea,")], "starts nodes"),
    ("the Slurm script with a syntax error",
     [(SBATCH, "wait -n\n", "wait -n (\n")], "bash -n fails"),
    ("the Slurm script's GPU on the wrong component",
     [(SBATCH, "--mem=8G --gres=gpu:1", "--mem=8G")], "asks for no GPU"),
    ("the Slurm script stopping everyone at once",
     [(SBATCH, 'kill -TERM "$enc_pid" 2>/dev/null || true\n    wait "$enc_pid" || rc=$?\n',
       'kill -TERM "$enc_pid" $dit_pid $vae_pid 2>/dev/null || true\n    wait "$enc_pid" || rc=$?\n')],
     "before the head"),
    ("the Slurm script keeping the template's hosts",
     [(SBATCH, 'sub(/tcp:\/\/[^:\/ }]+:/, "tcp://" host[name] ":")', 'sub(/tcp:\/\/[^:\/ }]+:/, "&")')],
     "gives it endpoint"),
    ("the Slurm script carrying on when a worker ends",
     [(SBATCH, "stop\nexit $((rc == 0 ? 1 : rc))", "exit 0")], "yet the job exited 0"),
    ("a stage device stagecraft does not know (file and ConfigMap)",
     [("pipeline.yaml", "device: cuda:0", "device: tpu:0"),
      ("kubernetes/configmap.yaml", "device: cuda:0", "device: tpu:0")], "stagecraft validate refuses"),
]

# Breakages only the real workers show (--broken runs the --serve check on these).
SERVE_BREAKAGES = [
    # ZeroMQ binds `*`, an IP address or an interface name, never a host name: without
    # STAGECRAFT_LISTEN a worker whose endpoint is a host name cannot start.
    ("the Slurm script not telling workers what to bind",
     [(SBATCH, 'STAGECRAFT_LISTEN="tcp://*:$enc_port",', ""), (SBATCH, 'STAGECRAFT_LISTEN="tcp://*:$dit_port",', ""),
      (SBATCH, 'STAGECRAFT_LISTEN="tcp://*:$vae_port",', "")], "did not come up serving"),
    ("the Slurm script's workers binding loopback only",
     [(SBATCH, 'STAGECRAFT_LISTEN="tcp://*:', 'STAGECRAFT_LISTEN="tcp://127.0.0.1:')], "did not bind tcp://*"),
    ("the Slurm script stopping the workers all at once",
     [(SBATCH, 'kill -TERM "$enc_pid" 2>/dev/null || true\n    wait "$enc_pid" || rc=$?\n',
       'kill -TERM "$enc_pid" $dit_pid $vae_pid 2>/dev/null || true\n    wait "$enc_pid" || rc=$?\n')],
     "stopped before the head drained"),
]


def serve_check(deploy: str) -> list[str]:
    c = Checker(deploy)
    p = c.pipeline()
    if p is not None:
        c.slurm_serve(p)
    return c.problems


def broken() -> int:
    failed = 0
    with tempfile.TemporaryDirectory(prefix="sc-broken-") as tmp:
        base = os.path.join(tmp, "clean")
        shutil.copytree(DEPLOY, base)
        clean = Checker(base).run()
        if clean:
            print("the unbroken copy already fails, so breakages prove nothing:\n  " + "\n  ".join(clean))
            return 1
        cases = [(b, Checker.run) for b in BREAKAGES] + [(b, None) for b in SERVE_BREAKAGES]
        for i, ((what, edits, expect), how) in enumerate(cases):
            copy = os.path.join(tmp, f"b{i}")
            shutil.copytree(DEPLOY, copy)
            for rel, old, new in edits:
                path = os.path.join(copy, rel)
                text = open(path).read()
                if old not in text:
                    print(f"FAIL {what}: {rel} no longer contains {old!r}; update this breakage")
                    failed += 1
                    break
                with open(path, "w") as f:
                    f.write(text.replace(old, new))
            else:
                found = Checker(copy).run() if how else serve_check(copy)
                if any(expect in pr for pr in found):
                    print(f"ok   {what}: reported")
                else:
                    print(f"FAIL {what}: no problem says {expect!r}; the check said: {found}")
                    failed += 1
    print(f"{len(cases) - failed} of {len(cases)} breakages reported")
    return 1 if failed else 0


def main() -> int:
    if not os.access(BIN, os.X_OK):
        print(f"no stagecraft binary at {BIN} (set STAGECRAFT_BIN)")
        return 1
    if sys.argv[1:] == ["--broken"]:
        return broken()
    if sys.argv[1:] == ["--serve"]:
        problems = serve_check(DEPLOY)
        for pr in problems:
            print("problem:", pr)
        print(f"examples/deploy, served on this host: {len(problems)} problems")
        return 1 if problems else 0
    if sys.argv[1:]:
        print(__doc__)
        return 2
    problems = Checker(DEPLOY).run()
    for pr in problems:
        print("problem:", pr)
    print(f"examples/deploy: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
