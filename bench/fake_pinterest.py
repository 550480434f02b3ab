"""The Pinterest sandbox as its own process (schema validation on), for benchmarks.

    python bench/fake_pinterest.py --port 9100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402

from delivery.pinterest.sandbox import Sandbox  # noqa: E402

class Discard(list):
    def append(self, item) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sandbox = Sandbox(accept_any_token=True)
    sandbox.state.received = Discard()  # a long run would otherwise keep every event in memory
    uvicorn.run(sandbox, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")
