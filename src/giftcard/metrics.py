"""Prometheus metrics. With several worker processes, each writes to a shared folder
(PROMETHEUS_MULTIPROC_DIR, set by `giftcard serve`) and /metrics adds them up."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REDEMPTIONS = Counter("giftcard_redemptions_total", "Redemption attempts by outcome", ["outcome"])
REQUESTS = Histogram(
    "giftcard_http_request_duration_seconds",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
