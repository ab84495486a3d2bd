"""The command text an operator typed, exactly as typed, for commands that hand it to a shell.

cmd2 splits a line into words and, for argparse, strips their quotes; joining the words
again loses spacing and quoting (``echo 'a  b'`` would become ``echo a b``). Here the words
cmd2 found are located in the raw line, and the text is cut from it, so quotes, spacing,
``;``, ``&&``, ``$`` and globs reach ``/bin/sh -c`` untouched. cmd2 still claims an unquoted
``|``, ``>`` or ``>>`` (and what follows) for local pipes and redirection; that part is not
in the text.
"""

from __future__ import annotations

from cmd2.parsing import Statement, StatementParser


def _spans(raw: str, tokens: list[str]) -> list[tuple[int, int]] | None:
    """Where each token lies in ``raw``, in order; None if they are not all found there
    (an alias or shortcut rewrote the line)."""
    spans = []
    position = 0
    for token in tokens:
        start = raw.find(token, position)
        if start < 0:
            return None
        position = start + len(token)
        spans.append((start, position))
    return spans


def typed_tail(parser: StatementParser, statement: Statement, words: int) -> str:
    """The last ``words`` argument words of ``statement`` as the operator typed them,
    with everything between them; a leading ``--`` word is left out."""
    arguments = statement.arg_list
    if words <= 0 or words > len(arguments):
        return ""
    first = len(arguments) - words
    if arguments[first] == "--":
        first += 1
    return _cut(parser, statement, 1 + first)


def typed_line(parser: StatementParser, statement: Statement) -> str:
    """The command word and its arguments as the operator typed them."""
    return _cut(parser, statement, 0)


def _cut(parser: StatementParser, statement: Statement, first: int) -> str:
    """The raw text from word ``first`` (0: the command word) to the last argument."""
    words = [statement.command, *statement.arg_list]
    if first >= len(words):
        return ""
    tokens = parser.tokenize(statement.raw)
    spans = _spans(statement.raw, tokens)
    if spans is None or tokens[:len(words)] != words:
        return " ".join(words[first:])
    return statement.raw[spans[first][0]:spans[len(words) - 1][1]]
