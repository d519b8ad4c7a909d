"""Temporal stabilisation (model.temporal) on real x265 random-access stills and through the filter."""

from __future__ import annotations

import numpy as np
import pytest
import vapoursynth as vs

from conftest import SAMPLES
from diffqe.model import checkpoint, temporal
from diffqe.model.inference import enhance_planes
from diffqe.model.temporal import stabilise, stabilise_clip
from diffqe.plugin import backends, enhance
from diffqe.train.evaluate import Condition
from diffqe.train.metrics import frame_change

core = vs.core


@pytest.fixture(scope="module")
def still(reference_frames) -> tuple[np.ndarray, np.ndarray]:
    """A static scene, the sample's photograph held for 8 frames and coded random-access at CRF 32: x265
    re-codes some blocks from frame to frame.  Returns (decoded [8,H,W], the model's per-frame output)."""
    decoded = np.stack(Condition(crf=32).code([reference_frames[5]] * 8))
    assert frame_change(decoded).mean() > 0, "the still must carry frame-to-frame coding changes"
    return decoded, enhance_planes(checkpoint.load()[0], decoded)


def test_a_static_scene_loses_most_of_its_flicker(still):
    decoded, per_frame = still
    moved_in, moved_out = frame_change(decoded).mean(), frame_change(per_frame).mean()
    assert moved_out > moved_in, "per frame, the decoder flickers around re-coded blocks"
    stabilised = frame_change(stabilise_clip(decoded, per_frame, 2)).mean()
    assert stabilised - moved_in < (moved_out - moved_in) / 2, "at least half the excess over the input goes"


def test_identical_input_gives_the_mean_output_and_changed_input_its_own(still):
    decoded, per_frame = still
    x = np.repeat(decoded[:1], 3, axis=0)
    x[2, 64:72, 96:104] += 3  # one block of frame 2 re-coded by more than the tolerance
    y = per_frame[:3]
    mean = np.rint(y.astype(np.float32).mean(axis=0)).astype(np.uint8)
    out = stabilise(list(x), list(y), 1, 1.0)
    far, near = np.ones(x.shape[1:], bool), np.zeros(x.shape[1:], bool)
    far[64 - 24 : 72 + 24, 96 - 24 : 104 + 24] = False  # beyond the 2 blocks around the changed one
    near[64 - 16 : 72 + 16, 96 - 16 : 104 + 16] = True
    pair = np.rint(y[:2].astype(np.float32).mean(axis=0)).astype(np.uint8)
    assert np.array_equal(out[far], mean[far]), "frames 0 and 2 settle every pixel far from the change"
    assert np.array_equal(out[near], pair[near]), "near it only frame 0 does"


def test_a_few_calm_blocks_give_what_whole_planes_give(still, monkeypatch):
    """Below temporal.SPARSE the blocks that can change are gathered; the frames must be those of the
    whole-plane arithmetic, at every share of calm blocks, odd sizes (edge padding) and in every type."""
    decoded, per_frame = still
    rng = np.random.default_rng(0)
    x = np.repeat(decoded[:1, :101, :179], 5, axis=0)
    for i, rows in enumerate((0, 24, 56, 101, 80)):  # frame i moves below a row: a different calm share each
        x[i, rows:] = np.clip(x[i, rows:].astype(int) + 2 * i, 0, 255)
    y = per_frame[:5, :101, :179]
    for xs, ys, tolerance in ((x, y, 1.0), (x.astype(np.uint16) * 257, y.astype(np.uint16) * 257 + 3, 257.0),
                              (x / np.float32(255), y / np.float32(255) + np.float32(1e-3), 1.5 / 255)):
        whole, gathered = {}, {}
        for share, out in ((0.0, whole), (1.01, gathered)):
            monkeypatch.setattr(temporal, "SPARSE", share)
            for c in range(5):
                out[c] = stabilise(list(xs), list(ys), c, tolerance)
        assert all(np.array_equal(whole[c], gathered[c]) and whole[c].dtype == xs.dtype for c in range(5))
        assert any(not np.array_equal(whole[c], ys[c]) for c in range(5)), "some pixels must settle"


