"""Prometheus metrics. With several worker processes, each writes to a shared folder
(PROMETHEUS_MULTIPROC_DIR, set by `giftcard serve`) and /metrics adds them up."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
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

# Group commit on PostgreSQL: how many requests one transaction settled, by use case
# (`redemptions`, `payments`); requests left to run alone are not counted here.
GROUP_COMMITS = Histogram(
    "giftcard_group_commit_size",
    "Requests settled together by one transaction, by use case",
    ["use_case"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
# Every attempt to deliver an email, by its kind and how it ended: `sent`, `retried`
# (refused or unreachable, to be tried again) or `failed` (given up). Counted by the
# process that sent it: `giftcard serve`'s own senders appear in its /metrics.
EMAILS = Counter(
    "giftcard_emails_total", "Email delivery attempts by kind and outcome", ["kind", "outcome"]
)
# The outbox as a whole, whichever process sends: messages waiting (due or scheduled
# later) and messages given up. Counted in the database by each running sender every
# EMAIL_GAUGES_INTERVAL_S; with several processes, the most recent count is shown.
EMAILS_PENDING = Gauge(
    "giftcard_emails_pending",
    "Emails waiting to be sent, due now or scheduled",
    multiprocess_mode="mostrecent",
)
EMAILS_FAILED = Gauge(
    "giftcard_emails_failed",
    "Emails given up after their last attempt",
    multiprocess_mode="mostrecent",
)
EMAIL_GAUGES_INTERVAL_S = 15


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
