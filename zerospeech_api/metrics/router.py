"""GET /metrics: the Prometheus text format, for loopback clients or the metrics token.

Loopback means the client address the app sees: the socket's peer, or behind a trusted proxy
(ZR_FORWARDED_ALLOW_IPS) the address that proxy forwards, so a request relayed by nginx from
outside is not loopback even though nginx connects from 127.0.0.1. With
ZR_FORWARDED_ALLOW_IPS=* any client could claim to be loopback: then only the token opens it.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import os
from collections.abc import Iterable

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from zerospeech_api.db.engine import Database
from zerospeech_api.deps import PublicRoute, SettingsDep
from zerospeech_api.errors import Forbidden, Unauthorized
from zerospeech_api.metrics.database import DatabaseCollector
from zerospeech_api.metrics.folder import MULTIPROCESS_ENV
from zerospeech_api.metrics.http import HttpMetrics
from zerospeech_api.settings import Settings

# A metrics file starts with the length of its used part (4 bytes, padded to 8 where the values
# begin): a shorter file is one still being created.
HEADER_BYTES = 8
NOT_LOOPBACK = "/metrics is served to loopback clients, or with ZR_METRICS_TOKEN as a bearer token"
WRONG_TOKEN = "wrong metrics token (Authorization: Bearer <ZR_METRICS_TOKEN>)"

# No caller needed: `check_access` lets in loopback clients and holders of the metrics token.
router = APIRouter(tags=["system"], route_class=PublicRoute)


class WorkerFiles:
    """prometheus-client's multiprocess collection (every worker's files, merged), minus any
    file a worker is creating at this moment.

    A worker creates its file empty and then sizes it; the library's reader fails on an empty
    file (struct.error), so a scrape that comes in between answers 500 (a CI run got one right
    after a start). Such a file holds no value yet: leaving it out loses nothing."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(self.folder, "*.db"))
        merged: Iterable[Metric] = MultiProcessCollector.merge(
            [f for f in files if _sized(f)], accumulate=True
        )
        return merged


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) >= HEADER_BYTES
    except OSError:  # gone since the listing (a dead worker's gauges)
        return False


class Metrics:
    """The app's metrics: its HTTP instruments and the registry a scrape reads."""

    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.http = HttpMetrics()
        self.registry = CollectorRegistry(auto_describe=False)
        folder = os.environ.get(MULTIPROCESS_ENV)
        if folder:  # every worker's files, this process's included
            self.registry.register(WorkerFiles(folder))
        else:  # a single process (tests, a bare uvicorn): its own instruments
            self.registry.register(self.http.requests)
            self.registry.register(self.http.duration)
        self.registry.register(DatabaseCollector(db=db, settings=settings))

    def render(self, accept: str) -> tuple[bytes, str]:
        """Every metric, read now, in the format the scraper accepts (the Prometheus text
        format 0.0.4 unless it asks for OpenMetrics), and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (a unix socket peer has no address: False)."""
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(request: Request, settings: Settings) -> None:
    """Let loopback clients and holders of the metrics token in; raise otherwise."""
    client = request.client.host if request.client else None
    if is_loopback(client) and "*" not in settings.forwarded_allow_ips:
        return
    token = settings.metrics_token.get_secret_value()
    sent = request.headers.get("authorization", "")
    scheme, _, credentials = sent.partition(" ")
    if token and scheme.lower() == "bearer":
        if hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return
    if sent:
        raise Unauthorized(WRONG_TOKEN)
    raise Forbidden(NOT_LOOPBACK)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus metrics of every server process and of the evaluation queue (loopback
    clients, or `Authorization: Bearer` with ZR_METRICS_TOKEN)."""
    check_access(request, settings)
    body, content_type = request.app.state.metrics.render(request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
