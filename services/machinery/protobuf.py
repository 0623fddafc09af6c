"""Request bodies in Kubernetes' protobuf encoding, decoded into the JSON objects the server works on.

kubectl's typed clients send ``application/vnd.kubernetes.protobuf`` and never retry with JSON.
On the wire: the magic ``k8s\\x00``, then a ``runtime.Unknown`` whose ``typeMeta`` names the kind
and whose ``raw`` is the object's own message. Messages are read field by field against the
``k8sproto`` tables (unknown fields skipped, as proto2 wants) and the result is what Go's
``encoding/json`` prints for the same struct:

- Go's protobuf code writes every non-pointer scalar, zero or not, and Go's JSON drops those zeros
  (``omitempty``); so a zero scalar is dropped unless its table lists the field as nullable (a Go
  pointer, where ``0``/``false``/``""`` is an explicit value).
- Nested messages are kept even when empty (Go never omits a struct), except the zero Time
  (``omitzero`` upstream); repeated fields become lists, maps dicts, ``bytes`` base64 strings;
  embedded structs are merged into their parent.
- apimachinery's value types have their own JSON: Time, MicroTime, Duration, IntOrString,
  Quantity, RawExtension, FieldsV1, list wrappers, and apiextensions' JSON wrappers.

Every malformed input is a 400, a kind without a table a 415. Only decoding: responses stay JSON.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import functools
import json
import math
import struct
from collections.abc import Callable
from typing import Any

from services.machinery import errors
from services.machinery.k8sproto import schema

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"
_MAX_DEPTH = 100  # far deeper than any API object; bounds recursion on hostile input

_SCALARS = frozenset({"string", "bytes", "int32", "int64", "bool", "double", "float"})
_SKIP, _SCALAR, _MESSAGE, _MAP = -1, 0, 1, 2
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class _Malformed(Exception):
    """The body is not valid protobuf for the message it claims to be."""


# What bad bytes can raise on the way: ours, JSON text in bytes fields (ValueError, RecursionError
# when nested absurdly deep), dates past year 9999 (OverflowError).
_DECODE_ERRORS = (_Malformed, ValueError, OverflowError, IndexError, RecursionError, struct.error)


def is_protobuf(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == MEDIA_TYPE


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object a protobuf request body encodes, with ``apiVersion`` and ``kind`` set."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("the protobuf body does not start with the k8s\\x00 magic")
    try:
        api_version, kind, raw = _unwrap(_named(body[len(MAGIC) :], _UNKNOWN, 0))
        message = schema.kind_message(api_version, kind)
        if message is None:
            raise errors.unsupported_media_type(
                f"{MEDIA_TYPE} (no protobuf schema for {api_version}, Kind={kind})"
            )
        obj = _value(raw, message, 1)
    except _DECODE_ERRORS as exc:
        raise errors.bad_request(f"unable to decode the protobuf body: {exc}") from exc
    if not isinstance(obj, dict):
        raise errors.bad_request(f"the protobuf body holds no object: {api_version}, Kind={kind}")
    return {"kind": kind, "apiVersion": api_version, **obj}


def _unwrap(envelope: dict[str, Any]) -> tuple[str, str, bytes]:
    """apiVersion, kind and the object's bytes from a runtime.Unknown."""
    if encoding := envelope.get("contentEncoding"):
        raise errors.unsupported_media_type(f"{MEDIA_TYPE} with content encoding {encoding!r}")
    if (content_type := envelope.get("contentType", "")) not in ("", MEDIA_TYPE):
        raise errors.unsupported_media_type(f"{MEDIA_TYPE} wrapping {content_type!r}")
    type_meta = envelope.get("typeMeta") or {}
    return type_meta.get("apiVersion", ""), type_meta.get("kind", ""), envelope.get("raw", b"")


def decode_message(raw: bytes, message: str) -> Any:
    """The JSON value of one message, without the envelope: ``raw`` is the bare encoded fields."""
    if message not in _compiled():
        raise errors.unsupported_media_type(f"{MEDIA_TYPE} (no protobuf schema for {message})")
    try:
        return _value(raw, message, 0)
    except _DECODE_ERRORS as exc:
        raise errors.bad_request(f"unable to decode the protobuf body: {exc}") from exc


