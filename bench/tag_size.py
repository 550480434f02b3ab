"""Size of the browser tag as served: raw, gzip (what the edge sends) and brotli.

    .venv/bin/python bench/tag_size.py
"""

from __future__ import annotations

import gzip
from pathlib import Path

TAG = Path(__file__).resolve().parent.parent / "static" / "datafly.js"
TARGET, CEILING = 2048, 4096


def sizes() -> dict[str, int]:
    raw = TAG.read_bytes()
    out = {"raw": len(raw), "gzip -9": len(gzip.compress(raw, 9, mtime=0))}
    try:
        import brotli

        out["brotli 11"] = len(brotli.compress(raw, quality=11))
    except ImportError:
        out["brotli 11"] = -1  # pip install brotli (the bench extra)
    return out


def main() -> None:
    result = sizes()
    print(f"{'tag':<12}{'bytes':>8}")
    for name, size in result.items():
        print(f"{name:<12}{size:>8}" + ("  (brotli not installed)" if size < 0 else ""))
    gz = result["gzip -9"]
    verdict = "under the 2 KB target" if gz < TARGET else ("under the 4 KB ceiling" if gz < CEILING else "OVER the 4 KB ceiling")
    print(f"gzip: {gz} bytes, {verdict}")


if __name__ == "__main__":
    main()
