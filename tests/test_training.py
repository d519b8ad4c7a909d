from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_script
from diffqe.model import checkpoint
from diffqe.model.diffqe import DiffQE
from diffqe.train.evaluate import Source, temporal_change
from diffqe.train.metrics import band_mse, patch_dpsnr
from diffqe.train.loop import TrainConfig, flicker_excess, mirror_target, recon_loss, stage_loss, train
from diffqe.train.pairs import PatchSampler, load_pairs, make_pairs
from diffqe.train.stills import StillSampler, load_stills, make_stills
from diffqe.train.z_targets import ZTable


def crop_pairs(root, reference_frames, qps: tuple[int, ...]):
    """A tiny real corpus: 64x64 crops of the reference clip (faces, hands, text), x265-coded at QPS."""
    crops = {"train": [(0, 40, 100), (2, 64, 200), (4, 100, 40)], "val": [(7, 64, 136)]}
    for split, spots in crops.items():
        (root / "corpus" / split).mkdir(parents=True)
        for i, top, left in spots:
            crop = reference_frames[i][top : top + 64, left : left + 64]
            Image.fromarray(crop).save(root / "corpus" / split / f"f{i}_{top}_{left}.png")
    return make_pairs(root / "corpus", root / "pairs", qps=qps, workers=2)


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory, reference_frames):
    return crop_pairs(tmp_path_factory.mktemp("data"), reference_frames, (42,))


