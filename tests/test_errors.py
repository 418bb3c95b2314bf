"""tools/errors.py: one exit-code enum, and every error class of tools/ takes its code from it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from dbsage.tools.errors import DbsageError, ExitCode

REPO = Path(__file__).resolve().parent.parent
MODULES = ("analyze", "apply", "binaries", "catalog", "connection", "diff", "dryrun", "embedded",
           "errors", "execute", "history", "lock", "rollback", "smoke", "snapshot", "sqlfile")


def test_the_codes_are_the_readme_s() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "FAILED": 1, "USAGE": 2, "LOCK_BUSY": 3, "ALREADY_APPLIED": 4, "DRIFT": 5,
        "REFUSED": 6, "COMMITTED_BUT_CHECKS_FAILED": 7, "INTERRUPTED": 130, "TERMINATED": 143}
    readme = (REPO / "README.md").read_text()
    for code in ExitCode:
        if code is not ExitCode.OK:
            assert re.search(rf"\b{int(code)}\b", readme.split("## Exit codes", 1)[1][:2000]), code


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_every_error_class_of_tools_uses_the_enum() -> None:
    for name in MODULES:
        importlib.import_module(f"dbsage.tools.{name}")
    mine = [c for c in _subclasses(DbsageError)
            if c.__module__.removeprefix("dbsage.tools.") in MODULES]
    assert len(mine) > 15
    for cls in mine:
        assert isinstance(cls.exit_code, ExitCode), cls
    assert {c.__name__: int(c.exit_code) for c in mine}.items() >= {
        "DbsageError": 1, "ConfigError": 2, "ConnectionFailedError": 2, "MigrationFileError": 2,
        "LockBusyError": 3, "AlreadyAppliedError": 4, "DriftError": 5, "MigrationFailedError": 1,
        "RunInterrupted": 130, "LintUnavailableError": 2, "InvalidTimestampError": 2}.items()