# -- tables, compiled once ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: int  # _SCALAR, _MESSAGE or _MAP; _SKIP for a message no table describes
    type: str  # the scalar type or message name; for a map, its value's
    repeated: bool
    keep_zero: bool  # a Go pointer: a zero on the wire is an explicit value
    inline: bool  # a Go embedded struct: its keys merge into the parent


@dataclasses.dataclass(frozen=True, slots=True)
class _Message:
    fields: tuple[_Field, ...]  # in table order, which is the order of the JSON keys
    by_number: dict[int, _Field]


@functools.cache
def _compiled() -> dict[str, _Message]:
    tables = schema.tables()
    out = {}
    for name, fields in tables.messages.items():
        compiled = {f.number: _compile(name, f, tables) for f in fields}
        out[name] = _Message(tuple(compiled.values()), compiled)
    return out


def _compile(message: str, f: schema.F, tables: schema.Tables) -> _Field:
    key = (message, f.number)
    if f.type.startswith("map<string,") and f.type.endswith(">"):
        kind, type_ = _MAP, f.type[len("map<string,") : -1]
    else:
        kind, type_ = (_SCALAR if f.type in _SCALARS else _MESSAGE), f.type
    if kind != _SCALAR and type_ not in _SCALARS and type_ not in tables.messages:
        kind = _SKIP
    return _Field(f.name, kind, type_, f.repeated, key in tables.nullable, key in tables.inline)


# -- the wire -------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _chunk(buf: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _varint(buf, pos)
    if pos + size > len(buf):
        raise _Malformed("length-delimited field runs past the end")
    return buf[pos : pos + size], pos + size


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == _VARINT:
        return _varint(buf, pos)[1]
    if wire == _BYTES:
        return _chunk(buf, pos)[1]
    width = {_FIXED64: 8, _FIXED32: 4}.get(wire)
    if width is None or pos + width > len(buf):
        raise _Malformed(f"unsupported or truncated wire type {wire}")
    return pos + width


def _from_varint(type_: str, v: int) -> Any:
    if type_ == "bool":
        return v != 0
    if type_ == "int64":
        return v - (1 << 64) if v >= 1 << 63 else v
    if type_ == "int32":
        v &= 0xFFFFFFFF
        return v - (1 << 32) if v >= 1 << 31 else v
    raise _Malformed(f"a varint where a {type_} belongs")


def _from_fixed(type_: str, raw: bytes) -> float:
    if (type_, len(raw)) not in (("double", 8), ("float", 4)):
        raise _Malformed(f"a {len(raw) * 8}-bit fixed value where a {type_} belongs")
    (value,) = struct.unpack("<d" if len(raw) == 8 else "<f", raw)
    if not math.isfinite(value):
        raise _Malformed(f"{value} has no JSON form")
    return value


def _scalar(buf: bytes, pos: int, wire: int, type_: str) -> tuple[Any, int]:
    if wire == _VARINT:
        v, pos = _varint(buf, pos)
        return _from_varint(type_, v), pos
    if wire in (_FIXED64, _FIXED32):
        width = 8 if wire == _FIXED64 else 4
        if pos + width > len(buf):
            raise _Malformed("truncated fixed-width value")
        return _from_fixed(type_, buf[pos : pos + width]), pos + width
    if wire != _BYTES or type_ not in ("string", "bytes"):
        raise _Malformed(f"wire type {wire} where a {type_} belongs")
    raw, pos = _chunk(buf, pos)
    return (raw if type_ == "bytes" else raw.decode("utf-8", "replace")), pos


def _packed(raw: bytes, type_: str) -> list[Any]:
    """A packed repeated number: the values back to back in one length-delimited field."""
    wire = _FIXED64 if type_ == "double" else _FIXED32 if type_ == "float" else _VARINT
    out, pos = [], 0
    while pos < len(raw):
        value, pos = _scalar(raw, pos, wire, type_)
        out.append(value)
    return out


# -- messages -------------------------------------------------------------------------------


