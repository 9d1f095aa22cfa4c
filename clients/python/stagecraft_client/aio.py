"""The asyncio client of `stagecraft serve`.

    import asyncio
    from stagecraft_client import AsyncClient

    async def main():
        async with AsyncClient("tcp://127.0.0.1:5555") as c:
            job = await c.submit("a red circle", seed=7, progress=True)
            async for p in job.progress():
                print(f"step {p.step}/{p.of}")
            result = await job.result()

    asyncio.run(main())

One reader task files every reply under its job id; a heartbeat task pings the
server while the client is open, so many jobs can be awaited concurrently.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator, Dict, Optional

import zmq
import zmq.asyncio

from . import protocol
from .client import CurveKeys, connect_dealer
from .protocol import Progress, Result


class AsyncJob:
    def __init__(self, client: "AsyncClient", job_id: str, queue: "asyncio.Queue[Dict[str, Any]]"):
        self.client = client
        self.id = job_id
        self._queue = queue
        self._terminal: Optional[Dict[str, Any]] = None

    async def progress(self) -> AsyncIterator[Progress]:
        """Yields progress until the terminal reply arrives (then result() returns at once)."""
        while self._terminal is None:
            m = await self._queue.get()
            if m["type"] == "progress":
                yield protocol.to_progress(m)
            elif m["type"] in ("result", "error"):
                self._terminal = m

    async def result(self, timeout: Optional[float] = None) -> Result:
        async def wait() -> Dict[str, Any]:
            while self._terminal is None:
                m = await self._queue.get()
                if m["type"] in ("result", "error"):
                    self._terminal = m
            return self._terminal
        m = await asyncio.wait_for(wait(), timeout)
        self.client._forget(self.id)
        if m["type"] == "error":
            raise protocol.to_error(m)
        return protocol.to_result(m)

    async def cancel(self) -> None:
        await self.client.cancel(self.id)


class AsyncClient:
    def __init__(self, endpoint: str = "tcp://127.0.0.1:5555", *, heartbeat: float = 2.0,
                 curve: Optional[CurveKeys] = None):
        self._ctx = zmq.asyncio.Context.instance()
        self._sock = connect_dealer(self._ctx, endpoint, curve)
        self._heartbeat = heartbeat
        self._queues: Dict[str, "asyncio.Queue[Dict[str, Any]]"] = {}
        self._info: Dict[str, "asyncio.Future[Dict[str, Any]]"] = {}
        self._tasks: list = []

    async def __aenter__(self) -> "AsyncClient":
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._sock.close(linger=0)

    async def submit(self, prompt: str, *, id: Optional[str] = None, progress: bool = False,
                     accept_timeout: float = 30.0, **fields: Any) -> AsyncJob:
        """Sends a `submit` and waits for `accepted`; raises JobError if the server refuses it."""
        job_id = id or f"py-{uuid.uuid4().hex[:16]}"
        queue: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self._queues[job_id] = queue
        await self._sock.send(protocol.submit_message(job_id, prompt, progress=progress, **fields))
        m = await asyncio.wait_for(queue.get(), accept_timeout)
        if m["type"] == "error":
            self._forget(job_id)
            raise protocol.to_error(m)
        if m["type"] != "accepted":
            queue.put_nowait(m)
        return AsyncJob(self, job_id, queue)

    async def generate(self, prompt: str, *, timeout: Optional[float] = 600.0, **fields: Any) -> Result:
        job = await self.submit(prompt, **fields)
        return await job.result(timeout)

    async def cancel(self, job_id: str) -> None:
        await self._sock.send(protocol.simple_message("cancel", job_id))

    async def health(self, timeout: float = 5.0) -> Dict[str, Any]:
        return await self._info_request("health", timeout)

    async def stats(self, timeout: float = 5.0) -> Dict[str, Any]:
        return await self._info_request("stats", timeout)

    async def _info_request(self, op: str, timeout: float) -> Dict[str, Any]:
        fut: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self._info[op] = fut
        await self._sock.send(protocol.simple_message(op))
        return await asyncio.wait_for(fut, timeout)

    def _forget(self, job_id: str) -> None:
        self._queues.pop(job_id, None)

    async def _read(self) -> None:
        while True:
            m = protocol.decode_reply(await self._sock.recv())
            job_id = m.get("id") or ""
            if job_id in self._queues:
                self._queues[job_id].put_nowait(m)
            elif m["type"] in self._info:
                fut = self._info.pop(m["type"])
                if not fut.done():
                    fut.set_result(m)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            await self._sock.send(protocol.simple_message("ping"))
