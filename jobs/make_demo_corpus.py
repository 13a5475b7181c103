"""Write the built-in demo corpus: synthetic speech-like clips with RAVDESS-style names.

Usage::

    python -m jobs.make_demo_corpus --output demo-output/corpus [--actors 8]
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ser_udfs.synthetic.speech import write_demo_corpus


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--output", required=True, help="folder to write Actor_XX/*.wav into")
    parser.add_argument("--actors", type=int, default=8, help="number of actors (1-24)")
    args = parser.parse_args(argv)
    paths = write_demo_corpus(args.output, n_actors=args.actors)
    print(f"wrote {len(paths)} clips to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
