"""A gunicorn worker class that serves an ASGI app with uvicorn on asyncpg_rs's loop.

    gunicorn -k asyncpg_rs.uvicorn_worker.UvicornWorker app:app

It is the ``uvicorn-worker`` package's worker (installed separately) with uvicorn's ``loop``
setting pointed at :func:`asyncpg_rs.new_event_loop`, which uvicorn takes as the loop factory
for each worker process; everything else (``http``, TLS, timeouts from gunicorn's settings)
is that worker's.
"""

from __future__ import annotations

from uvicorn_worker import UvicornWorker as _UvicornWorker

__all__ = ("UvicornWorker",)


class UvicornWorker(_UvicornWorker):
    CONFIG_KWARGS = {**_UvicornWorker.CONFIG_KWARGS, "loop": "asyncpg_rs:new_event_loop"}
