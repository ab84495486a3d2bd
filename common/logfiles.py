"""Log files that do not grow without end: rotated by size (``--log-max-bytes``, keeping
``--log-keep`` old ones), or reopened on SIGHUP after logrotate has moved them away."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
from pathlib import Path
from typing import Any

DEFAULT_KEEP = 5


def _at_least(least: int) -> Any:
    def check(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}")
        return value
    return check


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-max-bytes", type=_at_least(0), default=0, metavar="BYTES",
                        help="rotate the log file when it reaches BYTES (default 0: never; "
                        "SIGHUP reopens it, for logrotate)")
    parser.add_argument("--log-keep", type=_at_least(1), default=DEFAULT_KEEP, metavar="N",
                        help=f"rotated log files kept (default {DEFAULT_KEEP})")


def log_file_handler(path: Path, max_bytes: int, keep: int) -> logging.FileHandler:
    if max_bytes > 0:
        return logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes,
                                                    backupCount=max(keep, 1))
    return logging.FileHandler(path)


def reopen_log_files(logger: logging.Logger) -> list[str]:
    """Reopen every log file of ``logger``: after logrotate renamed one, writing goes on
    into a new file under the old name. Returns the files reopened."""
    reopened = []
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()
            reopened.append(handler.baseFilename)
    return reopened