def fixed_batch_loss(model: DiffQE, stage: int, pairs) -> float:
    y, gt, qp = (torch.from_numpy(a) for a in PatchSampler(pairs, 64, 16, seed=123).sample())
    noise = torch.randn(16, model.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return stage_loss(model.eval(), stage, y, gt, qp, noise).item()


def test_stage1_lowers_the_loss_and_stage2_fits_z(tmp_path, tiny_cfg, tiny_pairs):
    train_pairs, val_pairs = load_pairs(tiny_pairs, "train"), load_pairs(tiny_pairs, "val")
    torch.manual_seed(0)
    before = fixed_batch_loss(DiffQE(tiny_cfg), 1, train_pairs)
    cfg = TrainConfig(stage=1, steps=500, batch=8, patch=64, lr=5e-3, val_every=500, save_every=250, log_every=100)
    metrics = train(tmp_path, cfg, tiny_cfg, train_pairs, val_pairs, torch.device("cpu"))
    trained, meta = checkpoint.load(tmp_path / "stage1")
    after = fixed_batch_loss(trained, 1, train_pairs)
    print("stage-1 fixed-batch loss", before, after, after / before)
    assert after < 0.8 * before, (before, after)  # measured: 0.28 (seed 0), 0.47 (seed 1)
    assert meta["step"] == 500 and "dpsnr" in metrics

    stage2_before = fixed_batch_loss(trained, 2, train_pairs)
    train(tmp_path, TrainConfig(stage=2, steps=40, batch=8, patch=64, lr=2e-3, val_every=40, save_every=40),
          tiny_cfg, train_pairs, val_pairs, torch.device("cpu"))
    estimator_trained, _ = checkpoint.load(tmp_path / "stage2")
    assert fixed_batch_loss(estimator_trained, 2, train_pairs) < stage2_before
    for name, p in estimator_trained.decoder.state_dict().items():  # stage 2 leaves the decoder alone
        assert torch.equal(p, trained.decoder.state_dict()[name]), name


def test_training_resumes_where_it_stopped(tmp_path, tiny_cfg, tiny_pairs):
    pairs = load_pairs(tiny_pairs, "train")
    common = dict(stage=1, batch=4, patch=32, val_every=1000, save_every=10, log_every=10)
    train(tmp_path / "a", TrainConfig(steps=20, **common), tiny_cfg, pairs, pairs[:1], torch.device("cpu"))
    train(tmp_path / "a", TrainConfig(steps=30, **common), tiny_cfg, pairs, pairs[:1], torch.device("cpu"))
    records = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [10, 20, 30]
    assert checkpoint.load(tmp_path / "a" / "stage1")[1]["step"] == 30


def test_noest_has_no_stage2(tmp_path, tiny_cfg, tiny_pairs):
    pairs = load_pairs(tiny_pairs, "train")
    noest = type(tiny_cfg)(**{**json.loads(tiny_cfg.to_json()), "variant": "noest"})
    train(tmp_path, TrainConfig(stage=1, steps=2, batch=2, patch=32), noest, pairs, pairs[:1], torch.device("cpu"))
    with pytest.raises(ValueError, match="noest"):
        train(tmp_path, TrainConfig(stage=2, steps=2, batch=2, patch=32), noest, pairs, pairs[:1],
              torch.device("cpu"))


def test_mirror_target_pulls_one_pass_towards_the_ensemble(tmp_path, tiny_cfg, tiny_pairs):
    """Stage 3 with the mirror target: after the same steps from the same start, one pass of the student
    lies closer to the starting weights' four-copy ensemble than without it (and the teacher stays the
    starting weights, so the target does not move)."""
    pairs = load_pairs(tiny_pairs, "train")
    torch.manual_seed(0)
    checkpoint.save(tmp_path / "init", DiffQE(tiny_cfg))
    teacher = checkpoint.load(tmp_path / "init")[0].eval()
    y, _, _ = (torch.from_numpy(a) for a in PatchSampler(pairs, 64, 8, seed=5, flips=4).sample())
    noise = torch.randn(8, tiny_cfg.z_dim, generator=torch.Generator().manual_seed(1))
    target = mirror_target(teacher, y, noise)

    def distance(mirror_weight: float) -> float:
        cfg = TrainConfig(stage=3, steps=60, batch=4, patch=32, lr=2e-3, z_weight=0, flips=4,
                          mirror_weight=mirror_weight, val_every=1000, save_every=1000, log_every=1000)
        train(tmp_path / str(mirror_weight), cfg, None, pairs, pairs[:1], torch.device("cpu"), tmp_path / "init")
        student = checkpoint.load(tmp_path / str(mirror_weight) / "stage3")[0].eval()
        with torch.no_grad():
            return (student.decoder(y, student.estimator(y, noise)) - target).square().mean().item()

    without, with_mirror = distance(0.0), distance(4.0)
    print("squared distance to the ensemble", without, with_mirror)
    assert with_mirror < 0.7 * without, (without, with_mirror)


def test_gated_mirror_target_keeps_the_ensemble_only_where_it_helps(tiny_cfg):
    """--mirror-gate: a crop where the teacher's ensemble is worse than the input gets the reference as target."""
    teacher = DiffQE(tiny_cfg).eval()
    torch.manual_seed(0)
    gt = torch.rand(4, 1, 32, 32)
    y = (gt + 0.02 * torch.randn_like(gt)).clamp(0, 1)
    y[2:] = gt[2:]  # lossless crops: any change the teacher makes there is a harm
    noise = torch.randn(4, tiny_cfg.z_dim)
    plain = mirror_target(teacher, y, noise)
    gated = mirror_target(teacher, y, noise, gt=gt)
    helps = patch_dpsnr(plain, gt, y) > 0
    assert not helps[2:].any()
    for i in range(4):
        assert torch.equal(gated[i], plain[i] if helps[i] else gt[i]), i


def test_mirror_target_needs_stage_3(tmp_path, tiny_cfg, tiny_pairs):
    pairs = load_pairs(tiny_pairs, "train")
    with pytest.raises(ValueError, match="stage 3"):
        train(tmp_path, TrainConfig(stage=1, steps=2, batch=2, patch=32, mirror_weight=1), tiny_cfg, pairs,
              pairs[:1], torch.device("cpu"))


def test_train_script_reports_user_errors(tmp_path):
    result = run_script("train.py", "--pairs", tmp_path / "missing.json", "--run", tmp_path / "r", "--stage", "1")
    assert result.returncode == 2 and "missing.json" in result.stderr and "Traceback" not in result.stderr
    result = run_script("train.py", "--pairs", tmp_path / "missing.json", "--run", tmp_path / "r", "--stage", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run_script("train.py", "--pairs", tmp_path / "missing.json", "--run", tmp_path / "r", "--stage", "3",
                        "--harm-weight", "2")
    assert result.returncode == 2 and "--loss dpsnr" in result.stderr and "Traceback" not in result.stderr


def test_dpsnr_loss_is_minus_the_mean_patch_dpsnr(tiny_pairs):
    _, gt, _ = (torch.from_numpy(a) for a in PatchSampler(load_pairs(tiny_pairs, "train"), 64, 4, seed=1).sample())
    y = gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    out = gt + 0.5 * (y - gt)  # halves every error: +6.02 dB on each patch
    assert recon_loss(out, gt, y, "dpsnr").item() == pytest.approx(-6.02, abs=0.05)
    assert recon_loss(out, gt, y, "l2").item() == pytest.approx(torch.mean((out - gt) ** 2).item())
    flat = torch.full_like(gt, 0.5)
    # one code value on a lossless patch costs ~6.9 dB (eps = half a code value squared), a QP-42 patch's gain
    assert recon_loss(flat + 1 / 255, flat, flat, "dpsnr").item() > 6, "any change to a lossless patch costs dearly"


def test_band_mse_splits_the_mse_by_rows():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (2, 37, 20)).astype(np.uint8)  # 37 rows: the last band of 16 is 5 rows
    frames = reference.copy()
    frames[1, 20, 3] += 10  # one wrong pixel, in the second band
    bands = band_mse(frames, reference, 16)
    assert bands.shape == (3,) and bands[0] == bands[2] == 0
    assert bands[1] == pytest.approx(100 / reference.size)
    noisy = np.clip(reference + rng.normal(0, 3, reference.shape), 0, 255)
    assert band_mse(noisy, reference, 16).sum() == pytest.approx(np.mean((noisy - reference) ** 2))


def test_harm_weight_counts_only_the_patches_made_worse(tiny_pairs):
    _, gt, _ = (torch.from_numpy(a) for a in PatchSampler(load_pairs(tiny_pairs, "train"), 64, 4, seed=1).sample())
    y = gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    better, worse = gt + 0.5 * (y - gt), gt + 2 * (y - gt)  # +6.02 and -6.02 dB on each patch
    assert recon_loss(better, gt, y, "dpsnr", harm=2).item() == pytest.approx(-6.02, abs=0.05)
    assert recon_loss(worse, gt, y, "dpsnr", harm=2).item() == pytest.approx(3 * 6.02, abs=0.15)
    half = torch.cat([better[:2], worse[2:]])  # two patches gain 6 dB, two lose 6: the losses count triple
    assert recon_loss(half, gt, y, "dpsnr", harm=2).item() == pytest.approx(6.02, abs=0.1)


def test_static_scene_check_tells_local_from_frame_wide_change(reference_frames, capsys):
    """Real x265 random-access frames of one still: an identity filter moves exactly as its input and nothing
    far from the input's changes; a filter that lifts every other frame by a code value moves everywhere.
    Each still's figures go to stderr to 5 places."""
    still = Source("still", [reference_frames[0][:128, :192]])
    identity = lambda planes, coding: planes  # noqa: E731

    def pulsing(planes, coding):
        return np.clip(planes.astype(np.int32) + (np.arange(len(planes)) % 2)[:, None, None], 0, 255).astype(np.uint8)

    text = temporal_change({"identity": identity, "pulsing": pulsing}, [still], frames=4)
    rows = dict(re.findall(r"^\| (decoded input|identity|pulsing) \| ([\d.]+) \|", text, re.M))
    far = dict(re.findall(r"^\| (identity|pulsing) \| [\d.]+ \| [-+][\d.]+ \| ([\d.]+) \|$", text, re.M))
    assert float(rows["identity"]) == float(rows["decoded input"]) and float(far["identity"]) == 0
    assert float(rows["pulsing"]) > 0.5 and float(far["pulsing"]) > 0.1, text
    per_still = dict(re.findall(r"^(identity|pulsing) +CRF 28 still still +input [\d.]+ output [\d.]+ excess ([-+]\d\.\d{5})$",
                                capsys.readouterr().err, re.M))
    assert float(per_still["identity"]) == 0 and float(per_still["pulsing"]) > 0.5, per_still


def test_train_script_takes_a_model_config_and_a_variant(tmp_path, tiny_cfg, tiny_pairs):
    """The recipe's MODEL_CONFIG path: the file's network (here the half-resolution decoder), --variant's
    ablation."""
    config = tmp_path / "net.json"
    config.write_text(json.dumps(json.loads(tiny_cfg.to_json()) | {"input_unshuffle": 2}))
    result = run_script("train.py", "--pairs", tiny_pairs, "--run", tmp_path / "r", "--stage", "1", "--variant", "noest",
                        "--model-config", config, "--steps", "2", "--batch", "2", "--patch", "32", "--val-images", "1")
    assert result.returncode == 0, result.stderr
    cfg = checkpoint.load(tmp_path / "r" / "stage1")[0].cfg
    assert (cfg.variant, cfg.input_unshuffle, cfg.decoder_channels) == ("noest", 2, tiny_cfg.decoder_channels)


def _transplanted(tmp_path, tiny_cfg, tiny_pairs, network: dict) -> tuple[DiffQE, DiffQE, dict, float]:
    """Stage 3 for one step at a negligible LR with the network NETWORK (ModelConfig fields over tiny_cfg)
    from full-resolution weights whose decoder changes its input: (full, student, the fits' log, the share
    of the full decoder's residual the student misses on crops it was not fitted on)."""
    torch.manual_seed(0)
    full = DiffQE(tiny_cfg).eval()
    torch.nn.init.normal_(full.decoder.tail.weight, std=0.05)  # a decoder that changes its input
    checkpoint.save(tmp_path / "full", full)
    config = tmp_path / "student.json"
    config.write_text(json.dumps(json.loads(tiny_cfg.to_json()) | network))
    result = run_script("train.py", "--pairs", tiny_pairs, "--run", tmp_path / "r", "--stage", "3", "--init",
                        tmp_path / "full", "--model-config", config, "--z-weight", "0", "--mirror-weight", "1",
                        "--mirror-copies", "1", "--steps", "1", "--lr", "1e-12", "--batch", "2", "--patch", "32",
                        "--val-images", "1")
    assert result.returncode == 0, result.stderr
    fit = json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[0])["transplant"]
    student = checkpoint.load(tmp_path / "r" / "stage3")[0].eval()
    y = torch.from_numpy(PatchSampler(load_pairs(tiny_pairs, "val"), 64, 4, seed=7).sample()[0])
    with torch.no_grad():
        z = full.estimate(y)
        want, got = full.decoder(y, z) - y, student.decoder(y, z) - y
    unexplained = float((got - want).square().mean() / want.square().mean())
    print("transplant fit", fit, "held-out unexplained", unexplained)
    return full, student, fit, unexplained


