"""The Python client against a real `stagecraft serve` (started here, on loopback).

STAGECRAFT_BIN names the binary (ctest sets it); STAGECRAFT_SOURCE_DIR the
source tree (for the shipped pipeline and model).
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import base64
import json
import shutil
import urllib.error
import urllib.request

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stagecraft_client import AsyncClient, Client, JobError  # noqa: E402

SOURCE = os.environ.get("STAGECRAFT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("STAGECRAFT_BIN", os.path.join(SOURCE, "build", "release", "cli", "stagecraft"))
SHIPPED = os.path.join(SOURCE, "pipelines", "tiny-shapes.yaml")

# A slow synthetic pipeline: 20 steps of 25 ms each, so a job can be cancelled mid-way.
SLOW = """
defaults: {steps: 20}
limits: {max_pending_jobs: 16}
stages:
  - {name: denoise, type: synthetic_denoiser, device: cpu, cost: {per_batch_ms: 25}, batching: {max_batch: 4}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `stagecraft serve` child process, stopped (SIGTERM) at exit."""

    def __init__(self, pipeline: str, *extra: str):
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([BIN, "serve", pipeline, "--bind", self.endpoint, "--http", "127.0.0.1:0",
                                      *extra], stderr=subprocess.PIPE, text=True)
        self.http = ""
        for line in self.proc.stderr:  # "HTTP on http://HOST:PORT (...)" comes before "serving ..."
            if line.startswith("HTTP on "):
                self.http = line.split()[2]
            if line.startswith("serving "):
                break
        with Client(self.endpoint) as c:  # wait until it answers
            deadline = time.monotonic() + 60
            while True:
                try:
                    c.health(timeout=1.0)
                    break
                except TimeoutError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("stagecraft serve did not start: " + self.proc.stderr.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.proc.stderr.close()
        return rc


class ServedTestCase(unittest.TestCase):
    """One `stagecraft serve` of the shipped pipeline for the whole class; it must drain to exit 0."""

    server_args: tuple = ()

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server(SHIPPED, *cls.server_args)

    @classmethod
    def tearDownClass(cls) -> None:
        assert cls.server.stop() == 0


class ShippedModelTest(ServedTestCase):

    def test_a_generated_png_is_byte_identical_to_stagecraft_generate(self) -> None:
        prompt = "a red circle in the center on a blue background"
        steps = []
        with Client(self.server.endpoint) as c:
            r = c.generate(prompt, seed=7, on_progress=lambda p: steps.append(p.step))
        self.assertEqual(len(r.images), 1)
        self.assertTrue(r.images[0].data.startswith(b"\x89PNG"))
        self.assertEqual(r.images[0].seed, 7)
        self.assertEqual(steps[-1], 20)
        self.assertIn("denoise", r.timings)
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "ref.png")
            subprocess.run([BIN, "generate", "--prompt", prompt, "--seed", "7", "--out", out],
                           check=True, capture_output=True)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), r.images[0].data)

    def test_num_images_gives_one_result_with_consecutive_seeds(self) -> None:
        with Client(self.server.endpoint) as c:
            r = c.generate("a green square", seed=3, num_images=3, output="raw")
        self.assertEqual([i.seed for i in r.images], [3, 4, 5])
        for im in r.images:
            self.assertEqual(len(im.data), im.width * im.height * im.channels)

    def test_out_of_range_fields_are_refused_naming_the_field(self) -> None:
        with Client(self.server.endpoint) as c:
            for fields, word in [({"steps": 0}, "steps"), ({"steps": 100000}, "steps"),
                                 ({"width": 33}, "width"), ({"guidance": float("nan")}, "guidance"),
                                 ({"width": 100000, "height": 100000}, "width")]:
                with self.assertRaises(JobError, msg=str(fields)) as e:
                    c.submit("x", **fields)
                self.assertEqual(e.exception.code, "invalid_argument", fields)
                self.assertIn(word, e.exception.message)
            with self.assertRaises(JobError) as e:
                c.submit("x" * 1_000_000)
            self.assertEqual(e.exception.code, "invalid_argument")
            # The server is still serving.
            self.assertEqual(len(c.generate("a blue triangle", seed=1).images), 1)


def http_post(url: str, body: bytes, content_type: str = "application/json"):
    """(status, parsed JSON body) of a POST, errors included."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class HttpGatewayTest(ServedTestCase):
    server_args = ("--price-per-device-hour", "2.5", "--http-read-timeout-ms", "500")

    def test_a_slow_sender_is_cut_off_and_others_are_still_served(self) -> None:
        host, port = self.server.http.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
            with urllib.request.urlopen(self.server.http + "/healthz", timeout=10) as r:
                self.assertEqual(r.status, 200)
            slow.settimeout(5)
            self.assertEqual(slow.recv(1024), b"")  # closed by the server after the read timeout

    def test_an_openai_style_request_returns_a_png_in_b64_json(self) -> None:
        status, body = http_post(self.server.http + "/v1/images/generations",
                                 json.dumps({"prompt": "a red circle in the center on a blue background",
                                             "n": 2, "size": "32x32", "response_format": "b64_json",
                                             "seed": 7}).encode())
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body["data"]), 2)
        png = base64.b64decode(body["data"][0]["b64_json"])
        self.assertTrue(png.startswith(b"\x89PNG"))
        with Client(self.server.endpoint) as c:  # the same image as the ZeroMQ door gives
            self.assertEqual(c.generate("a red circle in the center on a blue background", seed=7).images[0].data,
                             png)

    def test_bad_requests_get_the_openai_error_body(self) -> None:
        url = self.server.http + "/v1/images/generations"
        status, body = http_post(url, b"{not json")
        self.assertEqual(status, 400)
        self.assertIn("message", body["error"])
        status, body = http_post(url, b"prompt=x", "application/x-www-form-urlencoded")
        self.assertEqual(status, 415)
        status, body = http_post(url, json.dumps({"prompt": "x", "size": "33x33"}).encode())
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["code"], "invalid_argument")
        status, body = http_post(url, json.dumps({"prompt": "x", "n": "two"}).encode())
        self.assertEqual((status, body["error"]["param"]), (400, "n"))
        # An oversized body is refused from its Content-Length, before it is read.
        host, port = self.server.http.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 2000000\r\n\r\n{")
            self.assertIn(b" 413 ", s.recv(4096).split(b"\r\n")[0] + b" ")

    def test_health_readiness_and_metrics_answer(self) -> None:
        with urllib.request.urlopen(self.server.http + "/healthz", timeout=10) as r:
            self.assertEqual(r.status, 200)
        with urllib.request.urlopen(self.server.http + "/readyz", timeout=10) as r:
            self.assertEqual(r.status, 200)
        with Client(self.server.endpoint) as c:
            c.generate("a blue square", seed=2)
        with urllib.request.urlopen(self.server.http + "/metrics", timeout=10) as r:
            text = r.read().decode()
        self.assertIn('stagecraft_jobs_total{outcome="completed"}', text)
        self.assertIn('stagecraft_stage_compute_seconds_bucket{stage="denoise",le="+Inf"}', text)
        self.assertIn("stagecraft_cost_per_million_images ", text)  # from --price-per-device-hour
        promtool = shutil.which("promtool")
        if promtool is None:
            if os.environ.get("CI"):
                self.fail("promtool is missing: scripts/install-deps.sh installs the prometheus package")
            self.skipTest("promtool not installed (the prometheus package)")
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


class SyntheticTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.dir = tempfile.TemporaryDirectory()
        cls.pipeline = os.path.join(cls.dir.name, "slow.yaml")
        with open(cls.pipeline, "w") as f:
            f.write(SLOW)
        cls.server = Server(cls.pipeline, "--client-timeout-ms", "800")

    @classmethod
    def tearDownClass(cls) -> None:
        assert cls.server.stop() == 0
        cls.dir.cleanup()

    def test_cancel_ends_a_running_job_with_cancelled(self) -> None:
        with Client(self.server.endpoint) as c:
            job = c.submit("x", on_progress=lambda p: None)
            time.sleep(0.1)
            job.cancel()
            with self.assertRaises(JobError) as e:
                job.result(timeout=10)
            self.assertEqual(e.exception.code, "cancelled")

    def test_a_resubmitted_id_is_the_same_job_and_other_parameters_are_refused(self) -> None:
        with Client(self.server.endpoint) as c:
            first = c.submit("x", id="same-id", seed=5, steps=2).result(timeout=10)
            again = c.submit("x", id="same-id", seed=5, steps=2).result(timeout=10)
            self.assertEqual(first.id, again.id)
            with self.assertRaises(JobError) as e:
                c.submit("x", id="same-id", seed=6, steps=2)
            self.assertEqual(e.exception.code, "duplicate_id")

    def test_a_silent_client_has_its_jobs_cancelled(self) -> None:
        ctx = zmq.Context.instance()
        raw = ctx.socket(zmq.DEALER)
        raw.connect(self.server.endpoint)
        from stagecraft_client import protocol
        raw.send(protocol.submit_message("silent-1", "x", steps=150))
        self.assertEqual(protocol.decode_reply(raw.recv())["type"], "accepted")
        # No pings: after --client-timeout-ms (0.8 s) the job is cancelled.
        deadline = time.monotonic() + 10
        with Client(self.server.endpoint) as c:
            while time.monotonic() < deadline:
                if c.status("silent-1")["state"] == "failed":
                    break
                time.sleep(0.1)
            self.assertEqual(c.status("silent-1")["state"], "failed")
            self.assertGreaterEqual(c.stats()["clients_lost"], 1)
        raw.close(linger=0)

    def test_malformed_messages_get_errors_and_the_server_keeps_serving(self) -> None:
        ctx = zmq.Context.instance()
        raw = ctx.socket(zmq.DEALER)
        raw.connect(self.server.endpoint)
        from stagecraft_client import protocol
        import msgpack
        for bad in [b"\xc1junk", msgpack.packb([1, 2, 3]), msgpack.packb({"op": "explode"}),
                    msgpack.packb({"op": "submit", "id": "m", "prompt": 5}),
                    msgpack.packb({"op": "submit", "id": "m", "prompt": "x", "stpes": 3})]:
            raw.send(bad)
            reply = protocol.decode_reply(raw.recv())
            self.assertEqual(reply["type"], "error")
            self.assertIn(reply["code"], ("bad_request", "unknown_op"))
        raw.send_multipart([b"one", b"two"])
        self.assertEqual(protocol.decode_reply(raw.recv())["code"], "bad_request")
        raw.close(linger=0)
        with Client(self.server.endpoint) as c:
            self.assertEqual(c.generate("x", steps=2).images, [])
            self.assertGreaterEqual(c.stats()["malformed"], 6)

    def test_the_asyncio_client_runs_jobs_concurrently_with_progress(self) -> None:
        async def main() -> None:
            async with AsyncClient(self.server.endpoint) as c:
                jobs = [await c.submit("x", steps=4, progress=True) for _ in range(3)]
                seen = []
                for j in jobs:
                    seen.append([p.step async for p in j.progress()])
                results = await asyncio.gather(*(j.result(timeout=10) for j in jobs))
                self.assertEqual(len(results), 3)
                for s in seen:
                    self.assertEqual(s[-1], 4)
                health = await c.health()
                self.assertEqual(health["status"], "ok")
        asyncio.run(main())


class DrainTest(unittest.TestCase):
    def test_sigterm_answers_jobs_in_flight_then_exits_zero(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            pipeline = os.path.join(d, "slow.yaml")
            with open(pipeline, "w") as f:
                f.write(SLOW)
            server = Server(pipeline)
            with Client(server.endpoint) as c:
                job = c.submit("x", steps=12)
                server.proc.send_signal(signal.SIGTERM)
                time.sleep(0.2)  # let the signal land before the next request
                with self.assertRaises(JobError) as e:
                    c.submit("y")
                self.assertEqual(e.exception.code, "shutting_down")
                r = job.result(timeout=30)
                self.assertEqual(r.images, [])
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