def _fields(buf: bytes, message: str, depth: int) -> dict[_Field, Any]:
    """The fields present in ``buf``: raw scalars (bytes stay bytes, zeros stay), nested JSON values."""
    if depth > _MAX_DEPTH:
        raise _Malformed("objects nested too deeply")
    by_number = _compiled()[message].by_number
    out: dict[_Field, Any] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        field = by_number.get(number)
        if field is None or field.kind == _SKIP:
            pos = _skip(buf, pos, wire)
            continue
        if field.kind == _SCALAR:
            if field.repeated and wire == _BYTES and field.type not in ("string", "bytes"):
                raw, pos = _chunk(buf, pos)
                out.setdefault(field, []).extend(_packed(raw, field.type))
                continue
            value, pos = _scalar(buf, pos, wire, field.type)
        else:
            if wire != _BYTES:
                raise _Malformed(f"wire type {wire} where message field {field.name!r} belongs")
            raw, pos = _chunk(buf, pos)
            if field.kind == _MAP:
                k, v = _entry(raw, field.type, depth + 1)
                out.setdefault(field, {})[k] = v
                continue
            value = _value(raw, field.type, depth + 1)
        if field.repeated:
            out.setdefault(field, []).append(value)
        else:
            out[field] = value  # proto allows a singular field again; the last one wins
    return out


_ZEROS = {"string": "", "bytes": b"", "int32": 0, "int64": 0, "bool": False, "double": 0.0, "float": 0.0}


def _entry(buf: bytes, value_type: str, depth: int) -> tuple[str, Any]:
    """One map entry: a message with the key as field 1 and the value as field 2."""
    key, value, pos = "", None, 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 1:
            key, pos = _scalar(buf, pos, wire, "string")
        elif number == 2 and value_type in _SCALARS:
            value, pos = _scalar(buf, pos, wire, value_type)
        elif number == 2:
            if wire != _BYTES:
                raise _Malformed(f"wire type {wire} where a map value belongs")
            raw, pos = _chunk(buf, pos)
            value = _value(raw, value_type, depth)
        else:
            pos = _skip(buf, pos, wire)
    if value is None:
        value = _ZEROS.get(value_type) if value_type in _SCALARS else _value(b"", value_type, depth)
    return key, value


def _value(buf: bytes, message: str, depth: int) -> Any:
    """The JSON value of one encoded message."""
    special = _specials().get(message)
    if special is not None:
        return special(buf, depth)
    return _finish(message, _fields(buf, message, depth))


