"""SPEC §3 "account ids are compared after trimming and lower-casing": one normaliser everywhere.

The white space trimmed is Unicode's White_Space property, written out here from the Unicode
Character Database (PropList.txt), independently of the product's code.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import ACCOUNTS, BASE_MS, NOW_MS, attempt_obj, dumps, settings_obj

from processor.config import RunConfig
from processor.core.attempts import AccessAttempt, parse_attempt
from processor.core.evaluator import assess
from processor.core.ids import normalize_account
from processor.core.settings import SettingsHistory, parse_settings
from processor.metrics import Metrics

#: PropList.txt, White_Space=yes.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
#: Characters some string functions treat as space and Unicode does not (Python's str.isspace: the
#: information separators), and look-alikes that are not white space at all.
NOT_WHITE_SPACE = "\x1c\x1d\x1e\x1f\u180e\u200b\ufeff"

ACC = ACCOUNTS[0]
EXT = ACCOUNTS[1]


def spec_norm(raw: str) -> str:
    return raw.strip(WHITE_SPACE).lower()


PADDING = st.text(st.sampled_from(WHITE_SPACE + NOT_WHITE_SPACE), max_size=3)


@pytest.mark.parametrize("pad", list(WHITE_SPACE + NOT_WHITE_SPACE))
def test_record_key_and_document_account_id_normalise_alike(pad: str) -> None:
    raw = f"{pad}{ACC.upper()}{pad}"
    h = SettingsHistory()
    doc = settings_obj(raw, {"user": {"state": "limited"}})
    assert h.apply_record(raw.encode(), dumps(doc), BASE_MS) is None  # never a key_mismatch
    assert list(h.accounts()) == [spec_norm(raw)]
    assert parse_settings(dumps(doc)).account_id == spec_norm(raw)


@pytest.mark.parametrize("pad", list(NOT_WHITE_SPACE))
def test_a_tombstone_keyed_with_a_control_character_does_not_reset_the_account(pad: str) -> None:
    h = SettingsHistory()
    assert h.apply_record(ACC.encode(), dumps(settings_obj(ACC, {"user": {"state": "limited"}})), BASE_MS) is None
    assert h.apply_record(f"{ACC}{pad}".encode(), None, BASE_MS + 1000) is None
    attempt = parse_attempt(dumps(attempt_obj(ACC, EXT, "user", BASE_MS + 2000)), NOW_MS)
    assert assess(h, attempt)[0].outcome == "enforced_deny"


@settings(max_examples=300, deadline=None)
@given(left=PADDING, right=PADDING, body=st.sampled_from([ACC, ACC.upper(), "Ab\u0130c", "\u00c9t\u00c9"]))
def test_every_boundary_uses_the_same_normaliser(left: str, right: str, body: str) -> None:
    raw = left + body + right
    expected = spec_norm(raw)
    assert normalize_account(raw) == expected
    # settings key and document
    h = SettingsHistory()
    problem = h.apply_record(raw.encode(), dumps(settings_obj(raw, {})), BASE_MS)
    assert problem is None and list(h.accounts()) == [expected]
    # attempts, both account ids, through the hot path and through the model
    obj = attempt_obj(raw, raw + "x", "user", BASE_MS)
    a = parse_attempt(json.dumps(obj).encode(), NOW_MS)
    assert a.data["account_id"] == expected
    assert a.data["identity"]["account_id"] == normalize_account(raw + "x")
    m = AccessAttempt.model_validate_json(json.dumps(obj))
    assert (m.account_id, m.identity.account_id) == (expected, normalize_account(raw + "x"))
    # per-account metric labels, from flags/environment and in Metrics
    cfg = RunConfig(bootstrap_servers="localhost:9092", account_labels=f"{raw},{ACCOUNTS[2]}")
    assert cfg.account_label_set == {expected, ACCOUNTS[2]}
    assert Metrics(account_labels=[raw]).account_labels == {expected}
