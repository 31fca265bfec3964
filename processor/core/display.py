"""Showing input-controlled text to a person: one row per record, nothing a terminal would obey.

Every string an attempt or a settings record carries (identity names, user agents, actions,
resources, account ids) is attacker-controlled (contract §4, docs/threat-model.md). Text output
passes each such string through `printable` before it reaches a terminal; HTML output escapes
markup separately (`html.escape`), and JSON output is safe by construction. Pure functions, no I/O.
"""

from __future__ import annotations

import shlex
import unicodedata
from collections.abc import Iterable

#: Unicode categories shown escaped: controls (C0, C1, DEL), format characters (bidi controls such
#: as U+202E, zero-width characters such as U+200B, U+FEFF), line and paragraph separators,
#: surrogates, private use and unassigned code points.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

#: Default_Ignorable_Code_Point characters (DerivedCoreProperties.txt) outside those categories: they
#: show nothing either, yet are letters or marks (Hangul fillers, variation selectors, the combining
#: grapheme joiner, Mongolian free variation selectors), so `ab` and `a\u3164b` would look alike.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF),
)


def _escape_char(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def needs_escape(ch: str) -> bool:
    """True for a character a terminal could act on or a reader could not see."""
    if ch == "\\":
        return False
    if " " < ch < "\x7f":  # printable ASCII: the common case, decided without a table lookup
        return False
    if ch == " ":
        return False
    if unicodedata.category(ch) in _ESCAPED_CATEGORIES:
        return True
    cp = ord(ch)
    if any(lo <= cp <= hi for lo, hi in _INVISIBLE_RANGES):
        return True
    # Other White_Space than the plain space (U+00A0, U+2000..U+200A, U+3000, ...): invisible or
    # look-alike spacing inside an id.
    return ch.isspace()


def printable(text: str) -> str:
    """`text` with every control, invisible or bidi character shown as a `\\xNN`/`\\uNNNN` escape.

    A backslash is doubled, so an escape that was in the input stays distinguishable from one this
    function made. The result never contains a newline, a carriage return or an ESC.
    """
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif needs_escape(ch):
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def is_plain(text: str) -> bool:
    """True when `printable(text) == text`: nothing in it would be escaped."""
    return printable(text) == text


def char_width(ch: str) -> int:
    """Terminal columns one (already printable) character takes: 2 for wide East Asian, 0 for combining."""
    if ch < "\u0300":
        return 1
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def width(text: str) -> int:
    """Display width in terminal columns of a string that went through `printable`."""
    if text.isascii():
        return len(text)
    return sum(char_width(c) for c in text)


def fit(text: str, columns: int) -> str:
    """Cut `text` to at most `columns` display columns, marking a cut with `…`."""
    if width(text) <= columns:
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        w = char_width(ch)
        if used + w > columns - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def pad(text: str, columns: int) -> str:
    """Left-align `text` in `columns` display columns."""
    return text + " " * max(0, columns - width(text))


def shell_command(argv: Iterable[str]) -> str:
    """A command line to paste into a POSIX shell: every word quoted, so no word can run anything."""
    return " ".join(shlex.quote(str(a)) for a in argv)
