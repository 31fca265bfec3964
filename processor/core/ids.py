"""Account ids (normalisation, the validity rule, the pydantic type) and the identity-type names:
what every boundary model compares accounts by. Time is `times`."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

#: What "trimming" removes (SPEC §3): Unicode's White_Space property (PropList.txt), nothing else. Not
#: Python's str.strip() (it also strips the separators U+001C-U+001F), not pydantic's strip_whitespace.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
ACCOUNT_ID_MAX = 256


def normalize_account(raw: str) -> str:
    """The one place that says how two account ids compare: trimmed of White_Space, lower-cased.

    Every boundary uses it: settings record keys and documents, attempts, metric labels, CLI flags.
    """
    return raw.strip(WHITE_SPACE).lower()


def hex_key(account: str) -> bytes | None:
    """The 16 bytes of a 32-character lower-case hex id, or None for any other id (exact: `hex()` of
    the result gives the id back, so distinct ids never share a key)."""
    if len(account) != 32:
        return None
    try:
        raw = bytes.fromhex(account)
    except ValueError:
        return None
    return raw if len(raw) == 16 and raw.hex() == account else None


def account_key(account: str) -> int | str:
    """The settings table's key for a normalised account id: the 128-bit number of a 32-character
    lower-case hex id (an int takes 48 bytes, the 32-character text 81; `compact`), the text otherwise.

    Exact, by `hex_key`. Not `int(_, 16)` alone, which also takes `0x`, `_` and spaces; not a regular
    expression, whose matcher allocates: in the processor, the settings lookup spent more than a
    quarter of its time in it (bench/README.md, "Hot path, fourth pass")."""
    raw = hex_key(account)
    return account if raw is None else int.from_bytes(raw)


def key_text(key: int | str) -> str:
    """The account id a table key stands for."""
    return f"{key:032x}" if isinstance(key, int) else key


#: What an account id may hold after trimming (contract §3.2): ASCII letters, digits and `. _ : @ / -`,
#: starting with a letter or digit. Real IBM Cloud ids are 32 hex digits; the rest admits aliases and
#: CRN-like ids. Nothing else, so an id looks the same on every screen (no controls, invisible, bidi or
#: look-alike letters), needs no quoting in a shell and can never be read as a command-line option.
ACCOUNT_ID_SYNTAX = "ASCII letters, digits and . _ : @ / -, starting with a letter or digit"
_VALID_TRIMMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]*").fullmatch
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/-")


def is_valid_account(account: str) -> bool:
    """True for a normalised account id within the contract's length and characters (the hot path)."""
    return len(account) <= ACCOUNT_ID_MAX and _VALID_TRIMMED(account) is not None


def account_problem(raw: str) -> str | None:
    """Why `raw` is not an account id (one sentence, input characters named by code point), or None."""
    trimmed = raw.strip(WHITE_SPACE)
    if not 0 < len(trimmed) <= ACCOUNT_ID_MAX:
        return f"an account id must have 1 to {ACCOUNT_ID_MAX} characters after trimming"
    if _VALID_TRIMMED(trimmed):
        return None
    bad = next((c for c in trimmed if c not in _ALLOWED), trimmed[0])
    shown = f"U+{ord(bad):04X} ({bad})" if " " < bad < "\x7f" and bad != "\\" else f"U+{ord(bad):04X}"
    return f"an account id may hold only {ACCOUNT_ID_SYNTAX}; found {shown} at position {trimmed.index(bad) + 1}"


def _account_id(raw: str) -> str:
    problem = account_problem(raw)
    if problem is not None:
        raise ValueError(problem)
    return normalize_account(raw)


#: The JSON Schema of a raw account id: the syntax above, optionally surrounded by White_Space.
_PADDING = "[" + "".join(f"\\u{ord(c):04x}" for c in WHITE_SPACE) + "]*"
ACCOUNT_ID_PATTERN = f"^{_PADDING}[A-Za-z0-9][A-Za-z0-9._:@/-]*{_PADDING}$"

#: Account ids are compared after trimming and lower-casing (SPEC §3), by `normalize_account`, and hold
#: only the characters above (a ValueError naming the first other one otherwise).
AccountId = Annotated[
    str,
    AfterValidator(_account_id),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": ACCOUNT_ID_MAX, "pattern": ACCOUNT_ID_PATTERN}),
]

IDENTITY_TYPES: tuple[str, ...] = ("user", "service_id", "service")
STATES: tuple[str, ...] = ("enabled", "monitor", "limited")
