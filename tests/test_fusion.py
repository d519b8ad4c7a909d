"""Temporal fusion (model.fusion) on real all-intra x265 encodes, and through the filter."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
import torch
import vapoursynth as vs
from PIL import Image

from conftest import SAMPLES, run_script
from diffqe.model import checkpoint, fusion
from diffqe.model.inference import enhance_planes
from diffqe.plugin import enhance
from diffqe.train.evaluate import Condition
from diffqe.train.metrics import psnr

core = vs.core
QP = 32  # where the guard lets the still background through (at 37 its coding differs by more)


def still_with_a_moving_square(reference_frames: list[np.ndarray], frames: int = 6) -> np.ndarray:
    """The sample's photograph standing still, a 48x48 square cut from another frame crossing it at 3 px a frame."""
    still, square = reference_frames[0], reference_frames[4][40:88, 40:88]
    video = np.repeat(still[None], frames, axis=0)
    for t in range(frames):
        video[t, 60:108, 100 + 3 * t:148 + 3 * t] = square
    return video


def mean_psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean([psnr(f, r) for f, r in zip(frames, reference)]))


@pytest.fixture(scope="module")
def net() -> fusion.FusionNet:
    return fusion.load()


@pytest.fixture(scope="module")
def model():
    return checkpoint.load()[0].eval()


def scores(net, model, reference: np.ndarray) -> tuple[float, float]:
    """dPSNR (dB) per frame and fused, on REFERENCE coded all-intra at QP."""
    decoded = np.stack(Condition(qp=QP).code(list(reference)))
    per_frame = enhance_planes(model, decoded)
    base = mean_psnr(decoded, reference)
    return mean_psnr(per_frame, reference) - base, mean_psnr(fusion.fuse_clip(net, decoded, per_frame), reference) - base


def test_a_still_scene_gains_where_it_stands_still(net, model, reference_frames):
    per_frame, fused = scores(net, model, still_with_a_moving_square(reference_frames))
    assert fused > per_frame + 0.1, (per_frame, fused)


@pytest.mark.parametrize("make", [
    lambda ref: np.stack(ref[:6]),  # the sample's pan: nothing stands still
    lambda ref: np.stack([np.clip(np.rint(ref[0] * (1 - 0.03 * t)), 0, 255).astype(np.uint8) for t in range(6)]),  # a fade
], ids=["pan", "fade"])
def test_motion_and_fades_lose_nothing(net, model, reference_frames, make):
    per_frame, fused = scores(net, model, make(reference_frames))
    assert fused > per_frame - 0.02, (per_frame, fused)


def test_the_motion_share_tells_a_shift_and_a_change_of_light_from_noise():
    """model.fusion.motion_share on planes made here: a soft texture moved by a third of a pixel, or lit 2 % brighter,
    is explained by the fit; fresh noise of the same energy is not."""
    rng = np.random.default_rng(0)
    blur = lambda x: torch.nn.functional.avg_pool2d(x, 9, 1, 4, count_include_pad=False)  # noqa: E731
    texture = 128 + blur(blur(torch.from_numpy(rng.normal(0, 400, (1, 1, 96, 128))).float()))  # soft, RMS about 20
    shifted = texture + (torch.roll(texture, 1, dims=-1) - texture) / 3
    lit = texture * 1.02 + 1
    noisy = texture + torch.from_numpy(rng.normal(0, 1, texture.shape)).float()
    share = fusion.motion_share(texture, torch.cat([shifted, lit, noisy]) - texture)[..., 1:-1, 2:-1]  # off the edges
    assert share[0].min() > 0.75 and share[1].min() > 0.99, (share[0].min(), share[1].min())
    assert share[2].max() < 0.2, share[2].max()


