"""Every role's meta/argument_specs.yml and defaults/main.yml list the same variables.

Options of any entry point must have a default unless they are required; every default must
be documented in an argument spec. Drift between the two is how a renamed variable silently
stops validating.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


def spec_options(role: Path) -> tuple[set[str], set[str]]:
    """(all options, required options) over every entry point."""
    specs = load(role / "meta" / "argument_specs.yml").get("argument_specs", {})
    options, required = set(), set()
    for entry in specs.values():
        for name, opt in (entry.get("options") or {}).items():
            options.add(name)
            if opt.get("required"):
                required.add(name)
    return options, required


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_has_the_required_files(role):
    # the brief's standard: defaults, argument specs, handlers, a README and a molecule scenario
    for rel in ("defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "README.md",
                "tasks/main.yml", "handlers/main.yml", "molecule/default/molecule.yml",
                "molecule/default/converge.yml"):
        assert (role / rel).is_file(), f"roles/{role.name}/{rel} is missing"
    assert list((role / "molecule" / "default" / "tests").glob("test_*.py")), (
        f"roles/{role.name}/molecule/default has no testinfra tests")


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_match_defaults(role):
    defaults = set(load(role / "defaults" / "main.yml"))
    options, required = spec_options(role)
    undocumented = defaults - options
    assert not undocumented, f"roles/{role.name}: defaults without an argument spec: {sorted(undocumented)}"
    missing = options - defaults - required
    assert not missing, f"roles/{role.name}: argument spec options with no default and not required: {sorted(missing)}"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_public_variables_are_prefixed_with_the_role_name(role):
    for name in load(role / "defaults" / "main.yml"):
        assert name.startswith(f"{role.name}_"), f"roles/{role.name}: {name} lacks the {role.name}_ prefix"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_option_has_a_type_and_description(role):
    specs = load(role / "meta" / "argument_specs.yml").get("argument_specs", {})
    for entry_name, entry in specs.items():
        for name, opt in (entry.get("options") or {}).items():
            assert "type" in opt, f"roles/{role.name} {entry_name}.{name}: no type"
            assert opt.get("description"), f"roles/{role.name} {entry_name}.{name}: no description"


def test_drift_is_detected(tmp_path):
    """The check above must fail on a drifted role (guards against a test that cannot fail)."""
    role = tmp_path / "demo"
    (role / "defaults").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "defaults" / "main.yml").write_text("demo_a: 1\ndemo_b: 2\n")
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    options:\n      demo_a: {type: int, description: a}\n"
        "      demo_c: {type: int, description: c}\n"
    )
    with pytest.raises(AssertionError, match="demo_b"):
        test_argument_specs_match_defaults(role)
