"""Serve's statistics as a Prometheus text endpoint (prometheus-client), from the
same counters GetStats returns. Off unless COOKLINE_SERVE_METRICS_ADDR is set."""

from __future__ import annotations

from prometheus_client import start_http_server
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)

from cookline import config
from services.serve.models import ModelManager
from services.serve.streaming import ActiveStreams

# Upper bounds (rows) of the batch-size histogram's buckets.
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536]


class ServeCollector:
    """Renders ModelManager.all_stats() as Prometheus metric families on every scrape."""

    def __init__(self, models: ModelManager, streams: ActiveStreams):
        self.models, self.streams = models, streams

    def collect(self):
        labels = ["model", "version"]
        requests = CounterMetricFamily("cookline_serve_requests", "Requests that reached the batcher", labels=labels)
        failed = CounterMetricFamily("cookline_serve_failed_requests", "Requests answered with an error", labels=labels)
        rows = CounterMetricFamily("cookline_serve_rows", "Rows predicted", labels=labels)
        ready = GaugeMetricFamily(
            "cookline_serve_model_ready", "1 while the version is loaded and answering", labels=labels
        )
        batch = HistogramMetricFamily("cookline_serve_batch_size_rows", "Rows per model call", labels=labels)
        delay = SummaryMetricFamily(
            "cookline_serve_queue_delay_ms", "Queue delay p50/p90/p99 over the last 10,000 requests, ms", labels=labels
        )
        latency = SummaryMetricFamily(
            "cookline_serve_latency_ms",
            "Latency (enqueue to result) p50/p90/p99 over the last 10,000 requests, ms",
            labels=labels,
        )
        for stats in self.models.all_stats():
            key = [stats.model.name, str(stats.model.version)]
            requests.add_metric(key, stats.requests)
            failed.add_metric(key, stats.failed_requests)
            rows.add_metric(key, stats.rows)
            ready.add_metric(key, 1 if stats.ready else 0)
            sizes = dict(stats.batch_size_counts)
            buckets = [(str(bound), sum(n for size, n in sizes.items() if size <= bound)) for bound in BATCH_BUCKETS]
            batch.add_metric(key, buckets + [("+Inf", stats.batches)], sum_value=stats.rows)
            for family, p in ((delay, stats.queue_delay_ms), (latency, stats.latency_ms)):
                family.add_sample(family.name + "_count", dict(zip(labels, key, strict=True)), stats.requests)
                for quantile, value in (("0.5", p.p50), ("0.9", p.p90), ("0.99", p.p99)):
                    family.add_sample(family.name, dict(zip(labels, key, strict=True), quantile=quantile), value)
        streams = GaugeMetricFamily("cookline_serve_active_streams", "Prediction streams open now")
        streams.add_metric([], self.streams.count)
        yield from (requests, failed, rows, ready, batch, delay, latency, streams)


def start(models: ModelManager, streams: ActiveStreams) -> tuple[str, int] | None:
    """Starts the endpoint (GET /metrics) when configured; returns where it listens."""
    address = config.serve_metrics_address()
    if address is None:
        return None
    registry = CollectorRegistry()
    registry.register(ServeCollector(models, streams))
    start_http_server(address[1], addr=address[0], registry=registry)
    return address
