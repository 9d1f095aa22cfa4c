"""The blocking client of `stagecraft serve`.

    from stagecraft_client import Client

    with Client("tcp://127.0.0.1:5555") as c:
        result = c.generate("a red circle in the center on a blue background", seed=7,
                            on_progress=lambda p: print(f"step {p.step}/{p.of}"))
        open("x.png", "wb").write(result.images[0].data)

Several jobs may be in flight on one client: `submit()` returns a Job at once,
`Job.result()` waits for that job while replies of the others are kept for them.
While it waits, the client pings the server now and then, so the server knows it
is still there (a silent client's jobs are cancelled). Not thread-safe: one
Client per thread.
"""
from __future__ import annotations

import time
import uuid
from collections import defaultdict, deque
from typing import Any, Callable, Deque, Dict, List, Optional

import zmq

from . import protocol
from .protocol import Progress, Result

ProgressCallback = Callable[[Progress], None]


class CurveKeys:
    """CurveZMQ keys (Z85 text): the server's public key and this client's key pair."""

    def __init__(self, server_public: str, client_public: str, client_secret: str):
        self.server_public = server_public
        self.client_public = client_public
        self.client_secret = client_secret


def connect_dealer(ctx: zmq.Context, endpoint: str, curve: Optional[CurveKeys]) -> zmq.Socket:
    """A DEALER connected to the server, with CurveZMQ keys when given (both clients use it)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        sock.curve_serverkey = curve.server_public.encode()
        sock.curve_publickey = curve.client_public.encode()
        sock.curve_secretkey = curve.client_secret.encode()
    sock.connect(endpoint)
    return sock


class Job:
    """A submitted job. `result()` blocks until its terminal reply."""

    def __init__(self, client: "Client", job_id: str, on_progress: Optional[ProgressCallback]):
        self.client = client
        self.id = job_id
        self.on_progress = on_progress

    def result(self, timeout: Optional[float] = None) -> Result:
        """The job's Result; raises JobError for an `error` reply, TimeoutError after `timeout` s."""
        return self.client._wait_terminal(self, timeout)

    def cancel(self) -> None:
        self.client.cancel(self.id)


class Client:
    def __init__(self, endpoint: str = "tcp://127.0.0.1:5555", *, heartbeat: float = 2.0,
                 curve: Optional[CurveKeys] = None, context: Optional[zmq.Context] = None):
        self._ctx = context or zmq.Context.instance()
        self._sock = connect_dealer(self._ctx, endpoint, curve)
        self._heartbeat = heartbeat
        self._next_ping = time.monotonic() + heartbeat
        self._inbox: Dict[str, Deque[Dict[str, Any]]] = defaultdict(deque)  # replies by job id
        self._info: Deque[Dict[str, Any]] = deque()  # health / stats / pong / id-less errors

    # -- context manager --
    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close(linger=0)

    # -- jobs --
    def submit(self, prompt: str, *, id: Optional[str] = None, on_progress: Optional[ProgressCallback] = None,
               accept_timeout: float = 30.0, **fields: Any) -> Job:
        """Sends a `submit` and waits for `accepted`; raises JobError if the server refuses it.

        fields: pipeline, negative_prompt, seed, steps, guidance, width, height, num_images,
        scheduler, priority, deadline_ms, output ("png" | "raw").
        """
        job_id = id or f"py-{uuid.uuid4().hex[:16]}"
        self._sock.send(protocol.submit_message(job_id, prompt, progress=on_progress is not None, **fields))
        deadline = time.monotonic() + accept_timeout
        while True:
            m = self._next_for(job_id, deadline)
            if m["type"] == "accepted":
                return Job(self, job_id, on_progress)
            if m["type"] == "error":
                raise protocol.to_error(m)
            self._inbox[job_id].appendleft(m)  # a result that raced ahead of nothing: keep it
            return Job(self, job_id, on_progress)

    def generate(self, prompt: str, *, timeout: Optional[float] = 600.0, **fields: Any) -> Result:
        """submit() then result(): the images of one job, or JobError."""
        return self.submit(prompt, **fields).result(timeout)

    def cancel(self, job_id: str) -> None:
        """Asks the server to stop the job at its next step; its terminal reply is `cancelled`."""
        self._sock.send(protocol.simple_message("cancel", job_id))

    def status(self, job_id: str, timeout: float = 5.0) -> Dict[str, Any]:
        self._sock.send(protocol.simple_message("status", job_id))
        deadline = time.monotonic() + timeout
        while True:
            m = self._next_for(job_id, deadline, want={"status"})
            if m["type"] == "status":
                return m

    def health(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self._info_request("health", timeout)

    def stats(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self._info_request("stats", timeout)

    # -- internals --
    def _info_request(self, op: str, timeout: float) -> Dict[str, Any]:
        self._sock.send(protocol.simple_message(op))
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self._info):
                if m["type"] == op:
                    del self._info[i]
                    return m
            self._pump(deadline)

    def _wait_terminal(self, job: Job, timeout: Optional[float]) -> Result:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            m = self._next_for(job.id, deadline)
            if m["type"] == "progress":
                if job.on_progress:
                    job.on_progress(protocol.to_progress(m))
            elif m["type"] == "result":
                return protocol.to_result(m)
            elif m["type"] == "error":
                raise protocol.to_error(m)

    def _next_for(self, job_id: str, deadline: Optional[float], want: Optional[set] = None) -> Dict[str, Any]:
        """The next reply for `job_id` (of a type in `want`, if given), pumping the socket."""
        while True:
            q = self._inbox.get(job_id)
            if q:
                for i, m in enumerate(q):
                    if want is None or m["type"] in want:
                        del q[i]
                        return m
            self._pump(deadline)

    def _pump(self, deadline: Optional[float]) -> None:
        """Receives one reply (or none before a ping is due) and files it; TimeoutError at the deadline."""
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TimeoutError("no reply from the server in time; is it running? (the job goes on: "
                               "resubmit the same id to fetch it)")
        if now >= self._next_ping:
            self._sock.send(protocol.simple_message("ping"))
            self._next_ping = now + self._heartbeat
        wait = self._next_ping - now
        if deadline is not None:
            wait = min(wait, deadline - now)
        if not self._sock.poll(max(1, int(wait * 1000))):
            return
        m = protocol.decode_reply(self._sock.recv())
        if m["type"] == "pong":
            return
        job_id = m.get("id") or ""
        if job_id:
            self._inbox[job_id].append(m)
        else:
            self._info.append(m)
            if m["type"] == "error":  # an id-less error answers a malformed request of ours
                raise protocol.to_error(m)


def submit_many(client: Client, prompts: List[str], **fields: Any) -> List[Result]:
    """Submits every prompt at once and returns their results in order (a convenience for scripts)."""
    jobs = [client.submit(p, **fields) for p in prompts]
    return [j.result() for j in jobs]
