"""An MLLP client that behaves like a lab information system: send, then wait for the ACK."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass

START, END = b"\x0b", b"\x1c\x0d"
# a CE/CWE of table 0357 in an ERR segment: code, then its text, then the table id (any separator)
_ERROR_CODE = re.compile(r"(\d{3})[\^&][^|\^&]*[\^&]HL70357")


@dataclass(frozen=True, slots=True)
class Ack:
    code: str  # MSA-1: AA, AE, AR (or CA, CE, CR)
    control_id: str  # MSA-2
    errors: list[str]  # ERR segments as received
    raw: bytes

    @property
    def error_codes(self) -> list[str]:
        """The HL7 table 0357 code of each ERR (ERR-3 in 2.5/2.5.1, ERR-1's CE in 2.3.1)."""
        return [m.group(1) for e in self.errors if (m := _ERROR_CODE.search(e))]

    @property
    def send_again(self) -> bool:
        """An AE that asks for the same message again (every ERR is 207, application internal error:
        the platform could not store it now), as opposed to content the lab must fix."""
        codes = self.error_codes
        return self.code == "AE" and bool(codes) and all(c == "207" for c in codes)

    @classmethod
    def parse(cls, raw: bytes) -> Ack:
        text = raw.decode("utf-8", errors="replace")
        segments = [s for s in text.replace("\n", "\r").split("\r") if s]
        field_sep = segments[0][3] if segments and segments[0].startswith("MSH") else "|"
        msa = next((s.split(field_sep) for s in segments if s.startswith("MSA")), ["MSA", "", ""])
        errors = [s for s in segments if s.startswith("ERR")]
        return cls(msa[1] if len(msa) > 1 else "", msa[2] if len(msa) > 2 else "", errors, raw)


class MllpClient:
    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.ssl_context = host, port, ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> MllpClient:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl_context)
        return self

    async def send(self, payload: bytes, timeout_s: float = 30.0) -> Ack:
        assert self._reader is not None and self._writer is not None, "connect() first"
        self._writer.write(START + payload + END)
        await self._writer.drain()
        return Ack.parse(await self.receive(timeout_s))

    async def receive(self, timeout_s: float = 30.0) -> bytes:
        assert self._reader is not None
        data = await asyncio.wait_for(self._reader.readuntil(END), timeout_s)
        return data[data.index(START) + 1 : -len(END)]

    @property
    def closed_by_peer(self) -> bool:
        """The server closed the connection (its end seen, nothing left to read)."""
        return self._reader is not None and self._reader.at_eof()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
