"""Avro eval events: schema loading, a compiled encoder, and the two wire framings of SPEC §6.

`fastavro.schemaless_writer` costs ~30 µs per eval event; the encoder here is Python source generated
once from the schema (so it follows the .avsc, never a hand copy of it) and is checked byte for byte
against fastavro by property tests.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
CONTENT_TYPE = "application/vnd.apache.avro"  # plus framing in the `content-type` header parameter


class DecodeError(ValueError):
    """Bytes that are not an eval event this reader can resolve."""


def schema_dir() -> Path:
    """`schemas/` of the source tree, or ACCESS_EVAL_SCHEMA_DIR (container images)."""
    env = os.environ.get("ACCESS_EVAL_SCHEMA_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "schemas"


def load_schema_json(name: str = "eval_event.avsc") -> dict[str, Any]:
    path = schema_dir() / name
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except OSError as exc:
        raise RuntimeError(f"cannot read Avro schema {path}: {exc}; set ACCESS_EVAL_SCHEMA_DIR") from None
    return loaded


# --- the compiled encoder -------------------------------------------------------------------------

_SMALL = [bytes([i]) for i in range(128)]
#: The first byte of a multi-byte varint, by its low 7 bits (continuation bit set).
_FIRST = [bytes([i | 0x80]) for i in range(128)]
#: Varints of `n >> 7` seen lately. Timestamps and offsets encoded one after another share all but
#: their low 7 bits, so most longs are one lookup and one concatenation instead of a loop.
_HIGH: dict[int, bytes] = {}
_HIGH_MAX = 4096


def _unsigned_varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag_varint(n: int) -> bytes:
    """Avro `long`/`int` encoding."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _SMALL[n]
    high = n >> 7
    tail = _HIGH.get(high)
    if tail is None:
        if len(_HIGH) >= _HIGH_MAX:
            _HIGH.clear()
        tail = _HIGH[high] = _unsigned_varint(high)
    return _FIRST[n & 0x7F] + tail


#: Avro lengths (zigzag of a small non-negative int), so most strings need no call.
_LENGTHS = [zigzag_varint(i) for i in range(64)]


