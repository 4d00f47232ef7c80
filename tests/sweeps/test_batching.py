"""The automatic batching policy: measured, never assumed."""

from __future__ import annotations

import pytest

from widealign.runs.config import RunConfig
from widealign.sweeps import batching
from widealign.sweeps.batching import auto_batch_key, batching_pays, measure_batching


def test_measure_batching_times_separate_and_batched_steps_of_the_config():
    cfg = RunConfig(dataset="add", model="rnn", rule="bp", width=8, batch_size=10)
    times = measure_batching(cfg, members=2, rounds=1)
    assert times["members"] == 2
    assert times["separate"] > 0 and times["batched"] > 0
    assert times["speedup"] == pytest.approx(times["separate"] / times["batched"])


def test_batching_pays_follows_the_measurement(monkeypatch):
    cfg = RunConfig(dataset="add", model="rnn", rule="bp", width=8)
    for speedup, expected in ((batching.MIN_SPEEDUP * 1.01, True), (batching.MIN_SPEEDUP * 0.99, False)):
        monkeypatch.setattr(batching, "measure_batching", lambda c, s=speedup: {"speedup": s})
        assert batching_pays(cfg) is expected
        cache: dict = {}
        assert auto_batch_key(cfg, "k", cache) == ("k" if expected else None)
        monkeypatch.setattr(batching, "measure_batching", lambda c: pytest.fail("measured twice"))
        assert auto_batch_key(cfg, "k", cache) == ("k" if expected else None)


def test_large_runs_train_separately_without_measuring(monkeypatch):
    monkeypatch.setattr(batching, "measure_batching", lambda c: pytest.fail("measured"))
    big = RunConfig(dataset="kmnist", rule="bp", width=64)
    assert batching_pays(big) is False
    # a dry run does not measure: what the table does not rule out is grouped
    assert batching_pays(RunConfig(dataset="add", model="rnn", rule="bp", width=8), measure=False)
