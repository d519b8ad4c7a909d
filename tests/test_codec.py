from __future__ import annotations

import numpy as np
import pytest

from diffqe.train.codec import (CODERS, CodecError, compress_luma, decode_luma, encode_video, read_video_luma,
                                transcode_luma)
from diffqe.train.metrics import psnr, ssim


def test_decoded_psnr_falls_as_qp_rises(reference_frames):
    y = reference_frames[0]
    scores = [psnr(compress_luma(y, qp), y) for qp in (22, 32, 42)]
    assert scores[0] > scores[1] > scores[2], scores
    assert scores[0] > 40 and scores[2] < 36, scores


@pytest.mark.parametrize("codec, coarse, fine", [
    ("mpeg2video", {"qmin": "10", "qmax": "10"}, {"qmin": "2", "qmax": "2"}),
    ("mpeg4", {"qmin": "10", "qmax": "10"}, {"qmin": "2", "qmax": "2"}),
    ("libx264", {"crf": "34"}, {"crf": "14"}),
])
def test_earlier_video_codecs_round_trip_an_odd_sized_plane(reference_frames, codec, coarse, fine):
    y = reference_frames[0][:-3, :-5]  # not whole macroblocks: padded for the codec and cropped back
    low, high = transcode_luma(y, codec, coarse), transcode_luma(y, codec, fine)
    assert low.shape == high.shape == y.shape and low.dtype == np.uint8
    assert 25 < psnr(low, y) < psnr(high, y) - 3  # the quantiser is the one asked for, on the luma as it was


@pytest.mark.parametrize("codec, fine, coarse", [("hevc", 22, 37), ("h264", 22, 37), ("av1", 8, 40), ("vp9", 8, 40),
                                                  ("vp8", 8, 40), ("mpeg2", 2, 8), ("mpeg4", 2, 8), ("mjpeg", 2, 8)])
def test_each_evaluation_codec_codes_two_frames_at_the_quantiser_asked(reference_frames, codec, fine, coarse):
    """The encoders evaluate.py --codec drives, each at a fixed quantiser on its own scale, all-intra, through its
    raw bitstream format and back."""
    assert codec in CODERS
    frames = reference_frames[:2]
    scores = []
    for q in (fine, coarse):
        decoded = decode_luma(encode_video(frames, codec=codec, qp=q, intra=True), codec)
        assert len(decoded) == 2 and all(d.shape == f.shape for d, f in zip(decoded, frames))
        scores.append(np.mean([psnr(d, f) for d, f in zip(decoded, frames)]))
    assert 30 < scores[1] < scores[0] - 3, scores


@pytest.mark.parametrize("codec, depth, finest", [("prores", 10, 3), ("dnxhr", 8, 2)])
def test_intermediates_code_by_profile_at_their_one_depth_and_refuse_the_other(reference_frames, codec, depth, finest):
    """ProRes codes 10-bit 4:2:2 only, DNxHR (LB, SQ, HQ) 8-bit 4:2:2 only; their 'QP' is the profile, coarsest
    (0: Proxy, LB) to finest."""
    frames = [f.astype(np.uint16) << 2 for f in reference_frames[:2]] if depth == 10 else reference_frames[:2]
    peak = (1 << depth) - 1
    scores = []
    for profile in (0, finest):
        decoded = decode_luma(encode_video(frames, codec=codec, qp=profile, bit_depth=depth), codec)
        assert len(decoded) == 2 and decoded[0].dtype == frames[0].dtype and decoded[0].shape == frames[0].shape
        scores.append(np.mean([psnr(d, f, peak=peak) for d, f in zip(decoded, frames)]))
    assert 30 < scores[0] < scores[1] - 10, scores
    other = 8 if depth == 10 else 10
    with pytest.raises(CodecError, match=f"{depth}-bit pictures only"):
        encode_video([reference_frames[0].astype(np.uint8 if other == 8 else np.uint16)], codec=codec, qp=0,
                     bit_depth=other)


def test_dnxhr_refuses_frames_narrower_than_it_codes(reference_frames):
    with pytest.raises(CodecError, match="at least 256 pixels wide, got 200x192"):
        encode_video([reference_frames[0][:, :200]], codec="dnxhr", qp=0)


def test_cinepak_round_trip_is_its_own_blocky_picture(reference_frames):
    y = reference_frames[0][:-3, :-5]
    out = transcode_luma(y, "cinepak", {})
    assert out.shape == y.shape and out.dtype == np.uint8
    assert 25 < psnr(out, y) < 45 and abs(float(out.mean()) - float(y.mean())) < 2


def test_random_access_crf_stream_keeps_frame_count(reference_frames):
    decoded = decode_luma(encode_video(reference_frames[:5], crf=28, intra=False))
    assert len(decoded) == 5
    assert all(d.shape == r.shape and d.dtype == np.uint8 for d, r in zip(decoded, reference_frames))
    assert np.mean([psnr(d, r) for d, r in zip(decoded, reference_frames)]) > 30


def test_ten_bit_round_trip_stays_ten_bit(reference_frames):
    y10 = reference_frames[0].astype(np.uint16) * 4
    (decoded,) = decode_luma(encode_video([y10], qp=20, bit_depth=10))
    assert decoded.dtype == np.uint16 and decoded.max() <= 1023
    assert psnr(decoded, y10, peak=1023) > 40


def test_bad_video_files_are_reported(tmp_path):
    with pytest.raises(CodecError, match="no such file"):
        read_video_luma(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(CodecError, match="corrupt.mp4"):
        read_video_luma(corrupt)


def test_metrics_on_known_cases(reference_frames):
    y = reference_frames[0]
    assert psnr(y, y) == 100.0 and ssim(y, y) == pytest.approx(1.0)
    noisy = np.clip(y + np.random.default_rng(0).normal(0, 5, y.shape), 0, 255)
    assert psnr(noisy, y) == pytest.approx(10 * np.log10(255**2 / np.mean((noisy - y) ** 2)))
    assert ssim(noisy, y) < 0.99