class _Gen:
    """Emits straight-line Python for one schema; unsupported shapes raise NotImplementedError."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {"_zz": zigzag_varint, "_len": _LENGTHS}
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def emit(self, schema: Any, expr: str, ind: str) -> None:
        if isinstance(schema, list):
            self.union(schema, expr, ind)
            return
        t = schema if isinstance(schema, str) else schema.get("type")
        if t == "record":
            rec = self.var()
            self.lines.append(f"{ind}{rec} = {expr}")
            for f in schema["fields"]:
                self.emit(f["type"], f"{rec}[{f['name']!r}]", ind)
        elif t == "string":
            b = self.var()
            self.lines.append(f"{ind}{b} = {expr}.encode()")
            self.lines.append(f"{ind}n = len({b}); a(_len[n] if n < 64 else _zz(n)); a({b})")
        elif t in ("long", "int"):
            self.lines.append(f"{ind}a(_zz({expr}))")
        elif t == "boolean":
            self.lines.append(f"{ind}a(b'\\x01' if {expr} else b'\\x00')")
        elif t == "enum":
            name = f"_enum{len(self.consts)}"
            self.consts[name] = {s: zigzag_varint(i) for i, s in enumerate(schema["symbols"])}
            self.lines.append(f"{ind}a({name}[{expr}])")
        elif isinstance(t, dict | list):  # {"type": {...}} wrapper
            self.emit(t, expr, ind)
        else:
            raise NotImplementedError(f"compiled encoder does not support {t!r}")

    def union(self, branches: list[Any], expr: str, ind: str) -> None:
        if len(branches) != 2 or branches[0] != "null":
            raise NotImplementedError("compiled encoder supports only [null, X] unions")
        u = self.var()
        self.lines.append(f"{ind}{u} = {expr}")
        self.lines.append(f"{ind}if {u} is None: a(b'\\x00')")
        self.lines.append(f"{ind}else:")
        self.lines.append(f"{ind}    a(b'\\x02')")
        self.emit(branches[1], u, ind + "    ")


def compile_encoder(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """Generate `encode(record) -> bytes` (Avro binary body) for a record schema."""
    gen = _Gen()
    gen.emit(schema, "d", "    ")
    src = "def encode(d):\n    parts = []\n    a = parts.append\n" + "\n".join(gen.lines)
    src += "\n    return b''.join(parts)\n"
    namespace: dict[str, Any] = dict(gen.consts)
    exec(compile(src, "<avro-encoder>", "exec"), namespace)
    encoder: Callable[[dict[str, Any]], bytes] = namespace["encode"]
    return encoder


# --- codec ----------------------------------------------------------------------------------------


class EvalCodec:
    """Encodes eval events in one framing and decodes either framing.

    `schema_id=None`: Avro single-object encoding. An int: Confluent wire format with that id.
    """

    def __init__(self, schema_id: int | None = None, schema: dict[str, Any] | None = None) -> None:
        self.schema_json = schema if schema is not None else load_schema_json()
        self.parsed = fastavro.parse_schema(self.schema_json)
        self.canonical = to_parsing_canonical_form(self.parsed)
        self.fingerprint_hex = fingerprint(self.canonical, "CRC-64-AVRO")
        self.schema_id = schema_id
        if schema_id is None:
            self.header = SINGLE_OBJECT_MAGIC + bytes.fromhex(self.fingerprint_hex)
            self.headers: list[tuple[str, bytes]] = [
                ("content-type", f"{CONTENT_TYPE}; framing=single-object".encode()),
                ("avro.schema.fingerprint", f"CRC-64-AVRO:{self.fingerprint_hex}".encode()),
            ]
        else:
            self.header = CONFLUENT_MAGIC + struct.pack(">I", schema_id)
            self.headers = [
                ("content-type", f"{CONTENT_TYPE}; framing=confluent".encode()),
                ("avro.schema.id", str(schema_id).encode()),
            ]
        self.encode_body = compile_encoder(self.parsed)  # type: ignore[arg-type]
        # Readers: our own fingerprint, plus older schemas in schemas/history (writer schemas).
        self._by_fingerprint: dict[bytes, Any] = {bytes.fromhex(self.fingerprint_hex): self.parsed}
        for old in _history_schemas():
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(old), "CRC-64-AVRO"))
            self._by_fingerprint.setdefault(fp, old)

    def encode(self, record: dict[str, Any]) -> bytes:
        return self.header + self.encode_body(record)

    def reference_encode(self, record: dict[str, Any]) -> bytes:
        """fastavro's encoding of the same record: the oracle the compiled encoder is tested against."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, record)
        return self.header + buf.getvalue()

    def decode(
        self, data: bytes, resolve_id: Callable[[int], dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Decode either framing into a record shaped by this codec's (reader) schema."""
        if data[:2] == SINGLE_OBJECT_MAGIC and len(data) >= 10:
            writer = self._by_fingerprint.get(data[2:10])
            if writer is None:
                raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
            body = data[10:]
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            (sid,) = struct.unpack(">I", data[1:5])
            if sid == self.schema_id:
                writer = self.parsed
            elif resolve_id is not None:
                writer = fastavro.parse_schema(resolve_id(sid))
            else:  # decoding with a guessed schema would silently misread another version
                raise DecodeError(f"schema id {sid} is unknown here: pass the schema registry URL to resolve it")
            body = data[5:]
        else:
            raise DecodeError("not an Avro single-object or Confluent-framed message")
        try:
            record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(body), writer, self.parsed)  # type: ignore[assignment]
        except Exception as exc:  # fastavro raises several types on corrupt input
            raise DecodeError(f"corrupt Avro body: {exc}") from None
        return record


@cache
def _history_schemas() -> tuple[Any, ...]:
    folder = schema_dir() / "history"
    if not folder.is_dir():
        return ()
    return tuple(fastavro.parse_schema(json.loads(p.read_text())) for p in sorted(folder.glob("*.avsc")))
