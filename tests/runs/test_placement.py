"""The device is not part of a run's identity: a run resumes, and a sweep continues, on another device.

No GPU is needed: ``resolve_device`` is faked to say ``cuda`` runs here on the CPU (the run's
identity is what is under test), and the meta device stands in for a GPU when a CPU checkpoint is
loaded (every tensor of the model, the rule and the optimiser must end up on the model's device).
"""

from __future__ import annotations

import json

import pytest
import torch

import widealign.runs.run as run_module
from widealign.models import MLP
from widealign.rules import make_rule
from widealign.runs import RunConfig, train_run
from widealign.sweeps.catalogue import Family
from widealign.train import Trainer

SMALL = dict(rule="fa", width=8, epochs=2, dtype="float64", train_size=200)


def numbers(result):
    return [(e["train_loss"], e["test_loss"], e["test_acc"]) for e in result["epochs"]]


@pytest.fixture
def cuda_is_the_cpu(monkeypatch):
    real = run_module.resolve_device
    monkeypatch.setattr(run_module, "resolve_device", lambda d: real("cpu" if d.startswith("cuda") else d))


@pytest.mark.parametrize("first,then", [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_run_started_on_one_device_resumes_on_the_other(first, then, tmp_path, cuda_is_the_cpu):
    straight = train_run(RunConfig(**SMALL), tmp_path / "straight", progress=False)

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(RunConfig(**SMALL, device=first), tmp_path / "run", progress=False, on_epoch=interrupt)
    resumed = train_run(RunConfig(**SMALL, device=then), tmp_path / "run", progress=False)
    assert resumed["resumed_from_epoch"] == 1 and resumed["config"]["device"] == then
    assert numbers(resumed) == numbers(straight)
    again = train_run(RunConfig(**SMALL, device=first), tmp_path / "run", progress=False)
    assert again["session_seconds"] == resumed["session_seconds"]  # finished: found, not retrained


def test_another_configuration_is_still_refused(tmp_path):
    train_run(RunConfig(**SMALL), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train_run(RunConfig(**{**SMALL, "width": 4}), tmp_path, progress=False)


def test_run_ids_do_not_depend_on_the_device():
    family = Family("f", 1, "", "train", {"epochs": 1}, [{"rule": ["bp", "fa"]}])
    ids = [t.run_id for t in family.tasks()]
    assert [t.run_id for t in family.with_overrides({"device": "cuda"}).tasks()] == ids
    assert [t.run_id for t in family.with_overrides({"device": "cpu"}).tasks()] == ids
    assert [t.run_id for t in family.with_overrides({"epochs": 2}).tasks()] != ids


@pytest.mark.filterwarnings("ignore:.*meta parameter in the current model")
@pytest.mark.parametrize("rule", ["fa", "align-ada", "dfa"])
def test_a_cpu_checkpoint_loads_onto_the_models_device(rule, tmp_path):
    def trainer(device: str) -> Trainer:
        model = MLP(5, 3, [6], seed=0).double().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        x = torch.randn(8, 5, dtype=torch.float64, device=device)
        data = [(x, torch.zeros(8, 3, dtype=torch.float64, device=device))]
        return Trainer(model, make_rule(rule, model, seed=0), optimizer, data, progress=False)

    cpu = trainer("cpu")
    cpu.checkpoint = tmp_path / "checkpoint.pt"
    cpu.fit(1)
    meta = trainer("meta")
    meta.load_state_dict(torch.load(cpu.checkpoint, map_location="cpu", weights_only=False))
    assert meta.epoch == 1
    tensors = [*meta.model.state_dict().values(), *meta.rule.state_dict().values()]
    tensors += [t for s in meta.optimizer.state.values() for k, t in s.items() if k != "step"]
    assert len(meta.rule.state_dict()) > 0 and len(meta.optimizer.state) > 0
    assert {t.device.type for t in tensors} == {"meta"}
    recorded = json.loads(json.dumps([r.as_dict() for r in meta.history]))
    assert recorded == json.loads(json.dumps([r.as_dict() for r in cpu.history]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("first,then", [("cpu", "cuda"), ("cuda", "cpu")])
def test_on_a_gpu_a_run_moves_between_the_cpu_and_the_gpu(first, then, tmp_path):
    straight = train_run(RunConfig(**SMALL), tmp_path / "straight", progress=False)

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(RunConfig(**SMALL, device=first), tmp_path / "run", progress=False, on_epoch=interrupt)
    resumed = train_run(RunConfig(**SMALL, device=then), tmp_path / "run", progress=False)
    assert resumed["resumed_from_epoch"] == 1 and resumed["device"].startswith(then)
    for ours, reference in zip(numbers(resumed), numbers(straight)):
        assert ours == pytest.approx(reference, rel=1e-6)  # float64; GPU kernels round differently


def test_compiling_is_not_part_of_a_runs_identity_and_does_not_batch():
    from widealign.runs.run import batch_key

    family = Family("f", 1, "", "train", {"epochs": 1}, [{"rule": ["bp", "fa"]}])
    ids = [t.run_id for t in family.tasks()]
    assert [t.run_id for t in family.with_overrides({"compile": True}).tasks()] == ids
    assert batch_key(RunConfig(**SMALL)) is not None
    assert batch_key(RunConfig(**SMALL, compile=True)) is None
    with pytest.raises(ValueError, match="compile must be true or false"):
        RunConfig(**SMALL, compile="yes").resolved()
