"""Text from a peer, made safe to show: control characters are escaped, never sent raw.

A node (or a process on it) can send any bytes: terminal escape sequences could rewrite
the operator's screen, a carriage return could hide a line, a newline could forge a log
entry. Everything shown on the console or written to a log that came from a peer passes
through here. Newlines and tabs in multi-line output (``run``, ``log``) are kept where the
caller says so.
"""

from __future__ import annotations

import logging
import re

# Besides the C0 and C1 controls: the line and paragraph separators (a new line to some
# log viewers), and the invisible format characters that reorder or hide text (bidi
# embeddings, overrides and isolates, zero-width spaces and joiners, the BOM), with which
# a line could be made to show other text than it holds.
_INVISIBLE = "\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
_CONTROL = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_INVISIBLE}]")
_CONTROL_KEEP_LINES = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """One line: every control or invisible format character escaped (``\\xNN``,
    ``\\uNNNN``)."""
    return _CONTROL.sub(_escape, text)


# A peer's message (an error, a reason) is shown and logged in one line; past this many
# characters the rest is counted, not shown: one frame must not make a line of megabytes.
MESSAGE_LIMIT = 500
QUOTE_LIMIT = 60  # a peer's value quoted inside one of our messages


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def peer_message(text: str) -> str:
    """A peer's message in one line: escaped, and clipped to ``MESSAGE_LIMIT``."""
    return _clip(printable(text), MESSAGE_LIMIT)


def quoted(value: object) -> str:
    """A peer's value inside one of our own messages: its repr (escapes included), clipped
    to ``QUOTE_LIMIT``."""
    return _clip(repr(value), QUOTE_LIMIT)


def printable_lines(text: str) -> str:
    """Several lines: newlines and tabs kept, every other control character escaped."""
    return _CONTROL_KEEP_LINES.sub(_escape, text)


def printable_bytes(data: bytes) -> str:
    """Output bytes of a process, decoded leniently, as printable lines."""
    return printable_lines(data.decode(errors="replace"))


class EscapingFormatter(logging.Formatter):
    """A log formatter that escapes control characters in each message, so a peer's text
    cannot forge log lines or carry terminal escapes into a log someone will ``cat``.
    Tracebacks (ours, not a peer's) are appended as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))
