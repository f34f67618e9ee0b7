"""The MLLP listener (asyncio): persistent lab connections, one ACK per message, in order.

Every complete frame gets exactly one answer: the intake's AA/AE/AR, AR for a frame over the size
limit (its SHA-256 goes to the rejected topic), AE when anything fails while it is handled — never a
closed connection instead (SPEC §9.1).

Connection slots are finite, so clients that hold one without sending a message ("slowloris") are
bounded by deadlines, not by per-read timeouts that one byte every few seconds would keep resetting:

- at most `max_connections` at once (5,000 by default: every lab of the country on one node; the
  gateway checks at start that the open-file limit allows it, services/core/runtime.py), and at most
  `max_connections_per_address` from one source address (a lab opens a few; one address opening
  hundreds cannot take the slots of every other lab); beyond either cap a new connection is closed at once;
- a new connection must start its first message (0x0B then `MSH`) within `first_message_timeout_s`
  (and finish its TLS handshake within that time too);
- a frame, once started, must be complete within `frame_timeout_s` (a deadline for the whole frame);
- between messages (from the last answer) a connection may stay for `idle_timeout_s`.

On SIGTERM the gateway calls `drain()`: no new connections; connections waiting between messages are
closed; a frame being received (within its deadline) or answered gets its answer, then its
connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import Counter
from datetime import UTC, datetime

from services.core.domain.model import Transport
from services.core.logs import get_logger
from services.gateway import metrics
from services.gateway.hl7.ack import ack_wanted, build_ack
from services.gateway.hl7.normalize import normalize_header
from services.gateway.intake import FAILED, Intake, failure
from services.gateway.labs import LabRegistry
from services.gateway.mllp import Frame, FrameDecoder, OversizedFrame, StrayBytes, frame
from services.gateway.tls import lab_of

log = get_logger(__name__)

HL7_START = b"MSH"


class _Connection:
    __slots__ = ("idle",)

    def __init__(self) -> None:
        self.idle = True
        """Between messages: no byte of a frame received, no answer pending."""


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
        frame_timeout_s: float,
        first_message_timeout_s: float = 10.0,
        max_connections_per_address: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        labs: LabRegistry | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.intake = intake
        self.labs = labs
        """Who a client certificate is (mutual TLS), when the registry is enforced."""
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.first_message_timeout_s = first_message_timeout_s
        self.max_connections_per_address = max_connections_per_address or max_connections
        self.ssl_context = ssl_context
        self.reuse_port = reuse_port
        """SO_REUSEPORT: several gateway processes listen on one port, the kernel spreads connections."""
        self._slots = asyncio.Semaphore(max_connections)
        self._per_address: Counter[str] = Counter()
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._draining = False

        self._server: asyncio.Server | None = None

    def _registered_lab(self, certificate_fingerprint: str) -> str | None:
        lab = self.labs.lab_for_fingerprint(certificate_fingerprint) if self.labs else None
        return lab.lab_id if lab is not None else None

    async def start(self) -> None:
        # a TLS handshake happens before `_serve` (and its caps) sees the connection: bound it too
        handshake_timeout = self.first_message_timeout_s if self.ssl_context is not None else None
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self.port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=handshake_timeout,
            limit=256 * 1024,
            backlog=4096,  # thousands of labs reconnect at once after a restart
            reuse_port=self.reuse_port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("mllp listening", host=self.host, port=self.port, tls=self.ssl_context is not None)

    async def close(self) -> None:
        await self.drain(0)

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting, answer what is in flight (at most `timeout_s`), close every connection."""
        self._draining = True
        if self._server is not None:
            self._server.close()
        for task, connection in list(self._connections.items()):
            if connection.idle:
                task.cancel()
        pending = list(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s) if timeout_s > 0 else (set(), pending)
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if late:
                log.warning("mllp connections closed unanswered at the end of the drain", count=len(late))
        if self._server is not None:
            await self._server.wait_closed()

    def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        log.warning("mllp connection refused", reason=reason)
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else "unix"
        refusal = (
            "draining" if self._draining
            else "connection-cap" if self._slots.locked()
            else "per-address-cap" if self._per_address[address] >= self.max_connections_per_address
            else None
        )
        if refusal is not None:
            self._refuse(writer, refusal)
            return
        task = asyncio.current_task()
        assert task is not None
        connection = self._connections[task] = _Connection()
        self._per_address[address] += 1
        try:
            async with self._slots:
                metrics.CONNECTIONS.inc()
                ssl_object = writer.get_extra_info("ssl_object")
                lab = lab_of(ssl_object, self._registered_lab) if ssl_object is not None else None
                try:
                    await self._converse(reader, writer, lab, connection)
                except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                    log.info("mllp connection lost", error=type(exc).__name__)
                finally:
                    metrics.CONNECTIONS.dec()
                    writer.close()
        finally:
            del self._connections[task]
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authenticated_lab: str | None,
        connection: _Connection,
    ) -> None:
        loop = asyncio.get_running_loop()
        decoder = FrameDecoder(self.max_message_bytes)
        introduce_by = loop.time() + self.first_message_timeout_s
        introduced = False
        frame_deadline = loop.time()
        idle_since = loop.time()
        while True:
            if self._draining and not decoder.mid_frame:
                return
            if decoder.mid_frame:
                deadline, reason = frame_deadline, "frame-timeout"
            else:
                deadline, reason = idle_since + self.idle_timeout_s, "idle-timeout"
            if not introduced and introduce_by < deadline:
                deadline, reason = introduce_by, "first-message-timeout"
            connection.idle = not decoder.mid_frame
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(65536)
            except TimeoutError:
                metrics.CONNECTIONS_CLOSED.labels(reason).inc()
                log.info("mllp connection timed out", reason=reason)
                return
            if not data:
                return
            connection.idle = False
            received_at = loop.time()
            was_mid_frame = decoder.mid_frame
            events = decoder.feed(data)
            answered = False
            for event in events:
                if isinstance(event, Frame | OversizedFrame):
                    answered = introduced = True
                reply = await self._answer_safely(event, authenticated_lab)
                if reply is not None:
                    writer.write(frame(reply))
                    await writer.drain()
            if decoder.mid_frame:
                if answered or not was_mid_frame:  # a frame started in this read
                    frame_deadline = received_at + self.frame_timeout_s
                introduced = introduced or decoder.frame_prefix == HL7_START
            if answered:  # bytes outside frames are not activity: they do not keep a connection open
                idle_since = loop.time()

    async def _answer_safely(
        self, event: Frame | OversizedFrame | StrayBytes, authenticated_lab: str | None
    ) -> bytes | None:
        try:
            return await self._answer(event, authenticated_lab)
        except Exception as exc:  # whatever failed, the lab gets an answer it may act on: send again
            log.error("mllp message not handled; lab answered AE", **failure(exc))
            head = event.payload if isinstance(event, Frame) else getattr(event, "head", b"")
            header = None
            with contextlib.suppress(Exception):
                header = normalize_header(head[:4096])
            now, control_id = datetime.now(UTC), header.control_id if header else ""
            try:
                return build_ack(header, "AE", [FAILED], now=now, control_id=control_id)
            except Exception:
                return build_ack(None, "AE", [FAILED], now=now, control_id="")

    async def _answer(
        self, event: Frame | OversizedFrame | StrayBytes, authenticated_lab: str | None
    ) -> bytes | None:
        now = datetime.now(UTC)
        if isinstance(event, StrayBytes):
            metrics.STRAY_BYTES.inc(event.count)
            log.warning("bytes outside an MLLP frame ignored", count=event.count)
            return None
        if isinstance(event, OversizedFrame):
            outcome = await self.intake.refuse_oversized(
                Transport.MLLP,
                event.head,
                event.size,
                event.sha256,
                self.max_message_bytes,
                authenticated_lab,
            )
        else:
            outcome = await self.intake.receive_hl7(event.payload, Transport.MLLP, authenticated_lab)
            if not ack_wanted(outcome.header, outcome.ack_code):
                return None
        return build_ack(
            outcome.header, outcome.ack_code, outcome.issues, now=now, control_id=outcome.control_id
        )