def test_half_resolution_decoder_is_transplanted_close_to_the_full_one(tmp_path, tiny_cfg, tiny_pairs):
    """Stage 3 with the half-resolution network from full-resolution weights: the levels below the first
    carry over unchanged, and the least-squares head and tail bring the half decoder's output on crops it
    was not fitted on closer to the full decoder's than the identity (the untrained tail) is."""
    full, half, fit, unexplained = _transplanted(tmp_path, tiny_cfg, tiny_pairs,
                                                 {"input_unshuffle": 2, "decoder_channels": [16, 32]})
    config = tmp_path / "student.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"z_dim": 8}))  # a network the weights are not
    refused = run_script("train.py", "--pairs", tiny_pairs, "--run", tmp_path / "other", "--stage", "3", "--init",
                         tmp_path / "full", "--model-config", config, "--patch", "32")
    assert refused.returncode == 2 and "differs from --model-config's in {'z_dim': (16, 8)}" in refused.stderr, \
        refused.stderr
    assert (half.cfg.input_unshuffle, half.cfg.decoder_channels) == (2, (16, 32))
    torch.testing.assert_close(half.decoder.head[2].state_dict(), full.decoder.down[0][3].state_dict(),
                               rtol=0, atol=1e-9)  # lr 1e-12: one step leaves the carried weights as they were
    assert unexplained < 0.9 and fit["tail_unexplained"] < 0.9, (fit, unexplained)


