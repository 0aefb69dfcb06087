"""The TPC-W driver and the mode comparison: navigation graphs, a short run embedded, and the
pair in eve and sequential modes ending at the same state (real processes on loopback)."""

from __future__ import annotations

import pytest

from tpcw import navigation
from tpcw.bench import compare_modes, format_report, run_mode
from tpcw.driver import run_browsers
from tpcw.populate import populate


@pytest.mark.parametrize("mix", navigation.MIXES)
def test_graphs_reach_the_mix_percentages(mix):
    distribution = navigation.stationary_distribution(mix)
    tolerance = 0.5 if mix == "shopping" else 0.05  # UW's shopping graph is close, not exact
    for page, percent in navigation.MIX_PERCENTAGES[mix].items():
        assert abs(distribution[page] - percent) < tolerance, (page, distribution[page], percent)


def test_every_page_is_implemented():
    from tpcw.driver import EmulatedBrowser

    for page in navigation.PAGES:
        assert hasattr(EmulatedBrowser, f"_page_{page.lower()}")


def test_a_short_embedded_run_covers_the_ordering_pages(tmp_path):
    path = str(tmp_path / "shop.db")
    populate(path, items=1000, ebs=1, workers=1)
    result = run_browsers(path, mix="ordering", clients=2, duration_s=60, items=1000, ebs=1, workers=1,
                          max_interactions=250)
    assert not result.failures, result.failures[:3]
    assert result.stats.interactions == 500
    # The ordering mix buys: carts were filled and orders confirmed.
    assert {"SHOP", "BUYR", "BUYC"} <= set(result.stats.latencies)


def test_eve_and_sequential_pairs_reach_the_same_state_with_one_client(tmp_path):
    roots = {}
    for mode in ("eve", "sequential"):
        result = run_mode(mode, mix="shopping", clients=1, duration_s=120, items=1000, ebs=1, seed=11, workers=2,
                          directory=str(tmp_path), warmup_s=0, max_interactions=150, fixed_clock_ms=1_700_000_000_000)
        data = result.as_dict()
        assert data["roots_equal"], data
        assert data["rollbacks"] == 0 and data["state_transfers"] == 0, data
        assert not result.run.failures, result.run.failures[:3]
        roots[mode] = data["state_root"]
    assert roots["eve"] == roots["sequential"]


def test_the_report_compares_modes(tmp_path):
    report = compare_modes(["unreplicated", "eve"], mix="browsing", clients=2, duration_s=1.5, items=1000, ebs=1,
                           workers=2, directory=str(tmp_path))
    assert set(report["modes"]) == {"unreplicated", "eve"}
    for data in report["modes"].values():
        assert data["wips"] > 0 and data["roots_equal"] and data["p99_ms"] >= data["p50_ms"]
    assert "eve/unreplicated" in report["ratios"] and "pair_efficiency" in report["ratios"]
    assert any(line.startswith("eve ") for line in format_report(report))
