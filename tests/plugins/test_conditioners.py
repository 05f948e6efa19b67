"""The class-embedding conditioner: null token, label dropout for CFG training, U-Net wiring."""

from __future__ import annotations

import math

import pytest
import torch

import gentool
from gentool.recipe import RecipeError, load_recipe
from gentool_conditioners.class_embedding import class_embedding

TINY_UNET = dict(in_channels=1, image_size=8, channels=32, channel_mult=[1, 2], num_res_blocks=1,
                 attention_resolutions=[4], dropout=0.0)


def null_rows(cond, emb: torch.Tensor) -> torch.Tensor:
    """Which rows of an embedding batch are the null token."""
    return (emb == cond.null.detach()).all(dim=1)


def test_registered_and_validated_by_recipes():
    assert gentool.registry().get("conditioner", "class_embedding").factory is class_embedding
    data = {"denoiser": {"name": "unet"}, "train": {"steps": 0},
            "conditioner": {"name": "class_embedding", "null_token": "random"}}
    with pytest.raises(RecipeError, match="conditioner.null_token"):
        load_recipe(data=data)


@pytest.mark.parametrize("p_uncond", [0.1, 0.3])
def test_null_token_appears_at_rate_p_uncond_in_training_mode(p_uncond):
    n = 20_000
    cond = class_embedding(16, num_classes=10, p_uncond=p_uncond).train()
    labels = torch.randint(10, (n,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    emb = cond(labels)
    is_null = null_rows(cond, emb)
    rate = float(is_null.double().mean())
    assert abs(rate - p_uncond) < 4 * math.sqrt(p_uncond * (1 - p_uncond) / n)  # per sample, not per batch
    # a kept label gets its own class's vector
    torch.testing.assert_close(emb[~is_null], cond.embedding.weight[labels[~is_null]])


def test_the_null_token_never_appears_in_eval_mode():
    cond = class_embedding(16, num_classes=10, p_uncond=0.5).eval()
    labels = torch.arange(10).repeat(500)
    emb = cond(labels)
    assert not null_rows(cond, emb).any()
    torch.testing.assert_close(emb, cond.embedding.weight[labels])


def test_p_uncond_zero_never_drops_in_training():
    cond = class_embedding(16, num_classes=3, p_uncond=0.0).train()
    assert not null_rows(cond, cond(torch.randint(3, (5000,)))).any()


def test_label_dropout_uses_the_global_rng():
    # so the train loop's saved torch RNG state makes a resumed run drop the same labels
    cond = class_embedding(8, num_classes=10, p_uncond=0.5).train()
    labels = torch.randint(10, (256,))
    torch.manual_seed(7)
    a = null_rows(cond, cond(labels))
    torch.manual_seed(7)
    b = null_rows(cond, cond(labels))
    c = null_rows(cond, cond(labels))
    assert torch.equal(a, b) and not torch.equal(b, c)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_label_minus_one_is_the_null_token(mode):
    cond = class_embedding(8, num_classes=4, p_uncond=0.1)
    cond.train(mode == "train")
    emb = cond(torch.full((50,), -1))
    assert null_rows(cond, emb).all()


def test_learned_null_token_is_trained():
    cond = class_embedding(8, num_classes=4, null_token="learned")
    assert any(p is cond.null for p in cond.parameters())
    cond(torch.tensor([-1, 2])).square().sum().backward()
    assert cond.null.grad is not None and cond.null.grad.abs().sum() > 0
    assert cond.embedding.weight.grad[2].abs().sum() > 0 and cond.embedding.weight.grad[0].abs().sum() == 0


def test_zero_null_token_is_a_fixed_zero():
    cond = class_embedding(8, num_classes=4, null_token="zero")
    assert not any(p is cond.null for p in cond.parameters())
    assert torch.equal(cond(torch.tensor([-1, -1])), torch.zeros(2, 8))
    assert "null" in cond.state_dict()  # saved with the model, so a checkpoint is complete


@pytest.mark.parametrize("labels", [[10], [0, 3, 11]])
def test_a_class_past_the_last_is_rejected_by_the_conditioner(labels):
    cond = class_embedding(8, num_classes=10)
    with pytest.raises(ValueError, match=r"0\.\.9.*got \[1[01]\]"):
        cond(torch.tensor(labels))


@pytest.mark.parametrize("labels", [[10], [-2], [0, 3, 11], [-1, -3]])
def test_labels_out_of_range_are_rejected_where_they_enter(labels):
    from gentool.model import DiffusionModel

    model = DiffusionModel(torch.nn.Identity(), class_embedding(8, num_classes=10))
    with pytest.raises(ValueError, match=r"0\.\.9 \(or -1 for none\), got \[-?\d+"):
        model.check_labels(torch.tensor(labels))
    model.check_labels(torch.tensor([-1, 0, 9]))  # the null label and both ends are fine


def test_the_conditioner_reads_no_label_back_to_the_host(monkeypatch):
    """On a GPU a host read of the labels would wait for the device every training step."""
    cond = class_embedding(8, num_classes=10, p_uncond=0.5).train()
    reads = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _o=original: reads.append(_n) or _o(self, *a))
    cond(torch.tensor([0, 5, 9, -1]))
    assert reads == []


@pytest.mark.parametrize("options", [{"p_uncond": 1.0}, {"p_uncond": -0.1}, {"num_classes": 0}])
def test_bad_options_are_rejected(options):
    with pytest.raises(ValueError):
        class_embedding(8, **options)


def perturbed_unet(class_cond: bool):
    net = gentool.registry().get("denoiser", "unet").factory(class_cond=class_cond, **TINY_UNET)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():  # the output layers start at zero; make the net non-trivial
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


def test_the_unet_sees_the_class_through_its_time_embedding():
    net = perturbed_unet(class_cond=True)
    cond = class_embedding(net.cond_dim, num_classes=3).eval()
    model = gentool.DiffusionModel(net, cond).eval()
    x, t = torch.randn(1, 1, 8, 8).expand(4, -1, -1, -1), torch.full((4,), 10)
    out = model(x, t, torch.tensor([0, 1, 2, -1]))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j]), (i, j)
    # the embedding is added to the time embedding: the same as passing cond by hand
    torch.testing.assert_close(out[:1], net(x[:1], t[:1], cond.embedding.weight[:1]))


def test_unconditional_models_need_no_conditioner():
    net = perturbed_unet(class_cond=False)
    model = gentool.DiffusionModel(net, None).eval()
    assert model.num_classes == 0
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    torch.testing.assert_close(model(x, t, None), net(x, t))
