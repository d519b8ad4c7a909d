from __future__ import annotations

import json

import pytest
import torch

from diffqe.model import checkpoint, diffusion
from diffqe.model.config import ModelConfig
from diffqe.model.diffqe import DiffQE, default_noise


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(input_unshuffle=2)], ids=["shipped", "half-resolution"])
def test_min_side_is_a_frame_every_network_takes(cfg):
    """The plugin refuses frames below min_side: a frame of that side must run through all three networks."""
    model = DiffQE(cfg).eval()
    with torch.no_grad():
        for hw in ((cfg.min_side, cfg.min_side), (cfg.min_side, 3 * cfg.min_side + 1)):
            y = torch.rand(1, 1, *hw)
            assert model(y).shape == y.shape
            assert model.encoder(y, y, torch.tensor([32])).shape == (1, cfg.z_dim)


@pytest.mark.parametrize("variant,unshuffle,light", [("full", 1, False), ("noest", 1, False), ("nodiff", 1, False),
                                                     ("full", 2, False), ("noest", 2, False), ("full", 1, True),
                                                     ("noest", 1, True)])
@pytest.mark.parametrize("hw", [(8, 8), (17, 23), (31, 64), (67, 45)])
def test_any_size_in_same_size_out(tiny_cfg, variant, unshuffle, light, hw):
    cfg = ModelConfig(**{**json.loads(tiny_cfg.to_json()), "variant": variant, "input_unshuffle": unshuffle,
                         "light_finest": light})
    assert min(hw) >= cfg.min_side
    model = DiffQE(cfg).eval()
    y = torch.rand(2, 1, *hw)
    with torch.no_grad():
        out = model(y)
        z = model.estimate(y)
    assert out.shape == y.shape
    assert (z is None) == (variant == "noest")
    if z is not None:
        assert z.shape == (2, cfg.z_dim)
        assert model.encoder(y, y, torch.tensor([27, 42])).shape == (2, cfg.z_dim)


def test_same_frame_and_seed_give_identical_bits(tiny_cfg, tmp_path):
    torch.manual_seed(1)
    model = DiffQE(tiny_cfg).eval()
    torch.nn.init.normal_(model.decoder.tail.weight, std=0.05)
    y = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        z1, z2 = model.estimate(y, seed=3), model.estimate(y, seed=3)
        out1, out2 = model(y, seed=3), model(y, seed=3)
    assert torch.equal(z1, z2) and torch.equal(out1, out2)
    checkpoint.save(tmp_path / "m", model)
    reloaded, _ = checkpoint.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(reloaded(y, seed=3), out1)
        assert not torch.equal(model.estimate(y, seed=4), z1), "the seed must select the starting noise"


def test_z_changes_the_decoder_output(tiny_cfg):
    torch.manual_seed(0)
    model = DiffQE(tiny_cfg).eval()
    torch.nn.init.normal_(model.decoder.tail.weight, std=0.05)
    y = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a = model.decoder(y, torch.zeros(1, tiny_cfg.z_dim))
        b = model.decoder(y, 3 * torch.randn(1, tiny_cfg.z_dim))
    assert (a - b).abs().max() > 1e-4


def test_untrained_decoder_is_identity(tiny_cfg):
    model = DiffQE(tiny_cfg).eval()
    y = torch.rand(1, 1, 24, 40)
    with torch.no_grad():
        assert torch.equal(model(y), y)


def test_flat_frames_come_back_unchanged_and_others_do_not(tiny_cfg):
    torch.manual_seed(2)
    model = DiffQE(tiny_cfg).eval()
    torch.nn.init.normal_(model.decoder.tail.weight, std=0.05)
    torch.nn.init.constant_(model.decoder.tail.bias, 0.01)
    flat = torch.cat([torch.zeros(1, 1, 24, 40), torch.full((1, 1, 24, 40), 16 / 255)])
    textured = torch.rand(1, 1, 24, 40)
    with torch.no_grad():
        assert torch.equal(model(flat), flat)
        assert not torch.equal(model(textured), textured)


def test_default_noise_is_fixed_and_shared_by_frames():
    a, b = default_noise(8, batch=3, seed=5), default_noise(8, batch=3, seed=5)
    assert torch.equal(a, b) and torch.equal(a[0], a[2])


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_sampler_recovers_z0_from_an_exact_denoiser(kind, prediction):
    sched = diffusion.make_schedule(kind, 4)
    assert all(a > b for a, b in zip(sched.alpha_bar, sched.alpha_bar[1:])), "signal must decrease with t"
    z0, z_T = torch.randn(3, 8), torch.randn(3, 8)

    def oracle(z_t, t):
        if prediction == "x0":
            return z0
        ab = sched.alpha_bar[t - 1]
        return (z_t - ab**0.5 * z0) / (1 - ab) ** 0.5

    assert torch.allclose(diffusion.sample(sched, oracle, z_T, prediction), z0, atol=1e-5)


def test_checkpoint_errors_are_clear(tmp_path, tiny_cfg):
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        checkpoint.load(tmp_path / "absent")
    checkpoint.save(tmp_path / "m", DiffQE(tiny_cfg))
    (tmp_path / "m.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(tmp_path / "m")


def test_default_model_fits_the_flop_budget():
    from torch.utils.flop_counter import FlopCounterMode

    model = DiffQE(ModelConfig()).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, 128, 128))
    assert counter.get_total_flops() / (128 * 128) <= 0.5e6
