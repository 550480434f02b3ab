"""The baseline: a bare Starlette endpoint that parses a JSON body with msgspec and answers 204.

Served exactly like the edge (uvicorn, httptools, uvloop when installed, no access log).
    python bench/bare_app.py --port 9000
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


async def ingest(request: Request) -> Response:
    decoder.decode(await request.body())
    return Response(status_code=204)


app = Starlette(routes=[Route("/v1/batch", ingest, methods=["POST"])])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off",
                server_header=False)
