"""Regenerate the course's scoreboard: every attack against every defense, as notebook 13 builds it.

    python scripts/scoreboard.py            # writes docs/scoreboard.csv and docs/scoreboard.png
    python scripts/scoreboard.py --out /tmp # somewhere else

The grid comes from ``grokfl_helpers.scoreboard.scoreboard`` (the same function notebook 13 calls)
and the picture from ``grokfl_helpers.scoreboard.draw_scoreboard``. Both files hold aggregate numbers
only (rates, bits, accuracy, ε, seconds, megabytes): no email text and no weights.
tests/test_scoreboard.py recomputes the cells that are cheap to recompute and checks them against
the committed CSV (the cryptographic columns, the canary and the seconds are not recomputed there:
regenerate after changing them). Never edit the PNG by hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from grokfl_helpers import data, scoreboard  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for scoreboard.csv and scoreboard.png")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    corpus = data.load_enron()
    cells = scoreboard.scoreboard(corpus)
    scoreboard.write_csv(cells, args.out / "scoreboard.csv")
    scoreboard.draw_scoreboard(cells)
    plt.savefig(args.out / "scoreboard.png", dpi=110, bbox_inches="tight")
    print(f"{len(cells)} cells in {time.perf_counter() - start:.0f} s: {args.out / 'scoreboard.csv'}, "
          f"{args.out / 'scoreboard.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
