"""medkern.train.GANTrainer: the DCGAN on medkern layers trains like its plain-torch twin (with an
R1 penalty through the fused ops' second-order gradients), resumes exactly, and checks arguments."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import medkern
from medkern.models import DCGANDiscriminator, DCGANGenerator
from medkern.train import GANTrainer, load_checkpoint

LATENT = 8


def images(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 64, 64, generator=g, dtype=torch.float64) * 2 - 1


def dcgan_pair(reference: bool):
    torch.manual_seed(0)  # both twins start from the same weights
    generator = DCGANGenerator(latent_dim=LATENT, base_channels=4, reference=reference).double()
    discriminator = DCGANDiscriminator(base_channels=4, reference=reference, memory_saving=False).double()
    return generator, discriminator


def adam(params):
    return torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.999))


def gan_trainer(reference=False, **options):
    generator, discriminator = dcgan_pair(reference)
    options.setdefault("progress", False)
    return GANTrainer(generator, discriminator, adam, adam, **options)


def test_medkern_dcgan_with_r1_trains_like_the_plain_torch_twin():
    runs = []
    for reference in (False, True):
        trainer = gan_trainer(reference, r1_gamma=1.0, seed=3)
        history = trainer.fit(DataLoader(TensorDataset(images()), batch_size=4), epochs=1)
        runs.append((trainer, history[0]))
    (fused, fused_row), (plain, plain_row) = runs
    assert set(fused_row) == {"epoch", "step", "train_d_loss", "train_g_loss", "train_r1"}
    for key in ("train_d_loss", "train_g_loss", "train_r1"):
        assert fused_row[key] == pytest.approx(plain_row[key], rel=1e-9), key
    for part in ("generator", "discriminator"):
        want = getattr(plain, part).state_dict()
        for key, value in getattr(fused, part).state_dict().items():
            torch.testing.assert_close(value, want[key], rtol=1e-9, atol=1e-11, msg=f"{part}.{key}")


def test_resume_in_the_middle_of_an_epoch_continues_exactly(tmp_path):
    loader = DataLoader(TensorDataset(images(12)), batch_size=2, shuffle=True)  # 6 batches
    options = dict(r1_gamma=0.5, r1_interval=2, d_steps_per_g_step=2)
    whole = gan_trainer(seed=4, **options)
    whole.fit(loader, epochs=2)

    first = gan_trainer(seed=4, checkpoint_dir=tmp_path, **options)
    first.fit(loader, epochs=2, max_steps=9)  # 3 batches into the second epoch
    assert load_checkpoint(tmp_path / "last.pt")["batches_done"] == 3
    medkern.train.seed_everything(123)
    resumed = gan_trainer(**options)
    resumed.fit(loader, epochs=2, resume=tmp_path / "last.pt")

    assert resumed.history == whole.history
    for part in ("generator", "discriminator"):
        for (key, a), b in zip(getattr(whole, part).state_dict().items(), getattr(resumed, part).state_dict().values()):
            assert torch.equal(a, b), f"{part}.{key}"


def test_wasserstein_loss_with_gradient_penalty_and_the_discriminator_flags_kept():
    trainer = gan_trainer(loss="wasserstein", gp_weight=10.0, d_steps_per_g_step=2)
    trainer.discriminator.logits.weight.requires_grad_(False)  # the user froze a layer
    frozen = trainer.discriminator.logits.weight.detach().clone()
    history = trainer.fit(DataLoader(TensorDataset(images()), batch_size=4), epochs=1)
    assert {"train_d_loss", "train_gp", "train_g_loss"} <= set(history[0])
    assert not trainer.discriminator.logits.weight.requires_grad
    assert torch.equal(trainer.discriminator.logits.weight, frozen)
    assert all(p.requires_grad for name, p in trainer.discriminator.named_parameters() if not name.startswith("logits"))


def test_sample_is_reproducible_and_leaves_the_mode():
    trainer = gan_trainer()
    a = trainer.sample(3, torch.Generator().manual_seed(0))
    b = trainer.sample(3, torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, 64, 64) and a.dtype == torch.float32 and torch.equal(a, b)
    assert trainer.generator.training


def test_resume_refuses_other_settings(tmp_path):
    loader = DataLoader(TensorDataset(images(4)), batch_size=4)
    gan_trainer(r1_gamma=1.0, checkpoint_dir=tmp_path).fit(loader, epochs=1)
    with pytest.raises(ValueError, match="made with r1_gamma=1.0, this run has r1_gamma=0.0"):
        gan_trainer().fit(loader, epochs=2, resume=tmp_path / "last.pt")


@pytest.mark.parametrize("options, message", [
    ({"loss": "lsgan"}, "loss must be one of"),
    ({"r1_gamma": -1.0}, "r1_gamma must be >= 0"),
    ({"r1_interval": 0}, "r1_interval must be an int >= 1"),
    ({"precision": "fp16"}, "precision must be one of"),
    ({"latent_dim": 0}, "latent_dim"),
])
def test_bad_arguments_are_named(options, message):
    with pytest.raises(ValueError, match=f"medkern.train.GANTrainer: {message}"):
        gan_trainer(**options)
