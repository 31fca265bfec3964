"""Avro eval events: schema loading, compiled encoders, and the two wire framings of SPEC §6.

`fastavro.schemaless_writer` costs ~30 µs per eval event; the encoders here are Python source generated
once from the schema (so they follow the .avsc, never a hand copy of it). `compile_encoder` encodes a
record dict and is checked byte for byte against fastavro; `compile_source_encoder` encodes straight
from the evaluation (field sources in events.EVENT_SOURCES) and is checked against the former.
Size (over 400 lines): the code generator and the framings share the schema walk; kept together.
"""

from __future__ import annotations

import io
import json
import linecache
import os
import struct
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from processor.core.events import EVENT_SOURCES, Constant, EventSources, PerVerdict, Source
from processor.errors import AccessEvalError

if TYPE_CHECKING:
    from processor.core.attempts import Attempt
    from processor.core.policy import Verdict
    from processor.core.settings import SettingsVersion

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
CONTENT_TYPE = "application/vnd.apache.avro"  # plus framing in the `content-type` header parameter


class DecodeError(AccessEvalError, ValueError):
    """Bytes that are not an eval event this reader can resolve."""


def schema_dir() -> Path:
    """ACCESS_EVAL_SCHEMA_DIR if set; else the schemas the installed package carries (setup.py copies
    them into the wheel); else `schemas/` of the checkout this module runs from (editable install)."""
    env = os.environ.get("ACCESS_EVAL_SCHEMA_DIR")
    if env:
        return Path(env)
    packaged = Path(str(resources.files("processor"))) / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schemas"


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
#: The non-null branch index of a [null, string] union plus a short length: one concatenation per value.
_NON_NULL = b"\x02"
_OPT_LENGTHS = [_NON_NULL + n for n in _LENGTHS]
#: Per-verdict bytes kept by a compiled encoder before it starts over (there are six Verdicts).
_PER_KEY_MAX = 64


class SourceMismatch(AccessEvalError, ValueError):
    """The schema and the field sources describe different records: fix events.EVENT_SOURCES."""


class _PerKey:
    """Output bytes that follow from the key parameter (the verdict) alone: encoded once per key."""

    __slots__ = ("encode",)

    def __init__(self, encode: Callable[[Any], bytes]) -> None:
        self.encode = encode


#: One piece of the output: constant bytes, a Python expression giving bytes, or bytes per key.
_Part = bytes | str | _PerKey


def _unwrap(schema: Any) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):  # {"type": {...}}
        schema = schema["type"]
    return schema


def _type(schema: Any) -> Any:
    """"string", "record", ... or the branches of a union."""
    schema = _unwrap(schema)
    return schema.get("type") if isinstance(schema, dict) else schema


def _concat(parts: list[_Part]) -> str:
    """One expression for parts that are constant bytes or expressions."""
    exprs: list[str] = []
    pending = b""
    for p in parts:
        if isinstance(p, bytes):
            pending += p
            continue
        if isinstance(p, _PerKey):
            raise NotImplementedError("per-verdict sources inside a union")
        if pending:
            exprs.append(repr(pending))
            pending = b""
        exprs.append(p)
    if pending or not exprs:
        exprs.append(repr(pending))
    return exprs[0] if len(exprs) == 1 else " + ".join(exprs) if len(exprs) <= 3 else f"b''.join(({', '.join(exprs)}))"


