"""The built-in feature extractors: gentool-cnn28 and inception-v3-compat with local weights."""

from __future__ import annotations

import pytest
import torch

import gentool
from gentool.testing import check_feature_extractor
from gentool_metrics import CNN28, cnn28, inception_v3, train_classifier


def grey_images(n: int, size: int = 28, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    """uint8 ``[n, 3, size, size]`` grey images (equal channels) from the toy data source."""
    from gentool_data.toy import toy

    data = toy("train", n=n, image_size=size, channels=1, num_classes=4, seed=seed)
    x = (torch.stack([data[i][0] for i in range(n)]) + shift).clamp(-1, 1)
    return ((x + 1) * 127.5).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


class Images(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_both_are_registered_and_pass_the_contract_check():
    names = gentool.registry().names("feature_extractor")
    assert {"inception-v3-compat", "gentool-cnn28"} <= set(names)
    check_feature_extractor(cnn28, image_size=28)
    check_feature_extractor(cnn28, image_size=32)  # other sizes are resized


def test_torch_fidelity_uses_cnn28_by_name():
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from gentool_metrics import register_with_torch_fidelity

    register_with_torch_fidelity()  # not done by loading the plugins (start-up), but by cnn28() or this
    assert FEATURE_EXTRACTORS_REGISTRY["gentool-cnn28"] is CNN28
    x = grey_images(64)
    kwargs = dict(feature_extractor="gentool-cnn28", fid=True, cuda=False, cache=False, verbose=False, save_cpu_ram=True)
    same = torch_fidelity.calculate_metrics(input1=Images(x), input2=Images(x.clone()), **kwargs)
    shifted = torch_fidelity.calculate_metrics(input1=Images(x), input2=Images(grey_images(64, shift=0.3)), **kwargs)
    assert abs(same["frechet_inception_distance"]) < 1e-6
    assert shifted["frechet_inception_distance"] > 1e-3


def test_cnn28_weights_are_fixed_by_the_seed_and_grey_equals_one_channel():
    x = grey_images(8)
    a, b, c = cnn28(seed=0), cnn28(seed=0), cnn28(seed=1)
    fa, = a.eval()(x)[:1]
    assert torch.equal(fa, b(x)[0]) and not torch.allclose(fa, c(x)[0])
    assert torch.allclose(a(x[:, :1])[0], fa)  # grey [B, 1, H, W] is the same image
    assert a(x)[0].shape == (8, 128) and a(x)[1].shape == (8, 10)
    state = torch.get_rng_state()
    cnn28(seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


def test_a_trained_cnn28_classifies_and_loads_from_its_file(tmp_path):
    from gentool_data.toy import toy

    data = toy("train", n=256, image_size=28, channels=1, num_classes=4, seed=0)
    path = train_classifier(data, tmp_path / "cnn28.safetensors", num_classes=4, steps=25, batch_size=16, lr=3e-3)["path"]
    fx = cnn28(weights_path=str(path))
    test = toy("test", n=64, image_size=28, channels=1, num_classes=4, seed=0)
    x = torch.stack([test[i][0] for i in range(64)])
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    logits = fx(u8.expand(-1, 3, -1, -1))[1]
    labels = torch.tensor([test[i][1] for i in range(64)])
    assert logits.shape == (64, 4)
    assert (logits.argmax(1) == labels).float().mean() > 0.6  # chance is 0.25


def test_cnn28_weight_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        cnn28(weights_path=str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_text("no")
    with pytest.raises(ValueError, match="bad.pt"):
        cnn28(weights_path=str(bad))


def random_inception_weights(path, monkeypatch):
    """A state dict of torch-fidelity's Inception with random weights (no download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fi

    with monkeypatch.context() as m:
        m.setattr(fi, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        fx = fi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(fx.state_dict(), path)
    return fx.state_dict()


def test_inception_loads_its_weights_from_a_local_file(tmp_path, monkeypatch):
    from torch_fidelity import feature_extractor_inceptionv3 as fi

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(fi, "load_state_dict_from_url", no_download)
    state = random_inception_weights(tmp_path / "inception.pth", monkeypatch)
    fx = inception_v3(weights_path=str(tmp_path / "inception.pth"))
    assert torch.equal(fx.fc.weight, state["fc.weight"])
    assert fx.get_requested_features_list() == ["2048", "logits_unbiased"]


def test_inception_without_internet_says_what_to_do(monkeypatch):
    from torch_fidelity import feature_extractor_inceptionv3 as fi

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fi, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="--feature-weights"):
        inception_v3()
