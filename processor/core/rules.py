"""What one identity type of one account restricts (`Rule`), and the compact allowlist the table keeps.

Compiled (processor/native.py): a cross-account lookup of an account not read recently unpacks its
packed version into these objects, one `Rule` and one `PackedIds` per distinct restriction. With
them interpreted (`PackedIds` was a `bytes` subclass, which mypyc cannot compile), unpacking took
2.0-2.2 µs per version; compiled, with the head read byte by byte, 1.0-1.1 µs (bench/README.md,
"Hot path, fifth pass").
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from processor.core.ids import hex_key


class Rule:
    """The restriction for one identity type of one account (`enabled` types have no Rule).

    `allowed` is a frozenset, or a SmallSet (a tuple comparing like a set) for a few ids, or (as the
    compact table stores them) a `PackedIds`: each answers `in` for an id's text.
    """

    __slots__ = ("allowed", "state")

    def __init__(self, state: str, allowed: Collection[str]) -> None:
        self.state = state
        self.allowed = allowed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self.state == other.state and self.allowed == other.allowed

    def __hash__(self) -> int:
        return hash((self.state, self.allowed))

    def __repr__(self) -> str:
        return f"Rule({self.state!r}, {len(self.allowed)} allowed)"


#: Rules indexed like IDENTITY_TYPES; None means `enabled`.
Rules = tuple[Rule | None, Rule | None, Rule | None]
DEFAULT_RULES: Rules = (None, None, None)


class PackedIds:
    """A few unique hex ids, 16 bytes each in `raw`: behaves like a set of their text (`in`, iteration,
    `len`, equality with sets and SmallSets, the same hash), which is all the decision and the tools
    ask of an allowlist. `bytes()` of it is `raw`."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __contains__(self, item: object) -> bool:
        key = hex_key(item) if isinstance(item, str) else None
        if key is None:
            return False
        raw = self.raw
        i = raw.find(key)
        while i >= 0:
            if i % 16 == 0:
                return True
            i = raw.find(key, i + 1)
        return False

    def __iter__(self) -> Iterator[str]:
        raw = self.raw
        return iter([raw[i : i + 16].hex() for i in range(0, len(raw), 16)])

    def __len__(self) -> int:
        return len(self.raw) // 16

    def __bytes__(self) -> bytes:
        return self.raw

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedIds):
            return self.raw == other.raw or set(self) == set(other)
        if isinstance(other, set | frozenset):
            return set(self) == other
        return NotImplemented  # a SmallSet answers for itself (settings_doc)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(frozenset(self))  # as SetLike's: equal to a SmallSet or set of the same ids

    def __repr__(self) -> str:
        return f"PackedIds({tuple(self)!r})"