class _Gen:
    """Emits straight-line Python for one schema: statements (`lines`), and the output as parts in
    schema order, so the function ends in one b''.join. Unsupported shapes raise NotImplementedError.

    `sources` (dotted field path -> Source) override where a field's value comes from; a field without
    one is read from its record's dict, and a record without a source is descended into.
    """

    def __init__(self, sources: Mapping[str, Source] | None = None) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {"_zz": zigzag_varint, "_len": _LENGTHS, "_olen": _OPT_LENGTHS}
        self.sources = dict(sources or {})
        self.used: set[str] = set()
        self.n = 0

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"_{prefix}{self.n}"

    def field_source(self, path: str, name: str, parent: str | None, schema: Any) -> Source | None:
        if path in self.sources:
            self.used.add(path)
            return self.sources[path]
        if parent is not None:
            return f"{parent}[{name!r}]"
        if _type(schema) == "record":
            return None  # its fields have sources
        raise SourceMismatch(f"schema field {path!r} has no source")

    def emit(self, schema: Any, src: Source | None, path: str, ind: str) -> list[_Part]:
        if isinstance(src, Constant):
            return [compile_encoder(schema)(src.value)]
        if isinstance(src, PerVerdict):
            enc, value = compile_encoder(schema), src.value
            return [_PerKey(lambda key: enc(value(key)))]
        schema = _unwrap(schema)
        t = _type(schema)
        if t == "record":
            return self.record(schema, src, path, ind)
        if src is None:
            raise SourceMismatch(f"schema field {path!r} has no source")
        if isinstance(t, list):
            return [self.union(t, src, path, ind)]
        if t == "string":
            b, n = self.var("b"), self.var("n")
            self.lines.append(f"{ind}{b} = ({src}).encode(); {n} = len({b})")
            return [f"(_len[{n}] if {n} < 64 else _zz({n}))", b]
        if t in ("long", "int"):
            return [f"_zz({src})"]
        if t == "boolean":
            return [f"(b'\\x01' if {src} else b'\\x00')"]
        if t == "enum":
            name = self.var("enum")
            self.consts[name] = {s: zigzag_varint(i) for i, s in enumerate(schema["symbols"])}
            return [f"{name}[{src}]"]
        raise NotImplementedError(f"compiled encoder does not support {t!r}")

    def record(self, schema: dict[str, Any], src: str | None, path: str, ind: str) -> list[_Part]:
        rec = None
        if src is not None:
            rec = self.var("r")
            self.lines.append(f"{ind}{rec} = {src}")
        parts: list[_Part] = []
        for f in schema["fields"]:
            name = f["name"]
            sub = f"{path}.{name}" if path else name
            parts += self.emit(f["type"], self.field_source(sub, name, rec, f["type"]), sub, ind)
        return parts

    def union(self, branches: list[Any], src: str, path: str, ind: str) -> str:
        if len(branches) != 2 or branches[0] != "null":
            raise NotImplementedError("compiled encoder supports only [null, X] unions")
        u, out, inner = self.var("u"), self.var("p"), ind + "    "
        self.lines += [f"{ind}{u} = {src}", f"{ind}if {u} is None:", f"{inner}{out} = b'\\x00'", f"{ind}else:"]
        if _type(branches[1]) == "string":
            b, n = self.var("b"), self.var("n")
            self.lines.append(f"{inner}{b} = {u}.encode(); {n} = len({b})")
            self.lines.append(f"{inner}{out} = _olen[{n}] + {b} if {n} < 64 else b'\\x02' + _zz({n}) + {b}")
        else:
            parts = self.emit(branches[1], u, path, inner)
            self.lines.append(f"{inner}{out} = {_concat([_NON_NULL, *parts])}")
        return out


def _merge(parts: list[_Part]) -> list[_Part]:
    """Adjacent constant and per-key parts as one: bytes, or one _PerKey per run."""
    out: list[_Part] = []
    run: list[bytes | _PerKey] = []

    def flush() -> None:
        if any(isinstance(p, _PerKey) for p in run):
            pieces = tuple(run)
            out.append(_PerKey(lambda key: b"".join(p if isinstance(p, bytes) else p.encode(key) for p in pieces)))
        elif joined := b"".join(p for p in run if isinstance(p, bytes)):
            out.append(joined)
        run.clear()

    for p in parts:
        if isinstance(p, str):
            flush()
            out.append(p)
        else:
            run.append(p)
    flush()
    return out


_compiled = 0


def _build(
    gen: _Gen, parts: list[_Part], params: tuple[str, ...], prelude: tuple[str, ...], names: Mapping[str, Any],
    key_param: str | None,
) -> Callable[..., bytes]:
    """Define `encode(*params)` from the generator's statements and parts."""
    global _compiled
    namespace: dict[str, Any] = dict(gen.consts)
    if clash := namespace.keys() & names.keys():
        raise ValueError(f"source names clash with the encoder's own: {sorted(clash)}")
    namespace.update(names)
    body = [f"    {line}" for line in prelude] + gen.lines
    items: list[str] = []
    keyed: list[_PerKey] = []
    for p in _merge(parts):
        if isinstance(p, bytes):
            items.append(repr(p))
        elif isinstance(p, str):
            items.append(p)
        else:
            keyed.append(p)
            items.append(f"_k{len(keyed)}")
    if keyed:
        if key_param is None:
            raise ValueError("per-verdict sources need a key parameter")
        table: dict[Any, tuple[bytes, ...]] = {}

        def fill(key: Any) -> tuple[bytes, ...]:
            """Encode the per-key parts of a key not seen yet (the first event with each verdict)."""
            if len(table) >= _PER_KEY_MAX:
                table.clear()
            found = table[key] = tuple(k.encode(key) for k in keyed)
            return found

        namespace.update(_keyed=table, _fill=fill)
        targets = "".join(f"_k{i + 1}, " for i in range(len(keyed)))
        body += ["    try:", f"        {targets}= _keyed[{key_param}]", "    except KeyError:",
                 f"        {targets}= _fill({key_param})"]
    src = f"def encode({', '.join(params)}):\n" + "\n".join(body)
    src += f"\n    return b''.join(({''.join(item + ', ' for item in items)}))\n"
    _compiled += 1
    filename = f"<avro-encoder-{_compiled}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)  # readable tracebacks
    exec(compile(src, filename, "exec"), namespace)
    encoder: Callable[..., bytes] = namespace["encode"]
    return encoder


