"""Serve ``app:app`` through a server's Python API on asyncpg_rs's loop (what the README and
docs/guide.md show), for the server tests:

    python serve_programmatic.py uvicorn-config <port>   # uvicorn.Config(loop=new_event_loop)
    python serve_programmatic.py hypercorn <port>        # hypercorn.asyncio.serve in asyncpg_rs.run
"""

from __future__ import annotations

import sys


def main():
    how, port = sys.argv[1], int(sys.argv[2])
    if how == "uvicorn-config":
        import uvicorn

        import asyncpg_rs

        config = uvicorn.Config(
            "app:app", host="127.0.0.1", port=port, loop=asyncpg_rs.new_event_loop
        )
        uvicorn.Server(config).run()
    elif how == "hypercorn":
        from app import app
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        import asyncpg_rs

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        # serve() stops on SIGINT/SIGTERM by itself (loop.add_signal_handler)
        asyncpg_rs.run(serve(app, config))
    else:
        raise SystemExit(f"unknown way to serve: {how}")


if __name__ == "__main__":
    main()
