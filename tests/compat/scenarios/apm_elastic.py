"""Elastic APM's Python agent (elastic-apm), set up as its docs say for a plain program.

``elasticapm.instrument()`` wraps the methods of ``asyncpg.protocol.protocol.Protocol``
(``bind_execute``, ``bind_execute_many``, ``bind``, ``execute``, ``query``, ``copy_in``,
``copy_out``). The client's ``transport_class`` is the in-memory one below, which keeps the
events it is handed; central configuration, cloud metadata and metrics are off, so the agent
has no reason to reach an APM server, and the server URL is a closed loopback port anyway.
"""

from __future__ import annotations

import apm_workload
import elasticapm
from elasticapm.transport.base import Transport

EVENTS = []


class MemoryTransport(Transport):
    """Keeps events in this process: nothing is sent anywhere."""

    def queue(self, event_type, data, flush=False):
        EVENTS.append((event_type, data))

    def flush(self):
        pass

    def close(self):
        pass


client = elasticapm.Client(
    service_name="asyncpg-rs-compat",
    server_url="http://127.0.0.1:9",
    transport_class=f"{__name__}.MemoryTransport",
    central_config=False,
    cloud_provider="none",
    metrics_interval="0ms",
    # every span on its own, so that duplicates or gaps show
    span_compression_enabled=False,
    exit_span_min_duration="0ms",
    verify_server_cert=False,
)
elasticapm.instrument()


def _span(span):
    context = span.get("context", {})
    return {
        "name": apm_workload.portal_names_out(span["name"]),
        "type": span["type"],
        "subtype": span.get("subtype"),
        "action": span.get("action"),
        "outcome": span.get("outcome"),
        "statement": apm_workload.portal_names_out(context.get("db", {}).get("statement", "")),
        "db_type": context.get("db", {}).get("type"),
        "destination": context.get("destination"),
    }


async def run(dsn):
    client.begin_transaction("script")
    seen = await apm_workload.run_workload(dsn, on_error=lambda e: client.capture_exception())
    client.end_transaction("apm workload", "success")
    client.close()
    finished = [d for kind, d in EVENTS if kind == "span"]
    spans = [_span(d) for d in sorted(finished, key=lambda d: d["timestamp"])]
    errors = [d["exception"] for kind, d in EVENTS if kind == "error"]
    assert [kind for kind, _ in EVENTS].count("transaction") == 1, EVENTS
    assert len(errors) == 1, errors
    assert apm_workload.outbound() == [], apm_workload.outbound()
    return {
        "rows": seen,
        "spans": spans,
        "errors": [[e["type"], e["message"]] for e in errors],
    }
