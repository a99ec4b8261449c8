"""The table statistics against numbers worked out by hand or by scipy on fixed inputs: the exact sign-flip
test, the paired t-test, Holm and Benjamini-Hochberg, t-intervals, power, the marks, per-seed values, the IQM."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from test_report_helpers import fake_cell, store_cell

from bench.config import ConfigError
from bench.report import ranking, stats
from bench.report.model import StatsOptions
from bench.report.render import to_csv, to_markdown
from bench.report.tables import models_from
from bench.store import read_results

# -- the exact sign-flip permutation test ----------------------------------------------------------


def test_sign_flip_p_by_hand() -> None:
    # [1..5]: only the all-plus and all-minus patterns reach |sum| = 15: 2 / 32.
    assert stats.sign_flip_p([1, 2, 3, 4, 5]) == pytest.approx(1 / 16)
    # [3, 1, 1]: sums ±3±1±1 are 5, 3, 3, 1, -1, -3, -3, -5; |sum| >= 5 twice in 8 -> 0.25.
    assert stats.sign_flip_p([3, 1, 1]) == pytest.approx(0.25)
    # [1, -1]: sums 0, 2, -2, 0, all >= |0| -> 1.
    assert stats.sign_flip_p([1, -1]) == 1.0
    # Identical differences that float rounding splits (45.67 - 41.00 and 46.67 - 42.00) count as equal.
    assert stats.sign_flip_p([45.67 - 41.00, 46.67 - 42.00, 4.67, 4.67, 4.67]) == pytest.approx(1 / 16)
    assert math.isnan(stats.sign_flip_p([2.0]))
    assert stats.smallest_exact_p(5) == 0.0625 and stats.smallest_exact_p(8) == pytest.approx(1 / 128)


@pytest.mark.parametrize("differences", [[1.2, 0.5, 2.0, -0.3, 1.1], [0.4, -1.3, 2.2, 0.9, 1.7, -0.2, 3.1],
                                         [5.0, 4.0, -1.0, 2.0]])
def test_sign_flip_p_matches_scipy_exact_permutation_test(differences) -> None:
    d = np.array(differences)
    expected = scipy_stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                            alternative="two-sided").pvalue
    assert stats.sign_flip_p(d) == pytest.approx(expected)


def test_sign_flip_p_samples_beyond_sixteen_pairs() -> None:
    # 18 positive differences: the exact p is 2 / 2**18; the fixed-seed sample gives (1 + hits) / (1 + draws).
    p = stats.sign_flip_p(np.arange(1.0, 19.0))
    assert p >= 1 / (1 + stats.MONTE_CARLO_FLIPS) and p < 1e-4
    assert p == stats.sign_flip_p(np.arange(1.0, 19.0))  # reproducible


# -- paired t, Welch, intervals ---------------------------------------------------------------------


def test_paired_t_matches_scipy_ttest_rel() -> None:
    a, b = np.array([3.0, 5.0, 4.0, 8.0]), np.array([1.0, 2.0, 2.0, 3.0])
    reference = scipy_stats.ttest_rel(a, b)
    assert stats.paired_t_p(a - b) == pytest.approx(reference.pvalue)
    low, high = stats.paired_interval(a - b)
    assert (low, high) == pytest.approx(tuple(reference.confidence_interval()))
    assert math.isnan(stats.paired_t_p([2.0, 2.0, 2.0]))  # no spread: the t statistic is undefined


def test_intervals_by_hand_and_too_few_seeds() -> None:
    # d = [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.302653 -> 2 ± 4.302653 / sqrt(3) = 2 ± 2.484138.
    assert stats.paired_interval([1, 2, 3]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    welch = scipy_stats.ttest_ind([60, 61, 62, 63, 64], [50, 51, 52, 53, 57], equal_var=False)
    assert stats.welch_interval([60, 61, 62, 63, 64], [50, 51, 52, 53, 57]) == \
        pytest.approx(tuple(welch.confidence_interval()))
    assert all(math.isnan(v) for v in stats.paired_interval([1.0, 2.0]))
    assert all(math.isnan(v) for v in stats.welch_interval([1.0, 2.0], [1.0, 2.0, 3.0]))


def test_compare_pairs_where_paired_and_falls_back_to_welch() -> None:
    ours, theirs = [60.0, 62.0, 61.0, 65.0, 63.0], [50.0, 53.0, 51.0, 54.0, 52.0]
    pairs = list(zip(ours, theirs, strict=True))
    exact = stats.compare(ours, theirs, pairs, "exact")
    assert exact.test == "exact" and exact.n_pairs == 5 and exact.p_value == pytest.approx(1 / 16)
    assert exact.difference == pytest.approx(10.2)
    t = stats.compare(ours, theirs, pairs, "t")
    assert t.p_value == pytest.approx(scipy_stats.ttest_rel(ours, theirs).pvalue)
    unpaired = stats.compare(ours, theirs, None, "exact")
    assert unpaired.test == "welch" and unpaired.n_pairs == 0
    assert unpaired.p_value == pytest.approx(scipy_stats.ttest_ind(ours, theirs, equal_var=False).pvalue)
    forced = stats.compare(ours, theirs, pairs, "welch")
    assert forced.test == "welch" and forced.p_value == pytest.approx(unpaired.p_value)
    few = stats.compare([1.0, 2.0], [0.0, 1.0], [(1.0, 0.0), (2.0, 1.0)], "exact")
    assert few.interval_note == stats.TOO_FEW_SEEDS and math.isnan(few.ci_low) and few.p_value == 0.5
    one = stats.compare([1.0], [0.0, 1.0], [(1.0, 0.0)], "exact")
    assert one.untested == stats.FEW_PAIRS and math.isnan(one.p_value)


# -- multiplicity --------------------------------------------------------------------------------


def test_holm_by_hand_and_bh_against_scipy() -> None:
    p = [0.01, 0.04, 0.03, math.nan, 0.2]
    # Holm, m = 4: 0.01*4 = 0.04; 0.03*3 = 0.09; 0.04*2 = 0.08 -> 0.09 (monotone); 0.2*1 = 0.2.
    holm = stats.adjust(p, "holm")
    assert holm[:3] == pytest.approx([0.04, 0.09, 0.09]) and math.isnan(holm[3]) and holm[4] == pytest.approx(0.2)
    bh = stats.adjust(p, "bh")
    expected = scipy_stats.false_discovery_control([0.01, 0.04, 0.03, 0.2])
    assert [bh[i] for i in (0, 1, 2, 4)] == pytest.approx(list(expected))
    assert stats.adjust([0.5, 0.9], "holm") == [1.0, 1.0]  # 0.5*2 = 1.0; 0.9*1 = 0.9 -> 1.0 (monotone)
    assert stats.adjust(p, "none")[:3] == p[:3]


# -- power --------------------------------------------------------------------------------------


def test_detectable_difference_by_the_noncentral_t_and_known_values() -> None:
    paired = stats.detectable_difference(5, 1.0, paired=True)
    two = stats.detectable_difference(5, 1.0, paired=False)
    # G*Power's sample-size tables: n = 5, alpha 0.05 two-sided, power 0.8 -> d = 1.68 (one sample) and 2.02
    # (two groups of 5).
    assert paired == pytest.approx(1.682, abs=2e-3) and two == pytest.approx(2.024, abs=2e-3)
    nc, crit = two / math.sqrt(2 / 5), scipy_stats.t.ppf(0.975, 8)
    assert scipy_stats.nct.sf(crit, 8, nc) + scipy_stats.nct.cdf(-crit, 8, nc) == pytest.approx(0.8, abs=1e-6)
    # Large n: the normal approximation (z_0.975 + z_0.8) * sd * sqrt(2 / n).
    assert stats.detectable_difference(2000, 1.0, False) == pytest.approx(2.8016 * math.sqrt(2 / 2000), rel=1e-3)
    assert stats.detectable_difference(5, 2.0, True) == pytest.approx(2 * paired)  # linear in the std
    assert math.isnan(stats.detectable_difference(1, 1.0, True))


# -- tables -------------------------------------------------------------------------------------


def _models(tmp_path, cells, test="exact", correction="holm"):
    results, problems = read_results(tmp_path)
    return models_from("table-6.10", cells, results, problems, options=StatsOptions(test, correction))


@pytest.fixture()
def paired_store(tmp_path):
    """concat, OGM, AGM on synth-mosi audio+vision, 5 seeds each, paired by seed (same model and data)."""
    cells = [fake_cell(m, profile="quick") for m in ("concat", "ogm", "agm")]
    store_cell(tmp_path, cells[0], [50, 52, 51, 54, 53], [90, 91, 92, 93, 94])
    store_cell(tmp_path, cells[1], [60, 63, 61, 65, 62], [80, 82, 81, 84, 83])
    store_cell(tmp_path, cells[2], [51, 52, 53, 53, 53], [89, 92, 91, 94, 94])
    return tmp_path, cells


def test_default_is_the_exact_paired_test_and_five_seeds_cannot_be_significant(paired_store):
    runs, cells = paired_store
    models = _models(runs, cells)
    ogm = next(r for r in models[0].cells() if r.cell.method == "ogm").metrics["acc"]
    assert ogm.test == "exact" and ogm.n_pairs == 5 and ogm.p_value == pytest.approx(1 / 16)
    assert ogm.verdict == "tie" and ogm.mark == "" and ogm.difference == pytest.approx(10.2)
    # t-interval of the paired differences [10, 11, 10, 11, 9].
    d = np.array([10, 11, 10, 11, 9.0])
    half = scipy_stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (ogm.ci_low, ogm.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    text = to_markdown(models, effects=True)
    assert "smallest p is 0.0625 (2 / 2^5), so no difference can reach p < 0.05 however large" in text
    assert "Holm-Bonferroni correction over the table's" in text
    assert f"vs base +10.20 [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]" in text


def test_paired_t_with_holm_over_the_whole_table(paired_store):
    runs, cells = paired_store
    model = _models(runs, cells, test="t")[0]
    cells_by = {r.cell.method: r for r in model.cells()}
    raw = []
    for method in ("ogm", "agm"):
        for key in ("acc", "loss"):
            got = cells_by[method].metrics[key]
            ours = cells_by[method].values[key]
            base = cells_by["concat"].values[key]
            assert got.test == "t" and got.p_value == pytest.approx(scipy_stats.ttest_rel(ours, base).pvalue)
            raw.append(got)
    rank_tests = [m for r in model.cells() for m in r.metrics.values() if not math.isnan(m.next_p)]
    family = [m.p_value for m in raw] + [m.next_p for m in rank_tests]
    assert model.tests == {"baseline": 4, "rank": len(rank_tests)}
    expected = stats.adjust(family, "holm")
    assert [m.p_adjusted for m in raw] == pytest.approx(expected[:4])
    # OGM's accuracy: paired t p = 1.6e-5, x8 tests at most, still < 0.01 -> ‡ and better.
    assert cells_by["ogm"].metrics["acc"].mark == "‡" and cells_by["ogm"].metrics["acc"].verdict == "better"
    frame = pd.read_csv(io.StringIO(to_csv([model])))
    row = frame[(frame["method"] == "ogm") & (frame["metric"] == "acc")].iloc[0]
    assert row["test"] == "t" and row["n_pairs"] == 5 and row["correction"] == "holm"
    assert row["p_value"] == pytest.approx(raw[0].p_value, rel=1e-5)
    assert row["p_adjusted"] == pytest.approx(raw[0].p_adjusted, rel=1e-5)
    assert row["interval"] == "95% paired t-interval" and row["seeds"] == "0;1;2;3;4"
    assert row["values"] == "60;63;61;65;62"


def test_marks_only_where_the_next_rank_differs_after_correction(paired_store):
    runs, cells = paired_store
    model = _models(runs, cells, test="t")[0]
    acc = {r.cell.method: r.metrics["acc"] for r in model.cells()}
    # OGM (62.2) vs AGM (52.4), paired t: clearly apart -> bold. AGM vs concat (52.0): p = 0.62 -> tied (≈).
    assert acc["ogm"].rank == 1 and acc["ogm"].shown_rank == 1 and not acc["ogm"].tied
    expected = scipy_stats.ttest_rel([51, 52, 53, 53, 53], [50, 52, 51, 54, 53]).pvalue
    assert acc["agm"].next_p == pytest.approx(expected) and acc["agm"].shown_rank == 0 and acc["agm"].tied
    assert acc["concat"].rank == 3 and acc["concat"].shown_rank == 0 and not acc["concat"].tied  # no next
    row = next(line for line in to_markdown([model]).splitlines() if line.startswith("| AGM |"))
    assert row.startswith("| AGM | 52.40 ± 0.89≈ |")
    assert to_markdown([model]).count("**62.20 ± 1.92**‡") == 1


def test_unpaired_runs_use_welch_and_the_table_says_so(tmp_path):
    cells = [fake_cell("concat", profile="quick"), fake_cell("ogm", profile="quick"),
             fake_cell("agm", profile="quick", batch_size=32)]  # another batch size: another batch order
    store_cell(tmp_path, cells[0], [50, 52, 51, 54, 53])
    store_cell(tmp_path, cells[1], [60, 63, 61, 65, 62])
    store_cell(tmp_path, cells[2], [70, 72, 71, 74, 73])
    model = _models(tmp_path, cells)[0]
    agm = next(r for r in model.cells() if r.cell.method == "agm").metrics["acc"]
    assert agm.test == "welch" and agm.n_pairs == 0
    assert agm.p_value == pytest.approx(scipy_stats.ttest_ind([70, 72, 71, 74, 73], [50, 52, 51, 54, 53],
                                                              equal_var=False).pvalue)
    row = next(line for line in to_markdown([model]).splitlines() if line.startswith("| AGM |"))
    assert "(Welch t)" in row  # the table's usual test is the exact one; this cell names its own


def test_power_line_uses_the_median_std_of_paired_differences(paired_store):
    runs, cells = paired_store
    model = _models(runs, cells, test="t")[0]
    text = to_markdown([model])
    # accuracy differences: OGM [10, 11, 10, 11, 9] (sd 0.8367), AGM [1, 0, 2, -1, 0] (sd 1.1402): median 0.9884.
    sd = float(np.median([np.std([10, 11, 10, 11, 9], ddof=1), np.std([1, 0, 2, -1, 0], ddof=1)]))
    found = stats.detectable_difference(5, sd, True)
    assert (f"Power: with 5 seeds a two-sided paired t-test at α = 0.05 detects with 80% probability a true "
            f"difference of at least accuracy {found:.2f} (median std of the per-seed differences {sd:.2f}") in text


def test_too_few_seeds_give_no_interval(tmp_path):
    cells = [fake_cell("concat", seeds=(0, 1), profile="quick"), fake_cell("ogm", seeds=(0, 1), profile="quick")]
    store_cell(tmp_path, cells[0], [50, 52])
    store_cell(tmp_path, cells[1], [60, 61])
    model = _models(tmp_path, cells)[0]
    ogm = next(r for r in model.cells() if r.cell.method == "ogm").metrics["acc"]
    assert math.isnan(ogm.ci_low) and ogm.interval_note == stats.TOO_FEW_SEEDS
    assert "vs base +9.50 (too few seeds)" in to_markdown([model], effects=True)


def test_per_seed_values_in_seed_order(tmp_path):
    cells = [fake_cell("concat", profile="quick"), fake_cell("ogm", profile="quick")]
    store_cell(tmp_path, cells[0], [50, 52, 51, 54, 53])
    store_cell(tmp_path, cells[1], [60, 63, 61], failed=(3,))
    text = to_markdown(_models(tmp_path, cells), per_seed=True)
    assert "[60.00, 63.00, 61.00, —, —]" in text and "[50.00, 52.00, 51.00, 54.00, 53.00]" in text
    assert "Per seed: the values in brackets are the seeds 0, 1, 2, 3, 4 in that order" in text
    assert "[50.00" not in to_markdown(_models(tmp_path, cells))  # only when asked


def test_unknown_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown test 'z'"):
        StatsOptions(test="z")
    with pytest.raises(ConfigError, match="unknown correction 'bonferroni'; choose from holm, bh, none"):
        StatsOptions(correction="bonferroni")


# -- aggregates (rliable's recipe) ------------------------------------------------------------------


def test_iqm_normalisation_and_profile_by_hand() -> None:
    assert ranking.iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # cut one from each end: mean(2, 3)
    assert ranking.iqm([7, 0, 1, 2, 3, 4, 5, 6]) == pytest.approx(3.5)  # cut two each side: mean(2, 3, 4, 5)
    cells = {("c",): {"a": np.array([50.0, 60.0]), "b": np.array([55.0, 70.0])}}
    normal = ranking.normalised_scores(cells)
    assert normal[("c",)]["a"].tolist() == [0.0, 0.5] and normal[("c",)]["b"].tolist() == [0.25, 1.0]
    lower = ranking.normalised_scores(cells, higher_is_better=False)
    assert lower[("c",)]["b"].tolist() == [0.75, 0.0]
    assert ranking.normalised_scores({("c",): {"a": np.array([3.0, 3.0])}})[("c",)]["a"].tolist() == [0.5, 0.5]
    assert ranking.performance_profile([0.0, 0.25, 0.5, 1.0], [0.2, 0.5]) == [0.75, 0.25]
    low, high = ranking.stratified_iqm_interval([np.array([0.4, 0.4]), np.array([0.4])], samples=50)
    assert low == pytest.approx(0.4) and high == pytest.approx(0.4)  # nothing to resample differently


def test_aggregate_reports_the_iqm_with_its_interval() -> None:
    data = [("c1", "concat", [50, 51]), ("c1", "m", [60, 61]), ("c2", "concat", [70, 71]), ("c2", "m", [72, 80])]
    rows = pd.DataFrame([{"dataset": cell, "modalities": "a+v", "optimizer": "adam", "config": "standard",
                          "method": method, "seed": seed, "test_acc": float(value)}
                         for cell, method, values in data for seed, value in enumerate(values)])
    result = {a.method: a for a in ranking.aggregate(rows, "test_acc", "concat", samples=200)}
    # c1 range 50..61: m -> 10/11, 1; c2 range 70..80: m -> 0.2, 1. IQM of [0.2, 0.909, 1, 1]: mean(0.909, 1).
    assert result["m"].iqm == pytest.approx((10 / 11 + 1) / 2) and result["m"].runs == 4
    assert result["m"].iqm_low <= result["m"].iqm <= result["m"].iqm_high
    text = ranking.markdown(list(result.values()), "concat")
    assert "| IQM [95% CI] |" in text.splitlines()[0]


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture()
def cli_store(paired_store, monkeypatch):
    from bench import selection

    runs, cells = paired_store
    monkeypatch.setattr(selection, "expand_preset", lambda preset, **kw: cells)
    return runs


def test_table_flags(cli_store, capsys):
    from bench.cli import main

    main(["table", "table-6.10", "--runs-dir", str(cli_store), "--test", "t", "--correction", "bh", "--effects",
          "--per-seed"])
    out = capsys.readouterr().out
    assert "Benjamini-Hochberg correction over the table's" in out and "paired t-test of the per-seed" in out
    assert "[60.00, 63.00, 61.00, 65.00, 62.00] vs base +10.20 [" in out
    with pytest.raises(SystemExit) as done:
        main(["table", "table-6.10", "--runs-dir", str(cli_store), "--test", "wilcox"])
    assert done.value.code == 2
    assert "unknown test 'wilcox'; choose from exact, t, welch" in capsys.readouterr().err


def test_rank_adds_the_iqm_and_draws_the_performance_profile(cli_store, tmp_path, capsys):
    from bench.cli import main

    png = tmp_path / "profile.png"
    main(["table", "table-6.10", "--runs-dir", str(cli_store), "--rank", "--rank-plot", str(png)])
    out = capsys.readouterr().out
    assert "| IQM [95% CI] |" in out and "share > 0.5" in out and f"Performance profile drawn: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit) as done:
        main(["table", "table-6.10", "--runs-dir", str(cli_store), "--rank-plot", str(png)])
    assert done.value.code == 2


def test_the_evaluations_table_corrects_its_tests_with_holm() -> None:
    from types import SimpleNamespace

    from bench.plan.resolve import make_config
    from bench.report import evaluations as evals

    def cell(method: str) -> SimpleNamespace:
        configs = tuple(make_config("synth-mosi", "smoke", method=method, modalities=("text", "vision"), seed=s,
                                    test_noise=(0.5,)) for s in range(3))
        return SimpleNamespace(table="g", dataset="synth-mosi", family="mosi", modalities="text+vision",
                               method=method, config_label="standard", optimizer="adam", configs=configs)

    concat, ogm = cell("concat"), cell("ogm")
    values = {"concat": ([50, 51, 52], [40, 41, 42]), "ogm": ([51, 53, 55], [46, 47, 49])}
    results, rows = [], []
    for c in (concat, ogm):
        for cfg, clean, noisy in zip(c.configs, *values[c.method], strict=True):
            results.append({"run_id": cfg.run_id, "status": "ok", "test_acc": clean})
            rows.append({"run_id": cfg.run_id, "kind": "noise", "sigma": 0.5, "test_dataset": "", "test_acc": noisy})
    frame = evals.evaluations_frame([concat, ogm], pd.DataFrame(results), pd.DataFrame(rows),
                                    evals.table_metric([concat, ogm]))
    got = frame.set_index(["method", "column"])
    clean_p = scipy_stats.ttest_ind([51, 53, 55], [50, 51, 52], equal_var=False).pvalue
    noisy_p = scipy_stats.ttest_ind([46, 47, 49], [40, 41, 42], equal_var=False).pvalue
    # Holm over the 2 tests: the smaller p doubled, the larger kept (at least the smaller's).
    low, high = sorted([clean_p, noisy_p])
    assert sorted(got["p_adjusted"].dropna()) == pytest.approx([2 * low, max(2 * low, high)])
    assert got.loc[("ogm", "noise σ=0.5"), "p_value"] == pytest.approx(noisy_p)
