"""medkern.swap + medkern.verify on real third-party models as users have them (MONAI networks,
torchvision classifiers) and on medkern.models: every supported pattern found, train and eval
parity in float64, checkpoints loading both ways."""

import warnings

import monai.networks.nets as monai_nets
import pytest
import torch
import torchvision.models as tv
from torch import nn

import medkern
from medkern.models import DCGANDiscriminator, DCGANGenerator, StyleGAN2Discriminator, StyleGAN2Generator


def dynunet():
    return monai_nets.DynUNet(3, 1, 2, kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, 2], upsample_kernel_size=[2, 2, 2],
                              filters=[8, 16, 16, 32], norm_name="instance", deep_supervision=True, deep_supr_num=1,
                              res_block=True)


# name -> (builder, input shape, blocks the swap must find: {block: count})
MODELS = {
    "monai-DynUNet": (dynunet, (2, 1, 16, 16, 16), {"ConvNormAct": 18}),
    "monai-UNet-batchnorm": (lambda: monai_nets.UNet(3, 1, 2, (8, 16, 32), (2, 2), num_res_units=2, norm="batch"),
                             (2, 1, 16, 16, 16), {"ConvNormAct": 7, "ConvTransposeNormAct": 2}),
    "monai-BasicUNet": (lambda: monai_nets.BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4)), (2, 1, 32, 32),
                        {"ConvNormAct": 18}),
    "monai-SegResNet": (lambda: monai_nets.SegResNet(3, init_filters=8, blocks_down=(1, 1, 1), blocks_up=(1, 1)),
                        (2, 1, 16, 16, 16), {"ConvNormAct": 5, "NormAct": 6}),
    "monai-AttentionUnet": (lambda: monai_nets.AttentionUnet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2)),
                            (2, 1, 32, 32), {"ConvNormAct": 14, "ConvTransposeNormAct": 2}),
    "monai-DenseNet121": (lambda: monai_nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=3),
                          (2, 1, 64, 64), {"ConvNormAct": 59, "NormAct": 62}),
    "torchvision-resnet18": (lambda: tv.resnet18(num_classes=4), (2, 3, 64, 64), {"ConvNormAct": 20}),
    "torchvision-mobilenet_v3_small": (lambda: tv.mobilenet_v3_small(num_classes=4), (2, 3, 96, 96),
                                       {"ConvNormAct": 34, "ConvAct": 9}),
    "torchvision-squeezenet1_1": (lambda: tv.squeezenet1_1(num_classes=4), (2, 3, 64, 64), {"ConvAct": 26}),
    "medkern-DCGAN-D-reference": (lambda: DCGANDiscriminator(channels=1, base_channels=8, reference=True),
                                  (2, 1, 64, 64), {"ConvNormAct": 3, "ConvAct": 1}),
    "medkern-DCGAN-G-reference": (lambda: DCGANGenerator(latent_dim=8, base_channels=8, reference=True),
                                  (2, 8), {"ConvTransposeNormAct": 4}),
    "medkern-DCGAN-D": (lambda: DCGANDiscriminator(channels=1, base_channels=8), (2, 1, 64, 64), {}),
    "medkern-StyleGAN2-G": (lambda: StyleGAN2Generator(z_dim=16, w_dim=16, image_size=64, channels=1,
                                                      channel_base=256, channel_max=32), (2, 16), {}),
    "medkern-StyleGAN2-D": (lambda: StyleGAN2Discriminator(image_size=64, channels=1, channel_base=256,
                                                          channel_max=32), (2, 1, 64, 64), {}),
}


def build(name):
    make, shape, expected = MODELS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notices
        model = make().double()
    return model, torch.randn(shape, dtype=torch.float64), expected


@pytest.mark.parametrize("name", list(MODELS))
def test_swapped_model_matches_the_original(name):
    model, x, expected = build(name)
    swapped = medkern.swap(model)
    report = medkern.swap_report(swapped)
    counts = report.counts()
    assert {block: counts.get(block, 0) for block in expected} == expected, str(report)
    assert list(swapped.state_dict()) == list(model.state_dict())
    for train in (True, False):
        result = medkern.verify(model, swapped, x, train=train)
        assert any(key.startswith("grad:") for key in result)


@pytest.mark.parametrize("name", ["monai-DynUNet", "torchvision-resnet18"])
def test_checkpoints_of_swapped_models_load_both_ways(name):
    model, x, _ = build(name)
    swapped = medkern.swap(model)
    trained = medkern.swap(build(name)[0])
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    model.load_state_dict(trained.state_dict(), strict=True)  # medkern checkpoint -> the original model
    swapped.load_state_dict(model.state_dict(), strict=True)  # and back
    medkern.verify(model, swapped, x, train=False)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(swapped.state_dict()[key], value, rtol=0, atol=0)


def test_dynunet_training_steps_match_with_an_optimizer():
    """Several SGD steps of the swapped DynUNet (swapped in place, optimizer built before) follow the
    original's: running forward, backward and the update through the swapped forwards."""
    model, x, _ = build("monai-DynUNet")
    original = build("monai-DynUNet")[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    medkern.swap(model, inplace=True)
    reference_optimizer = torch.optim.SGD(original.parameters(), lr=0.1)
    for _ in range(3):
        for net, opt in ((model, optimizer), (original, reference_optimizer)):
            opt.zero_grad()
            out = net(x)
            (out[:, 0] - out[:, 1]).square().mean().backward()
            opt.step()
    for (key, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=key)


def test_untraceable_model_still_gets_its_module_tree_patterns():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = tv.resnet18(num_classes=3).double()

        def forward(self, x):
            return self.features(x) if x.mean() > -10 else -self.features(x)

    model, x = DataDependent(), torch.randn(2, 3, 64, 64, dtype=torch.float64)
    swapped = medkern.swap(model)
    report = medkern.swap_report(swapped)
    assert report.counts() == {"ConvNormAct": 20, "medkern.nn.MaxPool2d": 1}
    assert str(report.left[0]).startswith("<model>: torch.fx cannot trace")
    medkern.verify(model, swapped, x)
