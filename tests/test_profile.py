"""costs.json: Profile round trip, the Costs it gives per layout, clear errors; the link fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import schedules
import simulator
from simulator import Costs, Profile, ProfileError, fit_link
from simulator.costs_json import CostsDocument, Dispatch

F, B, I, W = 0.010, 0.016, 0.011, 0.007  # noqa: E741  (a fused B is cheaper than I + W)


def _stage(s: int, scale: float) -> dict:
    times = {"F": F, "B": B, "I": I, "W": W}
    return {**{op: {"alone": (1 + s / 10) * t * scale, "concurrent": 2 * (1 + s / 10) * t * scale}
               for op, t in times.items()},
            "memory": {"F": 1000.0 * scale, "B": 1000.0 * scale, "I": 600.0 * scale, "W": 400.0 * scale},
            "grad_bytes": 4e6 * (1 + s)}


def _layout(ranks: int, chunks: int, m: int, dp: int = 1) -> dict:
    stages = ranks * chunks
    scale = 8 / m / chunks  # a smaller microbatch and a smaller stage cost less
    layout = {"ranks": ranks, "chunks": chunks, "microbatches": m, "dp": dp,
              "stages": [_stage(s, scale) for s in range(stages)],
              "boundary_bytes": [2048.0 * scale] * (stages - 1), "optimizer": [0.002 + 0.001 * r for r in range(ranks)]}
    if dp > 1:  # ring: 2 (d - 1) steps of 1e-4 s, 1e9 bytes/s
        layout["allreduce"] = [2 * (dp - 1) * 1e-4 + 2 * (dp - 1) / dp * s["grad_bytes"] / 1e9
                               for s in layout["stages"]]
    return layout


def _document(layouts=None) -> dict:
    return {
        "format": "pipebubble-costs", "version": 1,
        "conditions": {"host": "lab", "ranks": 2, "ranks_per_node": 2, "threads": 1, "dtype": "float32",
                       "device": "cpu", "torch": "2.13.0", "mpi": "MPICH Version: 4.2.3", "date": "2026-12-01T09:00:00Z",
                       "model": {"model": "mlp", "width": 512, "batch": 64}},
        "share": [1.0, 0.5], "comm_interference": 0.1,
        "links": {"latency": 3e-6, "bandwidth": 8e9,
                  "pairs": [{"src": 0, "dst": 1, "latency": 4e-6, "bandwidth": 6e9,
                             "bytes": [1e3, 1e4, 1e5], "seconds": [4.2e-6, 5.7e-6, 2.07e-5]}]},
        "layouts": layouts or [_layout(2, c, m) for c in (1, 2) for m in (4, 8)],
    }


def test_round_trip_through_a_file(tmp_path):
    profile = Profile(_document())
    profile.save(tmp_path / "out" / "costs.json")
    again = Profile.load(tmp_path / "out" / "costs.json")
    assert again.to_dict() == profile.to_dict() == _document()
    assert again.layouts == [(2, 1, 4, 1), (2, 1, 8, 1), (2, 2, 4, 1), (2, 2, 8, 1)]
    schedule = schedules.build("1f1b", ranks=2, microbatches=8)
    assert again.costs(schedule) == profile.costs(schedule)
    json.loads((tmp_path / "out" / "costs.json").read_text())  # plain JSON


def test_costs_of_a_layout():
    schedule = schedules.build("interleaved-1f1b", ranks=2, microbatches=4, chunks=2)
    costs = Profile(_document()).costs(schedule)
    assert costs == Profile(_document()).costs(ranks=2, chunks=2, microbatches=4)
    scale = 8 / 4 / 2
    assert costs.t_f == pytest.approx([(1 + s / 10) * F * scale for s in range(4)])
    assert costs.t_b == pytest.approx([(1 + s / 10) * B * scale for s in range(4)])  # measured, not I + W
    assert costs.act_bytes == (2048.0,) * 3 and costs.act_memory == (1000.0,) * 4
    assert costs.w_memory_fraction == pytest.approx(0.4)
    assert costs.optimizer_time == (0.002, 0.003)
    assert costs.link("latency", 0, 1) == 4e-6 and costs.link("bandwidth", 1, 0) == 6e9  # the measured pair
    assert (costs.share, costs.comm_interference, costs.ranks_per_node) == ((1.0, 0.5), 0.1, 2)
    result = simulator.simulate(schedule, costs)
    backward = result.trace[result.trace["kind"] == "B"]
    assert (backward["end"] - backward["start"]).min() >= (B * scale) / 1.0 - 1e-12  # B priced as t_b


def test_concurrent_times_without_a_share_table():
    costs = Profile(_document()).costs(ranks=2, chunks=1, microbatches=8, times="concurrent")
    assert costs.t_f == pytest.approx([2 * F, 2 * F * 1.1]) and costs.share == () and costs.comm_interference == 0
    assert not costs.shares_processors


def test_links_not_measured_take_the_overall_fit():
    document = _document([_layout(4, 1, 8)])
    document["conditions"].update(ranks=4, ranks_per_node=4)
    document["share"] = [1.0, 0.9, 0.7, 0.5]
    costs = Profile(document).costs(schedules.build("1f1b", ranks=4, microbatches=8))
    assert costs.link("latency", 0, 1) == 4e-6 and costs.link("latency", 2, 3) == 3e-6
    assert costs.link("bandwidth", 3, 0) == 8e9  # the ring pair interleaved placements use


def test_a_data_parallel_layout_fits_the_ring():
    document = _document([_layout(2, 1, 8, dp=2)])
    costs = Profile(document).costs(schedules.build("1f1b", ranks=2, microbatches=8))
    assert costs.dp == 2
    assert costs.dp_latency == pytest.approx(1e-4) and costs.dp_bandwidth == pytest.approx(1e9)
    measured = document["layouts"][0]["allreduce"]
    assert [costs.reduce_time(s, 2) for s in range(2)] == pytest.approx(measured)


def test_a_layout_not_profiled_names_what_to_profile():
    profile = Profile(_document())
    with pytest.raises(ProfileError, match=r"no layout ranks=4 chunks=2 microbatches=16 dp=1; profile with "
                                           r"`mpiexec -n 4 python -m executor profile --chunks 2 --microbatches 16`"):
        profile.costs(schedules.build("interleaved-1f1b", ranks=4, microbatches=16, chunks=2))
    with pytest.raises(ProfileError, match="at dp=1, 2: say which dp"):
        Profile(_document([_layout(2, 1, 8), _layout(2, 1, 8, dp=2)])).costs(ranks=2, chunks=1, microbatches=8)


def test_one_typed_schema_writes_and_reads(tmp_path):
    """The writer builds the reader's own records and saves them checked as the reader
    checks them: what fails to load is never written."""
    doc = Profile(_document()).doc
    doc.save(tmp_path / "costs.json")
    assert CostsDocument.load(tmp_path / "costs.json") == doc and doc.to_dict() == _document()
    for counts in ([4, 8], 8):  # one per layout the runs covered, or one
        doc.dispatch = Dispatch(1e-5, 2e-6, 3e-6, schedules=["1f1b", "zb-h1"], microbatches=counts)
        doc.save(tmp_path / "costs.json")
        assert CostsDocument.load(tmp_path / "costs.json").dispatch.microbatches == counts
    assert doc.layouts[1].stages[0].F.alone == _document()["layouts"][1]["stages"][0]["F"]["alone"]
    doc.layouts[0].optimizer = [0.1]
    with pytest.raises(ProfileError, match=r"layouts\[0\].optimizer has 1 values; expected 2"):
        doc.save(tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def _broken(change) -> dict:
    document = _document()
    change(document)
    return document


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="x"), "format must be 'pipebubble-costs'"),
    (lambda d: d.update(version=2), "version is 2"),
    (lambda d: d["conditions"].pop("torch"), "conditions.torch is missing"),
    (lambda d: d["layouts"][0]["stages"][1]["W"].pop("alone"), r"layouts\[0\].stages\[1\].W.alone is missing"),
    (lambda d: d["layouts"][0]["stages"].pop(), r"layouts\[0\].stages has 1 entries; expected ranks \* chunks = 2"),
    (lambda d: d["layouts"][0].update(optimizer=[0.1]), r"layouts\[0\].optimizer has 1 values; expected 2"),
    (lambda d: d["links"].update(latency=-1.0), "links.latency must be a finite number >= 0"),
    (lambda d: d.update(share=[]), "share needs a rate > 0"),
    (lambda d: d.update(layouts=[]), "layouts is empty"),
])
def test_a_bad_document_fails_on_load_naming_the_key(change, message):
    with pytest.raises(ProfileError, match=message):
        Profile(_broken(change))


def test_unreadable_files_fail_in_one_line(tmp_path):
    with pytest.raises(ProfileError, match="cannot read costs file"):
        Profile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProfileError, match="is not a costs.json"):
        Profile.load(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text(json.dumps(_document()).replace("0.1", "NaN", 1))
    with pytest.raises(ProfileError, match="NaN is not a number JSON allows"):
        Profile.load(tmp_path / "nan.json")


# ---- the link fit ------------------------------------------------------------------------

def test_fit_link_recovers_latency_and_bandwidth_from_noisy_pingpongs():
    rng = np.random.default_rng(0)
    sizes = np.repeat([4e3, 6.4e4, 2.56e5, 1e6, 4e6], 7)
    seconds = 3e-6 + sizes / 8.5e9
    seconds = seconds * rng.uniform(0.99, 1.01, len(sizes))
    seconds[::7] *= 5  # one slow repetition per size: the per-size median ignores it
    fit = fit_link(sizes, seconds)
    assert fit.latency == pytest.approx(3e-6, rel=0.1) and fit.bandwidth == pytest.approx(8.5e9, rel=0.02)
    assert fit.note == ""


def test_fit_link_falls_back_where_the_line_is_not_a_link():
    assert fit_link([1e3, 1e3], [2e-6, 4e-6]) == (3e-6, math.inf, "one transfer size: its time taken as latency only")
    assert fit_link([1e3, 1e6], [5e-6, 4e-6], "ping-pong").note == "ping-pong time does not grow with size: latency only"
    through_origin = fit_link([1e6, 2e6, 3e6], [0.9e-3, 2.0e-3, 3.0e-3])
    assert through_origin.latency == 0.0 and through_origin.bandwidth == pytest.approx(1e9, rel=0.05)
    with pytest.raises(ValueError, match="as many sizes as times"):
        fit_link([1.0, 2.0], [1.0])


def test_profile_costs_predict_with_node_sharing():
    # Both ranks of a 2-rank node at share 0.5: gpipe's overlapping forwards take longer
    # than alone, and never longer than the concurrent times everywhere.
    profile = Profile(_document())
    schedule = schedules.build("gpipe", ranks=2, microbatches=8)
    shared = simulator.simulate(schedule, profile.costs(schedule)).makespan
    alone = simulator.simulate(schedule, Costs(**{k: v for k, v in vars(profile.costs(schedule)).items()
                                                  if k not in ("share", "comm_interference")})).makespan
    concurrent = simulator.simulate(schedule, profile.costs(schedule, times="concurrent")).makespan
    assert alone < shared <= concurrent * 1.0001


# ---- the command line --------------------------------------------------------------------

def _write(tmp_path) -> str:
    path = tmp_path / "costs.json"
    Profile(_document()).save(path)
    return str(path)


def test_cli_predicts_from_a_profile_and_flags_override(tmp_path, capsys):
    from simulator.cli import main

    path = _write(tmp_path)
    args = ["--schedule", "1f1b", "--ranks", "2", "--microbatches", "8", "--json", "--costs", path]
    assert main(args) == 0
    from_profile = json.loads(capsys.readouterr().out)["makespan"]
    schedule = schedules.build("1f1b", ranks=2, microbatches=8)
    assert from_profile == pytest.approx(simulator.simulate(schedule, Profile.load(path).costs(schedule)).makespan)
    assert main(args + ["--share", "1,1", "--comm-interference", "0"]) == 0
    unshared = json.loads(capsys.readouterr().out)["makespan"]
    assert unshared < from_profile  # the flags beside --costs win


def test_cli_sweep_from_a_profile_skips_layouts_not_profiled(tmp_path, capsys):
    from simulator.cli import main

    out = tmp_path / "table.csv"
    assert main(["sweep", "--schedules", "1f1b,interleaved-1f1b", "--ranks", "2,4", "--microbatches", "4,8,16",
                 "--costs", _write(tmp_path), "--out", str(out), "--quiet"]) == 0
    import pandas as pd

    table = pd.read_csv(out)
    assert sorted(zip(table["schedule"], table["microbatches"])) == [
        ("1f1b", 4), ("1f1b", 8), ("interleaved-1f1b", 4), ("interleaved-1f1b", 8)]
    assert "skipped 8 combination(s)" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "cannot read costs file"),
    ("[1, 2", "is not a costs.json"),
    ('{"format": "other"}', "format must be 'pipebubble-costs'"),
])
def test_cli_bad_costs_file_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    from simulator.cli import main

    path = tmp_path / "costs.json"
    if content is not None:
        path.write_text(content)
    for args in (["--schedule", "1f1b", "--ranks", "2"], ["sweep", "--ranks", "2", "--quiet"]):
        assert main(args + ["--costs", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_summary_fits_one_screen():
    text = Profile(_document()).summary()
    lines = text.splitlines()
    assert len(lines) == 3 + 4 and max(map(len, lines)) < 120
    assert "share 1.000, 0.500" in lines[1] and "8.00 GB/s" in lines[1]
    assert lines[3].split()[:4] == ["2", "1", "4", "1"] and lines[3].split()[4] == "21.000"  # F at m=4: 2 x 10 ms x 1.05


def test_a_profile_places_world_ranks_on_nodes():
    document = _document([_layout(2, 1, 8, dp=2)])
    document["conditions"].update(ranks=4, node_of=[0, 0, 1, 1])
    costs = Profile(document).costs(ranks=2, chunks=1, microbatches=8)
    assert costs.node_of == (0, 0, 1, 1) and costs.ranks_per_node is None
    document["conditions"].pop("node_of")
    assert Profile(document).costs(ranks=2, chunks=1, microbatches=8).ranks_per_node == 2


def test_sequence_times_are_taken_where_every_stage_has_them():
    document = _document()
    for layout in document["layouts"]:
        for stage in layout["stages"]:
            for op in "FBIW":
                stage[op]["sequence"] = 1.25 * stage[op]["alone"]
    profile = Profile(document)
    alone = profile.costs(ranks=2, chunks=1, microbatches=8, times="alone")
    chosen = profile.costs(ranks=2, chunks=1, microbatches=8)
    assert chosen == profile.costs(ranks=2, chunks=1, microbatches=8, times="sequence")
    assert chosen.t_f == pytest.approx([1.25 * t for t in alone.t_f])
    assert chosen.t_b == pytest.approx([1.25 * t for t in alone.t_b])
    assert chosen.share == alone.share and chosen.comm_interference == alone.comm_interference
    assert "times sequence" in chosen.notes[0]
    del document["layouts"][1]["stages"][0]["W"]["sequence"]  # one op lacks it: alone for the layout
    assert Profile(document).costs(ranks=2, chunks=1, microbatches=8) == alone
    with pytest.raises(ProfileError, match="no 'sequence' time for W"):
        Profile(document).costs(ranks=2, chunks=1, microbatches=8, times="sequence")
    with pytest.raises(ValueError, match="times must be"):
        profile.costs(ranks=2, chunks=1, microbatches=8, times="fastest")


def test_a_sequence_time_must_be_a_number():
    document = _document()
    document["layouts"][0]["stages"][1]["F"]["sequence"] = "fast"
    with pytest.raises(ProfileError, match=r"stages\[1\]\.F"):
        Profile(document)


def test_dispatch_gives_host_times_and_the_runs_optimizer():
    document = _document()
    document["dispatch"] = {"compute": 5e-6, "send": 3e-5, "recv": 2e-5, "schedules": ["1f1b", "zb-h1"],
                            "microbatches": 8, "optimizer": [4e-4, 5e-4], "step": [2e-4, 1e-4]}
    profile = Profile(document)
    costs = profile.costs(ranks=2, chunks=1, microbatches=8)
    assert (costs.dispatch_compute, costs.dispatch_send, costs.dispatch_recv) == (5e-6, 3e-5, 2e-5)
    assert costs.optimizer_time == pytest.approx((6e-4, 6e-4))
    assert "host per op: compute 5.0 us, send 30.0 us, recv 20.0 us" in profile.summary().splitlines()[1]
    del document["dispatch"]["step"]  # without the step's host time: the layout's own optimizer
    assert Profile(document).costs(ranks=2, chunks=1, microbatches=8).optimizer_time == (0.002, 0.003)
    document["dispatch"]["send"] = -1.0
    with pytest.raises(ProfileError, match="dispatch"):
        Profile(document)


def test_a_sleeping_profiles_scale_leaves_its_sleeps_alone():
    """The canary's drift moves a real profile's op times; a sleeping one's only its host time."""
    schedule = schedules.build("1f1b", ranks=2, microbatches=8)
    real, sleeping = _document(), _document()
    sleeping["conditions"]["model"] = {"compute": "sleep", "width": 512, "batch": 64}
    assert not Profile(real).sleeping and Profile(sleeping).sleeping
    base, doubled = Profile(sleeping).costs(schedule), Profile(sleeping).costs(schedule, scale=2.0)
    assert doubled.t_f == base.t_f and doubled.t_b == base.t_b
    assert doubled.optimizer_time == pytest.approx(tuple(2 * t for t in base.optimizer_time))
    moved = Profile(real).costs(schedule, scale=2.0)
    assert moved.t_f == pytest.approx([2 * t for t in Profile(real).costs(schedule).t_f])
