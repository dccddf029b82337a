"""Datadog's ddtrace asyncpg integration, set up as its docs say (``patch(asyncpg=True)``).

ddtrace wraps ``asyncpg.connect`` and the methods of ``asyncpg.protocol.Protocol``
(``bind_execute``, ``bind_execute_many``, ``query``, ``execute``). The finished traces are
taken by a trace filter, the documented hook, which keeps them in memory and drops them, so
the agent writer never has anything to send; telemetry and remote configuration are off.
"""

from __future__ import annotations

import os

os.environ.update(
    DD_INSTRUMENTATION_TELEMETRY_ENABLED="false",
    DD_REMOTE_CONFIGURATION_ENABLED="false",
    DD_TRACE_STARTUP_LOGS="false",
    DD_CRASHTRACKING_ENABLED="false",
    DD_DATA_STREAMS_ENABLED="false",
    # were anything flushed, it would go to a closed loopback port, never off this machine
    DD_TRACE_AGENT_URL="http://127.0.0.1:9",
    DD_DOGSTATSD_URL="udp://127.0.0.1:9",
)

import apm_workload  # noqa: E402
from ddtrace import patch  # noqa: E402
from ddtrace.trace import TraceFilter, tracer  # noqa: E402

patch(asyncpg=True)

SPANS = []


class KeepInMemory(TraceFilter):
    def process_trace(self, trace):
        SPANS.extend(trace)
        return None  # dropped: nothing reaches the writer


tracer.configure(trace_processors=[KeepInMemory()])

_TAGS = ("component", "db.system", "db.user", "db.name", "span.kind", "out.host", "server.address")


def _span(span):
    return {
        "name": span.name,
        "resource": apm_workload.portal_names_out(span.resource),
        "service": span.service,
        "span_type": span.span_type,
        "error": span.error,
        "error.type": span.get_tag("error.type"),
        "tags": {k: span.get_tag(k) for k in _TAGS},
        "port": span.get_metric("network.destination.port")
        or span.get_tag("network.destination.port"),
    }


async def run(dsn):
    with tracer.trace("apm.workload"):
        seen = await apm_workload.run_workload(dsn)
    tracer.flush()
    spans = [_span(s) for s in sorted(SPANS, key=lambda s: s.start_ns) if s.name != "apm.workload"]
    # asyncpg fails the missing table while preparing, a step ddtrace does not trace: the
    # failing query has no span of its own, with either driver
    assert not any(s["resource"] == apm_workload.FAILING_QUERY for s in spans), spans
    assert any(s["name"] == "postgres.connect" for s in spans), spans
    assert apm_workload.outbound() == [], apm_workload.outbound()
    return {"rows": seen, "spans": spans}
