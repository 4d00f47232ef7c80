"""Song, Xu & Lafferty's two-layer feedback alignment (docs/method.md#song-xu-and-lafferty), library parts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from widealign.models import TwoLayer
from widealign.rules import make_rule
from widealign.studies.song2021 import (
    Song2021Config,
    digits_data,
    fit_log_loss_slope,
    gaussian_data,
    make_optimizer,
    run_song2021,
    sweep_song2021,
    window_slopes,
)
from widealign.studies.song2021_plots import plot_song2021

PSI = {"identity": (lambda z: z, lambda z: torch.ones_like(z)), "relu": (torch.relu, lambda z: (z > 0).to(z)),
       "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2)}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matmuls: one thread is faster and immune to a busy machine's other threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("rule_name", ["fa", "bp"])
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
def test_update_is_the_section_6_formula(activation, rule_name):
    n, d, p, eta, lam = 7, 5, 11, 0.1, 0.3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = TwoLayer(d, p, activation, seed=4).double()
    rule = make_rule(rule_name, model, loss="half-sse", seed=5)
    optimizer = make_optimizer(model, eta, lam)
    psi, dpsi = PSI[activation]
    for _ in range(3):  # later steps too: beta and w_r have moved away from their initial values
        beta, w = model.readout.weight.detach()[0].clone(), model.hidden.weight.detach().clone()
        b = rule.feedback[1][0] if rule_name == "fa" else beta
        z = x @ w.T  # z[i, r] = w_r . x_i
        e = psi(z) @ beta / math.sqrt(p) - y[:, 0]
        beta_new = beta - eta / math.sqrt(p) * (e[:, None] * psi(z)).sum(0) - eta * lam * beta
        w_new = w - eta / math.sqrt(p) * torch.einsum("i,r,ir,ij->rj", e, b, dpsi(z), x)
        optimizer.zero_grad()
        rule.backward(x, y)
        optimizer.step()
        torch.testing.assert_close(model.readout.weight.detach()[0], beta_new, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.hidden.weight.detach(), w_new, rtol=1e-12, atol=1e-12)


def test_fa_loss_falls_exponentially_when_overparameterised():
    config = Song2021Config(width=4000, n=50, d=100, eta=0.1, steps=300, record_every=5)
    record = run_song2021(config)
    assert record["loss_ratio"] < 1e-3
    slopes = window_slopes(record, start=0.5, windows=4)
    assert all(s < 0 for s in slopes), slopes


def test_weight_decay_makes_beta_align_with_b():
    base = Song2021Config(width=500, n=50, d=100, eta=0.1, steps=600, record_every=50)
    records = sweep_song2021(base, widths=[500], lams=[0.0, 0.1], seeds=[0, 1])
    final = {(r["config"]["lam"], r["config"]["seed"]): r["final_cosine"] for r in records}
    for seed in (0, 1):
        assert final[0.1, seed] > final[0.0, seed] + 0.4, final
        assert final[0.1, seed] > 0.7, final
        assert final[0.0, seed] < 0.4, final


def test_fit_log_loss_slope_recovers_an_exponential_rate():
    steps = list(range(0, 100, 5))
    assert fit_log_loss_slope(steps, [3.0 * math.exp(-0.07 * t) for t in steps]) == pytest.approx(-0.07)


@pytest.mark.parametrize("data", ["gaussian", "digits"])
def test_inputs_have_unit_norm_and_targets_are_signs(data):
    x, y = gaussian_data(20, 8, "labels") if data == "gaussian" else digits_data(20, "3")
    torch.testing.assert_close(x.norm(dim=1), torch.ones(20, dtype=torch.float64))
    assert set(y.flatten().tolist()) == {-1.0, 1.0}


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="activation"):
        Song2021Config(activation="gelu")


def test_plots_write_png_files(tmp_path):
    base = Song2021Config(n=10, d=6, steps=20, record_every=5)
    records = sweep_song2021(base, widths=[20, 40], lams=[0.0, 0.1], rules=["fa", "bp"])
    paths = plot_song2021(records, tmp_path)
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 4
    assert all(p.stat().st_size > 1000 for p in paths)


def test_run_kind_writes_a_result_record_and_reruns_return_it(tmp_path):
    from widealign.studies.song2021 import run_song2021_task

    config = {"width": 50, "n": 20, "d": 10, "steps": 30, "record_every": 10}
    result = run_song2021_task(config, tmp_path, progress=False)
    assert result["kind"] == "song2021" and result["status"] == "finished"
    assert [e["step"] for e in result["epochs"]] == result["song"]["steps"]
    assert result["config"]["eta"] == result["song"]["config"]["eta"]
    stamp = (tmp_path / "result.json").stat().st_mtime_ns
    assert run_song2021_task(config, tmp_path, progress=False) == json.loads(
        (tmp_path / "result.json").read_text()
    ) | {"already_complete": True}
    assert (tmp_path / "result.json").stat().st_mtime_ns == stamp