def test_motion_keeps_each_frames_own_output(reference_frames):
    """The sample's reference pans: nothing is left bit-identical, so stabilisation changes nothing."""
    frames = np.stack(reference_frames[:5])
    rng = np.random.default_rng(0)
    outputs = np.clip(frames.astype(np.int16) + rng.integers(-2, 3, frames.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(stabilise_clip(frames, outputs, 2), outputs)


def test_float_and_16_bit_planes_keep_their_type(still):
    decoded, per_frame = still
    for dtype, scale, tolerance in ((np.uint16, 257, 257), (np.float32, 1 / 255, 1.5 / 255)):  # as the filter
        x, y = (decoded.astype(np.float64) * scale).astype(dtype), (per_frame.astype(np.float64) * scale).astype(dtype)
        out = stabilise_clip(x, y, 2, tolerance)
        assert out.dtype == dtype
        ref = stabilise_clip(decoded, per_frame, 2).astype(np.float64) * scale
        assert np.abs(out.astype(np.float64) - ref).max() <= (1 if dtype == np.uint16 else 1e-6) + scale * 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_long_window_sums_without_overflow(dtype):
    """300 frames of white settle every pixel: the mean of 300 whites is white (a sum in 8 or 16 bits, or a
    count in 8 bits, would wrap)."""
    peak = np.iinfo(dtype).max
    x = np.full((300, 16, 16), peak, dtype)
    y = x.copy()
    y[150, :, :8] = peak - 3
    out = stabilise(list(x), list(y), 150, peak / 255)
    assert out.dtype == dtype and np.array_equal(out, np.full((16, 16), peak, dtype)), out.min()


@pytest.fixture(scope="module")
def still_clip(still) -> vs.VideoNode:
    decoded, _ = still
    clip = core.std.BlankClip(format=vs.GRAY8, width=decoded.shape[2], height=decoded.shape[1],
                              length=len(decoded), keep=False)

    def put(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        np.copyto(np.asarray(out[0]), decoded[n])
        return out

    return clip.std.ModifyFrame(clips=clip, selector=put)


def test_filter_stabilises_as_the_module_and_infers_each_frame_once(still_clip, still, monkeypatch):
    decoded, _ = still
    calls: list[int] = []
    create = backends.create

    def counting(*args, **kwargs):  # the real runner, its estimator calls counted
        runner = create(*args, **kwargs)
        estimate = runner.estimate
        runner.estimate = lambda y, noise: calls.append(1) or estimate(y, noise)
        return runner

    monkeypatch.setattr(backends, "create", counting)
    per_frame = np.stack([np.array(f[0]) for f in enhance(still_clip, backend="ort-cpu", temporal=0).frames()])
    calls.clear()
    monkeypatch.setattr(core, "num_threads", 4)
    node = enhance(still_clip, backend="ort-cpu")
    played = np.stack([np.array(f[0]) for f in node.frames(prefetch=4)])
    assert len(calls) == len(decoded), "each per-frame output is computed once and shared by its window"
    assert np.array_equal(played, stabilise_clip(decoded, per_frame, 2))
    seeked = enhance(still_clip, backend="ort-cpu")
    assert all(np.array_equal(np.array(seeked.get_frame(n)[0]), played[n]) for n in (5, 0, 7, 3)), \
        "a frame is the same whether played or seeked"
    assert "DiffQE_ZMean" in node.get_frame(2).props


def test_negative_radius_is_a_clear_vs_error(still_clip):
    with pytest.raises(vs.Error, match="temporal must be >= 0"):
        enhance(still_clip, backend="ort-cpu", temporal=-1)


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10, vs.YUV444PS])
def test_a_frame_held_still_comes_out_the_same_every_frame(fmt):
    """Bit-identical input frames give bit-identical output frames, float planes too (no last-bit wobble from
    averaging over windows of different lengths at the clip's start)."""
    clip = core.resize.Point(core.bs.VideoSource(source=str(SAMPLES / "sample.mp4")), format=fmt)
    frames = [np.array(f[0]) for f in enhance(clip[3] * 5, backend="ort-cpu").frames()]
    assert all(np.array_equal(frames[0], f) for f in frames[1:])
