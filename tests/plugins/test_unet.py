"""Tests of the built-in denoiser plugin ``gentool_unet`` (Ho et al. 2020 U-Net)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import gentool_unet
from gentool_unet.layers import AttentionBlock, timestep_embedding
from gentool_unet.unet import UNet, unet

TINY = dict(channels=32, channel_mult=[1, 2], image_size=8, attention_resolutions=[4], dropout=0.0)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def perturb_zero_init(net: torch.nn.Module) -> None:
    """Give the zero-initialised output layers random weights so gradients reach every layer."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("class_cond", [True, False])
def test_ddpm_cifar10_parameter_count(class_cond):
    # Ho et al. (2020), Appendix B: "Our CIFAR10 model has 35.7 million parameters".
    net = unet(class_cond=class_cond)
    assert abs(n_params(net) - 35.7e6) / 35.7e6 < 0.02


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("image_size,attn", [(8, [4]), (16, [16, 8])])
def test_output_shape_and_dtype(in_channels, image_size, attn):
    net = unet(**{**TINY, "image_size": image_size, "attention_resolutions": attn}, in_channels=in_channels)
    x = torch.randn(2, in_channels, image_size, image_size)
    out = net(x, torch.tensor([0, 999]))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert net.cond_dim == 4 * 32 and not hasattr(net, "prediction")  # the [objective] says what it predicts
    assert isinstance(net, UNet)


def test_out_channels_and_class_cond_options():
    net = unet(**TINY, out_channels=6, class_cond=False)
    assert net(torch.randn(1, 3, 8, 8), torch.tensor([3])).shape == (1, 6, 8, 8)
    assert net.cond_dim is None


def test_output_starts_at_zero():
    # The zero-initialised output conv makes the untrained network predict 0.
    net = unet(**TINY)
    assert net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).abs().max() == 0


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = unet(**TINY)
    perturb_zero_init(net)
    cond = torch.randn(2, net.cond_dim)
    net(torch.randn(2, 3, 8, 8), torch.tensor([5, 500]), cond).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_cond_changes_output_and_none_works():
    torch.manual_seed(0)
    net = unet(**TINY).eval()
    perturb_zero_init(net)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 10])
    cond = torch.randn(2, net.cond_dim)
    plain = net(x, t)
    assert torch.equal(plain, net(x, t, None))
    assert (net(x, t, cond) - plain).abs().max() > 1e-4


def test_cond_on_unconditional_net_raises():
    net = unet(**TINY, class_cond=False)
    with pytest.raises(ValueError, match="cond"):
        net(torch.randn(1, 3, 8, 8), torch.tensor([0]), torch.randn(1, 128))


def test_timestep_embedding_matches_independent_computation():
    dim, half = 16, 8
    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    for b, tb in enumerate(t.tolist()):
        for i in range(half):
            angle = tb * math.exp(-math.log(10000) * i / half)
            assert emb[b, i].item() == pytest.approx(math.sin(angle), abs=1e-4)
            assert emb[b, half + i].item() == pytest.approx(math.cos(angle), abs=1e-4)


@pytest.mark.parametrize("num_heads", [1, 2])
def test_attention_equals_naive_softmax(num_heads):
    torch.manual_seed(0)
    c, hw = 64, 4
    block = AttentionBlock(c, num_heads)
    perturb_zero_init(block)
    x = torch.randn(2, c, hw, hw)
    with torch.no_grad():
        qkv = block.qkv(block.norm(x)).flatten(2)  # [B, 3C, N]
        q, k, v = (s.reshape(2, num_heads, c // num_heads, -1) for s in qkv.chunk(3, dim=1))
        d = c // num_heads
        w = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(d), dim=-1)
        a = torch.einsum("bhij,bhdj->bhdi", w, v).reshape(2, c, hw, hw)
        expected = x + block.proj(a)
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_autocast_bf16_and_channels_last():
    torch.manual_seed(0)
    net = unet(**TINY).eval()
    perturb_zero_init(net)
    x, t, cond = torch.randn(2, 3, 8, 8), torch.tensor([0, 7]), torch.randn(2, 128)
    ref = net(x, t, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, cond)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.1)
    net_cl = net.to(memory_format=torch.channels_last)
    out_cl = net_cl(x.to(memory_format=torch.channels_last), t, cond)
    torch.testing.assert_close(out_cl, ref, atol=1e-4, rtol=1e-4)


def test_compiles_without_graph_breaks():
    net = unet(**TINY).eval()
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    x, t, cond = torch.randn(2, 3, 8, 8), torch.tensor([0, 7]), torch.randn(2, 128)
    torch.testing.assert_close(compiled(x, t, cond), net(x, t, cond))


@pytest.mark.parametrize(
    "options,name",
    [
        ({"channels": 48}, "channels"),
        ({"channels": 0}, "channels"),
        ({"image_size": 12, "channel_mult": [1, 2, 2, 2]}, "image_size"),
        ({"channel_mult": []}, "channel_mult"),
        ({"channel_mult": [1, 0]}, "channel_mult"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"attention_resolutions": [5]}, "attention_resolutions"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_heads": 3}, "num_heads"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(options, name):
    with pytest.raises(ValueError, match=name):
        unet(**{**TINY, **options})


def test_factory_signature_is_documented():
    sig = inspect.signature(unet)
    doc = inspect.getdoc(unet)
    assert "Args:" in doc
    for p in sig.parameters.values():
        assert p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.annotation is not p.empty
        assert f"\n    {p.name}:" in doc, p.name


def test_registered_through_plugin_manager():
    from gentool.plugins import load_plugins

    state = load_plugins()
    if ("denoiser", "unet") not in state.registry:  # entry point not installed: register by hand
        state = load_plugins(extra=[("unet_test", gentool_unet)], autoload=False)
    component = state.registry.get("denoiser", "unet")
    assert component.factory is unet
    assert not [b for b in state.broken if "unet" in b.name]
