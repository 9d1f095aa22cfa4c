"""The default pipeline split over three processes (pipelines/tiny-shapes-disaggregated.yaml):
the same PNG bytes as the one-process file over ipc, over tcp and across two network
namespaces; `launch` serving jobs and stopping on SIGTERM; a worker killed mid-run
failing its jobs with node_lost while the rest keep serving, and serving again once
restarted; a node started from another pipeline file refused naming both; malformed
frames at a worker's socket refused and counted.

STAGECRAFT_BIN names the binary (ctest sets it); STAGECRAFT_SOURCE_DIR the source tree.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import zmq

SOURCE = os.environ.get("STAGECRAFT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("STAGECRAFT_BIN", os.path.join(SOURCE, "build", "release", "cli", "stagecraft"))
sys.path.insert(0, os.path.join(SOURCE, "clients", "python"))
from stagecraft_client import Client, JobError  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from free_port import free_port  # noqa: E402  (one port never handed out twice)

ONE_PROCESS = os.path.join(SOURCE, "pipelines", "tiny-shapes.yaml")
SPLIT = os.path.join(SOURCE, "pipelines", "tiny-shapes-disaggregated.yaml")
MODEL = os.path.join(SOURCE, "models", "tiny-shapes")
PROMPT = "a red circle"
SEEDS = [11, 12, 13, 14]


def split_file(folder: str, endpoints: dict, name: str = "split.yaml", extra: str = "") -> str:
    """The shipped split file with its nodes at `endpoints` and the model by absolute path."""
    with open(SPLIT) as f:
        text = f.read()
    text = re.sub(r"^model: .*$", f"model: {MODEL}", text, flags=re.M)
    for node, ep in endpoints.items():
        text = re.sub(rf"^  {node}: {{endpoint: [^}}]*}}", f"  {node}: {{endpoint: {ep}}}", text, flags=re.M)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text + extra)
    return path


class Worker:
    """`stagecraft worker FILE --node NAME`, its stderr collected on a thread."""

    def __init__(self, pipeline: str, node: str, *extra: str, netns: str = ""):
        cmd = [BIN, "worker", pipeline, "--node", node, "--heartbeat-ms", "100", "--node-timeout-ms", "1000", *extra]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.node = node
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        with self.cv:
            while not any(text in l for l in self.lines):
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(text in l for l in self.lines)):
                    return any(text in l for l in self.lines)
                self.cv.wait(min(left, 0.2))
            return True

    def output(self) -> str:
        with self.cv:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def run_cli(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


class SplitPipelineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sc-split-")
        # The reference: the one-process file, several jobs in flight.
        r = run_cli("run", ONE_PROCESS, "--prompt", PROMPT, "--seed", str(SEEDS[0]), "--n", str(len(SEEDS)),
                    "--out", os.path.join(cls.tmp, "one.png"), "--quiet")
        assert r.returncode == 0, r.stderr
        cls.reference = {}
        for i, seed in enumerate(SEEDS):
            with open(os.path.join(cls.tmp, f"one-{i}.png"), "rb") as f:
                cls.reference[seed] = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.workers: list[Worker] = []

    def tearDown(self):
        for w in self.workers:
            w.stop(signal.SIGKILL if w.proc.poll() is None else signal.SIGTERM, timeout=10)

    def folder(self) -> str:
        return tempfile.mkdtemp(dir=self.tmp)

    def start_nodes(self, pipeline: str, jobs_endpoint: str, netns: dict | None = None) -> dict:
        netns = netns or {}
        nodes = {}
        for node in ("dit", "vae", "enc"):
            extra = ("--bind", jobs_endpoint, "--http", "off") if node == "enc" else ()
            w = Worker(pipeline, node, *extra, netns=netns.get(node, ""))
            self.workers.append(w)
            nodes[node] = w
        self.assertTrue(nodes["enc"].wait_for("serving "), nodes["enc"].output())
        return nodes

    def assert_images_match(self, pngs: dict):
        for seed, data in pngs.items():
            self.assertEqual(data, self.reference[seed], f"seed {seed}: the split pipeline's PNG differs")

    def run_split(self, endpoints: dict) -> None:
        d = self.folder()
        pipeline = split_file(d, endpoints)
        out = os.path.join(d, "split.png")
        r = run_cli("run", pipeline, "--prompt", PROMPT, "--seed", str(SEEDS[0]), "--n", str(len(SEEDS)),
                    "--out", out, "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        pngs = {}
        for i, seed in enumerate(SEEDS):
            with open(os.path.join(d, f"split-{i}.png"), "rb") as f:
                pngs[seed] = f.read()
        self.assert_images_match(pngs)

    def test_run_over_ipc_writes_the_one_process_bytes(self):
        d = self.folder()
        self.run_split({n: f"ipc://{d}/{n}.sock" for n in ("enc", "dit", "vae")})

    def test_run_over_tcp_writes_the_one_process_bytes(self):
        self.run_split({n: f"tcp://127.0.0.1:{free_port()}" for n in ("enc", "dit", "vae")})

    def test_run_trace_holds_every_node_on_one_clock(self):
        d = self.folder()
        pipeline = split_file(d, {n: f"ipc://{d}/{n}.sock" for n in ("enc", "dit", "vae")})
        trace = os.path.join(d, "trace.json")
        r = run_cli("run", pipeline, "--prompt", PROMPT, "--n", "2", "--out", os.path.join(d, "t.png"),
                    "--trace", trace, "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        import json
        with open(trace) as f:
            events = json.load(f)["traceEvents"]
        names = {e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
        self.assertTrue({"node enc", "node dit", "node vae"} <= names, names)
        transfers = [e for e in events if e.get("cat") == "transfer"]
        self.assertTrue(transfers and all(e["args"]["bytes"] > 0 for e in transfers))
        # One clock: the text encoder's compute of a job ends before the denoiser's begins.
        text = min(e["ts"] for e in events if e.get("ph") == "X" and e.get("name") == "text")
        denoise = min(e["ts"] for e in events if e.get("ph") == "X" and e.get("name") == "denoise")
        self.assertLess(text, denoise)

    def test_launch_serves_jobs_and_stops_on_sigterm(self):
        d = self.folder()
        pipeline = split_file(d, {n: f"ipc://{d}/{n}.sock" for n in ("enc", "dit", "vae")})
        jobs = f"ipc://{d}/jobs.sock"
        launch = subprocess.Popen([BIN, "launch", pipeline, "--bind", jobs, "--http", "off"],
                                  stderr=subprocess.PIPE, text=True)
        try:
            with Client(jobs) as c:
                res = [c.submit(PROMPT, seed=s) for s in SEEDS]
                self.assert_images_match({s: j.result(120).images[0].data for s, j in zip(SEEDS, res)})
        finally:
            launch.send_signal(signal.SIGTERM)
            rc = launch.wait(60)
        self.assertEqual(rc, 0, launch.stderr.read())
        # No worker outlives it.
        out = subprocess.run(["pgrep", "-f", pipeline], capture_output=True, text=True).stdout.strip()
        self.assertEqual(out, "")

    def test_a_killed_worker_fails_its_jobs_with_node_lost_and_serves_again_once_restarted(self):
        d = self.folder()
        pipeline = split_file(d, {n: f"ipc://{d}/{n}.sock" for n in ("enc", "dit", "vae")})
        jobs = f"ipc://{d}/jobs.sock"
        nodes = self.start_nodes(pipeline, jobs)
        with Client(jobs) as c:
            # Long jobs (200 steps in batches of 8), so several are inside the denoiser.
            submitted = [c.submit(PROMPT, seed=100 + i, steps=200) for i in range(16)]
            end = time.monotonic() + 60
            while c.status(submitted[0].id).get("step", 0) == 0:
                self.assertLess(time.monotonic(), end, "no progress from the denoiser")
                time.sleep(0.02)
            killed_at = time.monotonic()
            nodes["dit"].stop(signal.SIGKILL)
            outcomes = []
            for j in submitted:
                try:
                    j.result(30)
                    outcomes.append("ok")
                except JobError as e:
                    outcomes.append(e.code)
                    if e.code == "node_lost":
                        self.assertIn("'dit'", e.message)
            answered_in = time.monotonic() - killed_at
            self.assertIn("node_lost", outcomes)
            self.assertTrue(all(o in ("ok", "node_lost") for o in outcomes), outcomes)
            # node timeout 1 s (the heartbeat finds the silent node) plus slack for this busy machine.
            self.assertLess(answered_in, 10.0)
            # The rest of the pipeline is up, and a job submitted now is answered at once.
            self.assertIsNone(nodes["enc"].proc.poll())
            self.assertIsNone(nodes["vae"].proc.poll())
            with self.assertRaises(JobError) as lost:
                c.generate(PROMPT, seed=SEEDS[0], timeout=30)
            self.assertEqual(lost.exception.code, "node_lost")
            # Restarted, the worker rejoins and takes new work.
            restarted = Worker(pipeline, "dit")
            self.workers.append(restarted)
            self.assertTrue(restarted.wait_for("every node connected"), restarted.output())
            end = time.monotonic() + 30
            while True:
                try:
                    res = c.generate(PROMPT, seed=SEEDS[0], timeout=60)
                    break
                except JobError as e:  # the head may not have heard the new worker's hello yet
                    self.assertEqual(e.code, "node_lost")
                    self.assertLess(time.monotonic(), end, "the restarted worker never took work")
                    time.sleep(0.2)
            self.assert_images_match({SEEDS[0]: res.images[0].data})

    def test_a_stage_on_two_nodes_keeps_serving_when_one_of_them_is_killed(self):
        d = self.folder()
        with open(SPLIT) as f:
            text = f.read()
        text = re.sub(r"^model: .*$", f"model: {MODEL}", text, flags=re.M)
        text = re.sub(r"^  (enc|dit|vae): {endpoint: [^}]*}", lambda m: f"  {m.group(1)}: {{endpoint: ipc://{d}/{m.group(1)}.sock}}",
                      text, flags=re.M)
        text = text.replace(f"  dit: {{endpoint: ipc://{d}/dit.sock}}",
                            f"  dit: {{endpoint: ipc://{d}/dit.sock}}\n  dit2: {{endpoint: ipc://{d}/dit2.sock}}")
        text = text.replace("    node: dit\n", "    node: [dit, dit2]\n")
        pipeline = os.path.join(d, "replicated.yaml")
        with open(pipeline, "w") as f:
            f.write(text)
        jobs = f"ipc://{d}/jobs.sock"
        dit2 = Worker(pipeline, "dit2")
        self.workers.append(dit2)
        nodes = self.start_nodes(pipeline, jobs)
        with Client(jobs) as c:
            res = [c.submit(PROMPT, seed=s) for s in SEEDS]
            self.assert_images_match({s: j.result(120).images[0].data for s, j in zip(SEEDS, res)})
            nodes["dit"].stop(signal.SIGKILL)
            time.sleep(2.0)  # the head's heartbeats find it gone (node timeout 1 s)
            res = [c.submit(PROMPT, seed=s) for s in SEEDS]
            self.assert_images_match({s: j.result(120).images[0].data for s, j in zip(SEEDS, res)})
        self.assertEqual(dit2.stop(), 0)
        m = re.search(r"(\d+) entered its stages", dit2.output())
        self.assertGreaterEqual(int(m.group(1)), len(SEEDS), dit2.output())

    def test_a_node_started_from_another_file_is_refused_naming_both(self):
        d = self.folder()
        eps = {n: f"ipc://{d}/{n}.sock" for n in ("enc", "dit", "vae")}
        good = split_file(d, eps)
        other = split_file(d, eps, name="other.yaml", extra="# edited\n")
        dit = Worker(other, "dit")
        vae = Worker(good, "vae")
        enc = Worker(good, "enc", "--bind", f"ipc://{d}/jobs.sock", "--http", "off")
        self.workers += [dit, vae, enc]
        # Whichever of the two hears the refusal first stops, saying why.
        end = time.monotonic() + 60
        while enc.proc.poll() is None and dit.proc.poll() is None:
            self.assertLess(time.monotonic(), end, enc.output() + dit.output())
            time.sleep(0.05)
        first = enc if enc.proc.poll() is not None else dit
        self.assertEqual(first.proc.wait(), 1)
        self.assertTrue(first.wait_for("pipeline file mismatch"), first.output())
        m = re.search(r"node '(\w+)' was started from a file with hash (\w+), node '(\w+)' from one with hash (\w+)",
                      first.output())
        self.assertIsNotNone(m, first.output())
        self.assertIn("dit", (m.group(1), m.group(3)))  # the odd one out is named, with the other side
        self.assertNotEqual(m.group(2), m.group(4))
        self.assertIsNone(vae.proc.poll())

    def test_malformed_frames_at_a_worker_are_refused_and_counted_and_it_keeps_serving(self):
        d = self.folder()
        pipeline = split_file(d, {n: f"ipc://{d}/{n}.sock" for n in ("enc", "dit", "vae")})
        jobs = f"ipc://{d}/jobs.sock"
        nodes = self.start_nodes(pipeline, jobs)
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 5000)  # deliver before close: the connection is made in the background
        s.connect(f"ipc://{d}/dit.sock")
        s.send(b"\xc1 not msgpack")                                   # not a header
        s.send_multipart([b"\x82\xa4kind\xa6packet\xa7version\x01"])   # a packet before hello
        s.send(bytes(range(256)) * 64)                                # garbage
        s.close()
        ctx.term()
        with Client(jobs) as c:
            self.assert_images_match({SEEDS[1]: c.generate(PROMPT, seed=SEEDS[1], timeout=120).images[0].data})
        self.assertEqual(nodes["dit"].stop(), 0)
        m = re.search(r"(\d+) messages refused \((\d+) of them malformed", nodes["dit"].output())
        self.assertIsNotNone(m, nodes["dit"].output())
        self.assertEqual(int(m.group(1)), 3)  # all three
        self.assertEqual(int(m.group(2)), 2)  # the two that are not even a header

    def test_every_worker_shows_its_channels_and_stages_on_metrics(self):
        d = self.folder()
        pipeline = split_file(d, {n: f"ipc://{d}/{n}.sock" for n in ("enc", "dit", "vae")})
        jobs = f"ipc://{d}/jobs.sock"
        http = {n: f"127.0.0.1:{free_port()}" for n in ("enc", "dit", "vae")}
        head_http = f"127.0.0.1:{free_port()}"
        workers = {n: Worker(pipeline, n, "--metrics-http", http[n],
                             *(("--bind", jobs, "--http", head_http) if n == "enc" else ()))
                   for n in ("vae", "dit", "enc")}
        self.workers += list(workers.values())
        self.assertTrue(workers["enc"].wait_for("serving "), workers["enc"].output())
        for n in ("dit", "vae"):
            self.assertTrue(workers[n].wait_for("HTTP on"), workers[n].output())
        with Client(jobs) as c:
            res = [c.submit(PROMPT, seed=s) for s in SEEDS[:2]]
            self.assert_images_match({s: j.result(120).images[0].data for s, j in zip(SEEDS, res)})

        def get(node: str, path: str, method: str = "GET") -> tuple[int, str]:
            req = urllib.request.Request(f"http://{http[node]}{path}", method=method)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        def samples(node: str) -> dict:
            status, text = get(node, "/metrics")
            self.assertEqual(status, 200, text)
            return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                    if l and not l.startswith("#")}

        dit, vae, enc = samples("dit"), samples("vae"), samples("enc")
        # Each job's latents cross dit -> vae once; the image goes back to the head.
        sent = dit['stagecraft_channel_sent_packets_total{node="dit",peer="vae",channel="zmq"}']
        self.assertEqual(sent, 2, dit)
        self.assertGreater(dit['stagecraft_channel_sent_bytes_total{node="dit",peer="vae",channel="zmq"}'], 0)
        self.assertEqual(dit['stagecraft_channel_connected{node="dit",peer="vae",channel="zmq"}'], 1)
        self.assertEqual(vae['stagecraft_channel_received_packets_total{node="vae",channel="zmq"}'], 2, vae)
        self.assertEqual(vae['stagecraft_node_jobs_entered_total{node="vae"}'], 2)
        self.assertGreaterEqual(vae['stagecraft_stage_batches_total{stage="decode"}'], 1)
        self.assertNotIn('stagecraft_stage_batches_total{stage="denoise"}', vae)  # only its own stages
        self.assertEqual(enc['stagecraft_channel_sent_packets_total{node="enc",peer="dit",channel="zmq"}'], 2, enc)
        # The head's job service page: its figures and the head node's channels on one page.
        head_page = urllib.request.urlopen(f"http://{head_http}/metrics", timeout=10).read().decode()
        self.assertIn('stagecraft_jobs_total{outcome="completed"} 2', head_page)
        self.assertIn('stagecraft_channel_sent_packets_total{node="enc",peer="dit",channel="zmq"} 2', head_page)
        self.assertEqual(get("dit", "/readyz"), (200, "ready\n"))
        self.assertEqual(get("vae", "/healthz"), (200, "ok\n"))
        self.assertEqual(get("vae", "/metrics", method="POST")[0], 405)
        status, text = get("dit", "/v1/images/generations")
        self.assertEqual(status, 404)
        self.assertIn("jobs go to the head's job service", text)


def can_make_namespaces() -> str:
    """'' when network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "needs iproute2 (ip, tc)"
    r = subprocess.run(["ip", "netns", "add", "sc-probe"], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns add failed: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", "sc-probe"], capture_output=True)
    return ""


NETNS_WHY_NOT = can_make_namespaces()


@unittest.skipIf(NETNS_WHY_NOT, f"two hosts in network namespaces: {NETNS_WHY_NOT}")
class TwoHostsTest(SplitPipelineTest):
    """enc and vae on host A, dit on host B, joined by a veth pair limited to 1 Gbit/s."""

    A, B = "sc-host-a", "sc-host-b"
    ADDR_A, ADDR_B = "10.231.7.1", "10.231.7.2"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tearDownNamespaces()
        sh = lambda *c: subprocess.run(c, check=True, capture_output=True)  # noqa: E731
        sh("ip", "netns", "add", cls.A)
        sh("ip", "netns", "add", cls.B)
        sh("ip", "link", "add", "sc-veth-a", "type", "veth", "peer", "name", "sc-veth-b")
        sh("ip", "link", "set", "sc-veth-a", "netns", cls.A)
        sh("ip", "link", "set", "sc-veth-b", "netns", cls.B)
        for ns, dev, addr in ((cls.A, "sc-veth-a", cls.ADDR_A), (cls.B, "sc-veth-b", cls.ADDR_B)):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1gbit",
               "burst", "256kb", "latency", "100ms")

    @classmethod
    def tearDownNamespaces(cls):
        for ns in (cls.A, cls.B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.tearDownNamespaces()
        super().tearDownClass()

    def test_two_hosts_write_the_one_process_bytes(self):
        d = self.folder()
        pipeline = split_file(d, {"enc": f"tcp://{self.ADDR_A}:7101", "dit": f"tcp://{self.ADDR_B}:7102",
                                  "vae": f"tcp://{self.ADDR_A}:7103"})
        # The job socket is a file: reachable from this namespace whatever the network.
        jobs = f"ipc://{d}/jobs.sock"
        self.start_nodes(pipeline, jobs, netns={"enc": self.A, "vae": self.A, "dit": self.B})
        with Client(jobs) as c:
            res = [c.submit(PROMPT, seed=s) for s in SEEDS]
            self.assert_images_match({s: j.result(120).images[0].data for s, j in zip(SEEDS, res)})

    # The one-host cases ran in the parent class already.
    test_run_over_ipc_writes_the_one_process_bytes = None
    test_run_over_tcp_writes_the_one_process_bytes = None
    test_run_trace_holds_every_node_on_one_clock = None
    test_launch_serves_jobs_and_stops_on_sigterm = None
    test_a_killed_worker_fails_its_jobs_with_node_lost_and_serves_again_once_restarted = None
    test_a_node_started_from_another_file_is_refused_naming_both = None
    test_a_stage_on_two_nodes_keeps_serving_when_one_of_them_is_killed = None
    test_malformed_frames_at_a_worker_are_refused_and_counted_and_it_keeps_serving = None


if __name__ == "__main__":
    unittest.main()
