"""What the benchmarks' markdown and plots say, from hand-made results (nothing is timed)."""

from __future__ import annotations

import json
import math

import matplotlib
import matplotlib.axes
import pytest
import torch

import gradsurgery
from benchmarks import overhead, peers, toy
from benchmarks.models import MODELS
from benchmarks.peers import PeerMethod

# --- toy --------------------------------------------------------------------------------


def toy_entry(method: str | None, primary: int | None, reached: int | None) -> dict:
    runs = [
        {
            "scale": scale,
            "end": [0.0, 0.0],
            "on_pareto_set": False,
            "reached_f1_min_at_step": reached,
            "path": [[0.0, 0.0]],
        }
        for scale in toy.SCALES
        for _ in toy.NASH_MTL_STARTS
    ]
    return {"method": method, "primary": primary, "runs": runs}


def toy_result(results: dict) -> dict:
    settings = {"steps": 10, "f1_tolerance": 0.05, "f1_min": -19.99}
    return {"machine": {}, "settings": settings, "results": results}


def table_rows(markdown: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with ``header_start``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, [cell.strip() for cell in line.strip("|").split("|")])))
    return rows


def test_toy_verdict_without_a_reference_is_no_reference():
    assert toy._verdict([None] * 5, []) == toy.NO_REFERENCE == "no reference"
    assert toy._verdict([3] * 5, []) == "no reference"
    assert toy._verdict([3] * 5, [3] * 5) == "meets"
    assert toy._verdict([None] * 5, [3] * 5) == "less reliable"


def test_toy_primary_table_says_no_reference_without_the_single_task_run():
    text = toy.markdown(toy_result({"gr": toy_entry("gr", None, None)}))
    rows = table_rows(text, "| method | scale | steps (method)")
    assert [row["verdict"] for row in rows] == ["no reference"] * len(toy.SCALES)
    assert "`no reference`" in text  # the legend lists it
    failed_reference = {"single_task_f1": {"error": "RuntimeError: boom"}}
    text = toy.markdown(toy_result({**failed_reference, "gr": toy_entry("gr", None, 5)}))
    rows = table_rows(text, "| method | scale | steps (method)")
    assert {row["verdict"] for row in rows} == {"no reference"}


def test_toy_primary_table_has_every_run_with_task_0_as_primary():
    results = {
        "single_task_f1": toy_entry(None, None, 5),
        "cosine_gate": toy_entry("cosine_gate", None, 5),  # task 0 without being told
        "pcgrad": toy_entry("pcgrad", None, 5),  # symmetric: no primary
        "pcgrad[p]": toy_entry("pcgrad", 0, 5),
        "sum": toy_entry("sum", None, 5),
    }
    rows = table_rows(toy.markdown(toy_result(results)), "| method | scale | steps (method)")
    assert {row["method"] for row in rows} == {"single_task_f1", "cosine_gate", "pcgrad[p]"}


def test_toy_table_of_ends_puts_an_error_in_its_own_column():
    results = {
        "broken": {"error": "RuntimeError: boom", "method": "broken", "primary": None},
        "sum": toy_entry("sum", None, None),
    }
    rows = table_rows(toy.markdown(toy_result(results)), "| method | scale | end points")
    broken = [row for row in rows if row["method"] == "broken"]
    assert broken == [
        {
            "method": "broken",
            "scale": "–",
            "end points (starts in order)": "failed",
            "on Pareto (of 5)": "–",
            "reached argmin f1": "–",
            "error": "RuntimeError: boom",
        }
    ]
    assert all(row["error"] == "" for row in rows if row["method"] == "sum")


# --- overhead: the plot -----------------------------------------------------------------


def record(method: str, **fields) -> dict:
    base = {
        "library": "gradsurgery",
        "model": "mlp",
        "method": method,
        "granularity": "global",
        "tasks": 2,
        "shared_parameters": 10,
        "parameters": 20,
        "pairs": 2,
        "ratio_time": 1.5,
        "ratio_time_q25": 1.4,
        "ratio_time_q75": 1.6,
        "ratio_time_ci95": [1.3, 1.7],
        "ms_method": 3.0,
        "ms_baseline": 2.0,
        "ratio_memory": 2.0,
        "mib_method": 1.0,
        "mib_baseline": 0.5,
    }
    return {**base, **fields}


def plotted_texts(records, path, monkeypatch) -> list[list[str]]:
    """The texts ``overhead.plot`` writes in its cells, panel by panel (time, memory)."""
    panels: dict[int, list[str]] = {}
    original = matplotlib.axes.Axes.text

    def spy(self, x, y, s, *args, **kwargs):
        panels.setdefault(id(self), []).append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", spy)
    overhead.plot(records, path)
    return list(panels.values())


