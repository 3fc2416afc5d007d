"""medkern.train.Trainer: exact resume, accumulation, clipping, precision, metrics, early stopping,
logs, checkpoints and bad arguments, on small CPU models."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import medkern
from medkern.train import EarlyStopping, Trainer
from medkern.train.checkpoint import load_checkpoint, save_checkpoint
from medkern.train.rng import capture_rng, restore_rng


class NoisyImages(Dataset):
    """Small labelled images whose augmentation draws from Python's and NumPy's generators, so a
    resume that forgot either would diverge."""

    def __init__(self, n=24, channels=2, size=8, classes=3):
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(n, channels, size, size, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        shift = random.random() * 0.1 + float(np.random.rand()) * 0.1
        return self.x[i] + shift, self.y[i]


def small_cnn(classes=3, channels=2):
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def step_lr(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def make_trainer(tmp_path=None, model=None, **options):
    model = model if model is not None else small_cnn()
    options.setdefault("progress", False)
    if tmp_path is not None:
        options.setdefault("checkpoint_dir", tmp_path / "ckpt")
    return Trainer(model, sgd, nn.CrossEntropyLoss(), **options)


def assert_same_parameters(a: nn.Module, b: nn.Module):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@pytest.fixture(autouse=True)
def _seeded():
    medkern.train.seed_everything(0)


# --- exact resume --------------------------------------------------------------------------


def loaders(generator_seed=None):
    data = NoisyImages()
    generator = torch.Generator().manual_seed(generator_seed) if generator_seed is not None else None
    train = DataLoader(data, batch_size=5, shuffle=True, generator=generator)  # 5 batches, the last of 4
    val = DataLoader(NoisyImages(n=10), batch_size=4)
    return train, val


def test_resume_at_an_epoch_boundary_continues_exactly(tmp_path):
    train, val = loaders()
    medkern.train.seed_everything(1)
    whole = make_trainer(scheduler=step_lr)
    whole_history = whole.fit(train, val, epochs=3)

    medkern.train.seed_everything(1)
    first = make_trainer(tmp_path, scheduler=step_lr)
    first.fit(train, val, epochs=1)
    medkern.train.seed_everything(99)  # the resumed run must not depend on the process's state
    resumed = make_trainer(scheduler=step_lr, model=small_cnn())
    history = resumed.fit(train, val, epochs=3, resume=tmp_path / "ckpt" / "last.pt")

    assert_same_parameters(whole.model, resumed.model)
    assert history == whole_history
    assert resumed.optimizer.param_groups[0]["lr"] == whole.optimizer.param_groups[0]["lr"] == 0.05 / 8


# (accumulate, max_steps): 5 batches an epoch (groups of 2, 2, 1 when accumulating); each stop
# falls inside an epoch, the first or the second
MID_EPOCH_STOPS = [(1, 2), (2, 1), (1, 7), (2, 4)]


@pytest.mark.parametrize("accumulate,max_steps", MID_EPOCH_STOPS)
def test_resume_in_the_middle_of_an_epoch_continues_exactly(tmp_path, accumulate, max_steps):
    train, val = loaders(generator_seed=3)  # the loader owns a generator: it is checkpointed too
    medkern.train.seed_everything(1)
    whole = make_trainer(accumulate_grad_batches=accumulate)
    whole.fit(train, val, epochs=2)

    train, val = loaders(generator_seed=3)
    medkern.train.seed_everything(1)
    first = make_trainer(tmp_path, accumulate_grad_batches=accumulate)
    first.fit(train, val, epochs=2, max_steps=max_steps)
    state = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert 0 < state["batches_done"] < len(train), "the interruption must fall inside an epoch"
    medkern.train.seed_everything(5)
    train, val = loaders(generator_seed=11)  # a fresh loader: its generator comes from the checkpoint
    resumed = make_trainer(model=small_cnn(), accumulate_grad_batches=accumulate)
    resumed.fit(train, val, epochs=2, resume=tmp_path / "ckpt" / "last.pt")

    assert_same_parameters(whole.model, resumed.model)
    assert resumed.history == whole.history
    assert resumed.global_step == whole.global_step


@pytest.mark.parametrize("accumulate,max_steps", MID_EPOCH_STOPS[:2])
def test_fit_again_after_max_steps_continues_the_same_run(accumulate, max_steps):
    train, val = loaders()
    medkern.train.seed_everything(1)
    whole = make_trainer(accumulate_grad_batches=accumulate)
    whole.fit(train, val, epochs=2)
    medkern.train.seed_everything(1)
    stopped = make_trainer(accumulate_grad_batches=accumulate)
    stopped.fit(train, val, epochs=2, max_steps=max_steps)
    assert 0 < stopped.batches_done < len(train)
    stopped.fit(train, val, epochs=2)
    assert_same_parameters(whole.model, stopped.model)
    assert stopped.history == whole.history


def test_resume_refuses_another_accumulation_and_ends_a_finished_run(tmp_path):
    train, val = loaders()
    make_trainer(tmp_path, accumulate_grad_batches=2).fit(train, val, epochs=1)
    with pytest.raises(ValueError, match="made with accumulate_grad_batches=2, this run has accumulate_grad_batches=1"):
        make_trainer().fit(train, val, epochs=2, resume=tmp_path / "ckpt" / "last.pt")
    stopping = make_trainer(tmp_path / "stop", early_stopping=EarlyStopping(patience=1))
    stopping.early_stopping.bad_epochs = 1  # as if it had already stopped
    stopping.save_checkpoint(tmp_path / "stopped.pt")
    resumed = make_trainer(early_stopping=EarlyStopping(patience=1))
    assert resumed.fit(train, val, epochs=5, resume=tmp_path / "stopped.pt") == []


def test_an_iterable_dataset_loader_trains_with_a_cut_short_last_group():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            g = torch.Generator().manual_seed(0)
            return iter([(torch.randn(3, generator=g), torch.randn(1, generator=g)) for _ in range(10)])

    trainer = Trainer(nn.Linear(3, 1), lambda p: torch.optim.SGD(p, lr=0.1), nn.MSELoss(),
                      accumulate_grad_batches=2, progress=False)
    trainer.fit(DataLoader(Stream(), batch_size=2), epochs=1)  # 5 batches: groups of 2, 2 and 1
    assert trainer.global_step == 3 and trainer.batches_done == 0


def test_rng_capture_and_restore_cover_every_generator():
    generator = torch.Generator().manual_seed(4)
    saved = capture_rng([generator])
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    restore_rng(saved, [generator])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()) == first
    with pytest.raises(ValueError, match="1 torch.Generator"):
        restore_rng(saved, [])


# --- the optimizer step --------------------------------------------------------------------


def linear_problem(n=10, batch_size=2):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 1, generator=g, dtype=torch.float64)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size), x, y


def linear_model():
    torch.manual_seed(0)
    return nn.Linear(3, 1).double()


def test_accumulation_equals_one_large_batch_including_the_last_smaller_group():
    loader, x, y = linear_problem(n=10, batch_size=2)  # 5 batches: groups of 2, 2 and 1
    trainer = Trainer(linear_model(), lambda p: torch.optim.SGD(p, lr=0.1), nn.MSELoss(),
                      accumulate_grad_batches=2, progress=False)
    trainer.fit(loader, epochs=1)
    assert trainer.global_step == 3

    expected = linear_model()
    optimizer = torch.optim.SGD(expected.parameters(), lr=0.1)
    for start, stop in ((0, 4), (4, 8), (8, 10)):  # each group's mean over its batches
        optimizer.zero_grad()
        nn.functional.mse_loss(expected(x[start:stop]), y[start:stop]).backward()
        optimizer.step()
    for actual, wanted in zip(trainer.model.parameters(), expected.parameters()):
        torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=1e-14)


def test_gradient_clipping_bounds_the_update():
    loader, _, _ = linear_problem(n=2, batch_size=2)
    model = linear_model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = Trainer(model, lambda p: torch.optim.SGD(p, lr=1.0), lambda out, y: 1e3 * nn.functional.mse_loss(out, y),
                      clip_grad_norm=0.25, progress=False)
    trainer.fit(loader, epochs=1)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.25, rel=1e-9)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes_with_its_scaler(tmp_path, precision):
    train, val = loaders()
    trainer = make_trainer(tmp_path, precision=precision)
    history = trainer.fit(train, val, epochs=1)
    assert all(np.isfinite(history[0][k]) for k in ("train_loss", "val_loss"))
    state = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert (state["scaler"] is not None) == (precision == "fp16")
    with pytest.raises(ValueError, match="precision='fp16'|precision='bf16'"):
        make_trainer().fit(train, epochs=2, resume=tmp_path / "ckpt" / "last.pt")


# --- metrics, early stopping, logs ---------------------------------------------------------


class CountingAccuracy:
    """An accumulating metric (update/compute/reset) as the metrics module provides them."""

    def reset(self):
        self.right = self.seen = 0

    def update(self, preds, target):
        self.right += (preds.argmax(1) == target).sum().item()
        self.seen += target.numel()

    def compute(self):
        return self.right / self.seen


def test_epoch_metrics_are_computed_on_the_whole_epoch_not_averaged_over_batches():
    data = NoisyImages(n=10)
    val = DataLoader(TensorDataset(data.x, data.y), batch_size=4)  # no augmentation: predict sees the same
    trainer = make_trainer(metrics={"acc": CountingAccuracy(),
                                    "per_class_hits": lambda p, t: torch.bincount(t[p.argmax(1) == t], minlength=3)})
    result = trainer.evaluate(val)  # batches of 4, 4 and 2: a mean of batch accuracies would differ
    logits = trainer.predict(val)
    targets = torch.cat([y for _, y in val])
    assert logits.shape == (10, 3)
    assert result["acc"] == (logits.argmax(1) == targets).sum().item() / len(targets)
    hits = torch.bincount(targets[logits.argmax(1) == targets], minlength=3)
    assert [result[f"per_class_hits_{i}"] for i in range(3)] == hits.tolist()
    loss = nn.functional.cross_entropy(logits, targets).item()
    assert result["loss"] == pytest.approx(loss, rel=1e-6)


def test_early_stopping_stops_after_patience_and_keeps_the_best_checkpoint(tmp_path):
    train, val = loaders()
    model = small_cnn()
    trainer = Trainer(model, lambda p: torch.optim.SGD(p, lr=0.0), nn.CrossEntropyLoss(),  # lr 0: val loss flat
                      early_stopping=EarlyStopping("val_loss", patience=2),
                      scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
                      checkpoint_dir=tmp_path / "ckpt", log_dir=tmp_path / "logs", progress=False)
    history = trainer.fit(train, val, epochs=10)
    assert len(history) == 3  # the first epoch sets the best, two more without improvement
    assert load_checkpoint(tmp_path / "ckpt" / "best.pt")["epoch"] == 1
    rows = json.loads((tmp_path / "logs" / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "step", "train_loss", "val_loss", "lr"}
    csv_lines = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "epoch,step,train_loss,val_loss,lr" and len(csv_lines) == 4


def test_logs_after_a_resume_hold_the_resumed_run(tmp_path):
    train, val = loaders()
    make_trainer(tmp_path, log_dir=tmp_path / "logs").fit(train, val, epochs=2)
    state = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    state["epoch"], state["history"] = 1, state["history"][:1]  # as if stopped after epoch 1
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "one.pt")
    make_trainer(log_dir=tmp_path / "logs").fit(train, val, epochs=3, resume=tmp_path / "one.pt")
    rows = json.loads((tmp_path / "logs" / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2, 3]


def test_deep_supervision_outputs_reach_the_loss_whole_and_metrics_first():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return [self.a(x), self.b(x)]

    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    seen = []

    def loss_fn(outputs, target):
        seen.append(len(outputs))
        return sum(nn.functional.cross_entropy(o, target) for o in outputs)

    trainer = Trainer(TwoHeads(), sgd, loss_fn, progress=False)
    trainer.fit(DataLoader(TensorDataset(x, y), batch_size=3), epochs=1)
    assert seen == [2, 2]
    torch.testing.assert_close(trainer.predict(DataLoader(TensorDataset(x), batch_size=4)), trainer.model.a(x).detach())


# --- model preparation ---------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_gives_the_same_training_as_contiguous(dims):
    conv, layout = (nn.Conv2d, torch.channels_last) if dims == 2 else (nn.Conv3d, torch.channels_last_3d)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 2, *[6] * dims, generator=g)
    loader = DataLoader(TensorDataset(x, torch.randint(0, 3, (12,), generator=g)), batch_size=4)
    results = []
    for channels_last in (False, True):
        medkern.train.seed_everything(3)
        model = nn.Sequential(conv(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 ** dims, 3))
        trainer = make_trainer(model=model, channels_last=channels_last)
        trainer.fit(loader, epochs=1)
        results.append(trainer.model)
    assert results[1][0].weight.is_contiguous(memory_format=layout)
    for a, b in zip(results[0].parameters(), results[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_swap_runs_the_model_on_medkern_and_keeps_its_state_dict():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    keys = list(model.state_dict())
    trainer = make_trainer(model=model, swap=True)
    assert medkern.swap_report(trainer.model).swapped, "nothing was swapped"
    assert list(trainer.model.state_dict()) == keys
    train, _ = loaders()
    assert np.isfinite(trainer.fit(train, epochs=1)[0]["train_loss"])


def test_compile_trains_like_eager():
    loader, _, _ = linear_problem()
    models = []
    for compiled in (False, True):
        trainer = Trainer(linear_model(), lambda p: torch.optim.SGD(p, lr=0.1), nn.MSELoss(), compile=compiled,
                          progress=False)
        trainer.fit(loader, epochs=1)
        models.append(trainer.model)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_deterministic_mode_is_restored_after_fit():
    loader, _, _ = linear_problem()
    assert not torch.are_deterministic_algorithms_enabled()
    Trainer(linear_model(), sgd, nn.MSELoss(), deterministic=True, progress=False).fit(loader, epochs=1)
    assert not torch.are_deterministic_algorithms_enabled()


# --- checkpoint files and bad input --------------------------------------------------------


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_stray_file(tmp_path):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(Exception):
        save_checkpoint({"epoch": 2, "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unreadable_and_foreign_checkpoints_are_refused(tmp_path):
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a medkern training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("options, error, message", [
    ({"precision": "fp8"}, ValueError, "precision must be one of"),
    ({"scheduler_interval": "batch"}, ValueError, "scheduler_interval must be one of"),
    ({"accumulate_grad_batches": 0}, ValueError, "accumulate_grad_batches must be an int >= 1"),
    ({"clip_grad_norm": -1.0}, ValueError, "clip_grad_norm must be a number > 0"),
    ({"checkpoint_every": 3}, ValueError, "checkpoint_every needs checkpoint_dir"),
    ({"early_stopping": "val_loss"}, TypeError, "early_stopping must be"),
])
def test_bad_arguments_are_named(options, error, message):
    with pytest.raises(error, match=f"medkern.train.Trainer: {message}"):
        make_trainer(**options)


def test_bad_model_optimizer_and_batches_are_named():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Trainer(lambda x: x, sgd, nn.MSELoss())
    with pytest.raises(ValueError, match="optimizer holds 2 parameter"):
        Trainer(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), nn.MSELoss())
    trainer = Trainer(nn.Linear(2, 2), sgd, nn.MSELoss(), progress=False)
    with pytest.raises(TypeError, match="a batch must be"):
        trainer.fit([42], epochs=1)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        trainer.fit([], epochs=0)


def test_tensorboard_gets_every_epoch_scalar(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    train, val = loaders()
    trainer = make_trainer(log_dir=tmp_path, tensorboard=True)
    history = trainer.fit(train, val, epochs=2)
    trainer.logger.close()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train_loss", "val_loss", "lr"}
    logged = [(e.step, e.value) for e in events.Scalars("val_loss")]
    assert logged == [(row["epoch"], pytest.approx(row["val_loss"], rel=1e-6)) for row in history]


def test_fp16_steps_whose_gradients_overflow_are_skipped_and_the_scale_backs_off():
    model = linear_model().float()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(4, 3), torch.randn(4, 1)
    trainer = Trainer(model, lambda p: torch.optim.SGD(p, lr=0.1), lambda out, t: (out.float() * 1e38).sum(),
                      precision="fp16", progress=False)  # the scaled loss's gradients overflow
    scale = trainer.scaler.get_scale()
    trainer.fit(DataLoader(TensorDataset(x, y), batch_size=4), epochs=1)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # the step was skipped
    assert trainer.scaler.get_scale() < scale
