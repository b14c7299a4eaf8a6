"""The README stays true: every setting and every command it names exists."""

from __future__ import annotations

import re

from common.settings import Settings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = [
        f"MM_{name.upper()}"
        for name in Settings.model_fields
        if f"`MM_{name.upper()}`" not in README
    ]
    assert not missing, f"settings missing from README's configuration table: {missing}"


def test_every_documented_setting_exists() -> None:
    documented = set(re.findall(r"\| `MM_([A-Z0-9_]+)` \|", README))
    assert documented, "the configuration table was not found"
    unknown = sorted(documented - {name.upper() for name in Settings.model_fields})
    assert not unknown, f"README documents settings that do not exist: {unknown}"


def test_readme_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, flags=re.MULTILINE))
    named = set(re.findall(r"`make ([a-z-]+)`", README)) | set(
        re.findall(r"^make ([a-z-]+)", README, flags=re.MULTILINE)
    )
    assert {"run", "test"} <= named
    assert named <= targets, f"README names missing make targets: {named - targets}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README
