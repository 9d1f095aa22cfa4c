"""Python client of the Stagecraft job service (docs/protocol.md).

Needs only Debian's python3-zmq and python3-msgpack. `Client` blocks,
`AsyncClient` is for asyncio; both speak protocol version 1.
"""
from .aio import AsyncClient, AsyncJob
from .client import Client, CurveKeys, Job, submit_many
from .protocol import (ERROR_CODES, PROTOCOL_VERSION, Image, JobError, Progress, ProtocolViolation, Result,
                       StageTiming)

__all__ = ["AsyncClient", "AsyncJob", "Client", "CurveKeys", "Job", "submit_many", "ERROR_CODES",
           "PROTOCOL_VERSION", "Image", "JobError", "Progress", "ProtocolViolation", "Result", "StageTiming"]
