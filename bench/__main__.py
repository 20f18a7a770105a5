"""Run every benchmark in bench/ (or those named: `python -m bench parse`).

Options after the names go to those benchmarks: `python -m bench ingest --n 500`.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    *["parse", "ingest", "first_sync", "idle", "cases", "case_list"],
    "polling_scale",  # 2,000 idle channels, 2 worker processes, PostgreSQL and Redis
    "import_50k",  # a 50,000-message first import while new mail arrives
    "admin_list",  # the admin's channel list with 2,000 channels on PostgreSQL
]


def main(args: list[str]) -> None:
    split = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    names, options = args[:split], args[split:]
    for name in names or BENCHMARKS:
        print(f"== bench/{name}.py")
        run = importlib.import_module(f"bench.{name}").main
        if options:
            run(options)
        else:
            run()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