def test_light_finest_decoder_keeps_every_coarser_weight_and_fits_its_head_and_tail(tmp_path, tiny_cfg, tiny_pairs):
    """The light finest level from the full decoder: every level below the finest and the finest
    up-sampling carry over; the fitted head and tail bring the output closer to the full decoder's than
    the identity is."""
    full, light, fit, unexplained = _transplanted(tmp_path, tiny_cfg, tiny_pairs, {"light_finest": True})
    assert light.cfg.light_finest and len(light.decoder.head) == 2
    carried = {k: v for k, v in full.state_dict().items() if k in light.state_dict() and
               not k.startswith(("decoder.head.", "decoder.tail."))}
    assert len(carried) == len(light.state_dict()) - 4  # all but the head's and the tail's weight and bias
    torch.testing.assert_close({k: light.state_dict()[k] for k in carried}, carried, rtol=0, atol=1e-9)
    assert unexplained < 0.9 and fit["head_unexplained"] < 0.9 and fit["tail_unexplained"] < 0.9, (fit, unexplained)


@pytest.fixture(scope="module")
def tiny_stills(tmp_path_factory, reference_frames):
    """Crops of the reference clip as stills coded random-access at CRF 28: x265 re-codes a few blocks of two
    of them (kept), none of the third (dropped)."""
    root = tmp_path_factory.mktemp("stills")
    crops = {"train": [(3, 0, 0), (0, 64, 128)], "val": [(7, 100, 40)]}
    for split, spots in crops.items():
        (root / "corpus" / split).mkdir(parents=True)
        for i, top, left in spots:
            crop = reference_frames[i][top : top + 128, left : left + 192]
            Image.fromarray(crop).save(root / "corpus" / split / f"f{i}_{top}_{left}.png")
    return make_stills(root / "corpus", root / "stills", crf_range=(28, 28), frames=6, workers=2)


