"""New Relic's Python agent (newrelic), set up as its docs say, in developer mode.

The agent wraps ``asyncpg.connect_utils._connect_addr`` and the constructor
``asyncpg.protocol.Protocol``, whose instances it proxies to trace ``bind_execute``,
``bind_execute_many``, ``bind``, ``execute``, ``query``, ``prepare`` and the COPY steps.
Developer mode (set in the config file, as its docs do; cloud detection off) gives the agent
a collector client that answers in process, so it never connects anywhere; the transaction it
records is taken from ``StatsEngine`` in memory (its database and datastore nodes and its
metric names) and compared with the real asyncpg's.
"""

from __future__ import annotations

import tempfile

_CONFIG = """\
[newrelic]
license_key = 0000000000000000000000000000000000000000
app_name = asyncpg_rs compat
developer_mode = true
log_level = error
utilization.detect_aws = false
utilization.detect_azure = false
utilization.detect_azurefunction = false
utilization.detect_azureappservice = false
utilization.detect_docker = false
utilization.detect_kubernetes = false
utilization.detect_gcp = false
utilization.detect_pcf = false
"""

import apm_workload  # noqa: E402
import newrelic.agent  # noqa: E402
from newrelic.common import system_info  # noqa: E402
from newrelic.core.database_node import DatabaseNode  # noqa: E402
from newrelic.core.datastore_node import DatastoreNode  # noqa: E402
from newrelic.core.stats_engine import StatsEngine  # noqa: E402

# The agent learns the host's address by connecting a UDP socket towards a public address
# (no packet is sent, but it is an outbound connect): give it the answer instead.
system_info._nr_cached_ip_address = ["127.0.0.1"]
with tempfile.NamedTemporaryFile("w", suffix=".ini") as config_file:
    config_file.write(_CONFIG)
    config_file.flush()
    newrelic.agent.initialize(config_file.name)
# The agent instruments a module when it is imported under asyncpg's name; with asyncpg_rs
# aliased as asyncpg after startup, nothing has imported these names yet (the real asyncpg
# imports them itself): import them once the agent is initialised.
import asyncpg.connect_utils  # noqa: E402,F401
import asyncpg.protocol  # noqa: E402,F401

application = newrelic.agent.register_application(timeout=10.0)

TRANSACTIONS = []
_record = StatsEngine.record_transaction


def _keep(self, transaction):
    TRANSACTIONS.append((self, transaction))
    return _record(self, transaction)


StatsEngine.record_transaction = _keep


def _nodes(node, out):
    if isinstance(node, DatabaseNode):
        out.append(
            {
                "kind": "database",
                "sql": apm_workload.portal_names_out(node.sql),
                "product": node.product,
                "operation": node.operation,
                "target": node.target,
                "host": node.host,
                "port": node.port_path_or_id,
                "database": node.database_name,
            }
        )
    elif isinstance(node, DatastoreNode):
        out.append(
            {
                "kind": "datastore",
                "product": node.product,
                "operation": node.operation,
                "host": node.host,
                "port": node.port_path_or_id,
                "database": node.database_name,
            }
        )
    for child in getattr(node, "children", ()):
        _nodes(child, out)
    return out


async def run(dsn):
    with newrelic.agent.BackgroundTask(application, name="apm workload"):
        seen = await apm_workload.run_workload(dsn, on_error=newrelic.agent.notice_error)
    assert len(TRANSACTIONS) == 1, TRANSACTIONS
    engine, txn = TRANSACTIONS[0]
    nodes = _nodes(txn.root, [])
    assert any(n["kind"] == "datastore" and n["operation"] == "connect" for n in nodes), nodes
    # asyncpg fails the missing table while preparing it: a PREPARE node carries it
    assert any(apm_workload.FAILING_QUERY in n.get("sql", "") for n in nodes), nodes
    errors = [(e.type, e.message) for e in txn.errors]
    assert len(errors) == 1, errors
    # "module:Class": the class's own module, asyncpg_rs.exceptions under asyncpg_rs
    module, _, cls = errors[0][0].partition(":")
    assert module in ("asyncpg.exceptions", "asyncpg_rs.exceptions"), errors
    errors = [(cls, errors[0][1])]
    metrics = sorted({m.name for m in txn.time_metrics(engine) if m.name.startswith("Datastore/")})
    assert apm_workload.outbound() == [], apm_workload.outbound()
    return {"rows": seen, "nodes": nodes, "errors": errors, "metrics": metrics}
