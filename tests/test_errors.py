"""One root exception for the product (`AccessEvalError`): every exception class defined under
`processor/` subclasses it, and the command line maps it to the exception's exit status (contract §8,
§11.8: 1 failure, 2 misconfiguration or invalid input, the OpsError's own code) in one line, without a
traceback."""

from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

import pytest

from processor.cli.main import main
from processor.codec.avro import DecodeError
from processor.core.settings import InvalidSettings
from processor.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, AccessEvalError, ConfigError, InputError, OpsError
from processor.kafka.admin import StartupCancelled
from processor.kafka.registry import RegistryUnavailable
from processor.tools import simulate
from processor.tools.runner import run_tool

PACKAGE = Path(__file__).resolve().parent.parent / "processor"


def exception_classes() -> list[tuple[str, type[BaseException]]]:
    """(module:name, class) of every class statement under processor/ that makes an exception."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == "processor.__main__":  # runs the command line on import; defines no class
            assert "class " not in path.read_text()
            continue
        names = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]
        if not names:
            continue
        mod = importlib.import_module(module)
        for name in names:
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append((f"{module}:{name}", cls))
    return found


def test_every_exception_class_under_processor_subclasses_the_root() -> None:
    classes = exception_classes()
    names = {n.rsplit(":", 1)[1] for n, _ in classes}
    # The walk finds them (a walk that found nothing would pass vacuously).
    assert {"DecodeError", "InvalidSettings", "ConfigError", "OpsError", "StopRequested", "LocalRegistryError",
            "SharedTransactionalId", "StartupCancelled", "RegistryUnavailable", "InvalidAttempt"} <= names
    strays = [n for n, cls in classes if not issubclass(cls, AccessEvalError)]
    assert not strays, "exception classes outside the product's root (AccessEvalError): " + ", ".join(strays)


def test_value_error_bases_stay_where_callers_catch_value_error() -> None:
    from processor.codec.avro import SourceMismatch

    assert issubclass(DecodeError, ValueError) and issubclass(SourceMismatch, ValueError)


@pytest.mark.parametrize("exc, code", [
    (RegistryUnavailable("schema registry at http://r:8081 unreachable"), EXIT_FAIL),
    (DecodeError("not an eval event"), EXIT_FAIL),
    (ConfigError("--kafka-config: cannot read x"), EXIT_USAGE),
    (InputError("--attempts: cannot read x"), EXIT_USAGE),
    (InvalidSettings("bad_json", "malformed JSON"), EXIT_USAGE),
    (OpsError("denied", 3), 3),
    (StartupCancelled("stopped"), EXIT_OK),
])
def test_the_command_line_maps_an_unhandled_product_exception_to_its_exit_status(
    exc: AccessEvalError, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*_args: object, **_kwargs: object) -> int:
        raise exc

    monkeypatch.setattr(simulate, "main", failing)
    assert main(["simulate", "--settings", "s.jsonl", "--attempts", "a.jsonl"]) == code
    err = capsys.readouterr().err
    assert err == f"access-eval simulate: {exc}\n"  # one line, no traceback


def test_a_tool_maps_every_product_exception_through_the_root(capsys: pytest.CaptureFixture[str]) -> None:
    def fails(_args: argparse.Namespace) -> int:
        raise InvalidSettings("key_mismatch", "account_id differs from the record key")

    assert run_tool("settings put", fails, argparse.Namespace()) == EXIT_USAGE
    assert capsys.readouterr().err == "access-eval settings put: key_mismatch: account_id differs from the record key\n"
