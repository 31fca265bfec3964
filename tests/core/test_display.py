"""`processor.core.display`: what reaches a terminal from input text (docs/threat-model.md).

The expectations are written from Unicode's own tables (categories, Default_Ignorable_Code_Point from
DerivedCoreProperties.txt) and a decoder written here, independently of the product's escaper.
"""

from __future__ import annotations

import re
import shlex
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.display import fit, is_plain, pad, printable, shell_command, width
from tests.support.hostile import ALL, ESCAPED, SHELL

#: DerivedCoreProperties.txt, Default_Ignorable_Code_Point=yes (Unicode 15.1): invisible by definition.
DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
]


def ignorable(ch: str) -> bool:
    return any(lo <= ord(ch) <= hi for lo, hi in DEFAULT_IGNORABLE)


def forbidden_on_screen(ch: str) -> bool:
    """A character a terminal could act on or a reader could not see, or white space other than ' '."""
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or ignorable(ch) or (ch.isspace() and ch != " ")


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def unescape(shown: str) -> str:
    """The reader's view: `\\\\` is a backslash, `\\xNN`/`\\uNNNN`/`\\UNNNNNNNN` one character."""

    def one(m: re.Match[str]) -> str:
        body = m.group(1)
        return "\\" if body == "\\" else chr(int(body[1:], 16))

    rest = _ESCAPE.sub("", shown)
    assert "\\" not in rest, f"a lone backslash in {shown!r}: escapes would be ambiguous"
    return _ESCAPE.sub(one, shown)


ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40) | st.text(
    st.sampled_from("\x1b[]0;\x07\\\r\n\b\x9b\u202e\u200b\u3164\ufe0f\u2028a $`|"), max_size=40
)


@settings(max_examples=2000, deadline=None)
@given(ANY_TEXT)
def test_printable_never_lets_a_terminal_control_through_and_is_one_line(text: str) -> None:
    shown = printable(text)
    assert not any(forbidden_on_screen(c) for c in shown), repr(shown)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert is_plain(text) == (shown == text)


@settings(max_examples=2000, deadline=None)
@given(ANY_TEXT, ANY_TEXT)
def test_printable_is_reversible_so_two_inputs_never_look_alike(a: str, b: str) -> None:
    assert unescape(printable(a)) == a
    if a != b:
        assert printable(a) != printable(b)


@pytest.mark.parametrize("name", sorted(ESCAPED))
def test_every_hostile_string_of_the_corpus_is_shown_escaped(name: str) -> None:
    text = ESCAPED[name]
    shown = printable(text)
    assert shown != text and not is_plain(text)
    assert not any(forbidden_on_screen(c) for c in shown)
    assert unescape(shown) == text


@pytest.mark.parametrize(
    ("ch", "shown"),
    [("\u3164", "\\u3164"), ("\ufe0f", "\\ufe0f"), ("\u034f", "\\u034f"), ("\u115f", "\\u115f"),
     ("\U000e0100", "\\U000e0100"), ("\u180b", "\\u180b")],
)
def test_invisible_letters_and_selectors_are_escaped(ch: str, shown: str) -> None:
    """Default-ignorable characters outside the control and format categories (Hangul fillers,
    variation selectors, the combining grapheme joiner) show nothing on a terminal either."""
    assert printable(f"a{ch}b") == f"a{shown}b"


@pytest.mark.parametrize("name", sorted(SHELL))
def test_shell_metacharacters_are_printable_as_they_are(name: str) -> None:
    assert printable(SHELL[name]) == SHELL[name]


@settings(max_examples=1000, deadline=None)
@given(ANY_TEXT, st.integers(min_value=2, max_value=60))
def test_fit_cuts_on_display_width_and_marks_the_cut(text: str, columns: int) -> None:
    shown = printable(text)
    cut = fit(shown, columns)
    assert width(cut) <= columns
    if cut != shown:
        assert cut.endswith("…") and shown.startswith(cut[:-1])
    assert width(pad(cut, columns)) == columns


def test_width_counts_wide_characters_twice_and_combining_marks_zero() -> None:
    assert width("\u5bbd\u5bbd") == 4 and width("e\u0301") == 1
    assert fit("\u5bbd" * 10, 5) == "\u5bbd\u5bbd…"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list(ALL.values())) | st.text(max_size=12), max_size=6))
def test_shell_command_keeps_every_argument_one_literal_word(argv: list[str]) -> None:
    assert shlex.split(shell_command(argv)) == argv
