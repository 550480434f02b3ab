"""The baselines: the stack's own limit and a bare Starlette endpoint, both parsing the JSON body
with msgspec and answering 204.

`--app raw`: a plain ASGI callable (no framework): reads the body, decodes it, answers 204. What
uvicorn + httptools + uvloop + msgspec cost per request: nothing ingestion does can be cheaper.
`--app starlette` (the default): the same behind Starlette's router, Request and Response.
Served exactly like the edge (uvicorn, httptools, uvloop when installed, no access log).
    python bench/bare_app.py --port 9000 [--app raw]
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Body(msgspec.Struct):
    batch: list[dict[str, Any]]
    pipeline_key: str | None = None


decoder = msgspec.json.Decoder(Body)
_NO_CONTENT = {"type": "http.response.start", "status": 204, "headers": []}
_BAD_REQUEST = {"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"0")]}
_EMPTY = {"type": "http.response.body", "body": b""}


async def ingest(request: Request) -> Response:
    decoder.decode(await request.body())
    return Response(status_code=204)


async def raw(scope, receive, send) -> None:
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    try:
        decoder.decode(body)
    except msgspec.DecodeError:  # (wait_http's GET, with no body)
        await send(_BAD_REQUEST)
    else:
        await send(_NO_CONTENT)
    await send(_EMPTY)


app = Starlette(routes=[Route("/v1/batch", ingest, methods=["POST"])])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", choices=("starlette", "raw"), default="starlette")
    args = parser.parse_args()
    uvicorn.run(raw if args.app == "raw" else app, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, lifespan="off", server_header=False, http="httptools")
