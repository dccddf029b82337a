"""Sentry's AsyncPGIntegration (sentry-sdk), set up as its docs say, events kept in memory.

The integration wraps ``Connection.execute/_execute/_executemany/prepare``,
``cursor.BaseCursor._bind_exec/_exec`` and ``connect_utils._connect_addr``; the spans of one
transaction around the workload, and the error event for the failing query, are what is
compared with the real asyncpg's.
"""

from __future__ import annotations

import apm_workload
import sentry_sdk
from sentry_sdk.integrations.asyncpg import AsyncPGIntegration
from sentry_sdk.transport import Transport

ENVELOPES = []


class MemoryTransport(Transport):
    """Keeps envelopes in this process: nothing is sent anywhere."""

    def capture_envelope(self, envelope):
        ENVELOPES.append(envelope)

    def flush(self, timeout, callback=None):
        return None


sentry_sdk.init(
    # a DSN is needed for the client to record at all; the transport below never uses it
    dsn="http://public@127.0.0.1:9/1",
    transport=MemoryTransport,
    traces_sample_rate=1.0,
    default_integrations=False,
    auto_enabling_integrations=False,
    integrations=[AsyncPGIntegration()],
)

_DATA_KEYS = ("db.system", "db.name", "db.user", "db.driver.name", "server.address", "server.port")


def _span(span):
    data = span.get("data", {})
    return {
        "op": span.get("op"),
        "description": span.get("description"),
        "status": span.get("status"),
        "origin": span.get("origin"),
        "data": {k: data.get(k) for k in _DATA_KEYS if k in data},
    }


async def run(dsn):
    with sentry_sdk.start_transaction(op="task", name="apm workload"):
        seen = await apm_workload.run_workload(dsn, on_error=sentry_sdk.capture_exception)
    sentry_sdk.flush()
    events = [item.payload.json for env in ENVELOPES for item in env.items if item.payload.json]
    transactions = [e for e in events if e.get("type") == "transaction"]
    errors = [e for e in events if e.get("exception")]
    assert len(transactions) == 1, [e.get("type") for e in events]
    spans = [_span(s) for s in transactions[0]["spans"]]
    assert any(s["description"] == apm_workload.FAILING_QUERY for s in spans), spans
    assert any(s["description"] == "connect" for s in spans), spans
    assert len(errors) == 1, errors
    exc = errors[0]["exception"]["values"][-1]
    assert apm_workload.outbound() == [], apm_workload.outbound()
    return {
        "rows": seen,
        "spans": spans,
        "error": [exc["type"], exc["value"]],
    }
