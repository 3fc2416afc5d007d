"""A DCGAN that synthesizes 64x64 scans (here: synthetic tissue with and without lesions).

    python examples/train_dcgan.py
    python examples/train_dcgan.py --r1-gamma 0.1     # with the R1 penalty, through medkern's fused ops
    python examples/train_dcgan.py --quick --out /tmp/dcgan

Saves a grid of generated images after training (samples.png, from a fixed latent seed) and a grid
of real ones for comparison (real.png), with the losses per epoch in metrics.csv/json.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset

import _common
from medkern import data, train
from medkern.models import DCGANDiscriminator, DCGANGenerator
from medkern.train import figures


class ToTanhRange(Dataset):
    """Images mapped from the tissue's [0, 1] intensity range to the generator's tanh range [-1, 1]."""

    def __init__(self, images: Dataset):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image, _ = self.images[index]
        return (image * 2 - 1).clamp(-1, 1)


def main():
    args = _common.parse_args(__doc__.splitlines()[0], epochs=25,
                              r1_gamma={"type": float, "default": 0.0, "help": "R1 penalty weight (0: none)"})
    started = time.perf_counter()
    out = _common.output_folder(args, "dcgan")
    images = ToTanhRange(data.SyntheticLesions(32 if args.quick else 2000, size=64, seed=args.seed))
    loader = DataLoader(images, batch_size=16 if args.quick else 64, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    base = 8 if args.quick else 64
    generator = DCGANGenerator(latent_dim=100, channels=1, base_channels=base, reference=args.reference)
    # R1 differentiates the discriminator's input gradient: its BatchNorms keep their inputs for that
    discriminator = DCGANDiscriminator(channels=1, base_channels=base, reference=args.reference,
                                       memory_saving=args.r1_gamma == 0)

    def adam(params):  # the DCGAN paper's settings
        return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))

    trainer = train.GANTrainer(generator, discriminator, adam, adam, r1_gamma=args.r1_gamma, device=args.device,
                               seed=args.seed, checkpoint_dir=out / "checkpoints", log_dir=out,
                               progress=not args.quick)
    history = trainer.fit(loader, epochs=args.epochs)
    samples = figures.save_image_grid(trainer.sample(32, torch.Generator().manual_seed(0)), out / "samples.png")
    real = figures.save_image_grid(torch.stack([images[i] for i in range(min(32, len(images)))]), out / "real.png")
    _common.write_summary(out, "dcgan", args, history, {}, started, samples=samples, real=real)


if __name__ == "__main__":
    main()