def test_stills_keep_the_scenes_that_change_and_crops_cover_a_change(tiny_stills):
    train_stills, val_stills = load_stills(tiny_stills, "train"), load_stills(tiny_stills, "val")
    assert len(train_stills) == 1 and len(val_stills) == 1, "the still that x265 codes as skips is dropped"
    s = train_stills[0]
    assert s.frames.shape == (6, 128, 192) and s.crf == 28 and (s.frames[1:] != s.frames[0]).any()
    y_a, y_b, gt = StillSampler(train_stills, 64, 16, seed=1).sample()
    assert y_a.shape == gt.shape == (16, 1, 64, 64)
    changed = (y_a != y_b).any(axis=(1, 2, 3))
    assert changed.mean() >= 0.75, changed  # aligned to the 8x8 grid, a crop can miss its pixel by < 8 px
    assert np.all(np.abs(y_a - gt).max(axis=(1, 2, 3)) < 0.2)  # the frames belong with their reference


def test_flicker_excess_counts_only_change_beyond_the_inputs():
    y_a = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y_b = y_a.clone()
    y_b[:, :, :8, :8] += 2 / 255  # x265 re-coded one block
    assert torch.all(flicker_excess(y_a, y_b, y_a, y_b) == 0), "an identity filter moves as its input"
    calmer = flicker_excess(y_a, y_a + 0.5 * (y_b - y_a), y_a, y_b)
    assert torch.all(calmer == 0), "changing less than the input costs nothing"
    spread = y_b.clone()
    spread[:, :, :16, :16] += 2 / 255  # the change bleeds into the block's surroundings
    assert torch.all(flicker_excess(y_a, spread, y_a, y_b) > 3)


def test_temporal_term_trains_and_resumes_from_the_script(tmp_path, tiny_cfg, tiny_pairs, tiny_stills):
    """train.py --stills: stage 3 with the temporal term logs the validation stills' change and resumes
    with both samplers where they stopped; without stage 3 it says so."""
    model_dir = tmp_path / "init"
    train(model_dir, TrainConfig(stage=1, steps=2, batch=2, patch=32, val_every=100), tiny_cfg,
          load_pairs(tiny_pairs, "train"), load_pairs(tiny_pairs, "val"), torch.device("cpu"))
    common = ["--pairs", tiny_pairs, "--run", tmp_path / "r", "--stage", "3", "--init", model_dir / "stage1",
              "--stills", tiny_stills, "--batch", "2", "--still-batch", "2", "--patch", "64", "--val-every", "2",
              "--save-every", "2", "--log-every", "2", "--val-images", "1"]
    assert run_script("train.py", *common, "--steps", "2").returncode == 0
    result = run_script("train.py", *common, "--steps", "4")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    val = [r for r in records if "still_change_out" in r][-1]
    assert val["still_change_in"] > 0 and val["still_change_out"] > 0
    assert "still_sampler" in checkpoint.load(tmp_path / "r" / "stage3")[1]
    wrong = run_script("train.py", *common[:5], "1", *common[6:], "--steps", "2")
    assert wrong.returncode == 2 and "stage 3" in wrong.stderr and "Traceback" not in wrong.stderr


