"""The Pinterest sandbox as its own process (schema validation on), for benchmarks.

`--lean`: answers every events request as Pinterest does (200, each event processed) without
reading more than the number of events: for a benchmark that measures the edge beside a drain
(bench/tail.py), where the sandbox's schema check would load the load generator's core.

    python bench/fake_pinterest.py --port 9100 [--lean]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402
import uvicorn  # noqa: E402

from delivery.pinterest.sandbox import Sandbox  # noqa: E402


class Discard(list):
    def append(self, item) -> None:
        pass


class _Events(msgspec.Struct):
    data: list[msgspec.Raw]


_count = msgspec.json.Decoder(_Events)
_PROCESSED = b'{"status":"processed"}'
_NOT_FOUND = b'{"code":404,"message":"not found"}'


async def lean(scope, receive, send) -> None:
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    status, answer = 404, _NOT_FOUND
    if scope["method"] == "POST" and scope["path"].endswith("/events"):
        n = len(_count.decode(body).data)
        status, answer = 200, b'{"num_events_received":%d,"num_events_processed":%d,"events":[%s]}' % (
            n, n, b",".join([_PROCESSED] * n))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lean", action="store_true")
    args = parser.parse_args()
    app = lean
    if not args.lean:
        app = Sandbox(accept_any_token=True)
        app.state.received = Discard()  # a long run would otherwise keep every event in memory
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")
