"""`GET /healthz` on both ports: 200 when the store works, 503 with the reason when it does not
(a load balancer then sends traffic to another node)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from starlette.responses import Response

from collector.services import StorageProblem


class Health(msgspec.Struct, omit_defaults=True):
    ok: bool
    status: str  # ok | degraded
    reason: str | None = None
    since: str | None = None
    queue_depth: int | None = None


def health_response(problem: StorageProblem | None, queue_depth: int | None = None) -> Response:
    if problem is None:
        body = Health(True, "ok", queue_depth=queue_depth)
    else:
        since = datetime.fromtimestamp(problem.since, UTC).isoformat(timespec="seconds")
        body = Health(False, "degraded", f"storage: {problem.reason}", since, queue_depth)
    return Response(msgspec.json.encode(body), 200 if problem is None else 503, media_type="application/json")