def test_overhead_plot_says_fail_only_where_the_step_raised(tmp_path, monkeypatch):
    records = [
        record("sum"),
        record("mean", ratio_memory=None, mib_baseline=0.0),  # a baseline allocating nothing
        record("broken", ratio_time=None, ratio_memory=None, error="RuntimeError: boom"),
        record("gr", tasks=4, ratio_memory=None),  # no mean/broken/sum record at T = 4
    ]
    time, memory = plotted_texts(records, tmp_path / "overhead.png", monkeypatch)
    # rows by method (broken, gr, mean, sum), columns mlp T=2, T=4
    assert time == ["fail", "–", "–", "1.5", "1.5", "–", "1.5", "–"]
    assert memory == ["fail", "–", "–", "–", "–", "–", "2", "–"]


# --- overhead: direction agreement ------------------------------------------------------


def agreement_row(method: str, library: str, tasks: int = 2) -> dict:
    return {"model": "mlp", "tasks": tasks, "method": method, "library": library}


@pytest.mark.parametrize("method", ["dwa", "gradnorm", "uw"])
def test_loss_weightings_that_start_uniform_are_noted(method):
    note = overhead.agreement_note(agreement_row(method, "libmtl"))
    assert overhead.UNIFORM_FIRST_STEP in note and "both weightings start uniform" in note
    assert "only the plumbing" in note


def test_agreement_notes_carry_the_peers_notes_and_the_random_draws():
    assert (
        overhead.agreement_note(agreement_row("imtl", "libmtl"))
        == peers.NOTES[("libmtl", "imtl_g")]
    )
    gradnorm = overhead.agreement_note(agreement_row("gradnorm", "libmtl"))
    assert gradnorm.startswith(peers.NOTES[("libmtl", "gradnorm")] + "; first step")
    assert overhead.agreement_note(agreement_row("sum", "torchjd")) == ""
    assert overhead.agreement_note(agreement_row("pcgrad", "torchjd", tasks=2)) == ""
    assert "random" in overhead.agreement_note(agreement_row("pcgrad", "torchjd", tasks=4))
    assert "random" in overhead.agreement_note(agreement_row("rlw", "libmtl"))
    assert "first step" in overhead.agreement_note(agreement_row("gradvac", "torchjd"))


NORM_NOTES = [
    # (row's method, library, key of NOTES): the rows whose norm ratio is a convention
    ("uw", "libmtl", ("libmtl", "uncertainty")),
    ("cagrad", "torchjd", ("torchjd", "cagrad")),
    ("aligned_mtl", "torchjd", ("torchjd", "aligned_mtl")),
    ("nash_mtl", "torchjd", ("torchjd", "nash_mtl")),
]


@pytest.mark.parametrize(("method", "library", "key"), NORM_NOTES)
@pytest.mark.parametrize("tasks", [2, 8])
def test_rows_whose_norm_ratio_is_a_convention_say_why(method, library, key, tasks):
    note = overhead.agreement_note(agreement_row(method, library, tasks))
    assert peers.NOTES[key].startswith("norm: ")
    assert "|" not in note  # a table cell: no pipes to escape
    assert note.split("; ")[0] == peers.NOTES[key]
    # the other library's row of the same method carries no norm note
    other = "libmtl" if library == "torchjd" else "torchjd"
    assert "norm:" not in overhead.agreement_note(agreement_row(method, other, tasks))


def test_the_uw_norm_note_comes_before_the_first_step_note():
    assert overhead.agreement_note(agreement_row("uw", "libmtl")) == (
        peers.NOTES[("libmtl", "uncertainty")] + "; " + overhead.UNIFORM_FIRST_STEP
    )


def test_torchjd_mgda_and_the_random_gradvac_order_are_noted():
    for tasks in (2, 4):
        mgda = overhead.agreement_note(agreement_row("mgda", "torchjd", tasks))
        assert mgda == peers.NOTES[("torchjd", "mgda")]
        assert "epsilon = 1e-3" in mgda
    assert (
        overhead.agreement_note(agreement_row("mgda", "libmtl", 4))
        == peers.NOTES[("libmtl", "mgda")]
    )
    for library in ("torchjd", "libmtl"):
        at_two = overhead.agreement_note(agreement_row("gradvac", library, 2))
        at_four = overhead.agreement_note(agreement_row("gradvac", library, 4))
        own = peers.NOTES.get((library, "gradvac"))  # LibMTL 1.1.5's target update
        assert "random" not in at_two
        assert at_two.startswith(f"{own}; first step" if own else "first step")
        assert at_four == at_two + "; " + overhead.RANDOM_NOTES["gradvac"][1]
    assert "d2d84fa" in peers.NOTES[("libmtl", "gradvac")]


