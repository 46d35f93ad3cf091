"""The flagship's pieces on their own: alphabet, CTC decoding, WER, SI-SNR, batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from examples.asr_se import vocabulary
from examples.asr_se.batching import epoch_batches
from examples.asr_se.evaluate import character_error_rate, si_snr, word_error_rate
from examples.asr_se.features import STFT, mel_filterbank
from examples.asr_se.systems import get_system


def test_encode_round_trip_and_bad_character():
    assert vocabulary.encode("a b'") == [3, 1, 4, 2]
    with pytest.raises(ValueError, match="normalize_text"):
        vocabulary.encode("A1")


def test_greedy_decode_merges_repeats_and_drops_blanks():
    # frames: h h <b> i <b> <b> i   (length 7; the 8th frame is padding)
    path = [10, 10, 0, 11, 0, 0, 11, 5]
    log_probs = torch.full((1, 8, vocabulary.SIZE), -10.0)
    log_probs[0, torch.arange(8), torch.tensor(path)] = 0.0
    assert vocabulary.greedy_decode(log_probs, torch.tensor([7])) == ["hii"]


def test_wer_is_jiwer_on_a_hand_made_case():
    # one substitution (b -> x) and one deletion (d) over four reference words
    wer, words = word_error_rate(["a b c d"], ["a x c"])
    assert (wer, words) == (0.5, 4)


def test_cer_is_jiwer_on_a_hand_made_case():
    # "ab cd" -> "ab x": c substituted by x, d deleted; 5 reference characters (a space too)
    cer, characters = character_error_rate(["ab cd"], ["ab x"])
    assert (cer, characters) == (0.4, 5)


def test_si_snr_by_hand():
    reference = torch.sin(torch.arange(800.0, dtype=torch.float64) * 0.1)
    noise = torch.cos(torch.arange(800.0, dtype=torch.float64) * 0.37)
    reference, noise = reference - reference.mean(), noise - noise.mean()  # SI-SNR is zero-mean
    noise = noise - (noise @ reference) / (reference @ reference) * reference  # orthogonal
    noise = noise * reference.norm() / noise.norm()  # equal power: 0 dB
    value = si_snr(torch.stack([3.0 * reference + 3.0 * noise]), reference.unsqueeze(0))
    assert value.item() == pytest.approx(0.0, abs=1e-9)


def test_stft_inverse_reconstructs():
    stft = STFT(256, 128)
    wave = torch.randn(2, 4000)
    magnitude, phase = stft(wave)
    assert magnitude.shape[1] == int(stft.frames(torch.tensor(4000)))
    torch.testing.assert_close(stft.inverse(magnitude, phase, 4000), wave, atol=1e-4, rtol=1e-4)


def test_mel_filters_cover_the_band():
    filters = mel_filterbank(40, 256, 8000)
    assert filters.shape == (129, 40)
    assert (filters.sum(dim=0) > 0).all()


def test_epoch_batches_cover_every_utterance_once_and_are_seeded():
    durations = [1.0 + (i % 7) * 0.3 for i in range(103)]
    batches = epoch_batches(durations, 8, seed=3, epoch=1)
    assert sorted(i for batch in batches for i in batch) == list(range(103))
    assert batches == epoch_batches(durations, 8, seed=3, epoch=1)
    assert batches != epoch_batches(durations, 8, seed=3, epoch=2)


def test_a_resolver_variant_carries_its_options_and_granularity():
    system = get_system("gr:k=20,granularity=global")
    assert (system.resolver, system.options, system.granularity) == ("gr", {"k": 20}, "global")
    assert get_system("pcgrad").options == {} and get_system("pcgrad").granularity is None
    with pytest.raises(ValueError, match=r"unknown option.*kk"):
        get_system("gr:kk=1")
    with pytest.raises(ValueError, match="granularity must be global or tensor"):
        get_system("gr:granularity=layer")
    with pytest.raises(ValueError, match="expected OPTION=VALUE"):
        get_system("gr:k")
    with pytest.raises(ValueError, match="unknown system 'grr:k=1'"):
        get_system("grr:k=1")


def test_unknown_system_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"noisy_asr, frozen_se, .*gr"):
        get_system("grr")
    assert get_system("gr").resolver == "gr"
    assert not get_system("noisy_asr").use_enhancer


def test_stoi_leaves_out_utterances_too_short_to_score():
    from examples.asr_se.evaluate import _stoi

    short = torch.randn(400) * 0.01  # 50 ms: pystoi would return its 1e-5 placeholder
    assert _stoi(short, short, 8000) is None
    generator = torch.Generator().manual_seed(0)
    signal = torch.sin(torch.arange(16000.0) * 0.05) * torch.rand(16000, generator=generator)
    noise = 0.1 * torch.randn(16000, generator=generator)
    assert 0.5 < _stoi(signal, signal + noise, 8000) <= 1.0


def test_stoi_scores_an_utterance_despite_another_warning_and_passes_that_warning_on(
    monkeypatch,
):
    import warnings

    import pystoi

    from examples.asr_se.evaluate import _stoi

    def warning_stoi(clean, signal, sample_rate, extended):
        warnings.warn("something else", UserWarning, stacklevel=2)
        return 0.75

    monkeypatch.setattr(pystoi, "stoi", warning_stoi)
    signal = torch.ones(8000)
    with pytest.warns(UserWarning, match="something else"):
        assert _stoi(signal, signal, 8000) == 0.75


def _records() -> list[dict]:
    records = []
    for test_set in ("synthetic", "real_seen_text"):
        for noise, snr in (("none", None), ("white", 5.0), ("white", 0.0)):
            for n in range(6):
                name = f"{test_set}-{noise}-{snr}-{n}"
                records.append({"id": name, "test_set": test_set, "noise": noise, "snr": snr})
    return records


def test_hashed_subset_caps_each_condition_with_nested_deterministic_choices():
    from examples.asr_se.evaluate import hashed_subset

    records = _records()
    assert hashed_subset(records, None) == {r["id"] for r in records}
    two, four = hashed_subset(records, 2), hashed_subset(records, 4)
    assert len(two) == 6 * 2 and len(four) == 6 * 4  # 6 conditions
    assert two <= four  # a smaller subset lies inside every larger one
    assert hashed_subset(list(reversed(records)), 2) == two  # order of the manifest is moot
    noisy = hashed_subset(records, None, noisy_only=True)
    assert noisy == {r["id"] for r in records if r["snr"] is not None}
    assert hashed_subset(records, 0) == set()


def test_evaluation_can_be_limited_per_condition(tiny_manifest):
    from examples.asr_se.config import get_preset
    from examples.asr_se.evaluate import evaluate
    from examples.asr_se.model import JointModel

    torch.manual_seed(0)
    model = JointModel(get_preset("tiny").model).eval()
    results = evaluate(model, tiny_manifest, batch_size=4, progress=False, per_condition=1)
    assert results["wer"] and all(r["utterances"] == 1 for r in results["wer"])


def test_spread_over_seeds_says_when_there_is_one():
    from examples.asr_se.report import spread

    assert spread([0.5]) == "50.0 (1 seed)"
    assert spread([0.5, 0.7]) == "60.0 ± 14.1"  # sample standard deviation: 0.1 * sqrt(2)


def test_seed_by_seed_table_gives_each_run_and_its_gap_to_the_baseline_of_its_seed():
    from examples.asr_se.report import _by_seed

    def record(system, seed, snr, wer, words=10, test_set="synthetic"):
        return {"system": system, "seed": seed, "test_set": test_set, "noise": "babble"} | {
            "snr": snr,
            "wer": wer,
            "words": words,
        }

    records = [
        record("sum", 0, 0.0, 0.5),
        record("sum", 0, 10.0, 0.2, words=30),  # pooled: (5 + 6) / 40 = 27.5 %
        record("sum", 0, None, 0.0),  # clean: not a noisy condition
        record("sum", 1, 0.0, 0.6),
        record("gr", 0, 0.0, 0.3, words=40),  # 30.0 %: 2.5 points below sum's seed 0
        record("gr", 0, 0.0, 0.9, test_set="real_seen_text"),  # another test set
        record("gr", 1, 0.0, 0.7),
        record("pcgrad", 1, 0.0, 0.55),
    ]
    lines = _by_seed(records, ["sum", "gr", "pcgrad"], [0, 1, 2])
    assert lines[-5:] == [
        "| system | seed 0 | seed 1 |",
        "| --- | --- | --- |",
        "| sum | 27.5 | 60.0 |",
        "| gr | 30.0 (+2.5) | 70.0 (+10.0) |",
        "| pcgrad | – | 55.0 (-5.0) |",
    ]
    assert _by_seed(records, ["sum", "gr"], [0]) == []  # one seed: nothing to pair


def test_gaps_to_the_baseline_pair_runs_of_one_seed_and_skip_unpaired_ones():
    from examples.asr_se.rates import gaps_to_baseline

    def record(system, seed, cer, characters):
        return {"system": system, "seed": seed, "test_set": "synthetic", "noise": "babble"} | {
            "snr": 5.0,
            "cer": cer,
            "characters": characters,
        }

    records = [
        record("sum", 0, 0.5, 10),
        record("sum", 0, 0.2, 30),  # pooled by characters: (5 + 6) / 40 = 0.275
        record("gr", 0, 0.25, 20),  # 0.025 below
        record("gr", 1, 0.4, 10),  # no baseline on seed 1: skipped
        record("sum", 2, 0.3, 10),  # no gr on seed 2: skipped
    ]
    gaps = gaps_to_baseline(records, ["sum", "gr"], [0, 1, 2], rate="cer", weight="characters")
    assert list(gaps) == ["gr"]  # the baseline has no gap to itself
    assert gaps["gr"] == {0: pytest.approx(-0.025)}


def test_seed_gap_plot_puts_a_dot_per_seed_at_the_gap_to_the_baseline(tmp_path, monkeypatch):
    import matplotlib.figure

    from examples.asr_se.plots import plot_seed_gaps

    def record(system, seed, wer, test_set="synthetic", snr=5.0):
        return {"system": system, "seed": seed, "test_set": test_set, "noise": "babble"} | {
            "snr": snr,
            "wer": wer,
            "words": 10,
        }

    records = [
        record("sum", 0, 0.50),
        record("sum", 1, 0.60),
        record("sum", 1, 0.10, snr=None),  # clean: left out
        record("gr", 0, 0.47),  # -3 points
        record("gr", 1, 0.59),  # -1 point
        record("gr", 1, 0.90, test_set="real_seen_text"),  # another test set: left out
        record("pcgrad", 1, 0.62),  # +2 points; no seed 0
    ]
    figures = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self)
    )
    assert plot_seed_gaps(["sum", "gr", "pcgrad"], records, tmp_path) == "seed_gaps.png"
    (axis,) = figures[0].axes
    dots = {
        (round(float(line.get_xdata()[0]), 6), int(line.get_ydata()[0]))
        for line in axis.lines
        if len(line.get_xdata()) == 1
    }
    assert dots == {(-3.0, 0), (-1.0, 0), (2.0, 1)}  # gr on row 0, pcgrad on row 1
    means = [line.get_xdata()[0] for line in axis.lines if len(line.get_xdata()) == 2]
    assert means[:2] == pytest.approx([-2.0, 2.0])
    assert plot_seed_gaps(["sum", "gr"], records[:2], tmp_path) is None  # nothing to pair


def test_a_variants_folders_hold_no_colon():
    from examples.asr_se.records import record_dir_for
    from examples.asr_se.train import run_dir_for

    root = Path("root")
    assert run_dir_for(root, "full", "gr:k=20", 0) == root / "full" / "gr+k=20" / "seed0"
    assert record_dir_for(root, "gr:k=20,granularity=global", 1) == (
        root / "gr+k=20,granularity=global" / "seed1"
    )
    assert record_dir_for(root, "gr", 2) == root / "gr" / "seed2"


def test_recorded_runs_are_named_by_their_configs_and_only_when_complete(tmp_path):
    from examples.asr_se.records import record_dir_for, recorded_runs

    def record(system, seed, complete=True):
        folder = record_dir_for(tmp_path, system, seed)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"system": system, "seed": seed}))
        if complete:
            (folder / "evaluation.json").write_text("{}")

    record("gr:k=20,granularity=global", 0)  # its folder: gr+k=20,granularity=global
    record("sum", 10)
    record("sum", 2)
    record("gr", 1, complete=False)  # interrupted while being recorded: not yet a record
    assert recorded_runs(tmp_path) == [("gr:k=20,granularity=global", 0), ("sum", 2), ("sum", 10)]
    assert recorded_runs(tmp_path / "absent") == []
    (record_dir_for(tmp_path, "sum", 2) / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"seed2.config\.json"):
        recorded_runs(tmp_path)


def test_a_run_beside_the_grid_widens_the_report_and_is_counted_apart():
    from dataclasses import replace

    from examples.asr_se.compare import report_scope
    from examples.asr_se.config import get_preset
    from examples.asr_se.report import finished_runs

    preset = replace(get_preset("tiny"), systems=("sum", "gr"), seeds=(0, 1))
    assert report_scope(preset, ("gr:k=20",), (0,)) == (("sum", "gr", "gr:k=20"), (0, 1))
    assert report_scope(preset, ("gr", "sum"), (2, 0)) == (("sum", "gr"), (0, 1, 2))
    recorded = [("gr", 0), ("gr:k=20", 0), ("pcgrad", 3), ("sum", 1)]
    assert report_scope(preset, ("gr_project",), (0,), recorded) == (
        ("sum", "gr", "gr:k=20", "pcgrad", "gr_project"),
        (0, 1, 3),
    )
    runs = [
        {"system": "sum", "seed": 0},
        {"system": "gr", "seed": 1},
        {"system": "gr:k=20", "seed": 0},
        {"system": "gr", "seed": 2},
    ]
    assert finished_runs(preset, runs) == (
        "Finished runs of the preset's grid: 2 of 4 (sum seed 0, gr seed 1); "
        "beside the grid: gr:k=20 seed 0, gr seed 2"
    )
    assert finished_runs(preset, runs[:1]) == (
        "Finished runs of the preset's grid: 1 of 4 (sum seed 0)"
    )


def test_wer_plot_bands_the_spread_over_seeds_and_shares_each_rows_y_axis(tmp_path, monkeypatch):
    import matplotlib.figure

    from examples.asr_se.plots import plot_wer_vs_snr
    from examples.asr_se.rates import TEST_SETS

    records = [
        {"system": system, "seed": seed, "test_set": test_set, "noise": "babble", "snr": snr}
        | {"wer": 0.1 * seed + (0.3 if system == "gr" else 0.5), "words": 10}
        for system in ("sum", "gr")
        for seed in (0, 1)
        for test_set in TEST_SETS
        for snr in (0.0, 10.0)
    ]
    figures = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self)
    )
    plot_wer_vs_snr(["sum", "gr"], records, tmp_path)
    (figure,) = figures
    rates, gaps = figure.axes[: len(TEST_SETS)], figure.axes[len(TEST_SETS) :]
    assert len(gaps) == len(TEST_SETS)  # no CER records: a row of rates, a row of gaps
    for row in (rates, gaps):
        first, *others = row
        assert all(axis.get_shared_y_axes().joined(first, axis) for axis in others)
    # gr scores 20 points below sum on each seed, at every SNR; a line at 0 marks sum
    (gap_line,) = [line for line in gaps[0].lines if line.get_label() == "gr"]
    assert list(gap_line.get_xdata()) == [0.0, 10.0]
    assert list(gap_line.get_ydata()) == pytest.approx([-20.0, -20.0])
    first = rates[0]
    # one band per system; sum's seeds score 50 % and 60 %: mean 55 %, sd 10 / sqrt(2) %
    bands = first.collections
    assert len(bands) == 2
    heights = bands[0].get_paths()[0].vertices[:, 1]
    assert heights.min() == pytest.approx(55 - 10 / 2**0.5)
    assert heights.max() == pytest.approx(55 + 10 / 2**0.5)


def test_conflict_plot_averages_the_seeds_and_smooths_every_system_over_the_same_steps(
    tmp_path, monkeypatch
):
    import matplotlib.figure

    from examples.asr_se.plots import plot_conflicts

    def run(system, seed, every, share):
        trace = [[float(step), share + seed / 10, 0.1] for step in range(0, 100, every)]
        return {"system": system, "seed": seed, "conflict": {"trace": trace}}

    # gr on every step, sum on every tenth (as monitored without task gradients)
    runs = [run("gr", 0, 1, 0.4), run("gr", 1, 1, 0.4), run("sum", 0, 10, 0.2)]
    runs.append({"system": "noisy_asr", "seed": 0})  # no conflict trace: not drawn
    figures = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self)
    )
    assert (
        plot_conflicts(["sum", "gr", "noisy_asr"], runs, tmp_path) == "conflict_over_training.png"
    )
    share_axis, _ = figures[0].axes
    lines = {line.get_label(): line for line in share_axis.lines}
    assert set(lines) == {"sum (1 seed, every 10 steps)", "gr (2 seeds)"}
    # a tenth of 99 steps is 10 steps: 10 points of gr's, 1 of sum's
    gr, sum_ = lines["gr (2 seeds)"], lines["sum (1 seed, every 10 steps)"]
    assert gr.get_xdata()[0] == 9.0 and len(gr.get_xdata()) == 91
    assert list(gr.get_ydata()) == pytest.approx([0.45] * 91)  # seeds 0.4 and 0.5
    assert len(sum_.get_xdata()) == 10 and list(sum_.get_ydata()) == pytest.approx([0.2] * 10)
    assert plot_conflicts(["noisy_asr"], runs[-1:], tmp_path) is None


def test_late_conflict_statistics_average_each_runs_second_half_then_the_runs():
    from examples.asr_se.report import late_mean

    # steps 0..3: the second half is steps 2 and 3 (from half the last step, 1.5, on)
    first = {"trace": [[0.0, 1.0, 0.5], [1.0, 1.0, 0.5], [2.0, 0.2, 0.1], [3.0, 0.4, 0.3]]}
    # steps 0, 10, 20: from step 10 on
    second = {"trace": [[0.0, 0.9, 0.0], [10.0, 0.5, -0.2], [20.0, 0.5, 0.0]]}
    assert late_mean([first], 1) == pytest.approx(0.3)
    assert late_mean([first, second], 1) == pytest.approx((0.3 + 0.5) / 2)
    assert late_mean([first, second], 2) == pytest.approx((0.2 - 0.1) / 2)


def test_line_styles_stay_apart_beyond_ten_systems():
    from examples.asr_se.plots import line_styles

    systems = [f"system{index}" for index in range(12)]
    styles = line_styles(systems)
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == 12
    assert styles["system0"] == {"color": "C0", "linestyle": "-"}
    assert styles["system10"] == {"color": "C0", "linestyle": "--"}


def test_a_sitting_that_left_no_checkpoint_is_marked():
    from examples.asr_se.report import _sitting_cells

    sittings = [
        {"step": 0, "commit": "a" * 40, "dirty": False},
        {"step": 800, "commit": "b" * 40, "dirty": True},
        {"step": 800, "commit": "b" * 40, "dirty": False},  # resumed from the same checkpoint
    ]
    assert _sitting_cells(sittings) == [
        "step 0: aaaaaaaaaaaa",
        "step 800: bbbbbbbbbbbb (dirty, stopped before a checkpoint)",
        "step 800: bbbbbbbbbbbb",
    ]


def test_truncating_the_log_keeps_whole_rows_before_the_checkpoint(tmp_path):
    from examples.asr_se.train import truncate_log

    path = tmp_path / "train_log.csv"
    # rows 1198 and 1199 were flushed with the checkpoint at 1200; a kill cut "1234,..." to "12"
    path.write_text("step,epoch,seconds\n1198,0,0.5\n1199,0,0.5\n1200,0,0.5\n12")
    truncate_log(path, 1200)
    assert path.read_text().splitlines() == ["step,epoch,seconds", "1198,0,0.5", "1199,0,0.5"]
    truncate_log(path, 0)  # a fresh start: the header alone
    assert path.read_text().splitlines() == ["step,epoch,seconds"]


def test_no_batch_is_smaller_than_the_processes_sharing_it():
    from examples.asr_se.batching import epoch_batches

    durations = [float(i % 7) for i in range(17)]  # 4 batches of 4 and one of 1
    plain = epoch_batches(durations, 4, seed=0, epoch=0)
    assert sorted(len(batch) for batch in plain) == [1, 4, 4, 4, 4]
    shared = epoch_batches(durations, 4, seed=0, epoch=0, min_size=2)
    assert sorted(len(batch) for batch in shared) == [4, 4, 4, 5]
    assert sorted(i for batch in shared for i in batch) == list(range(17))
    with pytest.raises(ValueError, match="min_size"):
        epoch_batches(durations, 4, seed=0, epoch=0, min_size=0)


def test_the_relative_change_compares_the_baseline_on_the_systems_own_seeds():
    from examples.asr_se.rates import noisy_in
    from examples.asr_se.report import paired_relative

    def record(system, seed, wer):
        return {"system": system, "seed": seed, "test_set": "synthetic", "noise": "babble"} | {
            "snr": 5.0,
            "wer": wer,
            "words": 10,
        }

    # sum: 0.50 on seed 0, 0.70 on seed 1; a variant run on seed 0 alone scores 0.45
    records = [record("sum", 0, 0.50), record("sum", 1, 0.70), record("variant", 0, 0.45)]
    keep = noisy_in("synthetic")
    assert paired_relative(records, "variant", [0, 1], keep) == "-10.0%"  # not -25% (vs 0.60)
    records.append(record("variant", 1, 0.77))
    assert paired_relative(records, "variant", [0, 1], keep) == "+1.7%"  # 0.61 against 0.60
    assert paired_relative(records, "absent", [0, 1], keep) == "–"


def test_run_statistics_count_each_step_once_keeping_its_last_row(tmp_path):
    from examples.asr_se.compare import _run_statistics

    header = "step,epoch,stage,loss_asr,loss_se,grad_norm,lr,skipped,seconds"
    # steps 0-1 of a sitting stopped before its first checkpoint, then a whole run of 3 steps
    rows = [
        f"{step},0,joint,1.0,2.0,1.0,0.001,0,{seconds}"
        for step, seconds in [(0, 9.0), (1, 9.0), (0, 1.0), (1, 2.0), (2, 3.0)]
    ]
    (tmp_path / "train_log.csv").write_text("\n".join([header, *rows]) + "\n")
    statistics_ = _run_statistics(tmp_path)
    assert statistics_["steps"] == 3
    assert statistics_["train_seconds"] == 6.0
    assert statistics_["median_step_seconds"] == 2.0