def _finish(message: str, present: dict[_Field, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in _compiled()[message].fields:
        if field not in present:
            continue
        value = present[field]
        if field.kind == _SCALAR and not field.repeated and not field.keep_zero and not value:
            continue  # Go's omitempty
        if value is None and not field.repeated:
            continue  # a zero Time and the like: kubectl 1.37 prints no "creationTimestamp": null either
        value = _b64(value)
        if field.inline and isinstance(value, dict):
            for k, v in value.items():
                out.setdefault(k, v)  # the embedding struct's own fields win, as in Go
        else:
            out[field.name] = value
    return out


def _b64(value: Any) -> Any:
    """JSON's form of []byte, applied to a bytes value, a list of them or a map of them."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [_b64(v) for v in value]
    if isinstance(value, dict) and any(isinstance(v, bytes) for v in value.values()):
        return {k: _b64(v) for k, v in value.items()}
    return value


def _named(buf: bytes, message: str, depth: int) -> dict[str, Any]:
    """The fields present, by name, as on the wire: for decoders of types with their own JSON."""
    return {f.name: v for f, v in _fields(buf, message, depth).items()}


# -- types whose JSON form is not their fields ----------------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ZERO_TIME = -62135596800  # 0001-01-01T00:00:00Z, Go's zero time: JSON null


def _rfc3339(moment: datetime.datetime, fraction: str = "") -> str:
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{fraction}Z"


def _time(buf: bytes, depth: int) -> str | None:
    """meta/v1 Time: seconds precision, as Go reads it (nanos are dropped); empty is the zero time."""
    seconds = _named(buf, _META + "Time", depth).get("seconds", _ZERO_TIME) if buf else _ZERO_TIME
    return None if seconds == _ZERO_TIME else _rfc3339(_EPOCH + datetime.timedelta(seconds=seconds))


def _micro_time(buf: bytes, depth: int) -> str | None:
    if not buf:
        return None
    f = _named(buf, _META + "MicroTime", depth)
    moment = _EPOCH + datetime.timedelta(
        microseconds=(f.get("seconds", 0) * 10**9 + f.get("nanos", 0)) // 1000
    )
    return _rfc3339(moment, f".{moment.microsecond:06d}")


def _duration(buf: bytes, depth: int) -> str:
    return go_duration(_named(buf, _META + "Duration", depth).get("duration", 0))


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): "1h0m0s", "1m30s", "1.5s", "250ms", "0s"."""
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return f"{sign}{_decimal(ns, size)}{unit}"
    seconds, rest = divmod(ns, 10**9)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{_decimal(seconds * 10**9 + rest, 10**9)}s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def _int_or_string(buf: bytes, depth: int) -> int | str:
    f = _named(buf, "k8s.io.apimachinery.pkg.util.intstr.IntOrString", depth)
    return f.get("strVal", "") if f.get("type", 0) == 1 else f.get("intVal", 0)


def _quantity(buf: bytes, depth: int) -> str:
    return _named(buf, "k8s.io.apimachinery.pkg.api.resource.Quantity", depth).get("string") or "0"


def _raw_extension(buf: bytes, depth: int) -> Any:
    raw = _named(buf, "k8s.io.apimachinery.pkg.runtime.RawExtension", depth).get("raw", b"")
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _raw_json(message: str) -> Callable[[bytes, int], Any]:
    """A message whose one bytes field holds JSON text (FieldsV1, apiextensions' JSON)."""

    def decode(buf: bytes, depth: int) -> Any:
        raw = next(iter(_named(buf, message, depth).values()), b"")
        return json.loads(raw) if raw else None

    return decode


def _items(message: str) -> Callable[[bytes, int], list[Any]]:
    def decode(buf: bytes, depth: int) -> list[Any]:
        return _finish(message, _fields(buf, message, depth)).get("items", [])

    return decode


def _either(message: str) -> Callable[[bytes, int], Any]:
    """apiextensions' JSONSchemaPropsOr{Array,StringArray,Bool}: a non-empty list, else the schema,
    else the bool."""

    def decode(buf: bytes, depth: int) -> Any:
        f = _named(buf, message, depth)
        lists = [v for v in f.values() if isinstance(v, list) and v]
        if lists:
            return lists[0]
        if "schema" in f:
            return f["schema"]
        flags = [v for v in f.values() if isinstance(v, bool)]
        return flags[0] if flags else (False if message.endswith("Bool") else None)

    return decode


# By message name, whatever the package: the CUSTOM_JSON wrappers this decoder knows.
_CUSTOM: dict[str, Callable[[str], Callable[[bytes, int], Any]]] = {
    "JSON": _raw_json,
    "JSONSchemaPropsOrArray": _either,
    "JSONSchemaPropsOrBool": _either,
    "JSONSchemaPropsOrStringArray": _either,
}


@functools.cache
def _specials() -> dict[str, Callable[[bytes, int], Any]]:
    tables = schema.tables()
    out: dict[str, Callable[[bytes, int], Any]] = {
        _META + "Time": _time,
        _META + "MicroTime": _micro_time,
        _META + "Duration": _duration,
        _META + "FieldsV1": _raw_json(_META + "FieldsV1"),
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString": _int_or_string,
        "k8s.io.apimachinery.pkg.api.resource.Quantity": _quantity,
        "k8s.io.apimachinery.pkg.runtime.RawExtension": _raw_extension,
    }
    out.update({name: _items(name) for name in tables.json_as_items})
    for name in tables.custom_json:
        factory = _CUSTOM.get(name.rsplit(".", 1)[-1])
        if factory is not None:
            out[name] = factory(name)
    return out


def custom_json_unhandled() -> set[str]:
    """Messages the tables say have their own JSON form that this decoder does not know."""
    return set(schema.tables().custom_json) - set(_specials())
