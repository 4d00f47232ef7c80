"""The alignment run kind: score mode (bp vs theory) and update mode (rule vs bp while training)."""

from __future__ import annotations

import json

import pytest

from widealign.studies.alignment import alignment_config, run_alignment

SCORE = dict(mode="score", width=8, epochs=2, dtype="float64", train_size=300, probe_size=20, draws=3,
             noise_batch=10)  # fmt: skip
UPDATE = dict(mode="update", model="mlp", width=64, epochs=1, dtype="float64", probe_size=50)
LAYERS = 4  # the kmnist conv net: three convolutions and the readout


def test_score_mode_records_per_layer_alignment_and_control_every_epoch(tmp_path):
    result = run_alignment(SCORE, tmp_path, progress=False)
    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["kind"] == "alignment" and result["status"] == "finished"
    assert result["config"]["extra"]["mode"] == "score" and result["config"]["rule"] == "bp"
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    for epoch in result["epochs"]:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "theory_test_loss"} <= set(epoch)
        aligned = [epoch[f"align/{i}"] for i in range(LAYERS)]
        control = [epoch[f"align_shuffled/{i}"] for i in range(LAYERS)]
        assert f"align/{LAYERS}" not in epoch
        assert all(-1 <= a <= 1 for a in aligned + control)
        # after a few steps bp and theory have barely parted; a shuffled update has not learnt
        assert sum(aligned) / LAYERS > sum(control) / LAYERS + 0.2


def test_interrupted_score_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    straight = run_alignment(SCORE, tmp_path / "a", progress=False)

    def interrupt(epoch):
        if epoch["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_alignment(SCORE, tmp_path / "b", progress=False, on_epoch=interrupt)
    assert json.loads((tmp_path / "b" / "result.json").read_text())["status"] == "running"
    resumed = run_alignment(SCORE, tmp_path / "b", progress=False)
    assert resumed["resumed_from_epoch"] == 1

    def numbers(r):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in r["epochs"]]

    assert numbers(resumed) == numbers(straight)
    again = run_alignment(SCORE, tmp_path / "b", progress=False)  # finished: returned unchanged
    assert again == json.loads(json.dumps(resumed)) | {"already_complete": True}


def test_bp_update_is_its_own_gradient():
    result = run_alignment(UPDATE | dict(rule="bp"), None, progress=False)
    last = result["epochs"][-1]
    assert result["kind"] == "alignment"
    assert all(last[f"cos_bp/{i}"] == pytest.approx(1, abs=1e-6) for i in range(3))
    assert not any(k.startswith("angle_fb/") for k in last)


def test_fa_feedback_stays_nearly_orthogonal_and_align_prop_stays_close_to_bp(tmp_path):
    fa = run_alignment(UPDATE | dict(rule="fa"), tmp_path, progress=False)
    assert json.loads((tmp_path / "result.json").read_text())["kind"] == "alignment"
    prop = run_alignment(UPDATE | dict(rule="align-prop"), None, progress=False)
    for result in (fa, prop):
        last = result["epochs"][-1]
        assert all(-1 <= last[f"cos_bp/{i}"] <= 1 for i in range(3))
        assert all(last[f"dist_init/{i}"] > 0 for i in range(3))
    fa_last, prop_last = fa["epochs"][-1], prop["epochs"][-1]
    for i in (0, 1):  # hidden layers: random 64-wide feedback is nearly orthogonal to W
        assert 80 < fa_last[f"angle_fb/{i}"] < 100
        assert abs(fa_last[f"cos_bp/{i}"]) < 0.5
        assert 0 < prop_last[f"angle_fb/{i}"] < 10  # B = W(0), and W has moved a little
        assert prop_last[f"cos_bp/{i}"] > 0.99


def test_divergence_is_recorded_not_raised(tmp_path):
    result = run_alignment(SCORE | dict(lr=1e30, dtype="float32"), tmp_path, progress=False)
    assert result["status"] == "diverged" and "diverged" in result["error"]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_a_folder_holding_another_configuration_is_refused(tmp_path):
    run_alignment(SCORE | dict(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        run_alignment(SCORE | dict(epochs=1, draws=4), tmp_path, progress=False)


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(mode="nope"), "unknown alignment mode"),
        (dict(drawz=3), "unknown alignment config keys: drawz"),
        (dict(draws=0), "draws must be a positive integer"),
        (dict(rule="fa"), "rule must be 'bp'"),
        (dict(width=0), "width must be a positive integer"),
        (dict(schedule="cosine"), "an alignment run trains at a fixed learning rate"),
    ],
)
def test_bad_configs_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        alignment_config(dict(mode="score") | fields)


def test_the_recorded_config_gives_the_same_run():
    cfg = alignment_config(SCORE)
    assert alignment_config(cfg.as_dict()) == cfg
    assert cfg.extra == dict(mode="score", probe_size=20, draws=3, noise_batch=10)
    assert cfg.train_size == 300
