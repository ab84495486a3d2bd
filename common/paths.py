"""Path options made absolute before a program changes folder, so ``--tls-cert pki/c.crt``
means what the operator typed, whatever folder the program works in later."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def absolute_path_options(args: argparse.Namespace, base: Path | None = None) -> None:
    """Make every ``Path`` option in ``args`` absolute against ``base`` (default: the
    folder the program was started in), in place. A leading ``~`` is the user's home."""
    start = base or Path.cwd()
    for name, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, name, Path(os.path.normpath(start / value.expanduser())))
