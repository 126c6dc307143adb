"""The arithmetic of benchmarks/scale_inventory.py: how a fleet size is spread over the tiers,
and the growth exponent that decides whether a step is flagged as growing too fast. Fast: no
emulator, no Ansible run."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("scale_inventory", REPO / "benchmarks" / "scale_inventory.py")
scale = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(scale)


@pytest.mark.parametrize(("n2", "t2", "expected"), [(200, 2.0, 1.0), (200, 4.0, 2.0), (400, 2.0, 0.5), (200, 1.0, 0.0)])
def test_the_exponent_is_the_slope_on_a_log_log_scale(n2: int, t2: float, expected: float) -> None:
    assert scale.exponent(100, 1.0, n2, t2) == pytest.approx(expected)


def test_the_exponent_refuses_what_has_no_slope() -> None:
    for args in ((100, 1.0, 100, 2.0), (0, 1.0, 100, 2.0), (100, 0.0, 200, 1.0)):
        with pytest.raises(ValueError):
            scale.exponent(*args)


@pytest.mark.parametrize("total", [6, 7, 10, 100, 250, 500, 1001])
def test_every_instance_lands_in_a_tier_and_every_tier_has_one(total: int) -> None:
    counts = scale.tier_counts(total)
    assert set(counts) == set(scale.SHARES)
    assert sum(counts.values()) + len(scale.SINGLE_TIERS) == total
    assert min(counts.values()) >= 1


def test_the_counts_follow_the_shares() -> None:
    assert scale.tier_counts(500) == {"edge": 75, "backend": 199, "qdrant": 75, "ollama": 149}
    assert scale.tier_counts(100) == {"edge": 15, "backend": 39, "qdrant": 15, "ollama": 29}


def test_a_fleet_too_small_for_every_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 6"):
        scale.tier_counts(5)


def test_the_table_flags_quadratic_growth_and_only_that() -> None:
    sizes = [100, 200, 400]
    seconds = {100: {"graph": 1.0, "preflight": 10.0, "render": 1.0},
               200: {"graph": 2.0, "preflight": 20.0, "render": 4.0},
               400: {"graph": 4.1, "preflight": 40.0, "render": 16.0}}
    exponents = scale.growth(sizes, seconds)
    assert exponents["render"] == pytest.approx([2.0, 2.0])
    assert exponents["graph"][1] == pytest.approx(math.log(4.1 / 2.0) / math.log(2))
    printed = scale.table(sizes, seconds)
    flagged = [line for line in printed.splitlines() if "!" in line]
    assert len(flagged) == 2 and all(line.count("!") == 1 for line in flagged)
    assert "render (100->200: 2.00), render (200->400: 2.00)" in printed
    assert "graph (" not in printed and "preflight (" not in printed
    linear = {n: {"graph": n / 100, "preflight": n / 10, "render": n / 50} for n in sizes}
    assert "nothing grows faster than n^1.5" in scale.table(sizes, linear)
