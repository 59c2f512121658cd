"""Protobuf binary wire format, decoded and encoded against a small schema (see ``schema.py``).

Written here rather than taken from the ``protobuf`` package so that a damaged file can be reported precisely
(which field, at which byte) and large float arrays are read with ``numpy.frombuffer`` without copies per value.
Unknown fields are skipped, as protobuf does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from deepvis.models.caffe.message import Message

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_FIXED = {"float": ("<f4", FIXED32), "double": ("<f8", FIXED64)}


@dataclass(frozen=True)
class Field:
    """One schema field: its name and kind ('string', 'int', 'enum', 'bool', 'float', 'double', or a message
    type name)."""

    name: str
    kind: str


Schema = Mapping[str, Mapping[int, Field]]


class WireError(Exception):
    """Bytes that are not a valid message; ``offset`` is where, ``partial`` what the outermost message being
    decoded held before, ``number`` the number of its field being read (``None``: not even the key was read)."""

    def __init__(self, text: str, offset: int):
        super().__init__(text)
        self.offset = offset
        self.partial: Message | None = None
        self.number: int | None = None


def read_varint(data: memoryview, position: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``position``."""
    value, shift = 0, 0
    while True:
        if position >= len(data):
            raise WireError("a number runs past the end of the data", position)
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise WireError("a number is longer than 10 bytes", position)


def decode(data: bytes | memoryview, schema: Schema, type_name: str, base: int = 0,
           raw: frozenset[str] = frozenset()) -> Message:
    """Decode ``data`` as message ``type_name``; offsets in errors count from ``base``.

    Message fields named in ``raw`` are left undecoded, as ``(offset, bytes view)``: the caller decodes them one
    by one, so an error can say which one is damaged.
    """
    view = memoryview(data).cast("B")
    fields = schema[type_name]
    message = Message()
    position = 0
    while position < len(view):
        start, number = position, None
        try:
            key, position = read_varint(view, position)
            number, wire_type = key >> 3, key & 7
            field = fields.get(number)
            if number == 0 or wire_type in (3, 4, 6, 7):
                raise WireError(f"invalid field key {key}", base + start)
            if wire_type == VARINT:
                value, position = read_varint(view, position)
                if field is not None:
                    _expect(field, wire_type, ("int", "enum", "bool"), base + start)
                    message.add(field.name, _signed(value))
            elif wire_type == LENGTH:
                length, position = read_varint(view, position)
                end = position + length
                if end > len(view):
                    raise WireError(f"field {number} claims {length} bytes but only {len(view) - position} remain",
                                    base + start)
                if field is not None and field.name in raw:
                    message.add(field.name, (base + position, view[position:end]))
                elif field is not None:
                    message.add(field.name, _decode_length_delimited(view[position:end], field, schema,
                                                                     base + position, raw))
                position = end
            else:
                size = 8 if wire_type == FIXED64 else 4
                if field is not None and field.kind in _FIXED and _FIXED[field.kind][1] == wire_type:
                    values, position = _fixed_run(view, start, key, _FIXED[field.kind][0])
                    message.add(field.name, values)
                    continue
                if field is not None:
                    _expect(field, wire_type, (), base + start)
                position += size
                if position > len(view):
                    raise WireError(f"field {number} runs past the end of the data", base + start)
        except WireError as exc:
            exc.partial, exc.number = message, number  # the outermost message's view wins
            raise
    return message


def _decode_length_delimited(chunk: memoryview, field: Field, schema: Schema, base: int, raw: frozenset[str]):
    if field.kind == "string":
        try:
            return bytes(chunk).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"field '{field.name}' is not text", base) from None
    if field.kind in _FIXED:  # packed floats / doubles
        dtype = _FIXED[field.kind][0]
        if len(chunk) % np.dtype(dtype).itemsize:
            raise WireError(f"packed field '{field.name}' has {len(chunk)} bytes, not a whole number of values", base)
        return np.frombuffer(chunk, dtype=dtype)
    if field.kind in ("int", "enum", "bool"):  # packed varints
        values, position = [], 0
        while position < len(chunk):
            value, position = read_varint(chunk, position)
            values.append(_signed(value))
        return np.array(values, dtype=np.int64)
    return decode(chunk, schema, field.kind, base, raw)


def _fixed_run(view: memoryview, start: int, key: int, dtype: str) -> tuple[np.ndarray, int]:
    """Consecutive unpacked values of one fixed-size field (old writers), read in one go."""
    size = np.dtype(dtype).itemsize
    record = 1 + size  # a one-byte key (fields < 16) then the value
    if key >= 0x80:
        raise WireError(f"unsupported key {key} for an unpacked array", start)
    octets = np.frombuffer(view[start:], dtype=np.uint8)
    count = len(octets) // record
    keys = octets[: count * record: record]
    run = count if keys.size == 0 or (keys == key).all() else int(np.argmin(keys == key))
    if run == 0:
        raise WireError("a value runs past the end of the data", start)
    values = octets[: run * record].reshape(run, record)[:, 1:].copy().view(dtype).reshape(-1)
    return values, start + run * record


def _expect(field: Field, wire_type: int, kinds: tuple[str, ...], offset: int) -> None:
    if field.kind not in kinds:
        raise WireError(f"field '{field.name}' has wire type {wire_type}, which does not fit its type {field.kind}",
                        offset)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def encode(message: Message, schema: Schema, type_name: str) -> bytes:
    """Encode a :class:`Message` (values: str, int, bool, float arrays, sub-messages) as ``type_name``."""
    numbers = {field.name: (number, field) for number, field in schema[type_name].items()}
    parts: list[bytes] = []
    for name, values in message.fields.items():
        if name not in numbers:
            raise ValueError(f"{type_name} has no field {name!r} in this schema")
        number, field = numbers[name]
        for value in values:
            parts.append(_encode_field(number, field, value, schema))
    return b"".join(parts)


def _encode_field(number: int, field: Field, value, schema: Schema) -> bytes:
    if field.kind in ("int", "enum", "bool"):
        if isinstance(value, np.ndarray):  # packed
            payload = b"".join(_varint(int(v)) for v in value.tolist())
            return _varint(number << 3 | LENGTH) + _varint(len(payload)) + payload
        return _varint(number << 3 | VARINT) + _varint(int(value))
    if field.kind in _FIXED:
        dtype, wire_type = _FIXED[field.kind]
        array = np.asarray(value, dtype=dtype)
        if array.ndim == 0:
            return _varint(number << 3 | wire_type) + array.tobytes()
        payload = np.ascontiguousarray(array.reshape(-1)).tobytes()
        return _varint(number << 3 | LENGTH) + _varint(len(payload)) + payload
    payload = value.encode("utf-8") if field.kind == "string" else encode(value, schema, field.kind)
    return _varint(number << 3 | LENGTH) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


__all__ = ["Field", "Schema", "WireError", "decode", "encode", "read_varint"]
