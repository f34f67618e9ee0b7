"""The MLLP listener (asyncio): persistent lab connections, one ACK per message, in order."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime

from services.core.domain.model import Transport
from services.core.logs import get_logger
from services.gateway import metrics
from services.gateway.hl7.ack import ack_wanted, build_ack
from services.gateway.hl7.normalize import APPLICATION_INTERNAL_ERROR, Issue, normalize_header
from services.gateway.intake import Intake
from services.gateway.mllp import Frame, FrameDecoder, OversizedFrame, StrayBytes, frame
from services.gateway.tls import lab_of

log = get_logger(__name__)


class MllpServer:
    def __init__(
        self,
        intake: Intake,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        max_connections: int,
        idle_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.intake = intake
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.read_timeout_s = read_timeout_s
        self.ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)

        self._server: asyncio.Server | None = None

    def _registered_lab(self, certificate_fingerprint: str) -> str | None:
        lab = self.intake.labs.lab_for_fingerprint(certificate_fingerprint) if self.intake.labs else None
        return lab.lab_id if lab is not None else None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.ssl_context, limit=256 * 1024, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("mllp listening", host=self.host, port=self.port, tls=self.ssl_context is not None)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            log.warning("mllp connection refused: connection cap reached")
            writer.close()
            return
        async with self._slots:
            metrics.CONNECTIONS.inc()
            ssl_object = writer.get_extra_info("ssl_object")
            lab = lab_of(ssl_object, self._registered_lab) if ssl_object is not None else None
            try:
                await self._converse(reader, writer, lab)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                log.info("mllp connection lost", error=type(exc).__name__)
            finally:
                metrics.CONNECTIONS.dec()
                writer.close()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authenticated_lab: str | None
    ) -> None:
        decoder = FrameDecoder(self.max_message_bytes)
        while True:
            timeout = self.read_timeout_s if decoder.mid_frame else self.idle_timeout_s
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout)
            except TimeoutError:
                log.info("mllp connection timed out", mid_frame=decoder.mid_frame)
                return
            if not data:
                return
            for event in decoder.feed(data):
                reply = await self._answer(event, authenticated_lab)
                if reply is not None:
                    writer.write(frame(reply))
                    await writer.drain()

    async def _answer(
        self, event: Frame | OversizedFrame | StrayBytes, authenticated_lab: str | None
    ) -> bytes | None:
        now = datetime.now(UTC)
        if isinstance(event, StrayBytes):
            metrics.STRAY_BYTES.inc(event.count)
            log.warning("bytes outside an MLLP frame ignored", count=event.count)
            return None
        if isinstance(event, OversizedFrame):
            header = normalize_header(event.head)
            issue = Issue.about_message(
                APPLICATION_INTERNAL_ERROR,
                f"message of {event.size} bytes exceeds the {self.max_message_bytes}-byte limit",
                reject=True,
            )
            lab = header.sending_facility if header else "unknown"
            metrics.MESSAGES.labels(lab, Transport.MLLP.value, "AR").inc()
            log.warning("oversized message rejected", lab=lab, size=event.size)
            return build_ack(header, "AR", [issue], now=now, control_id=header.control_id if header else "")
        outcome = await self.intake.receive_hl7(event.payload, Transport.MLLP, authenticated_lab)
        if not ack_wanted(outcome.header, outcome.ack_code):
            return None
        return build_ack(
            outcome.header, outcome.ack_code, outcome.issues, now=now, control_id=outcome.control_id
        )
