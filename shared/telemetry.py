"""OpenTelemetry set-up shared by every process.

Spans always get real ids (so logs and NATS headers carry a trace id); they
are exported over OTLP when an endpoint is configured, to a JSON-lines file
when a file is configured, and nowhere otherwise.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

_configured = False


class JsonLinesSpanExporter(SpanExporter):
    """Writes each finished span as one JSON line; meant for debugging and tests."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                ctx = span.get_span_context()
                parent = span.parent
                record = {
                    "name": span.name,
                    "service": span.resource.attributes.get("service.name"),
                    "trace_id": format(ctx.trace_id, "032x") if ctx else None,
                    "span_id": format(ctx.span_id, "016x") if ctx else None,
                    "parent_id": format(parent.span_id, "016x") if parent else None,
                    "kind": span.kind.name,
                    "start": span.start_time,
                    "end": span.end_time,
                    "status": span.status.status_code.name,
                    "attributes": dict(span.attributes or {}),
                }
                self._file.write(json.dumps(record, default=str) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def setup(service: str, *, otlp_endpoint: str = "", trace_file: str = "") -> TracerProvider:
    """Install the tracer provider for this process; safe to call once per process."""
    global _configured
    provider = TracerProvider(resource=Resource.create({"service.name": f"berth-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True))
        )
    if trace_file:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(trace_file)))
    if not _configured:
        trace.set_tracer_provider(provider)
        _configured = True
    return provider


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
