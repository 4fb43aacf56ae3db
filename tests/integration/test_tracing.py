"""One request is one trace across processes; logs carry the trace id."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from opentelemetry import trace

from shared import context, logs, telemetry
from shared.proxy.content import ContentProxy
from shared.rpc.sync_client import channel
from tests.conformance.content import put
from tests.harness import running_suite, short_tempdir, wait_until


def test_a_write_through_the_gateway_is_one_trace_from_client_to_bus() -> None:
    telemetry.setup("test")
    spans_dir = short_tempdir("berth-spans-")
    spans_file = spans_dir / "spans.jsonl"
    with running_suite(env={"BERTH_TRACING__FILE": str(spans_file)}) as suite:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("test-root") as root, context.using(namespace="traced"):
            trace_id = format(root.get_span_context().trace_id, "032x")
            put(ContentProxy(channel(suite.address)), b"traced bytes")

        def spans_of_trace() -> list[dict[str, object]]:
            if not spans_file.exists():
                return []
            lines = spans_file.read_text().splitlines()
            return [s for s in map(json.loads, lines) if s["trace_id"] == trace_id]

        def complete() -> bool:
            names = {(s["service"], s["name"]) for s in spans_of_trace()}
            return {
                ("berth-content", "containerd.services.content.v1.Content/Write"),
                ("berth-content", "publish /content/create"),
            } <= names

        wait_until(complete, 20, what="the content service's spans in the trace")
        server = next(s for s in spans_of_trace() if s["kind"] == "SERVER")
        assert server["parent_id"] is not None  # a child of the client's span, not a new root
    Path(spans_file).unlink(missing_ok=True)
    spans_dir.rmdir()


def test_log_lines_are_json_with_the_trace_id() -> None:
    telemetry.setup("test")
    stream = io.StringIO()
    logs.setup("unit", stream=stream)
    try:
        with trace.get_tracer("test").start_as_current_span("logged") as span:
            logging.getLogger("berth.test").info("inside", extra={"ref": "abc"})
        entry = json.loads(stream.getvalue().splitlines()[-1])
        assert entry["msg"] == "inside"
        assert entry["service"] == "unit"
        assert entry["ref"] == "abc"
        assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    finally:
        logging.getLogger().handlers.clear()