# The explained factors, checked against the peers themselves on a tiny matrix.

NORM_G = torch.tensor(
    [[1.0, 0.0, 2.0, 0.5], [-3.0, 1.0, 0.5, 0.0], [0.2, -1.0, 1.0, 1.0]], dtype=torch.float64
)


def torchjd_aggregator(name: str, **options):
    aggregation = pytest.importorskip("torchjd.aggregation")
    try:
        return getattr(aggregation, name)(**options)
    except ImportError as error:  # its optional dependencies (cvxpy, ...)
        pytest.skip(str(error))


def cosine_and_ratio(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    cosine = torch.nn.functional.cosine_similarity(ours, theirs.to(ours), dim=0)
    return float(cosine), float(ours.norm() / theirs.norm())


def test_torchjd_cagrad_lacks_only_the_division_by_one_plus_c_squared():
    theirs = torchjd_aggregator("CAGrad", c=0.4)(NORM_G)
    cosine, ratio = cosine_and_ratio(gradsurgery.resolve(NORM_G, method="cagrad"), theirs)
    assert cosine == pytest.approx(1.0, abs=1e-9)
    assert ratio == pytest.approx(1 / 1.16, rel=1e-5)
    undivided = gradsurgery.resolve(
        NORM_G, method=gradsurgery.get_resolver("cagrad", rescale="none")
    )
    assert cosine_and_ratio(undivided, theirs)[1] == pytest.approx(1.0, rel=1e-5)


def test_torchjd_aligned_mtl_is_our_sum_divided_by_the_number_of_tasks():
    theirs = torchjd_aggregator("AlignedMTL")(NORM_G)
    ours = gradsurgery.resolve(NORM_G, method="aligned_mtl")
    torch.testing.assert_close(ours / NORM_G.shape[0], theirs.to(ours), rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:You are solving a parameterized problem")
def test_torchjd_nash_mtl_is_clipped_to_norm_one_from_sqrt_t():
    tasks = NORM_G.shape[0]
    theirs = torchjd_aggregator("NashMTL", n_tasks=tasks)(NORM_G)
    unclipped = torchjd_aggregator("NashMTL", n_tasks=tasks, max_norm=0.0)(NORM_G)
    ours = gradsurgery.resolve(NORM_G, method="nash_mtl")
    assert float(unclipped.norm()) == pytest.approx(tasks**0.5, rel=1e-6)
    assert float(theirs.norm()) == pytest.approx(1.0, rel=1e-9)
    cosine, ratio = cosine_and_ratio(ours, theirs)
    assert cosine == pytest.approx(1.0, abs=1e-9)
    assert ratio == pytest.approx(float(ours.norm()), rel=1e-9)
    # ours solves on G / ||G G^T||_F: ||d||^2 = T ||G G^T||_F
    frobenius = float(torch.linalg.matrix_norm(NORM_G @ NORM_G.T))
    assert ratio == pytest.approx((tasks * frobenius) ** 0.5, rel=1e-6)


def test_torchjd_mgda_stops_short_at_its_default_epsilon():
    ours = gradsurgery.resolve(NORM_G, method="mgda")
    _, short = cosine_and_ratio(ours, torchjd_aggregator("MGDA")(NORM_G))
    assert abs(short - 1) > 1e-6
    tight = torchjd_aggregator("MGDA", epsilon=1e-12, max_iters=100_000)(NORM_G)
    cosine, ratio = cosine_and_ratio(ours, tight)
    assert cosine == pytest.approx(1.0, abs=1e-12) and ratio == pytest.approx(1.0, rel=1e-9)


def libmtl_direction(method: str, G: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """LibMTL's ``method`` on the task gradients ``G``, through the benchmark's host."""
    found, missing = peers.libmtl_methods()
    if missing is not None:
        pytest.skip(missing)
    peer = next(p for p in found if p.method == method)
    shared = torch.zeros(G.shape[1], dtype=G.dtype, requires_grad=True)
    backward = peer.build([shared], G.shape[0])
    # loss_i = (shared . g_i) + its value, so that d loss_i / d shared = g_i
    backward(shared, [shared @ g + loss for g, loss in zip(G, losses)])
    assert shared.grad is not None
    return shared.grad


def test_libmtl_uw_starts_at_minus_one_half():
    losses = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    theirs = libmtl_direction("uw", NORM_G, losses)
    ours = gradsurgery.get_resolver("uw")(NORM_G, losses=losses)
    cosine, ratio = cosine_and_ratio(ours, theirs)
    assert cosine == pytest.approx(1.0, abs=1e-12)
    assert ratio == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert ratio == pytest.approx(0.607, abs=5e-4)


def test_libmtl_gradvac_agrees_in_a_fixed_order(monkeypatch):
    # With LibMTL's shuffle made the identity, its order is ours with order="fixed".
    import random

    losses = torch.ones(3, dtype=torch.float64)
    monkeypatch.setattr(random, "shuffle", lambda items: None)
    theirs = libmtl_direction("gradvac", NORM_G, losses)
    ours = gradsurgery.resolve(NORM_G, method=gradsurgery.get_resolver("gradvac", order="fixed"))
    cosine, ratio = cosine_and_ratio(ours, theirs)
    assert cosine == pytest.approx(1.0, abs=1e-9) and ratio == pytest.approx(1.0, rel=1e-6)


def test_every_built_peer_method_carries_its_note():
    found, _ = peers.peer_methods()
    for peer in found:
        assert peer.note == peers.peer_note(peer.library, peer.method)
    if any(peer.library == "libmtl" for peer in found):
        assert {p.method for p in found if p.note} >= {"gradnorm"}


@pytest.mark.parametrize("method", ["dwa", "gradnorm", "uw"])
def test_the_uniform_first_step_note_is_true_of_gradsurgery(method):
    # gradsurgery's first step from a fresh resolver is a multiple of the plain sum.
    G = torch.tensor([[1.0, 0.0, 2.0], [-3.0, 1.0, 0.5], [0.2, -1.0, 1.0]], dtype=torch.float64)
    losses = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    direction = gradsurgery.get_resolver(method)(G, losses=losses)
    cosine = torch.nn.functional.cosine_similarity(direction, G.sum(0), dim=0)
    assert float(cosine) == pytest.approx(1.0, abs=1e-12)


def test_the_uniform_first_step_note_is_true_of_libmtl():
    # A plain sum passes LibMTL's fresh-step check for exactly the noted weightings.
    found, missing = peers.libmtl_methods()
    if missing is not None:
        pytest.skip(missing)
    noted = {
        p.method
        for p in found
        if overhead.FIRST_STEP_NOTES.get(("libmtl", peers.alias_key(p.method)))
        == overhead.UNIFORM_FIRST_STEP
    }
    assert noted == {"dwa", "gradnorm", "uw"}
    workload = MODELS["mlp"][0](4, 0, True)
    parameters = workload.shared_parameters()
    ours = overhead.shared_direction(
        workload, lambda: torch.autograd.backward(torch.stack(workload.forward()[1]).sum())
    )
    for peer in (p for p in found if p.method in noted):
        backward = peer.build(parameters, workload.tasks)
        theirs = overhead.shared_direction(
            workload, lambda backward=backward: backward(*workload.forward())
        )
        cosine = torch.nn.functional.cosine_similarity(ours.double(), theirs.double(), dim=0)
        assert float(cosine) == pytest.approx(1.0, abs=1e-9), peer.method


def test_direction_agreement_rows_carry_their_note():
    def build(shared, tasks):
        def backward(features, losses):
            torch.autograd.backward(torch.stack(losses).sum())

        return backward

    peer = PeerMethod("libmtl", "dwa", build)
    rows = overhead.direction_agreement(MODELS["mlp"][0](2, 0, True), [peer], {"dwa"})
    assert [row["note"] for row in rows] == [overhead.UNIFORM_FIRST_STEP]
    assert rows[0]["cosine"] == pytest.approx(1.0, abs=1e-9)


def overhead_result(agreement: list[dict]) -> dict:
    return {
        "machine": {"command": "python -m benchmarks.overhead", "torch": torch.__version__},
        "settings": {"repeats": 2},
        "records": [record("sum"), record("dwa"), record("sum", library="libmtl")],
        "direction_agreement": agreement,
        "head_to_head": [
            {
                "model": "mlp",
                "tasks": 2,
                "method": "sum",
                "library": "libmtl",
                "ratio_time": 0.9,
                "ratio_time_q25": 0.85,
                "ratio_time_q75": 0.95,
                "ratio_time_ci95": [0.8, 0.95],
                "pairs": 2,
                "ms_ours": 1.0,
                "ms_theirs": 1.1,
            }
        ],
        "peers_missing": {},
    }


def test_the_agreement_table_derives_its_notes_for_rows_that_have_none():
    rows = [
        {**agreement_row("dwa", "libmtl"), "cosine": 1.0, "norm_ratio": 1.0},  # an old run's
        {**agreement_row("sum", "libmtl"), "cosine": 1.0, "norm_ratio": 1.0, "note": "stale"},
    ]
    table = table_rows(overhead.markdown(overhead_result(rows)), "| method | peer | model")
    assert [row["note"] for row in table] == [overhead.UNIFORM_FIRST_STEP, ""]
    assert list(table[0]) == [
        "method",
        "peer",
        "model",
        "cosine",
        "norm ours/theirs",
        "note",
        "error",
    ]


def test_render_rewrites_markdown_and_plots_from_the_json_alone(tmp_path):
    rows = [{**agreement_row("dwa", "libmtl"), "cosine": 1.0, "norm_ratio": 1.0}]
    result = overhead_result(rows)
    overhead.write_outputs(result, tmp_path)
    written = overhead.markdown(result)
    json_files = {
        name: (tmp_path / name).read_bytes() for name in ("overhead.json", "overhead_run.json")
    }
    for name in ("overhead.md", "overhead.png", "overhead_peers.png"):
        (tmp_path / name).unlink()
    rendered = overhead.main(["--render", "--out", str(tmp_path)])
    assert rendered == json.loads(json.dumps(result))
    assert (tmp_path / "overhead.md").read_text() == written
    assert overhead.UNIFORM_FIRST_STEP in written
    assert (tmp_path / "overhead.png").stat().st_size > 0
    assert (tmp_path / "overhead_peers.png").stat().st_size > 0
    assert {name: (tmp_path / name).read_bytes() for name in json_files} == json_files


def test_render_refuses_a_folder_without_a_run(tmp_path, capsys):
    (tmp_path / "overhead.json").write_text("[]")
    with pytest.raises(SystemExit) as exit_info:
        overhead.parse_args(["--render", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --render" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("run_json", "records_json", "message"),
    [
        ('{"machine": ', "[]", "Expecting value"),
        ("[]", "[]", "not the JSON objects a run writes"),
        ("{}", "[]", "has no 'machine'"),
    ],
)
def test_render_refuses_damaged_json_naming_the_folder(tmp_path, run_json, records_json, message):
    (tmp_path / "overhead_run.json").write_text(run_json)
    (tmp_path / "overhead.json").write_text(records_json)
    with pytest.raises(SystemExit, match=f"--render: {tmp_path} does not hold a run's outputs"):
        overhead.main(["--render", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=message):
        overhead.main(["--render", "--out", str(tmp_path)])


def test_no_peers_is_said_in_place_of_installed_peers():
    result = overhead_result([])
    result["peers_missing"] = {"torchjd": "not run (--no-peers)", "libmtl": "not run (--no-peers)"}
    text = overhead.markdown(result)
    assert "- torchjd: not run (--no-peers)" in text and "both are installed" not in text


def test_libmtl_mgda_can_end_short_of_the_min_norm_point():
    G = torch.randn(4, 6, generator=torch.Generator().manual_seed(105))
    theirs = libmtl_direction("mgda", G, torch.ones(4)).double()
    ours = gradsurgery.resolve(G.double(), method="mgda")
    # ours is the min-norm point: each task's gradient has at least its squared norm along it
    assert float((G.double() @ ours).min()) >= float(ours @ ours) * (1 - 1e-9)
    assert float(ours.norm()) < 0.97 * float(theirs.norm())  # LibMTL's ends short of it


def test_agreement_shows_six_digits_where_three_showed_one():
    rows = [{**agreement_row("mgda", "torchjd"), "cosine": 0.99955, "norm_ratio": 0.999951}]
    table = table_rows(overhead.markdown(overhead_result(rows)), "| method | peer | model")
    assert (table[0]["cosine"], table[0]["norm ours/theirs"]) == ("0.99955", "0.999951")


def test_the_baseline_table_shows_the_median_and_range_of_every_record():
    result = overhead_result([])
    result["records"] = [
        record("sum", ms_baseline=2.0, mib_baseline=0.5),
        record("dwa", ms_baseline=3.0, mib_baseline=None),
        record("sum", library="libmtl", ms_baseline=10.0, mib_baseline=0.7),  # the last
    ]
    table = table_rows(overhead.markdown(result), "| model | shared params")
    assert table == [
        {
            "model": "mlp T=2",
            "shared params": "10",
            "params": "20",
            "ms / step": "3.00 (2.00-10.00)",
            "peak step MiB": "0.60 (0.50-0.70)",
        }
    ]
