"""docs/protocol.md's message reference is the registry's own account of itself."""

from __future__ import annotations

from common.errors import ErrorCode
from common.spec import BEGIN, END, ERROR_MEANINGS, reference
from tests.harness import ROOT


def test_protocol_reference_matches_the_registry() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END) + 1
    assert text[start:end] == reference(), "docs/protocol.md is stale: run `make docs`"


def test_every_error_code_says_when_it_is_reported() -> None:
    assert set(ERROR_MEANINGS) == set(ErrorCode)
