"""SPEC §3 "account ids are compared after trimming and lower-casing": one normaliser everywhere.

The white space trimmed is Unicode's White_Space property, written out here from the Unicode
Character Database (PropList.txt), independently of the product's code.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.config import RunConfig
from processor.core.attempts import AccessAttempt, parse_attempt
from processor.core.evaluator import assess
from processor.core.ids import normalize_account
from processor.core.settings import SettingsHistory, parse_settings
from processor.errors import EXIT_USAGE, OpsError
from processor.metrics import Metrics
from tests.support.strategies import ACCOUNTS, BASE_MS, NOW_MS, attempt_obj, dumps, settings_obj

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


PADDING = st.text(st.sampled_from(WHITE_SPACE), max_size=3)


@pytest.mark.parametrize("pad", list(WHITE_SPACE))
def test_record_key_and_document_account_id_normalise_alike(pad: str) -> None:
    raw = f"{pad}{ACC.upper()}{pad}"
    h = SettingsHistory()
    doc = settings_obj(raw, {"user": {"state": "limited"}})
    assert h.apply_record(raw.encode(), dumps(doc), BASE_MS) is None  # never a key_mismatch
    assert list(h.accounts()) == [spec_norm(raw)]
    assert parse_settings(dumps(doc)).account_id == spec_norm(raw)


@pytest.mark.parametrize("pad", list(NOT_WHITE_SPACE))
def test_a_tombstone_keyed_with_a_control_character_does_not_reset_the_account(pad: str) -> None:
    """Such a key is not trimmed to the account's id (it is not White_Space): it names no valid
    account at all, so the tombstone is rejected and the account keeps its settings."""
    h = SettingsHistory()
    assert h.apply_record(ACC.encode(), dumps(settings_obj(ACC, {"user": {"state": "limited"}})), BASE_MS) is None
    problem = h.apply_record(f"{ACC}{pad}".encode(), None, BASE_MS + 1000)
    assert problem is not None and problem.reason == "missing_key"
    attempt = parse_attempt(dumps(attempt_obj(ACC, EXT, "user", BASE_MS + 2000)), NOW_MS)
    assert assess(h, attempt)[0].outcome == "enforced_deny"


@settings(max_examples=300, deadline=None)
@given(left=PADDING, right=PADDING, body=st.sampled_from([ACC, ACC.upper(), "Acct-Alias", "crn:v1:A/B_c.d@E"]))
def test_every_boundary_uses_the_same_normaliser(left: str, right: str, body: str) -> None:
    raw = left + body + right
    expected = spec_norm(raw)
    assert normalize_account(raw) == expected
    # settings key and document
    h = SettingsHistory()
    problem = h.apply_record(raw.encode(), dumps(settings_obj(raw, {})), BASE_MS)
    assert problem is None and list(h.accounts()) == [expected]
    # attempts, both account ids, through the hot path and through the model
    other = left + body + "x" + right
    obj = attempt_obj(raw, other, "user", BASE_MS)
    a = parse_attempt(json.dumps(obj).encode(), NOW_MS)
    assert a.data["account_id"] == expected
    assert a.data["identity"]["account_id"] == spec_norm(other)
    m = AccessAttempt.model_validate_json(json.dumps(obj))
    assert (m.account_id, m.identity.account_id) == (expected, spec_norm(other))
    # per-account metric labels, from flags/environment and in Metrics
    cfg = RunConfig(bootstrap_servers="localhost:9092", account_labels=f"{raw},{ACCOUNTS[2]}")
    assert cfg.account_label_set == {expected, ACCOUNTS[2]}
    assert Metrics(account_labels=[raw]).account_labels == {expected}


# --- which ids are valid (contract §3.2): ASCII letters, digits and . _ : @ / -, not starting with . _ : @ / - ---

#: Ids a person could not tell from another one, or a terminal or a shell would act on. Each is
#: invalid: an attempt carrying one is dead-lettered, a settings record rejected, a flag refused.
BAD_IDS = {
    "zero_width_space": ACC + "\u200b",
    "zero_width_inside": ACC[:8] + "\u200b" + ACC[8:],
    "bidi_override": "\u202e" + ACC,
    "c1_csi": ACC + "\x9b2J",
    "escape": ACC + "\x1b[2J",
    "del": ACC + "\x7f",
    "separator_1c": ACC + "\x1c",
    "bom": "\ufeff" + ACC,
    "hangul_filler": ACC + "\u3164",
    "inner_space": "acct alias",
    "inner_nbsp": "acct\u00a0alias",
    "command_substitution": "a$(id)b",
    "semicolon": "a;b",
    "pipe": "a|b",
    "backtick": "a`id`",
    "quote": "a'b",
    "comma": "a,b",
    "backslash": "a\\b",
    "option": "--clear-allow",
    "leading_dot": ".hidden",
    "non_ascii_letter": "\u00e4bc",
    "cyrillic_lookalike": "\u0430" + ACC[1:],
    "kelvin_sign": "\u212a" + ACC[1:],
}
GOOD_IDS = [ACC, ACC.upper(), "acct-alias", "ACCT-ALIAS", "crn:v1:bluemix:a/1_2.3", "ops@example.com", "0", "a" * 256]


def _attempt_problem(target: str, ident: str) -> tuple[str, str] | None:
    """(reason, detail) of both decoders (hot path and model); they must agree."""
    from processor.core.attempts import DEFAULT_MAX_FUTURE_MS, InvalidAttempt, _parse_with_model

    raw = json.dumps(attempt_obj(target, ident, "user", BASE_MS)).encode()
    outcomes = []
    for parse in (parse_attempt, lambda r, n: _parse_with_model(r, n, DEFAULT_MAX_FUTURE_MS)):
        try:
            parse(raw, NOW_MS)
            outcomes.append(None)
        except InvalidAttempt as exc:
            outcomes.append((exc.reason, exc.detail))
    assert outcomes[0] == outcomes[1], outcomes
    return outcomes[0]


@pytest.mark.parametrize("name", sorted(BAD_IDS))
def test_an_attempt_with_an_unsafe_account_id_is_dead_lettered_with_a_clear_reason(name: str) -> None:
    bad = BAD_IDS[name]
    for field, target, ident in (("account_id", bad, EXT), ("identity.account_id", ACC, bad)):
        problem = _attempt_problem(target, ident)
        assert problem is not None, f"{field}={bad!r} accepted"
        reason, detail = problem
        assert reason == "invalid_field"
        assert detail.startswith(f"{field}:") and "account id" in detail
        assert detail.isprintable()  # the detail never carries the character itself raw


@pytest.mark.parametrize("name", sorted(BAD_IDS))
def test_a_settings_record_with_an_unsafe_account_id_is_rejected(name: str) -> None:
    bad = BAD_IDS[name]
    h = SettingsHistory()
    key_problem = h.apply_record(bad.encode(), dumps(settings_obj(bad, {})), BASE_MS)
    assert key_problem is not None and key_problem.reason == "missing_key"
    assert h.apply_record(bad.encode(), None, BASE_MS) is not None  # a tombstone too
    doc_problem = h.apply_record(ACC.encode(), dumps(settings_obj(bad, {})), BASE_MS)
    assert doc_problem is not None and doc_problem.reason == "invalid_value"
    allow = {"user": {"state": "limited", "external_allowed_accounts": [EXT, bad]}}
    allow_problem = h.apply_record(ACC.encode(), dumps(settings_obj(ACC, allow)), BASE_MS)
    assert allow_problem is not None and allow_problem.reason == "invalid_value"
    assert "account id" in allow_problem.detail and allow_problem.detail.isprintable()
    assert list(h.accounts()) == []


@pytest.mark.parametrize("name", sorted(BAD_IDS))
def test_a_flag_with_an_unsafe_account_id_is_a_usage_error(name: str) -> None:
    from processor.tools.accounts import account_id, account_list

    bad = BAD_IDS[name]
    calls = [lambda: account_id(bad, "--account")]
    if "," not in bad:  # a comma separates ids in list flags (`--allow a,b`)
        calls.append(lambda: account_list([EXT, bad], "--allow"))
    for call in calls:
        with pytest.raises(OpsError) as info:
            call()
        assert info.value.code == EXIT_USAGE
        msg = str(info.value)
        assert "invalid account id" in msg and msg.isprintable()  # one line, nothing raw


@pytest.mark.parametrize("good", GOOD_IDS)
def test_canonical_and_alias_ids_are_valid_everywhere(good: str) -> None:
    from processor.tools.accounts import account_id

    assert _attempt_problem(good, EXT) is None and _attempt_problem(ACC, good) is None
    h = SettingsHistory()
    assert h.apply_record(good.encode(), dumps(settings_obj(good, {"user": {"state": "monitor"}})), BASE_MS) is None
    assert account_id(f" {good} ") == good.lower()


def test_the_published_json_schemas_state_the_same_account_id_rule() -> None:
    """Producers validating with schemas/*.schema.json reject exactly the ids the processor rejects."""
    import jsonschema

    from processor.codec.jsonschemas import SCHEMAS, generate

    schema = generate("settings_record.schema.json")
    assert "settings_record.schema.json" in SCHEMAS
    validator = jsonschema.Draft202012Validator(schema)
    for raw in [*GOOD_IDS, f"\u3000{ACC.upper()}\t", *BAD_IDS.values()]:
        doc = settings_obj(raw, {"user": {"state": "monitor", "external_allowed_accounts": [raw]}})
        model_ok = SettingsHistory().apply_record(raw.encode(), dumps(doc), BASE_MS) is None
        assert validator.is_valid(doc) == model_ok, raw


@pytest.mark.parametrize("name", ["command_substitution", "zero_width_space", "escape", "inner_space"])
def test_run_refuses_an_unsafe_account_id_in_account_labels(name: str) -> None:
    """`--account-labels` is a flag holding account ids too: misconfiguration, one line naming it."""
    from processor.config import ConfigError, load

    with pytest.raises(ConfigError) as info:
        load({"bootstrap_servers": "localhost:9092", "account_labels": f"{ACC},{BAD_IDS[name]}"})
    msg = str(info.value)
    assert "--account-labels" in msg and "account id" in msg and msg.isprintable()
    assert load({"bootstrap_servers": "localhost:9092", "account_labels": f" {ACC.upper()} ,acct-alias"}
                ).account_label_set == {ACC, "acct-alias"}
