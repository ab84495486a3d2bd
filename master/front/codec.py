"""Typed results to plain values and back: msgpack maps on the control socket, JSON for
``corral --json``.

A result is encoded field by field (a dataclass becomes a map of its fields, an error
``{code, message}``, an enum its value); the receiving front end rebuilds it from the type
its operation promises (``master.front.ops``), checking every value on the way, so a
renderer gets the same objects in the CLI as in the master's own console.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, TypeVar, Union, get_args, get_origin

from common.errors import CorralError, ErrorCode, ProtocolError
from common.messages import Message, decode_as


def encode(value: Any) -> Any:
    """A result as msgpack-able plain values."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, CorralError):
        return {"code": int(value.code), "message": value.message}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    raise TypeError(f"cannot encode a {type(value).__name__}")


def decode(hint: Any, value: Any) -> Any:
    """Rebuild a value of type ``hint`` from its plain form; ProtocolError if it does not
    fit."""
    try:
        return _decode(hint, value, {})
    except (TypeError, ValueError, KeyError) as exc:
        raise ProtocolError(f"result does not fit {hint}: {exc}") from None


def _decode(hint: Any, value: Any, bound: dict[Any, Any]) -> Any:
    if isinstance(hint, TypeVar):
        hint = bound.get(hint, Any)
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        arms = get_args(hint)
        if value is None and type(None) in arms:
            return None
        last: Exception | None = None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _decode(arm, value, bound)
            except (TypeError, ValueError, KeyError, ProtocolError) as exc:
                last = exc
        raise TypeError(f"no arm of {hint} fits: {last}")
    if origin is list:
        (item,) = get_args(hint)
        return [_decode(item, v, bound) for v in _expect(value, list)]
    if origin is tuple:
        return tuple(_decode(item, v, bound)
                     for item, v in zip(get_args(hint), _expect(value, list), strict=True))
    if origin is dict:
        key, item = get_args(hint)
        return {_decode(key, k, bound): _decode(item, v, bound)
                for k, v in _expect(value, dict).items()}
    cls = origin or hint
    if isinstance(cls, type) and issubclass(cls, Message):
        return decode_as(cls, value)
    if isinstance(cls, type) and issubclass(cls, CorralError):
        fields = _expect(value, dict)
        return CorralError(str(fields["message"]), ErrorCode(fields["code"]))
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return cls(value)
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        params = getattr(cls, "__parameters__", ())
        inner = dict(zip(params, get_args(hint), strict=False)) if origin else {}
        hints = typing.get_type_hints(cls)
        fields = _expect(value, dict)
        return cls(**{f.name: _decode(hints[f.name], fields[f.name], inner)
                      for f in dataclasses.fields(cls) if f.name in fields})
    if cls is float and type(value) is int:
        return float(value)
    if isinstance(cls, type) and type(value) is cls:
        return value
    raise TypeError(f"expected {getattr(cls, '__name__', cls)}, got {type(value).__name__}")


def _expect(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise TypeError(f"expected a {kind.__name__}, got {type(value).__name__}")
    return value


def jsonable(value: Any) -> Any:
    """Plain values as JSON takes them: bytes (a command's output, a log) become text,
    decoded as UTF-8 with U+FFFD for what is not."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(jsonable(encode(document)), ensure_ascii=False)