def decoded_window(frames: list[np.ndarray], qp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FRAMES (five) coded all-intra at QP -> the middle one and the others, as fusion.guard takes them."""
    planes = torch.from_numpy(np.stack(Condition(qp=qp).code(frames))).float()[:, None] / 255
    return planes[2:3], planes[[0, 1, 3, 4]]


def test_the_guard_keeps_a_still_scene_under_sensor_noise(reference_frames):
    """Fresh noise each frame (a camera's, sigma 1.5) on a still photograph, QP 22: coding and noise differ, nothing
    moves, so the motion test keeps nearly every block the STILL check lets through."""
    rng = np.random.default_rng(0)
    photo = reference_frames[0]
    frames = [np.clip(np.rint(photo + rng.normal(0, 1.5, photo.shape)), 0, 255).astype(np.uint8) for _ in range(5)]
    centre, others = decoded_window(frames, 22)
    quiet = fusion.guard(centre, others, moved=float("inf")).mean().item()
    assert quiet > 0.9 and fusion.guard(centre, others).mean().item() > 0.95 * quiet


def test_the_guard_keeps_a_change_of_light_out(reference_frames):
    """A fade of 2 % a frame, QP 22: the frames differ by less than STILL almost everywhere, and the motion test
    keeps about half of those blocks out (a symmetric window of a linear fade averages to the centre's level, but
    the clip's first and last frames, and a fade that slows, do not)."""
    photo = reference_frames[0].astype(np.float32)
    centre, others = decoded_window([np.rint(photo * (1 - 0.02 * t)).astype(np.uint8) for t in range(5)], 22)
    quiet = fusion.guard(centre, others, moved=float("inf")).mean().item()
    assert quiet > 0.6 and fusion.guard(centre, others).mean().item() < 0.7 * quiet


def test_the_guards_block_means_pooled_from_the_fine_grid_are_those_of_the_coarse_one(reference_frames):
    """fuse takes the 8x8 guard's block means from the 4x4 grid's (one pass over the planes for both guards): on the
    sample's photograph standing still with a square crossing it, coded at QP 22, they equal those made on the 8x8
    grid directly, and so do the guard's decisions."""
    centre, others = decoded_window(list(still_with_a_moving_square(reference_frames, 5)), 22)
    frame, diff = centre * 255, (others - centre) * 255
    pooled, direct = fusion.Moments.of(frame, diff, fusion.FINE).pooled(2), fusion.Moments.of(frame, diff, fusion.BLOCK)
    for a, b in ((pooled.frame, direct.frame), (pooled.diff, direct.diff)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    decided = fusion._guard(pooled, fusion.STILL, fusion.MOVED)
    assert torch.equal(decided, fusion.guard(centre, others)) and 0 < decided.mean() < 1, decided.mean()


def frozen_in_pieces(frames: list[np.ndarray], tau: float = 20) -> np.ndarray:
    """FRAMES as a codec that skips blocks leaves them (Cinepak's conditional replenishment): each 4x4 block keeps
    its last value until it has changed by a mean squared error above TAU, so still pieces lie between moving ones."""
    video = [frames[0]]
    for frame in frames[1:]:
        change = (frame.astype(np.float32) - video[-1]) ** 2
        h, w = change.shape
        update = np.kron(change.reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3)) > tau, np.ones((4, 4), bool))
        video.append(np.where(update, frame, video[-1]))
    return np.stack(video)


def test_fine_joins_find_still_pieces_between_moving_ones(net, model, reference_frames):
    """The sample's pan frozen in 4x4 pieces, QP 22: the fine joins take in (nearly) only blocks that stand still,
    and the fusion gains from them; the 8x8 network and its guard alone find no still neighbourhood there."""
    reference = frozen_in_pieces(reference_frames[:5])
    decoded = np.stack(Condition(qp=22).code(list(reference)))
    planes = torch.from_numpy(decoded).float()[:, None] / 255
    joins = fusion.fine_joins(planes[2:3], planes[[0, 1, 3, 4]])
    h, w = decoded.shape[1:]
    still = torch.from_numpy(np.stack([(reference[2] == reference[k]).reshape(h // 4, 4, w // 4, 4).all(axis=(1, 3))
                                       for k in (0, 1, 3, 4)]))[:, None]
    assert joins.sum() > 0.05 * joins.numel() and (joins & still).sum() > 0.95 * joins.sum(), \
        (joins.float().mean(), (joins & still).sum() / joins.sum())
    out = enhance_planes(model, decoded)
    base = mean_psnr(decoded, reference)
    without, with_ = (mean_psnr(fusion.fuse_clip(net, decoded, out, fine=f), reference) - base for f in (0, 0.25))
    assert with_ > without + 0.02 and without < mean_psnr(out, reference) - base + 0.01, (without, with_)


def test_a_black_frame_beside_a_scene_stays_black(net, model, reference_frames):
    """A cut from black (as a film opens): the black frame comes back exact, though the scene's own black areas
    differ from it by little (the fine joins skip blocks that are flat in the frame)."""
    photo = np.where(reference_frames[0] < 40, 16, reference_frames[0]).astype(np.uint8)  # black areas at black
    reference = [np.full_like(photo, 16)] + [photo] * 2
    decoded = np.stack(Condition(qp=QP).code(reference))
    out = enhance_planes(model, decoded)
    np.testing.assert_array_equal(fusion.fuse_clip(net, decoded, out)[0], out[0])


def test_the_same_frames_give_the_output_of_each(net, model, reference_frames):
    decoded = np.stack(Condition(qp=QP).code([reference_frames[0]] * 3))
    assert all(np.array_equal(d, decoded[0]) for d in decoded), "all-intra codes a repeated frame the same way"
    out = enhance_planes(model, decoded)
    np.testing.assert_array_equal(fusion.fuse_clip(net, decoded, out), out)


def test_the_filter_fuses_intra_pictures_only(tmp_path, reference_frames):
    """An all-intra x265 encode of the moving square gains from the fusion; the bundled random-access sample
    (I, then P and B pictures) comes out the same with and without it."""
    reference = still_with_a_moving_square(reference_frames)
    raw, coded = tmp_path / "ref.y", tmp_path / "intra.mkv"
    chroma = np.full((2, 96, 160), 128, np.uint8).tobytes()
    raw.write_bytes(b"".join(y.tobytes() + chroma for y in reference))
    subprocess.run(["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "320x192", "-i", raw,
                    "-c:v", "libx265", "-x265-params", f"log-level=error:keyint=1:qp={QP}",
                    coded], check=True)
    clip = core.bs.VideoSource(source=str(coded))
    assert clip.get_frame(2).props["_PictType"] in ("I", b"I")
    gains = []
    for fused in (False, True):
        out = enhance(clip, backend="torch-cpu", fusion=fused)
        gains.append(mean_psnr(np.stack([np.asarray(f[0]) for f in out.frames()]), reference))
    assert gains[1] > gains[0] + 0.1, gains
    assert [out.get_frame(n).props["DiffQE_Fused"] for n in range(clip.num_frames)] == [2, 3, 4, 4, 3, 2]

    sample = core.bs.VideoSource(source=str(SAMPLES / "sample.mp4"))
    with_, without = (enhance(sample, backend="torch-cpu", fusion=f) for f in (True, False))
    for n in range(sample.num_frames):
        frame = with_.get_frame(n)
        np.testing.assert_array_equal(np.asarray(frame[0]), np.asarray(without.get_frame(n)[0]))
        assert frame.props["DiffQE_Fused"] == 0


@pytest.fixture
def corpus(tmp_path, reference_frames):
    """A corpus of the sample's frames, enlarged (the synthetic videos are 256 px and pan)."""
    (tmp_path / "corpus" / "train").mkdir(parents=True)
    for i in (0, 4, 7):
        Image.fromarray(reference_frames[i]).resize((640, 384), Image.Resampling.LANCZOS).save(
            tmp_path / "corpus" / "train" / f"{i}.png")
    return tmp_path / "corpus"


def test_calibrate_fusion_reports_the_share_of_still_blocks_below_each_value(corpus):
    result = run_script("calibrate_fusion.py", "--corpus", corpus, "--videos", 4)
    assert result.returncode == 0, result.stderr
    rows = [tuple(map(float, r)) for r in re.findall(r"^\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", result.stdout, re.M)]
    assert {0.1, 0.2, 0.3, 0.4} <= {r[0] for r in rows}, result.stdout
    assert all(a[1] <= b[1] and a[2] <= b[2] for a, b in zip(rows, rows[1:])), "shares below a value grow with it"
    quantile = float(re.search(r"^95 % of the still blocks: below ([\d.]+)", result.stdout, re.M)[1])
    assert dict((r[0], r[1]) for r in rows)[round(quantile, 3)] == pytest.approx(0.95, abs=0.01), result.stdout


def test_calibrate_fusion_scores_each_fine_share_against_none(corpus):
    result = run_script("calibrate_fusion.py", "--corpus", corpus, "--videos", 2, "--fine", "--seed", 1)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| ([\d.]+) \| ([-+][\d.]+) \| ([-+][\d.]+) \| (\d+) \|$", result.stdout, re.M)
    assert [float(r[0]) for r in rows] == [0, 0.25, 0.5, 0.75, 1], result.stdout
    assert float(rows[0][2]) == 0 and rows[0][3] == "0", "none, held against itself, loses nothing"
    safe = float(re.search(r"^largest fine share with no video losing over 0.01 dB: ([\d.]+)", result.stdout,
                           re.M)[1])
    # The worst column is rounded to 3 places (-0.010 may be a loss of 0.0103), so the count decides.
    assert safe == max(float(r[0]) for r in rows if r[3] == "0"), result.stdout
    assert all(float(r[2]) >= -0.01 if r[3] == "0" else float(r[2]) <= -0.01 for r in rows), result.stdout


def test_calibrate_fusion_scores_each_still_against_per_frame(corpus):
    result = run_script("calibrate_fusion.py", "--corpus", corpus, "--videos", 2, "--still", "--seed", 1)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| ([\d.]+) \| ([-+][\d.]+) \| ([-+][\d.]+) \| (\d+) \|$", result.stdout, re.M)
    assert [float(r[0]) for r in rows] == [8, 16, 32, 64], result.stdout
    per_frame = float(re.search(r"^per frame \(no fusion\): mean dPSNR ([-+][\d.]+)", result.stdout, re.M)[1])
    # with two videos, each STILL's worst video against per frame is at most its mean gain over per frame
    assert all(float(r[2]) <= float(r[1]) - per_frame + 0.002 for r in rows), result.stdout
    chosen = re.search(r"^largest STILL with no video losing over 0.01 dB: ([\d.]+|nan)", result.stdout, re.M)[1]
    safe = [float(r[0]) for r in rows if float(r[2]) >= -0.01]
    assert (float(chosen) == max(safe)) if safe else chosen == "nan", result.stdout


def test_train_fusion_makes_videos_once_and_writes_weights_that_load(tmp_path, corpus):
    """scripts/train_fusion.py on a corpus of the sample's frames: it codes and enhances each video of both series
    once, keeps them for a resumed run, and writes weights that fusion.load reads."""
    args = ["--corpus", corpus, "--work", tmp_path / "videos", "--videos", 2, "--busy-videos", 2,
            "--minutes", 0.05, "--out", tmp_path / "fusion"]
    first = run_script("train_fusion.py", *args)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("videos made: 2/2") == 2 and "held-out videos (2)" in first.stderr, first.stderr
    again = run_script("train_fusion.py", *args)
    assert again.returncode == 0 and "videos made" not in again.stderr, again.stderr
    assert fusion.load(tmp_path / "fusion").width == json.loads((tmp_path / "fusion.json").read_text())["width"]
