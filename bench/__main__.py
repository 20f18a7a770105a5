"""Run every benchmark in bench/ (or those named: `python -m bench parse`)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["parse"]


def main(names: list[str]) -> None:
    for name in names or BENCHMARKS:
        print(f"== bench/{name}.py")
        importlib.import_module(f"bench.{name}").main()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
