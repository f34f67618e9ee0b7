"""MLLP framing (HL7 v2 over TCP): `0x0B` payload `0x1C 0x0D`. Pure: bytes in, events out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame over the size limit; `head` keeps its start so the ACK can still echo MSH-10, and
    `sha256` (hex) identifies the whole payload, which is not kept."""

    size: int
    head: bytes
    sha256: str


@dataclass(frozen=True, slots=True)
class StrayBytes:
    count: int


Event = Frame | OversizedFrame | StrayBytes


def frame(payload: bytes) -> bytes:
    return START + payload + END


class FrameDecoder:
    """Incremental decoder: frames may span reads and several frames may arrive in one read."""

    HEAD_BYTES = 4096

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._pending_fs = False  # the read ended on 0x1C: the next byte may close the frame
        self._oversized_head: bytes | None = None
        self._oversized_size = 0
        self._oversized_hash = hashlib.sha256()

    @property
    def mid_frame(self) -> bool:
        return self._in_frame

    @property
    def frame_prefix(self) -> bytes:
        """The first bytes (at most 3) of the frame being received: `MSH` for an HL7 message."""
        if self._oversized_head is not None:
            return self._oversized_head[:3]
        return bytes(self._buffer[:3])

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        pos, size = 0, len(data)
        while pos < size:
            if not self._in_frame:
                start = data.find(START, pos)
                if start < 0:
                    events.append(StrayBytes(size - pos))
                    break
                if start > pos:
                    events.append(StrayBytes(start - pos))
                self._in_frame = True
                pos = start + 1
                continue
            if self._pending_fs:
                self._pending_fs = False
                if data[pos : pos + 1] == b"\x0d":
                    events.append(self._finish())
                    pos += 1
                    continue
                self._append(b"\x1c")
            end = data.find(END, pos)
            if end >= 0:
                self._append(data[pos:end])
                events.append(self._finish())
                pos = end + len(END)
                continue
            chunk = data[pos:]
            if chunk.endswith(b"\x1c"):
                self._pending_fs = True
                chunk = chunk[:-1]
            self._append(chunk)
            break
        return events

    def _append(self, chunk: bytes) -> None:
        if self._oversized_head is not None:
            self._oversized_size += len(chunk)
            self._oversized_hash.update(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > self.max_message_bytes:
            self._oversized_head = bytes(self._buffer[: self.HEAD_BYTES])
            self._oversized_size = len(self._buffer)
            self._oversized_hash = hashlib.sha256(self._buffer)
            self._buffer.clear()

    def _finish(self) -> Event:
        self._in_frame = False
        if self._oversized_head is not None:
            event: Event = OversizedFrame(
                self._oversized_size, self._oversized_head, self._oversized_hash.hexdigest()
            )
            self._oversized_head = None
            self._oversized_size = 0
            return event
        payload = bytes(self._buffer)
        self._buffer.clear()
        return Frame(payload)
