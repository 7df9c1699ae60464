"""The training engine itself (avemo.train.engine) on a tiny task: a linear model with dropout on random data."""

import csv
from dataclasses import replace

import pytest
import torch
from torch import nn

from avemo.errors import AvemoError
from avemo.train import engine

from helpers import torch_threads


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread (see helpers.torch_threads)."""
    with torch_threads(1):
        yield


class Interrupted(Exception):
    """Stands for a kill in the middle of an epoch."""


class Linear:
    """engine.Task: 3-way logistic regression on 40 random examples (dropout on the inputs, so the per-epoch
    random streams matter), validated on 20 others, or with scripted validation losses."""

    counts_correct = True

    def __init__(self, scripted: list[float] | None = None, crash_at_batch: int | None = None):
        data = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(60, 5, generator=data), torch.randint(0, 3, (60,), generator=data)
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Dropout(0.3), nn.Linear(5, 3))
        self.scripted, self.crash_at_batch, self.batches = scripted, crash_at_batch, 0
        self.states = []  # the weights after each validation (epoch 0: as given)

    def examples(self) -> torch.Tensor:
        return torch.arange(40)

    def losses(self, net: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.batches += 1
        if self.batches == self.crash_at_batch:
            raise Interrupted
        logits = net(self.x[batch])
        return nn.functional.cross_entropy(logits, self.y[batch], reduction="none"), (logits.argmax(1) == self.y[batch]).sum()

    def validate(self) -> dict[str, float]:
        self.states.append({k: v.clone() for k, v in self.model.state_dict().items()})
        if self.scripted is not None:
            return {"validation_loss": self.scripted[len(self.states) - 1], "validation_accuracy": 0.5}
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.x[40:])
        loss = float(nn.functional.cross_entropy(logits, self.y[40:]))
        return {"validation_loss": loss, "validation_accuracy": float((logits.argmax(1) == self.y[40:]).float().mean())}

    def state(self) -> dict:
        return self.model.state_dict()

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state)


def optimizer(task: Linear) -> torch.optim.Optimizer:
    return engine.sgd(list(task.model.parameters()), lr=0.5, momentum=0.9)


def checkpoints(folder, record=None) -> engine.Checkpoints:
    folder.mkdir(parents=True, exist_ok=True)
    return engine.Checkpoints(folder=folder, record=record or {"settings": {"lr": 0.5}}, extras={"note": "kept"})


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_patience_stops_where_expected_and_the_selected_epoch_is_restored(tmp_path):
    # validation losses of epochs 1..: best at 2, then 2 epochs without a better one: patience 2 stops after 4
    task = Linear(scripted=[0.9, 0.5, 0.7, 0.6, 0.1, 0.1])
    loop = engine.Loop(epochs=6, batch_size=16, seed=3, select="loss", patience=2)
    progress = engine.fit(task, optimizer(task), loop, checkpoints(tmp_path))
    assert [row["epoch"] for row in progress.log] == [1, 2, 3, 4] and progress.finished
    assert progress.best_epoch == 2 and progress.stale == 2
    assert same_weights(task.model.state_dict(), task.states[1])  # epoch 2's weights, not epoch 4's
    assert not same_weights(task.states[1], task.states[3])
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["note"] == "kept" and same_weights(best["model"], task.states[1])
    log = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in log] == ["1", "2", "3", "4"] and set(log[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "validation_loss",
        "validation_accuracy",
    }
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["progress"]["epoch"] == 4 and last["progress"]["finished"] and last["record"] == {"settings": {"lr": 0.5}}


def test_with_a_checkpoint_share_last_pt_is_written_less_often_and_resuming_still_gives_the_same_result(tmp_path, capsys):
    """A share so small that only the first epoch's write is due (its time is measured then) and the last: a
    crash in epoch 4 leaves last.pt at epoch 1, and resuming replays epochs 2-6 to the same weights and log."""
    loop = engine.Loop(epochs=6, batch_size=16, seed=7, select="loss")
    whole = Linear()
    engine.fit(whole, optimizer(whole), loop, checkpoints(tmp_path / "whole"))

    rare = replace(loop, checkpoint_share=1e-12)
    killed = Linear(crash_at_batch=3 * 3 + 2)  # in the middle of epoch 4
    with pytest.raises(Interrupted):
        engine.fit(killed, optimizer(killed), rare, checkpoints(tmp_path / "killed"))
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["progress"]["epoch"] == 1
    assert len(list(csv.DictReader(open(tmp_path / "killed" / "log.csv")))) == 3  # the log is written every epoch
    capsys.readouterr()
    resumed = Linear()
    engine.fit(resumed, optimizer(resumed), rare, checkpoints(tmp_path / "killed"))
    assert "train: resuming after epoch 1" in capsys.readouterr().out and len(resumed.states) == 5
    assert same_weights(resumed.model.state_dict(), whole.model.state_dict())
    assert (tmp_path / "killed" / "log.csv").read_text() == (tmp_path / "whole" / "log.csv").read_text()
    last = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert last["progress"]["epoch"] == 6 and last["progress"]["finished"]  # the last epoch is always written


def test_the_start_is_a_candidate_when_asked(tmp_path):
    task = Linear(scripted=[0.1, 0.5, 0.6, 0.7])  # epoch 0 (the model as given) is best
    given = {k: v.clone() for k, v in task.model.state_dict().items()}
    loop = engine.Loop(epochs=3, batch_size=16, seed=3, select="loss", start_candidate=True)
    progress = engine.fit(task, optimizer(task), loop, checkpoints(tmp_path))
    assert progress.best_epoch == 0 and [row["epoch"] for row in progress.log] == [0, 1, 2, 3]
    assert same_weights(task.model.state_dict(), given)
    without = Linear(scripted=[0.5, 0.6, 0.7])  # the same, the start not a candidate: epoch 1
    loop = engine.Loop(epochs=3, batch_size=16, seed=3, select="loss")
    assert engine.fit(without, optimizer(without), loop, checkpoints(tmp_path / "b")).best_epoch == 1


def test_a_run_interrupted_mid_epoch_resumes_to_the_same_result_bit_for_bit(tmp_path, capsys):
    loop = engine.Loop(epochs=6, batch_size=16, seed=7, select="loss")  # 3 batches per epoch (16, 16, 8)
    whole = Linear()
    engine.fit(whole, optimizer(whole), loop, checkpoints(tmp_path / "whole"))

    killed = Linear(crash_at_batch=3 * 3 + 2)  # in the middle of epoch 4
    with pytest.raises(Interrupted):
        engine.fit(killed, optimizer(killed), loop, checkpoints(tmp_path / "killed"))
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["progress"]["epoch"] == 3
    capsys.readouterr()
    resumed = Linear()  # a new process: fresh model and optimizer, everything else from last.pt
    engine.fit(resumed, optimizer(resumed), loop, checkpoints(tmp_path / "killed"))
    assert "train: resuming after epoch 3" in capsys.readouterr().out
    assert len(resumed.states) == 3  # epochs 4-6 only were trained again

    assert same_weights(resumed.model.state_dict(), whole.model.state_dict())
    for name in ("log.csv",):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    for name in ("best.pt", "last.pt"):
        a, b = (torch.load(tmp_path / run / name, weights_only=True) for run in ("killed", "whole"))
        assert same_weights(a["model"], b["model"]) and a.get("progress") == b.get("progress")
    # a finished run trains nothing more and leaves the selected epoch in the model
    again = Linear()
    progress = engine.fit(again, optimizer(again), loop, checkpoints(tmp_path / "whole"))
    assert again.states == [] and progress.finished
    assert same_weights(again.model.state_dict(), whole.model.state_dict())


def test_a_checkpoint_of_another_record_is_refused_or_restarted(tmp_path, capsys):
    loop = engine.Loop(epochs=2, batch_size=16, seed=0)
    task = Linear()
    engine.fit(task, optimizer(task), loop, checkpoints(tmp_path))
    other = checkpoints(tmp_path, {"settings": {"lr": 0.1}})
    with pytest.raises(AvemoError, match=r"other settings \(lr: 0.5 → 0.1\): give another --run, or delete that folder"):
        engine.fit(Linear(), optimizer(task), loop, other)
    restart = engine.Loop(epochs=2, batch_size=16, seed=0, on_mismatch="restart")
    fresh = Linear()
    progress = engine.fit(fresh, optimizer(fresh), restart, other)
    assert "made with other settings or inputs; starting again" in capsys.readouterr().out
    assert len(fresh.states) == 2 and progress.epoch == 2
    assert torch.load(tmp_path / "last.pt", weights_only=True)["record"] == {"settings": {"lr": 0.1}}


def test_without_checkpoints_the_last_epoch_is_kept_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = Linear()
    progress = engine.fit(task, optimizer(task), engine.Loop(epochs=3, batch_size=16, seed=0))
    assert progress.best_epoch == 3 and same_weights(task.model.state_dict(), task.states[-1])
    assert 0 <= progress.log[-1]["train_accuracy"] <= 1 and not list(tmp_path.iterdir())


def test_selected_by_epoch_the_best_file_is_written_once_with_the_last_epoch(tmp_path):
    """select last: every epoch is the best so far, so only the last epoch's state is written (a joint pass's
    is 0.45 GB); a kill before the end leaves none, and the resumed run writes it."""
    task = Linear(crash_at_batch=12)  # 40 examples, batch 8: 5 batches an epoch; dies in epoch 3
    loop = engine.Loop(epochs=4, batch_size=8, seed=3, select="last")
    with pytest.raises(Interrupted):
        engine.fit(task, optimizer(task), loop, checkpoints(tmp_path))
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "best.pt").exists()
    resumed = Linear()
    engine.fit(resumed, optimizer(resumed), loop, checkpoints(tmp_path))
    saved = torch.load(tmp_path / "best.pt")
    assert saved["epoch"] == 4 and same_weights(saved["model"], resumed.model.state_dict())