def compile_encoder(schema: Any, header: bytes = b"") -> Callable[[Any], bytes]:
    """Generate `encode(record) -> bytes` (header + Avro binary body) for a schema."""
    gen = _Gen()
    parts = gen.emit(schema, "d", "", "    ")
    return _build(gen, [header, *parts], ("d",), (), {}, None)


def compile_source_encoder(schema: Any, sources: EventSources, header: bytes = b"") -> Callable[..., bytes]:
    """Generate `encode(*sources.params) -> bytes` (header + Avro binary body): the schema's fields in
    schema order, each from its source, with no record dict in between. Constants are encoded here,
    per-verdict fields on the first event with each verdict. Raises SourceMismatch unless every
    schema field has exactly one source."""
    gen = _Gen(sources.fields)
    parts = gen.emit(schema, None, "", "    ")
    if unused := sorted(set(sources.fields) - gen.used):
        raise SourceMismatch(f"sources for fields the schema does not have (or has inside a sourced field): {unused}")
    return _build(gen, [header, *parts], sources.params, sources.prelude, sources.names, sources.verdict_param)


# --- codec ----------------------------------------------------------------------------------------


class EvaluationEncoder(Protocol):
    """`codec.encode_evaluation`: the framed eval event of one evaluation, with no record dict."""

    def __call__(
        self, attempt: Attempt, verdict: Verdict, version: SettingsVersion | None, exact: bool, evaluated_at_ms: int
    ) -> bytes: ...


class EvalCodec:
    """Encodes eval events in one framing and decodes either framing.

    `schema_id=None`: Avro single-object encoding. An int: Confluent wire format with that id.

    `encode_evaluation(attempt, verdict, version, exact, evaluated_at_ms)` (the hot path) gives the
    same bytes as `encode(build_event(...))` in ~60% of the time (~4.6 µs instead of ~7.8 µs per event,
    ~1.2 µs of it the event id: a SHA-1 over the attempt's identity): it is compiled from the schema
    and events.EVENT_SOURCES, so it writes the fields straight from the evaluation and the constant
    ones as bytes encoded once. The shipped schema must match EVENT_SOURCES (SourceMismatch here
    otherwise); a codec for another schema version (old readers, evolved writers) has no fast path
    and raises SourceMismatch when it is called.
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
        self.encode_body = compile_encoder(self.parsed)
        self.encode_evaluation = self._evaluation_encoder(schema is None)
        # Readers: our own fingerprint, plus older schemas in schemas/history (writer schemas).
        self._by_fingerprint: dict[bytes, Any] = {bytes.fromhex(self.fingerprint_hex): self.parsed}
        for old in _history_schemas():
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(old), "CRC-64-AVRO"))
            self._by_fingerprint.setdefault(fp, old)

    def _evaluation_encoder(self, shipped: bool) -> EvaluationEncoder:
        """The compiled fast path. Fails here for the shipped schema (a mismatch is a bug: better at
        startup than at the first event), later for other schema versions (they need no fast path)."""
        try:
            return cast(EvaluationEncoder, compile_source_encoder(self.parsed, EVENT_SOURCES, self.header))
        except SourceMismatch as exc:
            problem = f"eval event schema {self.schema_json.get('name')!r} and events.EVENT_SOURCES differ: {exc}"
            if shipped or self.canonical == _shipped_canonical():
                raise SourceMismatch(problem) from None

        def unavailable(
            attempt: Attempt, verdict: Verdict, version: SettingsVersion | None, exact: bool, evaluated_at_ms: int
        ) -> bytes:
            raise SourceMismatch(f"no encode_evaluation for this codec's schema ({problem}); use encode(record)")

        return unavailable

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


def _shipped_canonical() -> str | None:
    """Canonical form of the schema file, or None when there is none to read."""
    try:
        return to_parsing_canonical_form(fastavro.parse_schema(load_schema_json()))
    except RuntimeError:
        return None


@cache
def _history_schemas() -> tuple[Any, ...]:
    folder = schema_dir() / "history"
    if not folder.is_dir():
        return ()
    return tuple(fastavro.parse_schema(json.loads(p.read_text())) for p in sorted(folder.glob("*.avsc")))
