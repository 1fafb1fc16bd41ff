"""Request counts and latencies per route, and the registry that /metrics exposes."""

import os
import time

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import Database
from app.services.metrics import DatabaseCollector

UNMATCHED = "unmatched"
OTHER_METHOD = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LABELS = ("route", "method", "status")


class RequestMetrics:
    """Counts every HTTP request and times it to the end of its response, labelled by the
    template of the route that matched (``/api/v1/runs/{run_id}``), the method and the status.

    Labels are kept to a known set, because each new value is a new series kept forever: a path
    that matches no route counts as ``unmatched`` and a method outside the standard ones as
    ``other``, so that hostile URLs cannot grow the series without bound.
    """

    def __init__(
        self, app: ASGIApp, application: FastAPI, requests: Counter, latency: Histogram
    ) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        # Starlette builds the middleware at the first request (or the lifespan), once every
        # route is in place. FastAPI leaves the route it matched in the scope as it was declared
        # (without the prefix it was included under); a mount leaves only the app it hands
        # over to, as the endpoint. Both lead to the full template here.
        self.templates: dict[int, str] = {}
        for context in iter_route_contexts(application.routes):
            route = context.original_route
            template = context.path_format or UNMATCHED
            self.templates[id(route)] = template
            if isinstance(route, Mount):
                self.templates[id(route.app)] = template

    def route_of(self, scope: Scope) -> str:
        matched = scope.get("route", scope.get("endpoint"))
        return UNMATCHED if matched is None else self.templates.get(id(matched), UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers for an error that escapes every handler

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            labels = (self.route_of(scope), method, str(status))
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI, db: Database) -> None:
    """Count the app's requests and keep the registry /metrics exposes on ``app.state.metrics``.

    The registry is the app's own, not prometheus_client's global one, so apps made side by side
    in one process (the tests) count apart. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
    server processes), prometheus_client keeps the request counts in files there and the
    registry adds up every process's; the database's figures are the same from any process.
    Added after the app's other middleware, so outermost: it counts the answers they give too.
    """
    registry = CollectorRegistry()
    shared = "PROMETHEUS_MULTIPROC_DIR" in os.environ
    if shared:
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    own = None if shared else registry
    requests = Counter(
        "advisor_http_requests", "HTTP requests answered, by route template.", LABELS, registry=own
    )
    latency = Histogram(
        "advisor_http_request_duration_seconds",
        "Time to answer an HTTP request, to the end of the response body, by route template.",
        LABELS,
        registry=own,
    )
    registry.register(DatabaseCollector(db))
    app.state.metrics = registry
    app.add_middleware(RequestMetrics, application=app, requests=requests, latency=latency)
