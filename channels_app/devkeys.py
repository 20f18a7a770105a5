"""Development keys: generated once into var/ so a laptop needs no environment.

Only used while DEBUG is on; production refuses to start without real keys (see settings).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet


def new_secret_key() -> str:
    return secrets.token_urlsafe(50)


def new_fernet_key() -> str:
    return Fernet.generate_key().decode()


def load_or_create(path: Path, make: Callable[[], str]) -> str:
    """Read the key at `path`, or write a new one there (mode 0600) and say so once."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    # Write a private temp file, then hard-link it into place: the key appears whole or not
    # at all, and a second process (worker, beat) racing us keeps the first one written.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        tmp.unlink()
    print(f"Postroom: generated a development key in {path}", file=sys.stderr)
    return value
