"""One training epoch of medkern.models.UNet (3D) on synthetic lesion volumes, medkern layers
against the plain-torch twin, through medkern.train.Trainer as a user runs it.

    python -m medkern.bench.epoch [--quick] [--rounds 3] [--out DIR] [--device cpu] [--contiguous]

Both twins start from the same weights, see the same batches, and run channels_last_3d as
examples/train_unet.py does (``--contiguous``: the default layout). After an untimed first epoch
each, the epochs are timed in alternation (the order flips every round), so a slow spell of the
machine falls on both; the figure is the median over rounds of each round's ratio. The volumes
are generated before timing. Writes ``epoch.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from .cases.models import UNET_SPEEDUP_TARGET as TARGET
from .cases.models import unet_twins

NAME = "train/unet3d_epoch"


def _volumes(quick: bool) -> TensorDataset:
    from ..data import SyntheticLesions

    data = SyntheticLesions(8 if quick else 40, size=16 if quick else 48, spatial_dims=3, lesion_fraction=2 / 3,
                            seed=0, with_masks=True)
    images, masks = zip(*(data[i] for i in range(len(data))))
    return TensorDataset(torch.stack(images), torch.stack(masks))


def _trainer(model: torch.nn.Module, device: torch.device, channels_last: bool):
    from .. import train

    return train.Trainer(model, lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.99, nesterov=True),
                         train.DeepSupervisionLoss(train.DiceCELoss()), device=device, channels_last=channels_last,
                         seed=0, progress=False)


def run(quick: bool = False, rounds: int = 3, device: str = "cpu", channels_last: bool = True) -> dict:
    device = torch.device(device)
    data = _volumes(quick)
    plain, fused = unet_twins(quick, deep_supervision=True)
    trainers = {"torch": _trainer(plain, device, channels_last), "medkern": _trainer(fused, device, channels_last)}
    loaders = {name: DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0))
               for name in trainers}
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for round_index in range(rounds + 1):  # round 0 warms up (first calls, allocator)
        order = list(trainers) if round_index % 2 == 0 else list(reversed(trainers))
        for name in order:
            trainer = trainers[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            trainer.fit(loaders[name], epochs=trainer.epoch + 1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_index:
                seconds[name].append(time.perf_counter() - started)
    ratios = [t / m for t, m in zip(seconds["torch"], seconds["medkern"])]
    speedup = statistics.median(ratios)
    losses = {name: trainer.history[-1]["train_loss"] for name, trainer in trainers.items()}
    return {
        "name": NAME, "device": str(device), "quick": quick, "rounds": rounds, "channels_last": channels_last,
        "volumes": len(data), "volume_shape": list(data.tensors[0].shape[1:]), "batches_per_epoch": len(loaders["torch"]),
        "seconds": seconds, "per_round_speedup": ratios, "speedup_vs_torch_twin": speedup,
        "last_train_loss": losses,  # the twins train alike: these agree to float32 rounding
        "target": TARGET, "passed": None if quick else speedup >= TARGET,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medkern.bench.epoch", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny volumes and model: a smoke run, not judged")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--contiguous", action="store_true",
                        help="both twins in the default layout (default: channels_last_3d, as examples/train_unet.py)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    result = run(args.quick, args.rounds, args.device, channels_last=not args.contiguous)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "epoch.json").write_text(json.dumps(result, indent=1))
    medians = {name: statistics.median(times) for name, times in result["seconds"].items()}
    verdict = "not judged (quick)" if result["passed"] is None else ("met" if result["passed"] else "MISSED")
    print(f"{NAME}: {result['batches_per_epoch']} batches of 2 x {result['volume_shape']}; epoch median "
          f"torch twin {medians['torch']:.2f} s, medkern {medians['medkern']:.2f} s; medkern "
          f"{result['speedup_vs_torch_twin']:.2f}x (target {TARGET}x: {verdict}); wrote {args.out / 'epoch.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
