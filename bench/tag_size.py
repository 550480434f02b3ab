"""Size of the browser tag as served: raw, gzip (what the edge sends) and brotli; the plain tag
(/d.js) and a source's own (with its settings and the default event mapping for the pintrk bridge).

    .venv/bin/python bench/tag_size.py
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.edge.tag import TagFile  # noqa: E402
from delivery.pinterest.mapping import Options  # noqa: E402
from delivery.pinterest.tag_events import tag_mapping  # noqa: E402

TARGET, CEILING = 2560, 4096  # 2.5 KB gzipped (issue 25); never over 4 KB


def served() -> dict[str, bytes]:
    tag = TagFile(str(ROOT / "static"))
    config = msgspec.json.encode({"e": "w8r2p4nz", "m": tag_mapping(Options(), {}), "b": 1, "c": 1})
    return {"plain tag": tag.plain.raw, "a source's tag": tag.with_config(config).raw}


def sizes(raw: bytes) -> dict[str, int]:
    out = {"raw": len(raw), "gzip -9": len(gzip.compress(raw, 9, mtime=0))}
    try:
        import brotli

        out["brotli 11"] = len(brotli.compress(raw, quality=11))
    except ImportError:
        out["brotli 11"] = -1  # pip install brotli (the bench extra)
    return out


def main() -> None:
    print(f"{'tag':<16}{'raw':>8}{'gzip -9':>9}{'brotli 11':>11}")
    for name, raw in served().items():
        result = sizes(raw)
        gz = result["gzip -9"]
        verdict = (f"at most the {TARGET} B target" if gz <= TARGET else
                   f"under the {CEILING} B ceiling" if gz < CEILING else f"OVER the {CEILING} B ceiling")
        print(f"{name:<16}{result['raw']:>8}{gz:>9}{result['brotli 11']:>11}  {verdict}")


if __name__ == "__main__":
    main()
