"""Messages of the Stagecraft job protocol, version 1 (docs/protocol.md).

Pure functions over dicts: what a client sends is built here, what a server
replies is checked and turned into Result / JobError here. Both the blocking
and the asyncio client use them, so the two cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import msgpack

PROTOCOL_VERSION = 1

#: Error codes a reply may carry (docs/protocol.md lists their meaning).
ERROR_CODES = frozenset({
    "bad_request", "unknown_op", "unsupported_version", "unknown_pipeline", "invalid_argument",
    "duplicate_id", "too_many_jobs", "overloaded", "shutting_down", "not_found", "cancelled",
    "deadline_exceeded", "stage_failed", "internal",
})


class JobError(Exception):
    """A job (or request) ended with an `error` reply."""

    def __init__(self, code: str, message: str, job_id: str = "", retry_after_ms: Optional[int] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.job_id = job_id
        self.retry_after_ms = retry_after_ms


class ProtocolViolation(Exception):
    """The server sent something that is not a version-1 reply."""


@dataclass
class Image:
    data: bytes          #: PNG bytes, or raw uint8 HWC bytes when output="raw"
    width: int
    height: int
    channels: int
    seed: int


@dataclass
class StageTiming:
    queue_s: float
    compute_s: float
    transfer_s: float


@dataclass
class Result:
    id: str
    format: str
    images: List[Image]
    timings: Dict[str, StageTiming] = field(default_factory=dict)


@dataclass
class Progress:
    id: str
    step: int
    of: int
    image: int


def submit_message(job_id: str, prompt: str, *, pipeline: Optional[str] = None,
                   negative_prompt: Optional[str] = None, seed: Optional[int] = None,
                   steps: Optional[int] = None, guidance: Optional[float] = None,
                   width: Optional[int] = None, height: Optional[int] = None, num_images: int = 1,
                   scheduler: Optional[str] = None, priority: int = 0,
                   deadline_ms: Optional[int] = None, output: str = "png",
                   progress: bool = False) -> bytes:
    """The msgpack bytes of a `submit`; None fields are left out (the pipeline's defaults)."""
    m: Dict[str, Any] = {"v": PROTOCOL_VERSION, "op": "submit", "id": job_id, "prompt": prompt,
                         "num_images": num_images, "priority": priority, "output": output,
                         "progress": progress}
    optional = {"pipeline": pipeline, "negative_prompt": negative_prompt, "seed": seed, "steps": steps,
                "guidance": guidance, "width": width, "height": height, "scheduler": scheduler,
                "deadline_ms": deadline_ms}
    m.update({k: v for k, v in optional.items() if v is not None})
    return msgpack.packb(m, use_bin_type=True)


def simple_message(op: str, job_id: Optional[str] = None) -> bytes:
    """cancel / status (with an id), health / stats / ping (without)."""
    m: Dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op}
    if job_id is not None:
        m["id"] = job_id
    return msgpack.packb(m, use_bin_type=True)


def decode_reply(frame: bytes) -> Dict[str, Any]:
    """One reply as a dict with at least `type`; ProtocolViolation when it is not one."""
    try:
        m = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types for garbage
        raise ProtocolViolation(f"reply is not msgpack: {e}") from e
    if not isinstance(m, dict) or not isinstance(m.get("type"), str):
        raise ProtocolViolation("reply is not a map with a `type`")
    if m.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        raise ProtocolViolation(f"reply is protocol version {m.get('v')}, this client speaks {PROTOCOL_VERSION}")
    return m


def to_result(m: Dict[str, Any]) -> Result:
    images = [Image(bytes(i["data"]), int(i["width"]), int(i["height"]), int(i["channels"]), int(i["seed"]))
              for i in m.get("images", [])]
    timings = {name: StageTiming(float(t["queue_s"]), float(t["compute_s"]), float(t["transfer_s"]))
               for name, t in m.get("timings", {}).items()}
    return Result(m.get("id", ""), m.get("format", "png"), images, timings)


def to_error(m: Dict[str, Any]) -> JobError:
    return JobError(str(m.get("code", "internal")), str(m.get("message", "")), str(m.get("id", "")),
                    m.get("retry_after_ms"))


def to_progress(m: Dict[str, Any]) -> Progress:
    return Progress(str(m.get("id", "")), int(m["step"]), int(m["of"]), int(m.get("image", 0)))
