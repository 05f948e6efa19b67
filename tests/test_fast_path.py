"""The fast path (channels-last, bf16 autocast, torch.compile, fused guidance, data on
the device) computes what the plain path computes: speed never changes the maths.

torch.compile runs with the ``aot_eager`` backend for training: it captures
forward and backward as inductor does (dynamo + AOTAutograd) but generates no
code, because inductor's C++ compilation of a U-Net takes minutes on a 2-core
CPU; the sampling function is captured with the ``eager`` backend (dynamo only).
Inductor's own kernels are checked on a GPU session (docs/performance.md).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gentool.diffusion import Diffusion
from gentool.engine.accel import prepare_for_speed
from gentool.engine.data import device_batches, step_loader
from gentool.engine.step import objective_loss
from gentool.model import DiffusionModel
from gentool.sampling import make_denoise_fn, make_fast_denoise_fn
from gentool_conditioners.class_embedding import class_embedding
from gentool_data.common import TensorImages
from gentool_objectives.ddpm import ddpm
from gentool_schedules.linear import linear
from gentool_unet.unet import unet

BF16_RTOL = 2e-2  # bf16 keeps 8 bits of mantissa: ~0.4% per rounding, a few roundings deep


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_model(seed: int = 0) -> DiffusionModel:
    """A tiny class-conditional U-Net with attention, its zero-initialised layers perturbed."""
    torch.manual_seed(seed)
    # 64 channels: two per GroupNorm group, so the per-channel embedding offsets are not normalised away
    net = unet(in_channels=3, image_size=8, channels=64, channel_mult=[1, 1], num_res_blocks=1,
               attention_resolutions=[4], dropout=0.0, class_cond=True)
    model = DiffusionModel(net, class_embedding(net.cond_dim, num_classes=3, p_uncond=0.3))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model


def diffusion() -> Diffusion:
    return Diffusion(linear(timesteps=100))


def loss_and_grads(forward: nn.Module, params: nn.Module, x0, labels, *, bf16: bool):
    """One L_simple evaluation with fixed seeds (timesteps, noise, label dropout) and its gradients."""
    params.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the conditioner's label dropout
    gen = torch.Generator(device=x0.device).manual_seed(7)
    loss, _ = objective_loss(ddpm(), forward, diffusion().to(x0.device), x0, labels, gen, autocast=bf16)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in params.named_parameters()}


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand((6, 3, 8, 8), generator=g) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2])


def assert_grads_close(fast: dict, plain: dict, rtol: float) -> None:
    """Each gradient within ``rtol`` of its own norm, or of the whole gradient's norm for tiny ones."""
    assert fast.keys() == plain.keys()
    total = torch.cat([g.flatten() for g in plain.values()]).norm()
    for name in plain:
        err = (fast[name].float() - plain[name]).norm()
        assert err <= rtol * max(plain[name].norm(), 1e-2 * total), f"{name}: |diff| {err:.3g}, |grad| {plain[name].norm():.3g}"


def test_fast_training_path_gives_the_plain_loss_and_gradients():
    x0, labels = batch()
    plain_model = make_model()
    plain_loss, plain_grads = loss_and_grads(plain_model, plain_model, x0, labels, bf16=False)

    # channels-last alone is a layout change: fp32-exact
    fp32_model = make_model()
    fast = prepare_for_speed(fp32_model, "cpu", channels_last=True, compile=False)
    loss, grads = loss_and_grads(fast, fp32_model, x0, labels, bf16=False)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert_grads_close(grads, plain_grads, rtol=1e-4)

    # the whole fast path: channels-last, bf16 autocast, compiled forward and backward
    bf16_model = make_model()
    fast = prepare_for_speed(bf16_model, "cpu", channels_last=True, compile=True, backend="aot_eager")
    loss, grads = loss_and_grads(fast, bf16_model, x0, labels, bf16=True)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, plain_loss, rtol=BF16_RTOL, atol=1e-4)
    assert_grads_close(grads, plain_grads, rtol=5 * BF16_RTOL)
    assert not torch.equal(grads["denoiser.conv_out.weight"], plain_grads["denoiser.conv_out.weight"])  # bf16 did run
    # The wrapper trains the module's own parameters, and the layout change kept the state dict's names.
    assert set(fast.model.state_dict()) == set(plain_model.state_dict())
    assert bf16_model.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_fast_denoise_fn_matches_make_denoise_fn_with_fused_guidance():
    model = make_model(1).eval()
    diff = diffusion()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([99, 60, 20, 0])
    labels = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        want = make_denoise_fn(model, diff, labels, guidance=2.0)(x, t).eps
        unguided = make_denoise_fn(model, diff, labels, guidance=0.0)(x, t).eps
    assert (want - unguided).abs().max() > 1e-3  # guidance matters for this net, so the check below has teeth
    fast = make_fast_denoise_fn(model, diff, labels, 2.0, bf16=False, compile=True, backend="eager")
    got = fast(x, t).eps
    # fp32 throughout; channels-last convolutions sum in another order, and guidance scales eps by 1 + w
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    again = fast(x, t).eps
    assert again.data_ptr() != got.data_ptr()  # a fresh tensor each call (multistep samplers keep old eps)
    got.mul_(2.0)  # a sampler may update eps in place
    fast_bf16 = make_fast_denoise_fn(model, diff, labels, 2.0, bf16=True, compile=False)
    got = fast_bf16(x, t).eps
    assert got.dtype == torch.float32
    assert (got - want).norm() <= 5 * BF16_RTOL * want.norm()


