"""Peak-memory estimates: counted on the meta device, checked against a measured peak."""

from __future__ import annotations

import pytest

from widealign.bench.memory import measured_peak
from widealign.runs.config import RunConfig
from widealign.runs.memory import MemoryEstimate, estimate_memory


def test_estimate_counts_weights_rule_state_and_data_exactly():
    cfg = RunConfig(dataset="digits", model="mlp", rule="align-zero", width=32)
    est = estimate_memory(cfg)
    n_params = 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    assert est.weights == 4 * n_params
    assert est.rule_state == 4 * n_params  # theta_0: one copy of the weights
    assert estimate_memory(RunConfig(dataset="digits", model="mlp", rule="bp", width=32)).rule_state == 0
    assert est.data > 0 and est.total == est.data + est.weights + est.rule_state + est.step
    # the step holds at least the gradients and grows with the batch
    assert est.step >= 4 * n_params
    bigger = estimate_memory(
        RunConfig(dataset="digits", model="mlp", rule="align-zero", width=32, batch_size=200)
    )
    assert bigger.step > est.step
    batched = estimate_memory(cfg, members=3)
    assert batched.data == est.data and batched.step == 3 * est.step


def test_align_rules_need_at_most_one_more_copy_of_weights_and_activations():
    for width in (16, 64):
        bp = estimate_memory(RunConfig(dataset="kmnist", rule="bp", width=width))
        for rule in ("align-zero", "align-ada"):
            extra = estimate_memory(RunConfig(dataset="kmnist", rule=rule, width=width)).total - bp.total
            assert extra <= bp.weights + bp.step


def test_a_width_4096_conv_net_is_counted_without_allocating():
    est = estimate_memory(RunConfig(dataset="kmnist", rule="align-ada", width=4096))
    assert est.weights > 1e9 and est.step > est.weights


def test_estimate_is_close_to_the_measured_peak_at_small_width():
    cfg = RunConfig(dataset="kmnist", rule="bp", width=16, epochs=1)
    ratio = measured_peak(cfg) / estimate_memory(cfg).total
    # kernel workspaces and the allocator come on top of the counted tensors (docs/performance.md)
    assert 0.8 < ratio < 2.0


def test_a_sweep_that_cannot_fit_is_refused_before_it_starts(monkeypatch, tmp_path):
    from widealign.sweeps import estimate
    from widealign.sweeps.catalogue import Family
    from widealign.sweeps.sweep import checked_tasks, run_sweep

    family = Family("m", 1, "", "train", {"dataset": "digits", "model": "mlp", "width": 32, "epochs": 1},
                    [{"seed": [0, 1, 2]}])  # fmt: skip
    need = estimate_memory(RunConfig(**family.tasks()[0].config)).total
    monkeypatch.setattr(estimate, "available_memory", lambda device: int(2.5 * need))
    assert len(checked_tasks(family, "sequential")) == 3
    assert len(checked_tasks(family, "process", workers=2)) == 3
    with pytest.raises(ValueError, match="available; use smaller widths or fewer workers"):
        checked_tasks(family, "process", workers=3)
    monkeypatch.setattr(estimate, "available_memory", lambda device: need // 2)
    with pytest.raises(ValueError, match="needs about"):
        run_sweep(family, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_memory_estimate_total_is_the_sum_of_its_parts():
    est = MemoryEstimate(data=1, weights=2, rule_state=3, step=4)
    assert est.total == 10 and est.as_dict()["total"] == 10
