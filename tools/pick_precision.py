"""How often a generator's picks are right, by how sure it was: precision per score bucket.

Reads a run directory's committed synthetic rows (`synthetic/raw`, or `--variant filtered`) and
the held-out target items of the cold-start **validation** users (test users are never read, as in
the generate stage's quality table), and prints, for each score threshold, how many picks and
users would be kept and the share of kept picks that are held-out items: the measure behind
"as many rows per user as the backend is sure of" (`filter.steps: [{name: min_score, threshold: T}]`).

    python tools/pick_precision.py runs/fk-cooc15/cooccurrence --thresholds 0,0.7,1.4,2.4,3.4
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from mdrec.generate.quality import validation_pick_hits
from mdrec.storage import resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--variant", default="raw", choices=["raw", "filtered"])
    parser.add_argument("--thresholds", default="", help="Comma-separated score thresholds (default: score quantiles).")
    args = parser.parse_args()
    run = resolve(args.run_dir)
    rows = validation_pick_hits(run.join("synthetic", args.variant), run.join("prepared"))
    thresholds = ([float(t) for t in args.thresholds.split(",")] if args.thresholds
                  else sorted(set(np.quantile(rows["score"], [0, 0.25, 0.5, 0.75, 0.9]).round(4))))
    out = []
    for t in thresholds:
        kept = rows[rows["score"] >= t]
        out.append({"threshold": t, "picks": len(kept), "share": round(len(kept) / max(len(rows), 1), 3),
                    "users": int(kept["user_idx"].nunique()),
                    "precision": round(float(kept["hit"].mean()), 4) if len(kept) else None})
    print(json.dumps({"run_dir": args.run_dir, "variant": args.variant, "validation_users": int(rows["user_idx"].nunique()),
                      "by_threshold": out}))


if __name__ == "__main__":
    main()
