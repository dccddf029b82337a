"""Whole applications on the loop: aiohttp (server and client, TLS, WebSocket, streaming,
large bodies) and uvicorn serving a Starlette app to an httpx client. The same bodies run on
the stdlib loop and on ours."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import httpx
import pytest
import uvicorn
from aiohttp import web
from looptools import LOOP_TEST_MARKS
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

pytestmark = LOOP_TEST_MARKS


def aiohttp_app():
    async def hello(request):
        return web.Response(text=f"hello {request.match_info['name']}")

    async def digest(request):
        body = await request.read()
        return web.json_response({"n": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    async def stream(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(64):
            await resp.write(bytes([i]) * 16384)
        await resp.write_eof()
        return resp

    async def websocket(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.add_routes(
        [
            web.get("/hello/{name}", hello),
            web.post("/digest", digest),
            web.get("/stream", stream),
            web.get("/ws", websocket),
        ]
    )
    return app


async def exercise_aiohttp(base, client_ssl=None):
    body = os.urandom(3 * 1024 * 1024)
    connector = aiohttp.TCPConnector(ssl=client_ssl if client_ssl is not None else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}/hello/ann") as r:
            assert r.status == 200
            assert await r.text() == "hello ann"
        async with session.post(f"{base}/digest", data=body) as r:
            assert await r.json() == {"n": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        async with session.get(f"{base}/stream") as r:
            got = bytearray()
            async for chunk in r.content.iter_chunked(50000):
                got += chunk
            assert got == b"".join(bytes([i]) * 16384 for i in range(64))

        async def one(i):
            async with session.get(f"{base}/hello/{i}") as r:
                return await r.text()

        assert await asyncio.gather(*(one(i) for i in range(40))) == [
            f"hello {i}" for i in range(40)
        ]
        async with session.ws_connect(f"{base}/ws") as ws:
            await ws.send_str("abc")
            assert (await ws.receive()).data == "ABC"
            await ws.send_bytes(b"\x01\x02\x03" * 50000)
            assert (await ws.receive()).data == b"\x03\x02\x01" * 50000


async def test_aiohttp_server_and_client():
    runner = web.AppRunner(aiohttp_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await exercise_aiohttp(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def test_aiohttp_over_tls(certs):
    server_ctx, client_ctx = certs
    runner = web.AppRunner(aiohttp_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await exercise_aiohttp(f"https://localhost:{port}", client_ssl=client_ctx)
        # a client that does not trust the CA is refused, and the server keeps serving
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"https://localhost:{port}/hello/x")
        await exercise_aiohttp(f"https://localhost:{port}", client_ssl=client_ctx)
    finally:
        await runner.cleanup()


def starlette_app():
    async def home(request):
        return JSONResponse({"loop": type(asyncio.get_running_loop()).__name__})

    async def upload(request):
        body = await request.body()
        return JSONResponse({"n": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    async def chunks():
        for i in range(20):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    async def streamed(request):
        return StreamingResponse(chunks(), media_type="text/plain")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/upload", upload, methods=["POST"]),
            Route("/stream", streamed),
        ]
    )


async def test_uvicorn_serves_starlette_to_httpx():
    config = uvicorn.Config(
        starlette_app(), host="127.0.0.1", port=0, loop="none", lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    body = os.urandom(2 * 1024 * 1024)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.get("/")
            assert r.json() == {"loop": type(asyncio.get_running_loop()).__name__}
            r = await client.post("/upload", content=body)
            assert r.json() == {"n": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            r = await client.get("/stream")
            assert r.text == "".join(f"chunk {i}\n" for i in range(20))
            rs = await asyncio.gather(*(client.get("/") for _ in range(30)))
            assert [x.status_code for x in rs] == [200] * 30
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
