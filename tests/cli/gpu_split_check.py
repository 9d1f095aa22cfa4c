"""GPU stages of a split pipeline over the GPU channels (needs a CUDA device; exit 77 = skipped).

1. cuda_ipc: the default pipeline with denoise and decode on cuda:0, split over three
   processes on one host (ipc:// endpoints), so the edge denoise -> decode is chosen as
   cuda_ipc by `auto`. Its PNGs must be the bytes the one-process GPU run writes for the
   same seeds (tensors cross as their raw bytes; the kernels are batch-invariant); dit's
   exit counters must show the packets it sent over cuda_ipc, and its trace a transfer
   track "transfer dit -> vae over cuda_ipc".
2. zmq forced on that edge: the GPU tensors go through pinned host staging on a copy
   stream (transport/host_staging) and back onto the GPU; the same bytes again.
3. nccl forced on that edge: on one GPU NCCL refuses two ranks, so the job must end with
   a clear error naming NCCL (or a worker must refuse to start, where NCCL is not
   installed) within the time limit, never hang.

Run by scripts/device-check.sh (`run`) with the bundle's binary, and by ctest, which skips
it where no GPU is present. Environment: STAGECRAFT_BIN (the binary), STAGECRAFT_SOURCE_DIR
(the tree: pipelines/, models/), SC_DEVICE_LAUNCHER (a loader command that starts the
bundle's binaries on an old glibc; empty: none), GPU_SPLIT_LOGS (keep logs there).
Only the standard library: the GPU machine has no pyzmq.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from free_port import free_port  # noqa: E402  (one port never handed out twice)

SOURCE = os.path.abspath(os.environ.get("STAGECRAFT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("STAGECRAFT_BIN", os.path.join(SOURCE, "build", "release", "cli", "stagecraft"))
LAUNCHER = os.environ.get("SC_DEVICE_LAUNCHER", "").split()
MODEL = os.path.join(SOURCE, "models", "tiny-shapes")
PROMPT = "a red circle in the center on a blue background"
SEED = 7
SKIP = 77


def say(msg: str) -> None:
    print(msg, flush=True)


def have_gpu() -> str:
    """'' when a GPU is visible, else why not."""
    if not shutil.which("nvidia-smi"):
        return "no nvidia-smi here"
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    if r.returncode != 0 or "GPU " not in r.stdout:
        return "nvidia-smi lists no GPU: " + (r.stderr or r.stdout).strip()[:200]
    return ""


def cmd(*args: str) -> list[str]:
    return [*LAUNCHER, BIN, *args]


def pipeline(folder: str, name: str, nodes: bool, channel: str = "") -> str:
    """The default pipeline with denoise and decode on cuda:0; split over three nodes if asked."""
    def node(n: str) -> str:
        return f"    node: {n}\n" if nodes else ""
    text = f"model: {MODEL}\ndefaults:\n  negative_prompt: \"\"\nlimits: {{max_pending_jobs: 64, credits: 4}}\n"
    if nodes:
        text += "nodes:\n" + "".join(f"  {n}: {{endpoint: 'ipc://{folder}/{name}-{n}.sock'}}\n" for n in ("enc", "dit", "vae"))
    text += ("stages:\n"
             "  - name: text\n    type: clip_text_encoder\n" + node("enc") + "    device: cpu\n"
             "  - name: denoise\n    type: pixart_denoiser\n" + node("dit") + "    device: cuda:0\n"
             "    batching: {max_batch: 8, max_wait_ms: 2}\n    queue_limit: 8\n"
             "  - name: decode\n    type: vae_decoder\n" + node("vae") + "    device: cuda:0\n"
             "  - name: png\n    type: postprocess\n" + node("vae") + "    device: cpu\n")
    if channel:
        text += ("edges:\n  - {from: text, to: denoise}\n"
                 f"  - {{from: denoise, to: decode, channel: {channel}}}\n  - {{from: decode, to: png}}\n")
    path = os.path.join(folder, name + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


class Split:
    """The three workers of a split file, the head serving jobs at a tcp port."""

    def __init__(self, folder: str, path: str, tag: str):
        self.port = free_port()
        self.logs = {}
        self.procs = {}
        for n in ("vae", "dit", "enc"):
            log = os.path.join(folder, f"{tag}-{n}.log")
            extra = ["--bind", f"tcp://127.0.0.1:{self.port}", "--http", "off"] if n == "enc" else []
            if n == "dit":
                extra += ["--trace", os.path.join(folder, f"{tag}-dit-trace.json")]
            self.logs[n] = log
            self.procs[n] = subprocess.Popen(cmd("worker", path, "--node", n, *extra), stdout=open(log, "w"),
                                             stderr=subprocess.STDOUT)

    def log(self, n: str) -> str:
        with open(self.logs[n], errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout: float) -> str:
        """'' once the head says every node connected, else what went wrong."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for n, p in self.procs.items():
                if p.poll() is not None:
                    return f"worker {n} exited with {p.returncode} before the pipeline was up:\n{self.log(n)[-3000:]}"
            if "every node connected" in self.log("enc"):
                return ""
            time.sleep(0.1)
        return f"the head did not connect every node within {timeout:.0f} s:\n{self.log('enc')[-3000:]}"

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for n, p in self.procs.items():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def submit(port: int, out: str, n: int, timeout: float) -> subprocess.CompletedProcess:
    args = cmd("submit", "--server", f"tcp://127.0.0.1:{port}", "--prompt", PROMPT, "--seed", str(SEED),
               "--n", str(n), "--out", out, "--timeout-s", str(int(timeout)), "--quiet")
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"submit did not return within {timeout + 5:.0f} s")