def test_z_table_stands_in_for_the_encoder_and_the_estimator_learns_the_qp(tmp_path, tiny_cfg, reference_frames):
    """fit_z_table.py fits a Z per QP through weights without an encoder (each lowers that QP's loss below
    the starting Z's); stage 2 with --z-targets and the high-pass condition input (its new weights start at
    zero: the same Zs as before) then teaches the estimator to give QP 22 crops QP 22's Z and QP 42 crops
    QP 42's, from the pixels alone, and leaves the decoder as it was.  (Without the high-pass input the
    estimator gave both the mean of the two: measured, 400 steps.)"""
    pairs = crop_pairs(tmp_path / "data", reference_frames, (22, 42))
    torch.manual_seed(0)
    model = DiffQE(tiny_cfg).eval()
    torch.nn.init.normal_(model.decoder.tail.weight, std=0.05)  # a decoder that changes its input
    checkpoint.save(tmp_path / "start", model, inference_only=True)
    table_path = tmp_path / "z.safetensors"
    result = run_script("fit_z_table.py", "--pairs", pairs, "--checkpoint", tmp_path / "start", "--out", table_path,
                        "--steps", "60", "--patch", "64")
    assert result.returncode == 0, result.stderr
    table = ZTable.load(table_path)
    assert table.qps == (22, 42) and table.z.shape == (2, tiny_cfg.z_dim)

    train_pairs = load_pairs(pairs, "train")
    y, gt, qp = (torch.from_numpy(a) for a in PatchSampler(train_pairs, 64, 12, seed=5).sample())
    with torch.no_grad():
        z0 = model.estimate(y)
        for q in (22, 42):
            rows = qp == q
            loss = lambda z: -patch_dpsnr(model.decoder(y[rows], z), gt[rows], y[rows]).mean().item()  # noqa: E731
            assert loss(table(qp[rows])) < loss(z0[rows]), q

    config = tmp_path / "highpass.json"
    config.write_text(json.dumps(json.loads(tiny_cfg.to_json()) | {"condition_highpass": True}))
    stage2 = lambda run, *args: run_script(  # noqa: E731
        "train.py", "--pairs", pairs, "--run", tmp_path / run, "--stage", "2", "--init", tmp_path / "start",
        "--model-config", config, "--z-targets", table_path, "--batch", "8", "--patch", "64", "--val-images", "1", *args)
    assert stage2("r0", "--steps", "1", "--lr", "1e-12").returncode == 0
    with torch.no_grad():
        torch.testing.assert_close(checkpoint.load(tmp_path / "r0" / "stage2")[0].estimate(y), z0, rtol=0, atol=1e-6)
    result = stage2("r", "--steps", "600", "--lr", "3e-3")
    assert result.returncode == 0, result.stderr
    trained = checkpoint.load(tmp_path / "r" / "stage2")[0]
    assert trained.cfg.condition_highpass
    with torch.no_grad():
        z = trained.estimate(y)
    err = lambda a, b: float((a - b).square().mean())  # noqa: E731
    own, swapped = err(z, table(qp)), err(z, table(torch.where(qp == 22, 42, 22)))
    print("estimated Z to its own QP's row", own, "to the other QP's", swapped, "start", err(z0, table(qp)))
    assert own < 0.5 * swapped and own < 0.5 * err(z0, table(qp)), (own, swapped)
    for name, p in trained.decoder.state_dict().items():
        assert torch.equal(p, model.decoder.state_dict()[name]), name

    ZTable(table.qps[:1], table.z[:1]).save(table_path)  # a table without QP 42
    refused = stage2("r2", "--steps", "1")
    assert refused.returncode == 2 and "not for the pairs' QPs [42]" in refused.stderr, refused.stderr
    ZTable(table.qps, table.z[:, :4]).save(table_path)  # Zs of another network
    refused = stage2("r3", "--steps", "1")
    assert refused.returncode == 2 and "Zs of 4 values, the network's have 16" in refused.stderr, refused.stderr
