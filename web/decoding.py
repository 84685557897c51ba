"""Request decoding with the reference's lax rules and its 422 error shape (api.md §1.4).

Bodies are decoded straight into msgspec Structs with ``strict=False`` (numeric
strings and zero-fraction floats become ints, ``"true"``/``"false"`` become
booleans, unknown keys are ignored). Any failure raises :class:`RequestValidationError`
carrying E2 items: ``loc`` is ``["body", <field>, <index>...]``, ``type`` uses
pydantic's names, ``input`` is the offending value.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import msgspec

from web.schemas.errors import ValidationItem

__all__ = ["RequestValidationError", "decode_body", "query_int", "field_error"]

T = TypeVar("T")

_PATH = re.compile(r"\.([A-Za-z_][\w]*)|\[(\d+)\]|\[\.\.\.\]|\['((?:[^'\\]|\\.)*)'\]")
_EXPECTED = re.compile(r"Expected `([^`]*)`, got `([^`]*)`")
_TOO_LONG = re.compile(r"Expected `(str|array|object)` of length <= (\d+)")
_TOO_LONG_TEXT = {"str": ("string_too_long", "String should have at most {} characters"),
                  "array": ("too_long", "List should have at most {} items"),
                  "object": ("too_long", "Dictionary should have at most {} items")}
_TYPE_NAMES = {
    "str": "string_type", "array": "list_type", "object": "dict_type", "float": "float_type",
    "int": "int_type", "bool": "bool_type",
}


class RequestValidationError(Exception):
    """A request failed validation; answered 422 with ``items`` (E2)."""

    def __init__(self, items: list[ValidationItem]) -> None:
        self.items = items
        super().__init__("; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in items))


def field_error(loc: list[str | int], msg: str, input: Any, type: str = "value_error") -> RequestValidationError:
    """One-item validation error (used for rules msgspec cannot express)."""
    return RequestValidationError([ValidationItem(type=type, loc=loc, msg=msg, input=input)])


def decode_body(raw: bytes, type_: type[T]) -> T:
    """Decode a JSON body into ``type_``; raises RequestValidationError (E2)."""
    try:
        return msgspec.json.decode(raw, type=type_, strict=False)
    except msgspec.ValidationError as exc:
        raise _translate(raw, str(exc)) from None
    except msgspec.DecodeError as exc:
        if not raw.strip():
            raise field_error(["body"], "Field required", None, "missing") from None
        raise field_error(["body"], f"JSON decode error: {exc}", raw.decode("utf-8", "replace")[:200],
                          "json_invalid") from None
    except RecursionError:  # msgspec stops at Python's recursion limit: a nesting bomb, not a 500
        raise field_error(["body"], "JSON decode error: nested too deeply", None, "json_invalid") from None


def _translate(raw: bytes, message: str) -> RequestValidationError:
    text, _, where = message.partition(" - at `")
    key_error = where.startswith("key` in `")  # a dict key failed (e.g. an emotive name too long)
    if key_error:
        where = where[len("key` in `"):]
    path: list[str | int | None] = []
    if where:
        for token in _PATH.finditer(where.rstrip("`")):
            name, index, key = token.groups()
            # msgspec writes ``[...]`` for a dict key it does not name: found below.
            path.append(int(index) if index else (name or key or None))
    match = _EXPECTED.match(text)
    expected = match.group(1).split(" | ")[0] if match else ("finite" if "out of range" in text else "")
    loc, value = _locate(_document(raw), path, expected)
    loc = ["body", *loc]
    too_long = _TOO_LONG.match(text)
    if key_error and isinstance(value, dict):
        limit = int(too_long.group(2)) if too_long else None
        key = next((k for k in value if limit is None or len(k) > limit), None)
        if key is not None:
            loc.append(key)
            value = key
    if too_long:
        kind, msg = _TOO_LONG_TEXT[too_long.group(1)]
        limit = int(too_long.group(2))
        if isinstance(value, (str, list, dict)):
            msg += f", not {len(value)}"
        return RequestValidationError([ValidationItem(type=kind, loc=loc, msg=msg.format(limit), input=_brief(value),
                                                      ctx={"max_length": limit})])
    if text.startswith("Object missing required field"):
        loc.append(text.split("`")[1])
        return RequestValidationError([ValidationItem(type="missing", loc=loc, msg="Field required",
                                                      input=_brief(value))])
    kind = "value_error"
    if match:
        kind = _TYPE_NAMES.get(expected, kind)
        if expected == "int" and match.group(2) == "float":
            kind = "int_from_float"
        elif match.group(2) == "str" and expected in ("int", "float", "bool"):
            kind = {"int": "int_parsing", "float": "float_parsing", "bool": "bool_parsing"}[expected]
    elif "out of range" in text:
        kind = "finite_number"
    return RequestValidationError([ValidationItem(type=kind, loc=loc, msg=text, input=_brief(value))])


def _document(raw: bytes) -> Any:
    """The body as plain JSON values; numbers msgspec refuses untyped (``1e400``) come from json."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return None


def _brief(value: Any) -> Any:
    """An oversized input echoed back in part: the error must not be as large as the request."""
    if isinstance(value, str) and len(value) > 100:
        return value[:100] + "..."
    if isinstance(value, list) and len(value) > 10:
        return [_brief(v) for v in value[:10]]
    if isinstance(value, dict) and len(value) > 10:
        return {k: _brief(v) for k, v in list(value.items())[:10]}
    if isinstance(value, list):
        return [_brief(v) for v in value]
    return value


def _fails(value: Any, expected: str) -> bool:
    """Whether ``value`` cannot be decoded as msgspec type name ``expected`` (lax rules)."""
    if expected in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return True
        try:
            number = float(value)
        except ValueError:
            return True
        return expected == "int" and not number.is_integer()
    if expected == "finite":
        return isinstance(value, float) and value - value != 0.0
    if expected == "bool":
        return not isinstance(value, bool) and value not in ("true", "false", "0", "1", 0, 1)
    kinds = {"str": str, "array": list, "object": dict}
    return expected in kinds and not isinstance(value, kinds[expected])


def _locate(doc: Any, path: list[str | int | None], expected: str) -> tuple[list[str | int], Any]:
    """Walk ``doc`` along ``path``; an unnamed dict key is the first whose value fails."""
    if not path:
        return [], doc
    head, rest = path[0], path[1:]
    if head is None and isinstance(doc, dict):
        for key, child in doc.items():
            sub, leaf = _locate(child, rest, expected)
            if rest or _fails(leaf, expected):
                return [key, *sub], leaf
        return ["?"], None
    try:
        child = doc[head]
    except (KeyError, IndexError, TypeError):
        return [p if p is not None else "?" for p in path], None
    sub, leaf = _locate(child, rest, expected)
    return [head, *sub], leaf


def query_int(query: Any, name: str, default: int) -> int:
    """An int query parameter with the lax rules (``"60"``, ``"2.0"``); 422 otherwise."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        raise field_error(["query", name], "Input should be a valid integer, unable to parse string as an integer",
                          raw, "int_parsing") from None
    if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
        raise field_error(["query", name], "Input should be a valid integer, got a number with a fractional part",
                          raw, "int_from_float")
    return int(value)
