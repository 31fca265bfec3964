"""`settings put` and `settings delete` against contract §3's guards, through the real commands on a
real broker: the exact key bytes in use (compaction must not resurrect a deleted document), the
runbook's delete of an invalid latest record, near misses refused and unknown types kept, and ids
checked as they are published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from processor.core.ids import AccountId
from processor.core.settings import MAX_ALLOWLIST_IDS
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import end_offsets, produce, read_topic
from tests.support.settings_churn import COMPACTING, SENTINEL
from tests.support.tool_harness import ae, ok, one_line_error, sget, sput, unreachable


def doc(account: str, types: dict[str, Any]) -> bytes:
    return json.dumps({"account_id": account,
                       "external_account_identity_interaction": {"identity_types": types}}).encode()


def records(topics: Topics) -> list[tuple[bytes, bytes | None]]:
    return [(m.key(), m.value()) for m in read_topic(topics.bootstrap, topics.settings)]


def delete(topics: Topics, account: str) -> str:
    return ok(ae("settings", "delete", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                 "--account", account, "--yes"))


def invalid_accounts(topics: Topics) -> list[str]:
    out = ok(ae("settings", "list", "--bootstrap-servers", topics.bootstrap, "--settings-topic", topics.settings,
                "--invalid", "--format", "json"))
    return [r["account_id"] for r in json.loads(out)]


LIMITED = {"user": {"state": "limited"}}


# --- 4c: the exact key bytes in use -------------------------------------------------------------------


def test_delete_tombstones_every_spelling_and_compaction_keeps_it_deleted(topics: Topics) -> None:
    """A document keyed `ACCT-ALIAS` and one keyed ` acct-alias`: `delete --account acct-alias` writes a
    tombstone under each exact key, so once the cleaner has dropped documents and tombstones nothing
    of the account is left to come back."""
    topics.create(only=[topics.settings], settings_config=COMPACTING)
    produce(topics.bootstrap, topics.settings, [(b"ACCT-ALIAS", doc("ACCT-ALIAS", LIMITED)),
                                                (b"acct-other", doc("acct-other", LIMITED))])
    ok(sput(topics, "acct-alias", "--identity-type", "service", "--state", "monitor"))
    put_keys = [k for k, _ in records(topics)]
    assert put_keys == [b"ACCT-ALIAS", b"acct-other", b"ACCT-ALIAS"], "put writes under the key in use"
    produce(topics.bootstrap, topics.settings, [(b" acct-alias", doc("acct-alias", LIMITED))])

    out = delete(topics, "ACCT-alias")
    tombstones = [k for k, v in records(topics) if v is None]
    assert sorted(tombstones) == [b" acct-alias", b"ACCT-ALIAS"], out
    assert sget(topics, "acct-alias")["deleted"] is True

    def compacted() -> bool:
        produce(topics.bootstrap, topics.settings, [(SENTINEL, doc(SENTINEL.decode(), {}))])  # rolls the segment
        return {k for k, _ in records(topics)} == {b"acct-other", SENTINEL}

    wait_until(compacted, 120, "the cleaner to drop the account's documents and tombstones", interval=0.5)
    view = sget(topics, "acct-alias")
    assert view["exists"] is False and view["document"] is None
    assert sget(topics, "acct-other")["exists"] is True


def test_put_from_a_file_writes_under_the_key_in_use(topics: Topics, tmp_path: Path) -> None:
    topics.create(only=[topics.settings])
    produce(topics.bootstrap, topics.settings, [(b"Acct-F", doc("Acct-F", LIMITED))])
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"external_account_identity_interaction": {"identity_types": {
        "user": {"state": "monitor"}}}}))
    ok(sput(topics, "acct-f", "--file", str(f)))
    assert [k for k, _ in records(topics)] == [b"Acct-F", b"Acct-F"]
    assert sget(topics, "acct-f")["identity_types"]["user"]["state"] == "monitor"


# --- 3: the runbook step clears an invalid latest record ----------------------------------------------


def test_delete_clears_an_invalid_latest_record_the_runbook_way(topics: Topics) -> None:
    """AccessEvalSettingsInvalidLatest runbook, step 2: the account's only record was rejected (a), or
    its latest valid record is a tombstone and a rejected record follows it (b). `delete` publishes the
    tombstone that clears it; `list --invalid` (the gauge's own function) is empty afterwards."""
    topics.create(only=[topics.settings])
    produce(topics.bootstrap, topics.settings, [
        (b"only-bad", b"{not json"),
        (b"acct-b", doc("acct-b", LIMITED)),
        (b"acct-b", None),
        (b"ACCT-B", doc("acct-b", {"user": {"state": "strict"}})),
    ])
    assert invalid_accounts(topics) == ["acct-b", "only-bad"]
    for account in ("only-bad", "acct-b"):
        out = delete(topics, account)
        assert "tombstone" in out and "nothing to delete" not in out
    assert invalid_accounts(topics) == []
    tombstones = [k for k, v in records(topics)[4:] if v is None]
    assert sorted(tombstones) == [b"ACCT-B", b"only-bad"]
    assert "nothing to delete" in delete(topics, "acct-b")  # and now there is nothing left to delete


# --- 2: near misses refused, unknown types kept --------------------------------------------------------


def test_put_keeps_unknown_identity_types_when_it_merges(topics: Topics) -> None:
    topics.create(only=[topics.settings])
    produce(topics.bootstrap, topics.settings, [(b"acct-u", doc("acct-u", {
        "user": {"state": "limited"}, "trusted_profile": {"state": "limited", "extra": [1]}}))])
    proc = sput(topics, "acct-u", "--identity-type", "service", "--state", "monitor")
    ok(proc)
    assert "trusted_profile" in proc.stderr  # said, not silently
    last = json.loads(records(topics)[-1][1] or b"null")
    types = last["external_account_identity_interaction"]["identity_types"]
    assert types["trusted_profile"] == {"state": "limited", "extra": [1]}
    assert types["user"] == {"state": "limited"} and types["service"]["state"] == "monitor"


def test_put_refuses_a_near_miss_before_publishing(topics: Topics, tmp_path: Path) -> None:
    topics.create(only=[topics.settings])
    ok(sput(topics, "acct-n", "--identity-type", "user", "--state", "limited"))
    before = end_offsets(topics.bootstrap, topics.settings)
    f = tmp_path / "typo.json"
    f.write_text(json.dumps({"external_account_identity_interaction": {"identity_types": {"users": {}}}}))
    one_line_error(sput(topics, "acct-n", "--file", str(f)), 2, "near miss", "'users'", "'user'")
    assert end_offsets(topics.bootstrap, topics.settings) == before


# --- 4a, 4d: ids as published --------------------------------------------------------------------------


def test_put_file_checks_each_allowlist_entry_as_one_id(tmp_path: Path) -> None:
    """`"a,b"` is one entry: checked as one id (a comma is not allowed in an id), not as two."""
    f = tmp_path / "comma.json"
    f.write_text(json.dumps({"external_account_identity_interaction": {"identity_types": {
        "user": {"state": "limited", "external_allowed_accounts": ["a,b"]}}}}))
    one_line_error(ae("settings", "put", "--bootstrap-servers", unreachable(), "--account", "acct1",
                      "--file", str(f), "--dry-run"), 2, "external_allowed_accounts.0", "U+002C (,)")


def test_put_refuses_an_allowlist_over_the_cap(tmp_path: Path) -> None:
    f = tmp_path / "big.json"
    ids = [f"{i:x}" for i in range(MAX_ALLOWLIST_IDS + 1)]
    f.write_text(json.dumps({"external_account_identity_interaction": {"identity_types": {
        "user": {"state": "limited", "external_allowed_accounts": ids}}}}))
    one_line_error(ae("settings", "put", "--bootstrap-servers", unreachable(), "--account", "acct1",
                      "--file", str(f), "--dry-run"), 2, "invalid settings document", f"{MAX_ALLOWLIST_IDS}")


HOSTILE_IDS = ["a\u200bb", "a\u202eb", "a\u009bb", "a$(id)b", "a;b", "   ", "x" * 257, "a\x1bb", "ok-id"]


@pytest.mark.parametrize("entry", HOSTILE_IDS, ids=[repr(x)[:20] for x in HOSTILE_IDS])
def test_put_refuses_every_id_the_contract_rejects(entry: str, tmp_path: Path) -> None:
    """Whatever the contract's AccountId rule rejects, `put` refuses before publishing: it validates the
    exact bytes it would publish with the processor's model (no second rule to drift)."""
    try:
        TypeAdapter(AccountId).validate_python(entry)
        contract_rejects = False
    except ValidationError:
        contract_rejects = True
    f = tmp_path / "ids.json"
    f.write_text(json.dumps({"external_account_identity_interaction": {"identity_types": {
        "user": {"state": "limited", "external_allowed_accounts": [entry]}}}}))
    proc = ae("settings", "put", "--bootstrap-servers", unreachable(), "--account", "acct1", "--file", str(f),
              "--dry-run")
    if contract_rejects:
        one_line_error(proc, 2, "external_allowed_accounts")
    elif proc.returncode == 0:  # accepted: exactly this one id is what would be published
        published = json.loads(proc.stdout)["external_account_identity_interaction"]["identity_types"]["user"]
        assert published["external_allowed_accounts"] == [entry]
    else:  # the tools' own stricter rule (e.g. no control characters in a flag): one line, exit 2
        one_line_error(proc, 2, "external_allowed_accounts")
    if entry == "ok-id":
        assert proc.returncode == 0, proc.stderr
