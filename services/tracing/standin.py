"""A local stand-in for the contact-tracing platform (laptop and demo: `labflow tracing standin`).

It checks the request signature (401 when wrong), answers 201 for a new `Idempotency-Key` and 200
for one it has already seen, and records each accepted request as a JSON line in
`<state dir>/tracing-standin/received.jsonl`: case id, event, event id, idempotency key and reception
time — never the identity.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from services.core.config import Settings
from services.core.errors import OperatorError
from services.core.logs import configure_logging, get_logger
from services.tracing.handoff import SIGNATURE_HEADER, verify_signature

log = get_logger(__name__)


class StandinPlatform:
    def __init__(self, host: str, port: int, secret: bytes, record_path: Path) -> None:
        self.secret = secret
        self.record_path = record_path
        record_path.parent.mkdir(parents=True, exist_ok=True)
        self.seen_keys = self._recorded_keys()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tracing-standin", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> StandinPlatform:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _recorded_keys(self) -> set[str]:
        if not self.record_path.exists():
            return set()
        lines = self.record_path.read_text().splitlines()
        return {str(json.loads(line)["idempotency_key"]) for line in lines if line.strip()}

    def accept(self, key: str, body: dict[str, object]) -> bool:
        """Record a request; False when its idempotency key was seen before (nothing recorded)."""
        with self.lock:
            if key in self.seen_keys:
                return False
            self.seen_keys.add(key)
            record = {
                "received_at": datetime.now(UTC).isoformat(),
                "idempotency_key": key,
                "case_id": body.get("case_id"),
                "event": body.get("event"),
                "event_id": body.get("event_id"),
            }
            with self.record_path.open("a") as out:
                out.write(json.dumps(record) + "\n")
            return True


def _handler(platform: StandinPlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not verify_signature(platform.secret, self.headers.get(SIGNATURE_HEADER, ""), body,
                                    int(time.time())):
                self._send(401, {"detail": "bad signature"})
                return
            key = self.headers.get("Idempotency-Key")
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if not key or not isinstance(document, dict):
                self._send(400, {"detail": "an Idempotency-Key and a JSON object are required"})
                return
            created = platform.accept(key, document)
            self._send(201 if created else 200, {"status": "created" if created else "duplicate"})

        def _send(self, status: int, document: dict[str, str]) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def run_standin(settings: Settings, port: int) -> None:
    configure_logging("tracing-standin", settings.log_level)
    if settings.tracing_signing_secret is None:
        raise OperatorError("LABFLOW_TRACING_SIGNING_SECRET is not set: run `labflow stack up` or set it")
    record_path = settings.state_dir / "tracing-standin" / "received.jsonl"
    platform = StandinPlatform(
        "127.0.0.1", port, settings.tracing_signing_secret.get_secret_value().encode(), record_path
    ).start()
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    log.info("tracing platform stand-in listening", url=f"http://127.0.0.1:{platform.port}/cases",
             record=str(record_path))
    stopping.wait()
    platform.stop()