def check_cuda_ipc(folder: str) -> list[str]:
    bad = []
    one = pipeline(folder, "one", nodes=False)
    split = pipeline(folder, "split", nodes=True)
    v = subprocess.run(cmd("validate", split), capture_output=True, text=True, timeout=30)
    if "dit -> vae over cuda_ipc" not in v.stdout:
        bad.append(f"validate does not show denoise -> decode placed on cuda_ipc:\n{v.stdout}{v.stderr}")
    r = subprocess.run(cmd("run", one, "--prompt", PROMPT, "--seed", str(SEED), "--n", "2",
                           "--out", os.path.join(folder, "one.png"), "--quiet"), capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return bad + [f"the one-process GPU run failed ({r.returncode}):\n{r.stderr[-3000:]}"]
    s = Split(folder, split, "ipc")
    try:
        why = s.wait_ready(12)
        if why:
            return bad + [why]
        r = submit(s.port, os.path.join(folder, "split.png"), 2, 15)
        if r.returncode != 0:
            bad.append(f"the split GPU run failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    finally:
        s.stop()
    if bad:
        return bad + ["worker logs:\n" + "\n".join(f"--- {n}\n{s.log(n)[-2000:]}" for n in s.logs)]
    for i in range(2):
        a = open(os.path.join(folder, f"one-{i}.png"), "rb").read()
        b = open(os.path.join(folder, f"split-{i}.png"), "rb").read()
        if a != b:
            bad.append(f"image {i} (seed {SEED + i}): the split run over cuda_ipc wrote other bytes than one process "
                       f"({len(b)} vs {len(a)} bytes); files kept in {folder}")
    say(f"cuda_ipc: the split run's {2} PNGs are the one-process GPU run's bytes" if not bad else "cuda_ipc: bytes differ")
    dit_log = s.log("dit")
    m = re.search(r"node dit -> vae over cuda_ipc: (\d+) packets, (\d+) bytes", dit_log)
    if not m or int(m.group(1)) < 2:
        bad.append(f"dit's exit counters show no packets over cuda_ipc:\n{dit_log[-2000:]}")
    else:
        say(f"cuda_ipc: dit sent {m.group(1)} packets, {m.group(2)} bytes over it")
    trace = os.path.join(folder, "ipc-dit-trace.json")
    try:
        events = json.load(open(trace))["traceEvents"]
        tracks = {e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
        if "transfer dit -> vae over cuda_ipc" not in tracks:
            bad.append(f"dit's trace has no track 'transfer dit -> vae over cuda_ipc' (tracks: {sorted(tracks)})")
    except (OSError, ValueError, KeyError) as e:
        bad.append(f"dit's trace {trace} is unreadable: {e}")
    return bad


def check_zmq_staging(folder: str) -> list[str]:
    path = pipeline(folder, "zmq", nodes=True, channel="zmq")
    s = Split(folder, path, "zmq")
    bad = []
    try:
        why = s.wait_ready(12)
        if why:
            return [why]
        r = submit(s.port, os.path.join(folder, "zmq.png"), 2, 15)
        if r.returncode != 0:
            bad.append(f"the split GPU run over zmq failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    finally:
        s.stop()
    if bad:
        return bad + ["worker logs:\n" + "\n".join(f"--- {n}\n{s.log(n)[-2000:]}" for n in s.logs)]
    for i in range(2):
        if open(os.path.join(folder, f"one-{i}.png"), "rb").read() != open(os.path.join(folder, f"zmq-{i}.png"), "rb").read():
            bad.append(f"image {i}: the split run over zmq (pinned staging) wrote other bytes than one process")
    m = re.search(r"node dit -> vae: (\d+) packets, (\d+) bytes", s.log("dit"))
    if not m or int(m.group(1)) < 2:
        bad.append(f"dit's exit counters show no packets over zmq to vae:\n{s.log('dit')[-2000:]}")
    if not bad:
        say(f"zmq: GPU tensors staged through pinned memory, {m.group(1)} packets, {m.group(2)} bytes, same bytes")
    return bad


def check_nccl_refusal(folder: str) -> list[str]:
    path = pipeline(folder, "nccl", nodes=True, channel="nccl")
    s = Split(folder, path, "nccl")
    try:
        why = s.wait_ready(12)
        if why:
            # Where NCCL is not installed the node with the edge refuses to start: a clear
            # start-up error is what the contract asks for, if it says what to do.
            text = "\n".join(s.log(n) for n in s.logs)
            if "nccl" in text.lower() and "channel: zmq" in text:
                say("nccl: a worker refused to start, naming NCCL and the fix")
                return []
            return [f"the nccl file neither started nor gave a clear start-up error:\n{why}"]
        t0 = time.monotonic()
        r = submit(s.port, os.path.join(folder, "nccl.png"), 1, 12)
        dt = time.monotonic() - t0
        out = r.stdout + r.stderr
        if r.returncode == 0:
            # Not what NCCL has done so far ("Duplicate GPU detected"); if a version allows it,
            # the bytes must still be right, and the docs need saying so.
            try:
                same = open(os.path.join(folder, "one-0.png"), "rb").read() == open(os.path.join(folder, "nccl.png"), "rb").read()
            except OSError as e:
                return [f"NCCL between two processes on one GPU succeeded, but its bytes cannot be compared: {e}"]
            if not same:
                return ["NCCL between two processes on one GPU succeeded but wrote other bytes than one process"]
            say("nccl: NOTE this NCCL accepted two ranks on one GPU and the bytes match; docs/wire-format.md and "
                "docs/disaggregation.md say it refuses: update them")
            return []
        if dt >= 11.5:  # submit gives up at 12 s: the job was never answered
            return [f"the job over nccl on one GPU hung instead of failing (after {dt:.1f} s):\n{out[-2000:]}"]
        if "nccl" not in out.lower():
            return [f"the job over nccl failed without naming NCCL:\n{out[-2000:]}"]
        say(f"nccl: the job failed in {dt:.1f} s with: {out.strip().splitlines()[-1][:300]}")
        return []
    finally:
        s.stop()


def main() -> int:
    # device-check's time limit sends SIGTERM: stop the workers (finally) rather than leave
    # them on the GPU for the steps after this one.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    why = have_gpu()
    if why:
        say(f"SKIPPED: {why}; scripts/device-check.sh runs this on a GPU")
        return SKIP
    keep = os.environ.get("GPU_SPLIT_LOGS", "")
    folder = tempfile.mkdtemp(prefix="sc-gpu-split-")
    bad = []
    try:
        bad += check_cuda_ipc(folder)
        if not bad:  # the reference PNGs exist
            bad += check_zmq_staging(folder)
        bad += check_nccl_refusal(folder)
    finally:
        if keep:
            os.makedirs(keep, exist_ok=True)
            for f in os.listdir(folder):
                if f.endswith((".log", ".json", ".yaml")):
                    shutil.copy(os.path.join(folder, f), keep)
        if not bad:
            shutil.rmtree(folder, ignore_errors=True)
    for b in bad:
        say("FAIL: " + b)
    if not bad:
        say("PASS: split GPU pipeline over cuda_ipc and over zmq (pinned staging) writes the one-process bytes; "
            "nccl on one GPU fails clearly")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
