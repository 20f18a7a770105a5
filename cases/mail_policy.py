"""The email policy the pipeline parses with: `email.policy.default`, minus a memory leak.

The standard library's HeaderRegistry builds a new class for every header it parses. Each class
is a reference cycle, freed only by a full garbage collection, which Python runs more rarely as
a worker's heap grows: parsing thousands of messages grew a worker by tens of megabytes
(bench/ingest.py). The class depends only on which registry entry the header name picks, so one
per entry is enough; building it once also makes header parsing faster.
"""

from __future__ import annotations

import email.policy
from email.headerregistry import HeaderRegistry


class _OneClassPerKind(HeaderRegistry):
    def __init__(self) -> None:
        super().__init__()
        self._built: dict[type, type] = {}

    def __getitem__(self, name: str) -> type:
        kind = self.registry.get(name.lower(), self.default_class)
        built = self._built.get(kind)
        if built is None:
            built = self._built[kind] = super().__getitem__(name)
        return built


POLICY = email.policy.default.clone(header_factory=_OneClassPerKind())
