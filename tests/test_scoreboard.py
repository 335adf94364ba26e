"""The scoreboard of notebook 13 and the README: the cells that are cheap to
recompute are recomputed here and compared with the committed docs/scoreboard.csv
(regenerate both with ``python scripts/scoreboard.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from grokfl_helpers import scoreboard

CSV = Path(__file__).resolve().parent.parent / "docs" / "scoreboard.csv"
# Cheap: every column but the two cryptographic ones (seconds of masks and ciphertexts), and every
# row but the canary (an LSTM) and the seconds (a clock). Everything else is recomputed.
CHEAP = [d for d in scoreboard.DEFENSES if d not in ("secure aggregation", "homomorphic encryption")]


@pytest.fixture(scope="module")
def committed():
    assert CSV.exists(), "docs/scoreboard.csv is missing: run python scripts/scoreboard.py"
    return {(c["attack"], c["defense"]): c for c in scoreboard.read_csv(CSV)}


@pytest.fixture(scope="module")
def fresh(corpus):
    fed = scoreboard.build_federation(corpus)
    rounds = scoreboard.run_defenses(fed, defenses=CHEAP)
    cells = (scoreboard.word_leak_cells(fed, rounds) + scoreboard.disaggregation_cells(fed, rounds)
             + scoreboard.membership_cells(fed, rounds) + scoreboard.poisoning_cells(fed, rounds)
             + scoreboard.cost_cells(fed, rounds))
    return [c for c in cells if c["attack"] != "seconds per round"]


def test_the_committed_grid_has_every_row_and_column(committed):
    for attack in scoreboard.ATTACKS + scoreboard.COST_ROWS:
        for defense in scoreboard.DEFENSES:
            assert (attack, defense) in committed, f"no cell for {attack!r} under {defense!r}"
    for cell in committed.values():
        assert cell["status"] in scoreboard.STATUSES
        if cell["status"] in ("cannot run", "not applicable", "not measured here"):
            assert cell["value"] is None and cell["note"], f"{cell}: an empty cell must say why"


def test_the_cheap_cells_match_a_fresh_run(fresh, committed):
    assert len(fresh) > 80
    for cell in fresh:
        stored = committed[cell["attack"], cell["defense"]]
        assert stored["status"] == cell["status"], (cell, stored)
        if cell["value"] is None:
            assert stored["value"] is None, (cell, stored)
        elif math.isinf(cell["value"]):
            assert math.isinf(stored["value"]), (cell, stored)
        else:
            assert stored["value"] == pytest.approx(cell["value"], abs=2e-4), (
                f"{cell['attack']} under {cell['defense']}: fresh {cell['value']:.4f}, committed {stored['value']:.4f}; "
                f"run python scripts/scoreboard.py and commit docs/scoreboard.csv and docs/scoreboard.png")


def test_what_the_grid_teaches_holds(committed):
    value = lambda attack, defense: committed[attack, defense]["value"]  # noqa: E731
    # the server reading Bob's update reads every word; masks leave it chance; central DP leaves it all
    assert value("word leak: recall", "none (FedAvg)") == 1.0 == value("word leak: precision", "none (FedAvg)")
    assert value("disaggregation: per-email recall", "secure aggregation") < 0.05
    assert value("word leak: precision", "DP-FedAvg z=3") == 1.0
    # Mallory's scaled backdoor goes through FedAvg, and not through a rule that bounds her lever
    assert value("backdoor success", "none (FedAvg)") > 0.9
    for defense in ("clipping only", "coordinate median", "trimmed mean", "Krum"):
        assert value("backdoor success", defense) < 0.2
    # more noise, smaller ε, lower accuracy
    eps = [value("ε (δ = 1e-5)", f"DP-FedAvg z={z:g}") for z in scoreboard.Z_DP]
    acc = [value("clean test accuracy", f"DP-FedAvg z={z:g}") for z in scoreboard.Z_DP]
    assert eps == sorted(eps, reverse=True) and acc[-1] < acc[0]


def test_the_grid_marks_what_it_did_not_measure_and_what_is_trivial(committed):
    cell = lambda attack, defense: committed[attack, defense]  # noqa: E731
    # secure aggregation's poisoning cells are re-run with Mallory; homomorphic encryption's say they are not
    assert cell("backdoor success", "secure aggregation")["status"] == "measured"
    assert "not re-run" in cell("backdoor success", "homomorphic encryption")["note"]
    # the HE release is the CKKS-decrypted one, measured, not FedAvg's copied
    assert cell("membership: TPR at 1% FPR", "homomorphic encryption")["status"] == "measured"
    assert "CKKS" in cell("membership: TPR at 1% FPR", "homomorphic encryption")["note"]
    # a recall of 100% from flagging every row is marked as no success
    assert cell("word leak: recall", "secure aggregation")["note"].startswith(scoreboard.TRIVIAL)
    # no ε without DP is "not applicable"; the DP canary names its own ε and the rounds Bob's slice took part
    assert cell("ε (δ = 1e-5)", "Krum")["status"] == "not applicable"
    assert "its own ε" in cell("canary exposure (bits)", "DP-FedAvg z=1")["note"]
    assert "Bob's slice sampled in round(s)" in cell("canary exposure (bits)", "DP-FedAvg z=1")["note"]
    # the average of 10 is FedAvg's release, for every row that reads the release
    for row in ("membership: TPR at 1% FPR", "canary exposure (bits)", "clean test accuracy"):
        assert cell(row, "average of 10")["status"] == "equivalent"
        assert cell(row, "average of 10")["value"] == cell(row, "none (FedAvg)")["value"]


def test_membership_ignores_changes_below_numerical_error():
    # two emails of 2 words; the change moves words 1 and 2 (email 0) and adds 1e-9 "CKKS error" everywhere
    X = np.array([[1, 2], [3, 4]])
    y = np.array([[1.0], [0.0]])
    change = np.full((5, 1), 1e-9)
    change[[1, 2]] += 1e-3
    shares = scoreboard.release_membership_score(change, X, y)
    assert shares[0] == pytest.approx(1.0, abs=1e-5) and shares[1] == pytest.approx(0.0, abs=1e-5)
    with_zero = scoreboard.release_membership_score(change, X, y, threshold=0.0)
    assert with_zero[1] == pytest.approx(1.0, abs=1e-5), "with threshold 0, numerical error makes every word move"


def test_unknown_defense_is_refused(corpus):
    with pytest.raises(ValueError, match="unknown defense"):
        scoreboard.defense_strategy("magic", None)


def test_csv_round_trip(tmp_path):
    cells = [{"attack": "backdoor success", "defense": "Krum", "value": 0.0612, "status": "measured", "note": ""},
             {"attack": "ε (δ = 1e-5)", "defense": "clipping only", "value": math.inf, "status": "measured", "note": "x"},
             {"attack": "ε (δ = 1e-5)", "defense": "Krum", "value": None, "status": "cannot run", "note": "no DP"}]
    scoreboard.write_csv(cells, tmp_path / "grid.csv")
    back = scoreboard.read_csv(tmp_path / "grid.csv")
    assert back[0]["value"] == pytest.approx(0.0612) and math.isinf(back[1]["value"]) and back[2]["value"] is None
    rows, columns, values, _ = scoreboard.cell_table(back)
    assert rows == ["backdoor success", "ε (δ = 1e-5)"] and columns == ["clipping only", "Krum"]
    assert np.isnan(values[1, 1])


def test_the_heatmap_and_the_trade_off_figure_say_what_they_show(committed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from grokfl_helpers import plotting

    scoreboard.draw_scoreboard(list(committed.values()))
    ax = plt.gcf().get_axes()[0]
    assert ax.get_title().startswith("Every attack against every defense") and ax.get_xlabel() == "defense"
    assert [t.get_text() for t in ax.get_xticklabels()] == scoreboard.DEFENSES
    assert any("ciphertexts" in t.get_text() for t in ax.texts), "an empty cell says why it is empty"
    plt.close("all")
    plotting.scatter_plot({"a": (0.9, 0.1), "b": (0.9, 0.1), "c": (0.95, 0.5)}, "Trade-off", "accuracy (%)",
                          "attack success (%)", percent_x=True, percent_y=True, reference={"chance": 0.01})
    ax = plt.gcf().get_axes()[0]
    assert sorted(t.get_text() for t in ax.texts) == ["a, b", "c"], "coinciding points share one label"
    plt.close("all")
    with pytest.raises(ValueError, match="row labels"):
        plotting.scoreboard_heatmap(np.zeros((2, 2)), [["", ""]] * 2, ["r"], ["x", "y"], "t",
                                    row_scales=[(0, 1, "Reds", False)] * 2)
