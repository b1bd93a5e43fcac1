"""HTTP metrics: a request counter and a latency histogram labelled by route template.

The route label is the template of the route that answered (`/submissions/{submission_id}/...`),
found from the endpoint routing left in the scope: a dict lookup per request. Requests no route
matched share one label, UNMATCHED, and unknown methods are OTHER_METHOD, so a scanner trying
random paths and verbs adds no series. Requests refused before routing (413, 423, 503, a control
character in the path) are matched against the routes afterwards, only then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.routing import iter_route_contexts
from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
OTHER_METHOD = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds; uploads of a 500 MB part may take minutes, hence the long tail.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

Observe = Callable[[float], None]


class HttpMetrics:
    """`zr_http_requests_total{method,route,status}` and `zr_http_request_duration_seconds
    {method,route}` of this process (in multiprocess mode, written to its own files)."""

    def __init__(self) -> None:
        # Not registered anywhere: the app's registry decides how they are collected.
        self.requests = Counter(
            "zr_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=None,
        )
        self.duration = Histogram(
            "zr_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route template.",
            ("method", "route"),
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        # One pair of bound children per label set: labels() takes a lock and builds tuples.
        self._children: dict[tuple[str, str, int], tuple[Observe, Observe]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)).inc,
                self.duration.labels(method, route).observe,
            )
            self._children[key] = children
        children[0](1)
        children[1](seconds)


def _template_of(route: Any) -> str:
    return str(route.path_format)


class RouteTemplates:
    """The route template of a request, from the app's routes (read once, at first use)."""

    def __init__(self, routes: Callable[[], list[BaseRoute]]) -> None:
        self._routes = routes
        self._by_endpoint: dict[Any, str | None] | None = None
        self._contexts: list[Any] = []

    def _index(self) -> dict[Any, str | None]:
        by_endpoint: dict[Any, str | None] = {}
        self._contexts = list(iter_route_contexts(self._routes()))
        for context in self._contexts:
            # Routing puts a Mount's app in the scope as its endpoint.
            endpoint = context.route.app if isinstance(context.route, Mount) else context.endpoint
            template = _template_of(context)
            # An endpoint serving two templates is told apart by matching (None).
            known = by_endpoint.get(endpoint, template)
            by_endpoint[endpoint] = template if known == template else None
        self._by_endpoint = by_endpoint
        return by_endpoint

    def of(self, scope: Scope, status: int) -> str:
        """The template of the route that answered, or UNMATCHED."""
        by_endpoint = self._by_endpoint if self._by_endpoint is not None else self._index()
        endpoint = scope.get("endpoint")
        if endpoint is not None:
            template = by_endpoint.get(endpoint, UNMATCHED)
            return template if template is not None else self._match(scope)
        if status == 404:  # routing ran and found nothing: the common case of a scanner
            return UNMATCHED
        return self._match(scope)

    def _match(self, scope: Scope) -> str:
        partial = UNMATCHED
        for context in self._contexts:
            match, _ = context.matches(scope)
            if match is Match.FULL:
                return _template_of(context)
            if match is Match.PARTIAL and partial == UNMATCHED:
                partial = _template_of(context)
        return partial


class MetricsMiddleware:
    """Outermost: times every HTTP request and counts it by method, route template and status
    (a request that raised before answering counts as 500; one the client abandoned before any
    answer is not counted)."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, templates: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            status = status or 500
            raise
        finally:
            if status:
                method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
                route = self.templates.of(scope, status)
                self.metrics.observe(method, route, status, time.perf_counter() - started)
