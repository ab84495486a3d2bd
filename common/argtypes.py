"""Argument types shared by every command line (master, client, the corral CLI)."""

from __future__ import annotations

import argparse
import math
import urllib.parse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_seconds(text: str) -> float:
    """A time in seconds: more than 0 (0 would give up at once) and finite (nan or inf
    would never time out)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a positive, finite number of seconds")
    return value


def http_address(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[V6]:PORT``; without a host, 127.0.0.1:
    a dashboard is opened to the network only when asked for by name."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {text!r}")
    return host, int(port)


def web_origin(text: str) -> str:
    """An origin as a browser sends it in its Origin header: ``https://host[:port]``,
    lower case, without the scheme's default port, without a path."""
    parts = urllib.parse.urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: bad port") from None
    if (parts.scheme.lower() not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment
            or parts.username is not None or parts.password is not None):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an origin: give scheme://host[:port] as the browser shows it, "
            "like https://corral.example.org")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def port_number(text: str) -> int:
    """A TCP port to listen on; 0 means any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0 to 65535")
    return value
