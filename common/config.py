"""The configuration file, ``corral.toml``: every command-line option of the master and
the client can be set there, under ``[master]`` or ``[client]``; options given on the
command line win.

A key is the option's long name without its dashes (``tls-cert = "pki/c.crt"``,
``heartbeat = 0.5``, ``allow = ["sh", "python3"]``, ``verbose = true``). A relative path in
the file is relative to the folder that holds the file. Anything the file says that no
option means (a misspelt key, a wrong type, an unknown table) is an error naming it: a
setting silently ignored is worse than none.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

CONFIG_NAME = "corral.toml"
SECTIONS = ("master", "client")


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/corral/corral.toml`` (``~/.config/corral/corral.toml``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "corral" / CONFIG_NAME


def version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help=f"settings file (default: {default_config_path()} if it exists;"
                        " options given here win)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                      section: str) -> argparse.Namespace:
    """Parse ``argv`` with the settings of ``[section]`` in the configuration file as the
    defaults. Exits with status 2 and a message naming the file and the key on a bad file."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config", type=Path)
    known, _rest = early.parse_known_args(argv)
    path: Path | None = known.config
    if path is None and default_config_path().is_file():
        path = default_config_path()
    if path is not None:
        try:
            settings = read_section(path.absolute(), section, parser)
        except ConfigError as exc:
            parser.error(str(exc))
        for action in parser._actions:
            if action.dest in settings:
                action.required = False  # given in the file
        parser.set_defaults(**settings)
    return parser.parse_args(argv)


class ConfigError(Exception):
    pass


def read_section(path: Path, section: str, parser: argparse.ArgumentParser
                 ) -> dict[str, Any]:
    """The options ``[section]`` of ``path`` sets, as the parser's destinations and values."""
    try:
        with open(path, "rb") as source:
            document = tomllib.load(source)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for key, value in document.items():
        if key not in SECTIONS or not isinstance(value, dict):
            raise ConfigError(f"{path}: unknown key {key!r} at the top level (settings go in "
                              "a [master] or a [client] table)")
    table = document.get(section, {})
    actions = {name[2:]: action for action in parser._actions for name in action.option_strings
               if name.startswith("--") and action.dest not in ("help", "version", "config")}
    # An option named for its negative (--no-passthrough) is set by its positive name.
    for negative in list(actions.values()):
        if isinstance(negative, argparse._StoreFalseAction):
            actions[negative.dest.replace("_", "-")] = negative
    settings: dict[str, Any] = {}
    for key, value in table.items():
        action = actions.get(key)
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r} in [{section}] (known: "
                              f"{', '.join(sorted(actions))})")
        settings[action.dest] = _convert(path, section, key, action, value)
    return settings


def _convert(path: Path, section: str, key: str, action: argparse.Action, value: Any) -> Any:
    where = f"{path}: [{section}] {key}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        # --no-passthrough stores False when given; "passthrough = false" means the same.
        is_negative = isinstance(action, argparse._StoreFalseAction)
        named_negative = is_negative and key.startswith("no-")
        return (not value) if named_negative else value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, like [\"a\", \"b\"]")
        return [_one(where, action, item, path.parent) for item in value]
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where} must be a single value, not {type(value).__name__}")
    return _one(where, action, value, path.parent)


def _one(where: str, action: argparse.Action, value: Any, folder: Path) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: {value!r} is not a value this option takes")
    convert = action.type if callable(action.type) else str
    try:
        converted = convert(str(value))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of "
                          f"{', '.join(map(str, action.choices))}")
    if isinstance(converted, Path) and not converted.expanduser().is_absolute():
        converted = folder / converted
    return converted
