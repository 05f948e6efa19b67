"""Tests of the built-in denoiser plugin ``gentool_dit`` (the DiT of Peebles and Xie 2023)."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from einops import rearrange

import gentool
import gentool_dit
from gentool import testing
from gentool_dit.dit import SIZES, DiT, dit, patchify, sincos_2d, unpatchify

TINY = dict(in_channels=1, image_size=8, patch_size=2, depth=2, hidden_size=32, num_heads=2)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def perturb_zero_init(net: torch.nn.Module) -> None:
    """Give the zero-initialised layers random weights, so that every block and the output do something."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def inputs(net: DiT, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c, h, w = net.image_shape
    x = torch.randn(batch, c, h, w, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = torch.randn(batch, net.cond_dim, generator=g) if net.cond_dim else None
    return x, t, cond


@pytest.mark.parametrize("options", [{}, {"class_cond": False}, {"pos_embed": "learned"}, {"patch_size": 4}])
def test_passes_the_denoiser_contract(options):
    net = dit(**{**TINY, **options})
    testing.check_denoiser(net, (3, 1, 8, 8))


def test_attributes_like_the_unet():
    net = dit(**TINY)
    assert net.cond_dim == 32 and net.image_shape == (1, 8, 8) and net.learned_variance is False
    assert dit(**TINY, class_cond=False).cond_dim is None
    wide = dit(**TINY, learn_sigma=True, out_channels=3)
    assert wide.learned_variance is True
    assert wide(*inputs(wide)).shape == (2, 6, 8, 8)  # 2C: the prediction, then the variance


# -- adaLN-Zero ---------------------------------------------------------------------------

@pytest.mark.parametrize("class_cond", [True, False])
def test_adaln_zero_starts_every_block_as_the_identity(class_cond):
    # Sec. 3.2: the MLP regressing the gates alpha is zero-initialised, so each block is the identity.
    torch.manual_seed(0)
    net = dit(**{**TINY, "depth": 3}, class_cond=class_cond)
    seen = []
    hooks = [b.register_forward_hook(lambda m, args, out: seen.append((args[0], out))) for b in net.blocks]
    x, t, cond = inputs(net)
    out = net(x, t, cond)
    for h in hooks:
        h.remove()
    assert len(seen) == 3
    for block_in, block_out in seen:
        assert block_in.abs().sum() > 0 and torch.equal(block_out, block_in)
    assert torch.equal(out, torch.zeros_like(x))  # the zero-initialised final layer
    perturb_zero_init(net)  # the same hooks see blocks that do something once the zeros are gone
    assert not torch.equal(net.blocks[0](seen[0][0], net.embed(t, cond)), seen[0][0])


def test_gradients_reach_every_parameter():
    net = dit(**TINY, pos_embed="learned")
    perturb_zero_init(net)
    x, t, cond = inputs(net)
    net(x, t, cond).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_cond_changes_output_and_none_works():
    net = dit(**TINY).eval()
    perturb_zero_init(net)
    x, t, cond = inputs(net)
    plain = net(x, t)
    assert torch.equal(plain, net(x, t, None))
    assert (net(x, t, cond) - plain).abs().max() > 1e-4


def test_cond_on_unconditional_net_raises():
    net = dit(**TINY, class_cond=False)
    with pytest.raises(ValueError, match="cond"):
        net(torch.randn(1, 1, 8, 8), torch.tensor([0]), torch.randn(1, 32))


def test_wrong_image_size_raises():
    with pytest.raises(ValueError, match="8x8"):
        dit(**TINY)(torch.randn(1, 1, 12, 12), torch.tensor([0]))


# -- patchify, position and time embeddings, attention --------------------------------------

@pytest.mark.parametrize("p", [1, 2, 4, 7])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_patchify_round_trip_and_layout(p, channels):
    x = torch.randn(2, channels, 28, 28)
    tokens = patchify(x, p)
    assert tokens.shape == (2, (28 // p) ** 2, p * p * channels)
    # an independent formulation: einops, tokens row-major over the grid, each patch (row, col, channel)
    torch.testing.assert_close(tokens, rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p), rtol=0, atol=0)
    assert torch.equal(unpatchify(tokens, p, 28 // p, 28 // p), x)
    y = torch.randn(2, (28 // p) ** 2, p * p * channels)
    assert torch.equal(patchify(unpatchify(y, p, 28 // p, 28 // p), p), y)


def test_patchify_by_hand():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)  # C = 2, H = 4, W = 6, p = 2
    tokens = patchify(x, 2)
    for i in range(2):
        for j in range(3):
            want = [x[0, c, 2 * i + a, 2 * j + b] for a in range(2) for b in range(2) for c in range(2)]
            assert tokens[0, 3 * i + j].tolist() == [v.item() for v in want]


def test_sincos_position_embedding_matches_the_formula():
    # ViT/MAE's fixed embedding: half the channels encode the column, half the row, each sin then cos
    # with frequencies 10000 ** (-k / (dim / 4)).
    dim, grid = 8, 3
    emb = sincos_2d(dim, grid)
    assert emb.shape == (9, 8) and emb.dtype == torch.float32
    for row in range(grid):
        for col in range(grid):
            want = []
            for pos in (col, row):
                angles = [pos * 10000.0 ** (-k / 2) for k in range(2)]
                want += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
            assert emb[row * grid + col].tolist() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("t", [[0, 1, 17, 999], [0.0, 0.5, 300.0, -1.553]])
def test_timestep_embedding_accepts_int_and_float_labels(t):
    # 256 frequencies f_i = 10000 ** (-i / 128): cos(t f_i) then sin(t f_i); floats such as EDM's ln(sigma) / 4.
    net = dit(**TINY)
    t = torch.tensor(t)
    emb = net.t_embedder.frequency_embedding(t)
    assert emb.shape == (4, 256) and emb.dtype == torch.float32
    for b, tb in enumerate(t.tolist()):
        for i in (0, 1, 64, 127):
            angle = tb * math.exp(-math.log(10000) * i / 128)
            assert emb[b, i].item() == pytest.approx(math.cos(angle), abs=1e-4)
            assert emb[b, 128 + i].item() == pytest.approx(math.sin(angle), abs=1e-4)


def test_int_and_float_timesteps_give_the_same_output():
    net = dit(**TINY).eval()
    perturb_zero_init(net)
    x, _, cond = inputs(net)
    out = net(x, torch.tensor([3, 500]), cond)
    torch.testing.assert_close(net(x, torch.tensor([3.0, 500.0]), cond), out)
    assert torch.isfinite(net(x, torch.tensor([-4.2, 0.37]), cond)).all()


@pytest.mark.parametrize("num_heads", [1, 4])
def test_attention_equals_naive_softmax(num_heads):
    net = dit(**{**TINY, "num_heads": num_heads})
    attn = net.blocks[0].attn
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        q, k, v = attn.qkv(x).chunk(3, dim=-1)  # [B, N, d] each, heads side by side
        d = 32 // num_heads
        q, k, v = (s.reshape(2, 5, num_heads, d).transpose(1, 2) for s in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        expected = attn.proj((w @ v).transpose(1, 2).reshape(2, 5, 32))
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


# -- sizes ---------------------------------------------------------------------------------

def test_named_sizes_are_table_4():
    # Peebles and Xie (2023), Table 4: layers N, hidden size d, heads.
    assert SIZES == {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
    with torch.device("meta"):
        for size, (depth, hidden, heads) in SIZES.items():
            net = dit(size=size)
            assert len(net.blocks) == depth and net.cond_dim == hidden
            assert net.blocks[0].attn.num_heads == heads and net.blocks[0].mlp[0].out_features == 4 * hidden


def test_explicit_sizes_override_the_named_size():
    with torch.device("meta"):
        net = dit(size="B", depth=2)
        assert (len(net.blocks), net.cond_dim, net.blocks[0].attn.num_heads) == (2, 768, 12)
        net = dit(size="S", hidden_size=96)
        assert (len(net.blocks), net.cond_dim, net.blocks[0].attn.num_heads) == (12, 96, 6)


def test_dit_s2_parameter_count_is_the_papers():
    # DiT-S/2 on the 4x32x32 latents of 256x256 images, learning the variance: 33M parameters, the class
    # embedding of 1000 classes plus the null class included (here the class_embedding conditioner's).
    with torch.device("meta"):
        net = dit(in_channels=4, image_size=32, patch_size=2, size="S", learn_sigma=True)
        labels = gentool.registry().get("conditioner", "class_embedding").factory(net.cond_dim, num_classes=1000)
    assert abs(n_params(net) + n_params(labels) - 33e6) / 33e6 < 0.01


# -- compilation ---------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"class_cond": False}, {"learn_sigma": True}, {"pos_embed": "learned"}])
def test_no_graph_breaks(options):
    torch._dynamo.reset()
    net = dit(**{**TINY, **options})
    explanation = torch._dynamo.explain(net)(*inputs(net))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def test_autocast_bf16_keeps_the_dtype():
    net = dit(**TINY).eval()
    perturb_zero_init(net)
    x, t, cond = inputs(net)
    ref = net(x, t, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, cond)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)


# -- options -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "options,name",
    [
        ({"size": "M"}, "size"),
        ({"patch_size": 3}, "patch_size"),
        ({"patch_size": 0}, "patch_size"),
        ({"depth": 0}, "depth"),
        ({"hidden_size": 30}, "hidden_size"),
        ({"hidden_size": 34, "num_heads": 1}, "hidden_size"),
        ({"num_heads": 0}, "num_heads"),
        ({"pos_embed": "rope"}, "pos_embed"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(options, name):
    with pytest.raises(ValueError, match=name):
        dit(**{**TINY, **options})


def test_odd_width_is_fine_with_a_learned_position_embedding():
    net = dit(**{**TINY, "hidden_size": 34, "num_heads": 1}, pos_embed="learned")
    assert net(*inputs(net)).shape == (2, 1, 8, 8)


def test_factory_signature_is_documented():
    sig = inspect.signature(dit)
    doc = inspect.getdoc(dit)
    for p in sig.parameters.values():
        assert p.kind is p.KEYWORD_ONLY and p.default is not p.empty and p.annotation is not p.empty
        assert f"\n    {p.name}:" in doc, p.name


def test_registered_through_plugin_manager():
    from gentool.plugins import load_plugins

    state = load_plugins()
    if ("denoiser", "dit") not in state.registry:  # entry point not installed: register by hand
        state = load_plugins(extra=[("dit_test", gentool_dit)], autoload=False)
    assert state.registry.get("denoiser", "dit").factory is dit
    assert not [b for b in state.broken if "dit" in b.name]


# -- training ------------------------------------------------------------------------------

def test_a_tiny_dit_trains_on_toy_data(tmp_path):
    recipe = tmp_path / "dit.toml"
    recipe.write_text(f"""
[run]
name = "dit"
seed = 0
device = "cpu"
output_dir = "{(tmp_path / 'runs').as_posix()}"

[data]
name = "toy"
n = 64
image_size = 8

[schedule]
name = "linear"
timesteps = 50

[denoiser]
name = "dit"
in_channels = 1
image_size = 8
patch_size = 2
depth = 2
hidden_size = 32
num_heads = 2

[conditioner]
name = "class_embedding"
num_classes = 2

[objective]
name = "ddpm"
prediction = "x0"

[train]
steps = 40
batch_size = 16
lr = 3e-3
warmup_steps = 0
log_every = 10
checkpoint_every = 40
""", encoding="utf-8")
    result = gentool.run_recipe(recipe, progress=False, log=lambda message: None)
    assert result.train.step == 40 and isinstance(result.run.model.denoiser, DiT)
    lines = (tmp_path / "runs" / "dit" / "metrics.jsonl").read_text().splitlines()
    losses = [r["loss"] for r in map(json.loads, lines) if "loss" in r]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0], losses


def test_the_fashion_mnist_recipe_swaps_only_the_network():
    # recipes/fashion_mnist_dit.toml: the U-Net recipe with a DiT of about its parameter count (within 10%).
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "recipes"
    unet_recipe = gentool.load_recipe(root / "fashion_mnist.toml")
    dit_recipe = gentool.load_recipe(root / "fashion_mnist_dit.toml")
    counts = []
    for recipe in (unet_recipe, dit_recipe):
        factory = gentool.registry().get("denoiser", recipe.denoiser.name).factory
        with torch.device("meta"):
            counts.append(n_params(factory(**recipe.denoiser.options)))
    assert dit_recipe.denoiser.name == "dit" and abs(counts[1] - counts[0]) / counts[0] < 0.10, counts
    for table in ("schedule", "objective", "sampler", "train", "data", "conditioner", "tasks"):
        assert getattr(dit_recipe, table) == getattr(unet_recipe, table), table