def test_fast_denoise_fn_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        make_fast_denoise_fn(make_model().train(), diffusion(), torch.tensor([0]), 1.0)


def test_fast_denoise_fn_without_labels_uses_the_null_embedding():
    model = make_model(2).eval()
    diff = diffusion()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([5, 50, 95])
    with torch.no_grad():
        want = make_denoise_fn(model, diff, None, guidance=2.0)(x, t).eps
    got = make_fast_denoise_fn(model, diff, None, 2.0, bf16=False, compile=False)(x, t).eps
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_compiled_parts_are_one_graph_each():
    """A graph break splits the compiled network and falls back to Python between the pieces:
    on a GPU that costs kernel fusion and CUDA-graph capture. Count the graphs dynamo hands over."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = make_model(3)
    x0, labels = batch()
    fast = prepare_for_speed(model, "cpu", channels_last=True, compile=True, backend=counting)
    objective_loss(ddpm(), fast, diffusion(), x0, labels, torch.Generator().manual_seed(0), autocast=True)[0].backward()
    assert len(graphs) == 1, [g.code[:200] for g in graphs]  # the whole denoiser, forward (and its backward)

    graphs.clear()
    fn = make_fast_denoise_fn(model.eval(), diffusion(), labels, 2.0, bf16=True, compile=True, backend=counting)
    fn(x0, torch.arange(6) * 10)
    fn(x0, torch.arange(6) * 15)  # a second call reuses the graph
    assert len(graphs) == 1  # the parameterisation's inputs and the network on the guidance batch together


def uint8_dataset(n: int = 10, **kwargs) -> TensorImages:
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    return TensorImages(images, torch.arange(n) % 3, **kwargs)


def test_device_batches_follow_the_step_loader_order_exactly():
    data = uint8_dataset()
    want = step_loader(data, 4, seed=3, start_step=1)
    got = device_batches(data, 4, seed=3, device="cpu", start_step=1)
    for _ in range(5):  # 2 batches per epoch: crosses two epoch boundaries
        (wx, wy), (gx, gy) = next(want), next(got)
        assert torch.equal(gx, wx) and torch.equal(gy, wy)
        assert gx.dtype == torch.float32 and gx.min() >= -1 and gx.max() <= 1


def test_device_batches_flip_is_a_left_right_mirror_or_nothing():
    data = uint8_dataset(random_flip=True)
    plain = device_batches(uint8_dataset(), 4, seed=0, device="cpu")
    flipped = device_batches(data, 4, seed=0, device="cpu")
    seen = set()
    for _ in range(6):
        (px, _), (fx, _) = next(plain), next(flipped)
        for a, b in zip(px, fx):
            same, mirror = torch.equal(a, b), torch.equal(a.flip(-1), b)
            assert same or mirror
            seen.add("mirror" if mirror and not same else "same")
    assert seen == {"same", "mirror"}


def test_device_batches_flip_as_a_function_of_the_step_so_resuming_repeats_them():
    data = uint8_dataset(random_flip=True)
    whole = device_batches(data, 4, seed=2, device="cpu")
    batches = [next(whole) for _ in range(5)]
    resumed = device_batches(data, 4, seed=2, device="cpu", start_step=3)
    for want in batches[3:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_device_batches_give_each_rank_its_slice_of_the_global_batch():
    data = uint8_dataset(random_flip=True)
    one = device_batches(data, 4, seed=1, device="cpu", start_step=2)
    ranks = [device_batches(data, 4, seed=1, device="cpu", start_step=2, rank=r, world=2) for r in (0, 1)]
    loader_ranks = [step_loader(uint8_dataset(), 4, seed=1, start_step=2, rank=r, world=2) for r in (0, 1)]
    for _ in range(3):
        x, y = next(one)
        parts = [next(r) for r in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
        for (_, labels), loader in zip(parts, loader_ranks):
            assert torch.equal(labels, next(loader)[1])  # the loader's slice of the same global batch
    with pytest.raises(ValueError, match="divide evenly over 3"):
        device_batches(data, 4, seed=1, device="cpu", world=3)


def test_device_batches_decline_what_they_cannot_hold():
    assert device_batches([(torch.zeros(1, 2, 2), 0)] * 4, 2, seed=0, device="cpu") is None
    assert device_batches(uint8_dataset(image_size=8), 2, seed=0, device="cpu") is None  # resized per item
    assert device_batches(uint8_dataset(), 2, seed=0, device="cpu", max_bytes=10) is None


# -- on a GPU: inductor and CUDA graphs (not run on a CPU-only machine; see docs/performance.md) --

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: inductor kernels and CUDA graphs")


@cuda
def test_cuda_inductor_fast_path_matches_the_eager_fp32_path():
    x0, labels = (v.cuda() for v in batch())
    plain_model = make_model().cuda()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    plain_loss, plain_grads = loss_and_grads(plain_model, plain_model, x0, labels, bf16=False)
    model = make_model().cuda()
    fast = prepare_for_speed(model, "cuda", channels_last=True, compile=True)  # inductor; turns TF32 on
    loss, grads = loss_and_grads(fast, model, x0, labels, bf16=True)
    torch.testing.assert_close(loss, plain_loss, rtol=BF16_RTOL, atol=1e-4)
    assert_grads_close(grads, plain_grads, rtol=5 * BF16_RTOL)


@cuda
def test_cuda_graph_denoise_fn_matches_make_denoise_fn_on_every_replay():
    model = make_model(1).cuda().eval()
    diff = diffusion().cuda()
    labels = torch.tensor([0, 1, 2, 1], device="cuda")
    plain = make_denoise_fn(model, diff, labels, guidance=2.0)
    fast = make_fast_denoise_fn(model, diff, labels, 2.0, bf16=False, compile=True)  # reduce-overhead: CUDA graphs
    outs, wants = [], []
    for i, t in enumerate([99, 70, 40, 10, 0]):
        x = torch.randn(4, 3, 8, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(i))
        tt = torch.full((4,), t, device="cuda")
        with torch.no_grad():
            wants.append(plain(x, tt).eps)
        outs.append(fast(x, tt).eps)
    for got, want in zip(outs, wants):  # earlier outputs survive later replays
        assert (got - want).norm() <= 1e-2 * want.norm()


@pytest.mark.parametrize("sampler", ["ancestral", "dpmpp_2m"])
def test_run_sample_through_the_fast_denoise_fn_gives_the_plain_samples(tiny_recipe, sampler, monkeypatch):
    """Run.sample (gentool sample, the tasks, evaluation) takes the fast path on CUDA; on the CPU
    it is forced here, compiled (dynamo, eager backend) as ``[run] compile = true`` asks."""
    import gentool

    monkeypatch.setenv("GENTOOL_COMPILE_BACKEND", "eager")
    recipe = gentool.load_recipe(tiny_recipe, overrides=[
        "denoiser.class_cond=true", 'conditioner.name="class_embedding"', "conditioner.num_classes=2",
        "run.compile=true", f'sampler.name="{sampler}"', "sampler.steps=8", "sampler.guidance=2.0"])
    run = gentool.build(recipe, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in run.sampling_model.parameters():
            if not p.any():
                p.normal_(0, 0.05)  # the zero-initialised output layers would make every eps zero
    labels = [0, 1, 1, 0]
    plain = run.sample(4, labels=labels, generator=torch.Generator().manual_seed(1), progress=False, fast=False)
    unguided = run.sample(4, labels=labels, guidance=0.0, generator=torch.Generator().manual_seed(1),
                          progress=False, fast=False)
    assert (plain - unguided).abs().max() > 1e-3  # guidance changes these samples, so the comparison has teeth
    fast = run.sample(4, labels=labels, generator=torch.Generator().manual_seed(1), progress=False, fast=True)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    assert run.sampling_model.denoiser.conv_in.weight.is_contiguous()  # CPU: no layout change was asked for


@pytest.mark.parametrize("fast", [False, True])
def test_run_checks_requested_labels_on_the_host_on_either_path(tiny_recipe, fast):
    import gentool

    recipe = gentool.load_recipe(tiny_recipe, overrides=[
        "denoiser.class_cond=true", 'conditioner.name="class_embedding"', "conditioner.num_classes=2"])
    run = gentool.build(recipe, device="cpu")
    for bad in ([0, 2], [-2, 1]):
        with pytest.raises(ValueError, match=r"0\.\.1 \(or -1 for none\), got \[-?2\]"):
            run.sample(2, labels=bad, progress=False, fast=fast)
        with pytest.raises(ValueError, match=r"0\.\.1"):
            run.denoise_fn(torch.tensor(bad), 1.0, fast=fast)
    eps = run.denoise_fn([0, -1], 1.0, fast=fast)(torch.zeros(2, 1, 8, 8), torch.tensor([3, 40])).eps
    assert eps.shape == (2, 1, 8, 8) and eps.dtype == torch.float32
