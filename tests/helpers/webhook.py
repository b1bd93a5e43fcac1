"""A local incoming-webhook receiver on 127.0.0.1 (stands in for Slack or Mattermost): an
http.server thread that records every POST and answers with a chosen status."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One POST as received: path, Content-Type and the decoded JSON body."""

    path: str
    content_type: str
    body: Any

    @property
    def text(self) -> str:
        return str(self.body.get("text", "")) if isinstance(self.body, dict) else ""


class WebhookReceiver:
    """Records POSTs to `url` (which holds a random token, like a real webhook's URL)."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self.status = 200
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(self.path, self.headers.get("Content-Type", ""), body)
                    )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks/{self.token}"

    def texts(self) -> list[str]:
        """The `text` of every delivery so far, in order."""
        with self._lock:
            return [d.text for d in self.deliveries]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running receiver, always stopped afterwards."""
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
