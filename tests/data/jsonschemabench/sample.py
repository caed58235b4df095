"""Rebuild schemas.jsonl: a seeded sample of JSONSchemaBench's schemas (see README.md).

    git clone https://github.com/guidance-ai/jsonschemabench /tmp/jsonschemabench
    python tests/data/jsonschemabench/sample.py /tmp/jsonschemabench/data
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

PER_CATEGORY = 8
MAX_BYTES = 6000  # keeps the sample small; Github_ultra has no schema this small
MAX_BYTES_ULTRA = 40000
SEED = 22


def main(data_dir: Path) -> None:
    rng = random.Random(SEED)
    rows = []
    for category in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        limit = MAX_BYTES_ULTRA if category.name == "Github_ultra" else MAX_BYTES
        files = sorted(f for f in category.glob("*.json") if f.stat().st_size <= limit)
        for path in sorted(rng.sample(files, PER_CATEGORY)):
            schema = json.loads(path.read_text(encoding="utf-8"))
            rows.append({"id": f"{category.name}/{path.stem}", "schema": schema})
    out = Path(__file__).with_name("schemas.jsonl")
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(rows)} schemas -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
