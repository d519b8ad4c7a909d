from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from conftest import run_script
from diffqe.train.clips import lossless_luma
from diffqe.train.codec import CodecError, read_video_luma
from diffqe.train.corpus import rgb_to_luma
from diffqe.train.metrics import psnr
from diffqe.train.pairs import choose_qps, load_pairs, make_pairs


def write_real_images(folder, frames):
    """Crops of the real reference photo in the formats users have: PNG, JPEG, an RGB one; plus a corrupt
    JPEG and one too small to use."""
    folder.mkdir()
    Image.fromarray(frames[0][:, :256]).save(folder / "a.png")
    Image.fromarray(frames[3][:160, 64:]).save(folder / "b.jpg", quality=95)
    rgb = np.stack([frames[5], frames[5] // 2, 255 - frames[5]], axis=-1)
    Image.fromarray(rgb).save(folder / "c.png")
    Image.fromarray(frames[7]).save(folder / "d.jpeg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    Image.fromarray(frames[1][:40, :40]).save(folder / "tiny.png")


def test_limited_range_bt709_luma():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    assert rgb_to_luma(px).tolist() == [[16, 235, round(16 + 219 * 0.2126)]]


COPIES = ("_levels", "_soft", "_recompressed", "_coded")  # name suffixes of the corpus's copies of a photo


def high_frequency(y: np.ndarray) -> float:
    """The energy of neighbouring pixels' differences: blur lowers it also where it keeps their sum (soft edges
    of flat areas, as on screens)."""
    return float(np.square(np.diff(y.astype(np.float32), axis=1)).mean())


def test_corpus_builder_keeps_going_past_bad_images(tmp_path, reference_frames):
    write_real_images(tmp_path / "photos", reference_frames)
    out = tmp_path / "corpus"
    result = run_script("make_corpus.py", "--images", tmp_path / "photos", "--out", out, "--downscale", "1",
                        "--val-fraction", "0.3", "--levels-fraction", "1", "--soft-fraction", "1",
                        "--recompressed-fraction", "1", "--coded-fraction", "1", "--soft-screen-fraction", "1",
                        "--shifted-screen-fraction", "1", "--upscaled-screen-fraction", "1",
                        "--overtyped-screen-fraction", "1", "--faint-screen-fraction", "1",
                        "--screen-levels-fraction", "1", "--flat", "5")
    assert result.returncode == 0, result.stderr
    assert "corrupt.jpg: not a readable image" in result.stderr and "tiny.png: too small" in result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {e["name"]: e for e in manifest["images"]}
    photos = [e for e in manifest["images"] if not e["source"].startswith(("synthetic screen", "flat frame"))
              and not e["name"].endswith(COPIES)]
    assert len(photos) == 4 and len(manifest["skipped"]) == 2
    for e in photos:  # each photo's copies stay in its split: no leak into validation
        assert {by_name[e["name"] + copy]["split"] for copy in COPIES} == {e["split"]}
    flats = [e for e in manifest["images"] if e["source"] == "flat frame"]
    assert [e["name"].split("_")[1] for e in flats] == ["000", "016", "128", "235", "255"]
    screens = [e for e in manifest["images"] if e["source"] == "synthetic screen"]
    assert screens and all(by_name[e["name"] + copy]["split"] == e["split"] for e in screens
                           for copy in ("_soft", "_shift", "_upscaled", "_overtyped", "_faint", "_levels",
                                        "_soft_levels", "_shift_levels", "_upscaled_levels", "_overtyped_levels",
                                        "_faint_levels"))
    for e in screens:  # resampled text: softer, but the same picture at the same brightness
        crisp = np.asarray(Image.open(out / e["split"] / f"{e['name']}.png"))
        for kind in ("shift", "upscaled"):
            copy = np.asarray(Image.open(out / e["split"] / f"{e['name']}_{kind}.png"))
            assert 0 < high_frequency(copy) < 0.95 * high_frequency(crisp), kind
            assert np.abs(copy.astype(float).mean() - crisp.mean()) < 1.0, kind
        # the upscaled copy's sharp kernel overshoots: pixels above or below everything the crisp screen holds
        # around them
        upscaled = np.asarray(Image.open(out / e["split"] / f"{e['name']}_upscaled.png"))
        window = sliding_window_view(np.pad(crisp, 2, mode="edge"), (5, 5))
        assert np.mean((upscaled > window.max(axis=(-2, -1))) | (upscaled < window.min(axis=(-2, -1)))) > 0.01
        # the overtyped copy is the crisp screen with more text on it: more sharp edges, the rest untouched
        overtyped = np.asarray(Image.open(out / e["split"] / f"{e['name']}_overtyped.png"))
        changed = overtyped != crisp
        assert 0.005 < changed.mean() < 0.3 and high_frequency(overtyped) > high_frequency(crisp)
        # the faint copy adds text too, but close to its ground
        faint = np.asarray(Image.open(out / e["split"] / f"{e['name']}_faint.png")).astype(int)
        assert 0.001 < (faint != crisp).mean() < 0.3 and np.median(np.abs(faint - crisp)[faint != crisp]) <= 40
    assert {e["split"] for e in manifest["images"]} <= {"train", "val"}
    for e in manifest["images"]:
        y = np.asarray(Image.open(out / e["split"] / f"{e['name']}.png"))
        assert y.dtype == np.uint8 and y.ndim == 2
        assert y.shape[0] % 8 == 0 and y.shape[1] % 8 == 0
        copy = next((c for c in COPIES if e["name"].endswith(c)), None)
        if copy:
            original = np.asarray(Image.open(out / e["split"] / f"{e['name'].removesuffix(copy)}.png"))
            assert y.shape == original.shape
        if copy == "_levels":
            assert not np.array_equal(y, original)
        elif copy == "_soft":  # same picture, less fine detail
            assert 0 < high_frequency(y) < 0.8 * high_frequency(original)
            assert np.abs(y.astype(float).mean() - original.mean()) < 1.0
        elif copy in ("_recompressed", "_coded"):  # the same picture through JPEG or a video codec: close, not equal
            assert 25 < psnr(y, original) < 55
        elif e["source"] != "flat frame" and not e["name"].endswith("_upscaled"):  # a sharp kernel overshoots
            assert y.min() >= 16 and y.max() <= 235  # limited range, as a decoder outputs it


def test_screens_are_the_same_pictures_in_every_corpus_of_a_seed(tmp_path, reference_frames):
    """Corpora built with other options must not number the same screen differently: a screen in one
    corpus's validation split would otherwise be a training image of another (the leak of 2026-12-04)."""
    write_real_images(tmp_path / "photos", reference_frames)
    screens = {}
    for options in (("--levels-fraction", "0", "--flat", "0"), ("--levels-fraction", "1", "--soft-fraction", "1")):
        out = tmp_path / "_".join(options)
        result = run_script("make_corpus.py", "--images", tmp_path / "photos", "--out", out, "--downscale", "1",
                            "--screen-fraction", "0.5", *options)
        assert result.returncode == 0, result.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        screens[options] = {e["name"]: (e["split"], np.asarray(Image.open(out / e["split"] / f"{e['name']}.png")))
                            for e in manifest["images"] if e["source"] == "synthetic screen"}
    few, many = screens.values()
    assert 0 < len(few) < len(many), "the second corpus has more photos, so more screens"
    for name, (split, y) in few.items():
        assert many[name][0] == split and np.array_equal(many[name][1], y), name
    # and a corpus of screens alone (what the device machine draws rather than carry them) holds the same ones
    alone = tmp_path / "alone"
    result = run_script("make_corpus.py", "--screens", str(len(many)), "--flat", "0", "--out", alone)
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(alone) for p in alone.glob("*/*.png"))
    assert written == sorted(Path(split) / f"{name}.png" for name, (split, _) in many.items())
    for name, (split, y) in many.items():
        assert np.array_equal(np.asarray(Image.open(alone / split / f"{name}.png")), y), name


def test_corpus_builder_fails_clearly_on_a_missing_folder(tmp_path):
    result = run_script("make_corpus.py", "--images", tmp_path / "nope", "--out", tmp_path / "c")
    assert result.returncode == 2 and "no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_pairs_are_reproducible_and_resumable(tmp_path, reference_frames):
    corpus = tmp_path / "corpus"
    for split, idx in (("train", (0, 2)), ("val", (4,))):
        (corpus / split).mkdir(parents=True)
        for i in idx:
            Image.fromarray(reference_frames[i]).save(corpus / split / f"f{i}.png")
    assert choose_qps("x", 1, None, (22, 45), 3) == choose_qps("x", 1, None, (22, 45), 3)
    assert choose_qps("x", 1, None, None, 4) == [27, 32, 37, 42]
    manifest = make_pairs(corpus, tmp_path / "pairs", qps=(27, 42), workers=1)
    train = load_pairs(manifest, "train")
    assert len(train) == 4 and len(load_pairs(manifest, "val")) == 2
    assert {p.qp for p in train} == {27, 42}
    first = {p.name: p.decoded.copy() for p in train}
    stamp = {f: f.stat().st_mtime_ns for f in (tmp_path / "pairs").rglob("*.png")}
    make_pairs(corpus, tmp_path / "pairs", qps=(27, 42), workers=1)
    assert stamp == {f: f.stat().st_mtime_ns for f in (tmp_path / "pairs").rglob("*.png")}, "resume re-encoded"
    for p in train:  # decoded pairs differ from GT, more at the higher QP
        assert np.array_equal(first[p.name], p.decoded) and not np.array_equal(p.decoded, p.gt)


def test_validation_clip_becomes_lossless_luma_and_is_not_rewritten(tmp_path, reference_frames):
    """A 4:2:0 colour clip (as the packages' H.264 and MPEG-4 clips are) gives back its exact luma, only the
    frames asked for; an existing clip is kept, made again when asked for another frame count, kept when it
    holds all of a shorter source; a corrupt file is refused with nothing left behind."""
    h, w = reference_frames[0].shape
    src = tmp_path / "colour.mkv"
    yuv = b"".join(f.tobytes() + bytes([100]) * (h * w // 2) for f in reference_frames[:5])
    subprocess.run(["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-i", "-",
                    "-c:v", "ffv1", str(src)], input=yuv, check=True)
    out = tmp_path / "clips"
    out.mkdir()
    clip = lossless_luma(src, out, frames=3)
    got = read_video_luma(clip)
    assert len(got) == 3 and all((g == f).all() for g, f in zip(got, reference_frames))
    stamp = clip.stat().st_mtime_ns
    assert lossless_luma(src, out, frames=3) == clip and clip.stat().st_mtime_ns == stamp
    assert len(read_video_luma(lossless_luma(src, out, frames=4))) == 4
    assert len(read_video_luma(lossless_luma(src, out, frames=9))) == 5  # the whole source
    stamp = clip.stat().st_mtime_ns
    assert lossless_luma(src, out, frames=9) == clip and clip.stat().st_mtime_ns == stamp
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(CodecError, match="broken.mp4"):
        lossless_luma(bad, out, frames=3)
    assert sorted(p.name for p in out.iterdir()) == ["colour.mkv"]
