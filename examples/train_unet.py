"""Lesion segmentation of 3D volumes with an nnU-Net-style U-Net (deep supervision, Dice + CE).

    python examples/train_unet.py
    python examples/train_unet.py --quick --out /tmp/unet

Trains on synthetic volumes with lesion masks (a third of them without lesions, whose empty masks
the Dice of each case must handle), reports the lesion Dice and IoU on the test set, and draws the
test slice with the most lesion, target and prediction overlaid (overlay.png).
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

import _common
from medkern import data, train
from medkern.models import UNet
from medkern.train import figures


def lesion_overlap(preds: torch.Tensor, target: torch.Tensor) -> dict:
    """Dice and IoU of the lesion class over the whole set (voxels pooled)."""
    matrix = train.ConfusionMatrix(2)
    matrix.update(preds, target)
    return {"dice": matrix.dice(include_background=False).item(), "iou": matrix.iou(include_background=False).item()}


def main():
    args = _common.parse_args(__doc__.splitlines()[0], epochs=20)
    started = time.perf_counter()
    out = _common.output_folder(args, "unet")
    size = 16 if args.quick else 48
    volumes = data.SyntheticLesions(24 if args.quick else 300, size=size, spatial_dims=3, lesion_fraction=2 / 3,
                                    seed=args.seed, with_masks=True)
    train_set, val_set, test_set = _common.split(volumes)

    widths = (4, 8, 16) if args.quick else (16, 32, 64, 128)
    model = UNet(1, 2, spatial_dims=3, widths=widths, deep_supervision=True, reference=args.reference)
    loader = DataLoader(train_set, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    val_loader, test_loader = (DataLoader(s, batch_size=4) for s in (val_set, test_set))
    trainer = train.Trainer(
        model, lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.99, nesterov=True),  # nnU-Net's
        train.DeepSupervisionLoss(train.DiceCELoss()), metrics={"lesion": lesion_overlap},
        scheduler=lambda opt: torch.optim.lr_scheduler.PolynomialLR(opt, args.epochs, power=0.9),
        clip_grad_norm=12.0, device=args.device, channels_last=True, seed=args.seed,
        early_stopping=train.EarlyStopping("val_lesion_dice", mode="max", patience=6),
        checkpoint_dir=out / "checkpoints", log_dir=out, progress=not args.quick)
    history = trainer.fit(loader, val_loader, epochs=args.epochs)

    trainer.load_checkpoint(out / "checkpoints" / "best.pt")
    test = trainer.evaluate(test_loader)
    prediction = trainer.predict(test_loader).argmax(1)
    images, masks = (torch.cat(parts) for parts in zip(*test_loader))
    case, depth = divmod(int(masks.flatten(2).sum(-1).argmax()), size)  # the slice with the most lesion
    overlay = figures.save_segmentation_overlay(images[case, 0, depth], masks[case, depth], prediction[case, depth],
                                                out / "overlay.png")
    _common.write_summary(out, "unet", args, history, test, started, overlay=overlay)


if __name__ == "__main__":
    main()
