"""Baseline: how fast the standard library parses the real-mail corpus, with no database.

Later benchmarks (ingest, cases) set their figures beside this one.
"""

from __future__ import annotations

import email
import email.policy
import os
import resource
import time
from pathlib import Path

CORPUS = Path(
    os.environ.get("POSTROOM_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)


def _walk_message(message: email.message.EmailMessage) -> int:
    """Touch what the pipeline will touch: headers and every decoded part."""
    touched = len(str(message.get("subject", ""))) + len(str(message.get("from", "")))
    for part in message.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            touched += len(payload)
    return touched


def main() -> None:
    files = [p for p in sorted((CORPUS / "real").rglob("*")) if p.is_file()]
    if not files:
        print(f"no corpus at {CORPUS}; set POSTROOM_CORPUS")
        return
    raw = [p.read_bytes() for p in files]
    total_bytes = sum(map(len, raw))
    started = time.perf_counter()
    for data in raw:
        message = email.message_from_bytes(data, policy=email.policy.default)
        _walk_message(message)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"messages          {len(raw)}")
    print(f"bytes             {total_bytes / 1e6:.1f} MB")
    rate, throughput = len(raw) / elapsed, total_bytes / 1e6 / elapsed
    print(f"parse+walk        {rate:.0f} messages/s, {throughput:.1f} MB/s")
    print(f"peak RSS          {peak_mb:.0f} MB")
