"""The VapourSynth filter in-process and through real vspipe | ffmpeg processes."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import numpy as np
import pytest
import torch
import vapoursynth as vs

from conftest import ROOT, SAMPLES
from diffqe.model import checkpoint
from diffqe.model.inference import enhance_planes, to_tensor
from diffqe.model.mirror import mirror_average
from diffqe.plugin import backends, enhance
from diffqe.train.codec import read_video_luma
from diffqe.train.metrics import psnr

core = vs.core


@pytest.fixture(scope="module")
def sample() -> vs.VideoNode:
    return core.bs.VideoSource(source=str(SAMPLES / "sample.mp4"))


def planes(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.array(frame[i]) for i in range(frame.format.num_planes)]


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV422P10, vs.YUV444P16, vs.GRAY8, vs.YUV420PS])
def test_format_preserved_chroma_untouched_luma_enhanced(sample, fmt):
    clip = core.resize.Point(sample, format=fmt)
    out = enhance(clip, backend="ort-cpu")
    assert (out.format.id, out.width, out.height, out.num_frames) == (clip.format.id, clip.width, clip.height,
                                                                      clip.num_frames)
    src, res = clip.get_frame(3), out.get_frame(3)
    for a, b in zip(planes(src)[1:], planes(res)[1:]):
        assert np.array_equal(a, b), "chroma must pass through bit-identical"
    assert not np.array_equal(planes(src)[0], planes(res)[0])
    assert "DiffQE_ZMean" in res.props and res.props["DiffQE_Backend"] == "ort-cpu"


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV422P10, vs.YUV444P16, vs.YUV420PS])
def test_whole_frame_path_equals_the_float_path(sample, fmt):
    """The torch runner converts the plane itself (on the GPU where there is one); it must give what the
    float path with the filter's own rounding gives (ONNX Runtime here: the two differ by float rounding)."""
    clip = core.resize.Point(sample, format=fmt)
    torch_out = planes(enhance(clip, backend="torch-cpu").get_frame(3))
    ort_out = planes(enhance(clip, backend="ort-cpu").get_frame(3))
    step = 1e-4 if clip.format.sample_type == vs.FLOAT else 1
    assert torch_out[0].dtype == ort_out[0].dtype
    assert np.abs(torch_out[0].astype(np.float64) - ort_out[0].astype(np.float64)).max() <= step
    assert all(np.array_equal(a, b) for a, b in zip(torch_out[1:], ort_out[1:]))


@pytest.mark.skipif(not backends.native_bf16(), reason="this CPU has no native bfloat16 (AMX, AVX512-BF16), "
                    "where torch-cpu-bf16 refuses to run")
def test_bf16_on_the_cpu_stays_within_a_code_value_and_a_hundredth_of_a_db(sample):
    """torch-cpu-bf16 (convolutions in bfloat16, sums and output in fp32) against fp32, on the sample's frames
    scored against its lossless reference."""
    reference = read_video_luma(SAMPLES / "reference.mkv")
    fp32, bf16 = (enhance(sample, backend=b, temporal=0) for b in ("torch-cpu", "torch-cpu-bf16"))
    for n in (0, 4, 7):
        a, b = (np.array(c.get_frame(n)[0]) for c in (fp32, bf16))
        assert not np.array_equal(a, b), "bf16 computes differently"
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert abs(psnr(b, reference[n]) - psnr(a, reference[n])) <= 0.01
    assert bf16.get_frame(0).props["DiffQE_Backend"] == "torch-cpu-bf16"


@pytest.mark.skipif(not backends.native_bf16() or not backends.cpp_compiler(), reason="torch-cpu-bf16-compile needs "
                    "a CPU with native bfloat16 (AMX, AVX512-BF16) and a C++ compiler ($CXX or g++) for its kernels")
def test_bf16_compiled_on_the_cpu_gives_the_eager_frames_within_a_code_value(sample):
    """torch-cpu-bf16-compile (torch.compile's C++ kernels) against torch-cpu-bf16 on the sample's frames: fused
    kernels round differently at rare pixels, never by more than a code value."""
    eager, compiled = (enhance(sample, backend=b, temporal=0) for b in ("torch-cpu-bf16", "torch-cpu-bf16-compile"))
    for n in (0, 7):
        a, b = (np.array(c.get_frame(n)[0]).astype(int) for c in (eager, compiled))
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01


def test_filter_equals_the_model_on_8_bit_luma(sample):
    model, _ = checkpoint.load()
    y = np.array(sample.get_frame(0)[0])
    res = np.array(enhance(sample, backend="ort-cpu").get_frame(0)[0])
    assert np.abs(res.astype(int) - enhance_planes(model, y).astype(int)).max() <= 1


def test_interlaced_frames_are_enhanced_field_by_field(sample):
    """A frame marked interlaced holds two pictures taken apart in time: each field is enhanced on its own and the
    two are woven back, which differs from enhancing the woven frame."""
    woven = core.std.SetFieldBased(sample, value=2)  # top field first
    out = enhance(woven, backend="ort-cpu", temporal=0)
    fields = enhance(core.std.SeparateFields(woven, tff=True), backend="ort-cpu", temporal=0)
    expected = core.std.DoubleWeave(fields, tff=True)[::2]
    assert (out.width, out.height, out.num_frames) == (sample.width, sample.height, sample.num_frames)
    frame = out.get_frame(3)
    assert np.array_equal(planes(frame)[0], planes(expected.get_frame(3))[0])
    assert frame.props["_FieldBased"] == 2
    assert not np.array_equal(planes(frame)[0], planes(enhance(sample, backend="ort-cpu", temporal=0).get_frame(3))[0])


def test_same_frame_same_output(sample):
    a = np.array(enhance(sample, backend="ort-cpu", seed=7).get_frame(5)[0])
    b = np.array(enhance(sample, backend="torch-cpu", seed=7).get_frame(5)[0])
    c = np.array(enhance(sample, backend="ort-cpu", seed=7).get_frame(5)[0])
    assert np.array_equal(a, c) and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_tiles_agree_with_the_whole_frame(sample):
    big = core.resize.Spline36(sample, width=640, height=384)
    whole = np.array(enhance(big, backend="ort-cpu").get_frame(2)[0]).astype(int)
    tiled = np.array(enhance(big, backend="ort-cpu", tile=(160, 224), overlap=16).get_frame(2)[0]).astype(int)
    reference = core.resize.Spline36(core.bs.VideoSource(str(SAMPLES / "reference.mkv")), width=640, height=384,
                                     format=big.format.id)
    reference = np.array(reference.get_frame(2)[0]).astype(int)
    # The channel attention pools per tile, so values inside a tile move by a code value or two (measured with
    # step 4's weights: 5 % of pixels, at most 2; against the lossless reference 38.068 dB whole, 38.093
    # tiled); seams must not show: the tile borders differ no more often than the tiles' interiors.
    differ = whole != tiled
    assert np.abs(whole - tiled).max() <= 4 and differ.mean() < 0.2
    assert abs(psnr(tiled, reference) - psnr(whole, reference)) < 0.1
    borders = np.r_[224 - 4 : 224 + 4, 448 - 4 : 448 + 4]
    assert differ[:, borders].mean() < 1.5 * differ.mean()


def test_mirror_ensemble_is_what_the_model_gives_and_mirror_symmetric(sample):
    """ensemble=4 averages the decoder over the frame's four mirror images, so a mirrored clip comes out as the
    mirrored output (up to rounding and Z, which the estimator computes from the mirrored frame); a single
    pass is not symmetric.  180 rows: the frame is padded to the 8-pixel grid before mirroring.  The torch
    runner's whole-frame path averages the same copies."""
    model, _ = checkpoint.load()
    clip = core.resize.Spline36(sample, width=320, height=180)
    mirrored = core.std.FlipVertical(core.std.FlipHorizontal(clip))
    luma = {(k, m): np.array(enhance(c, backend="ort-cpu", ensemble=k).get_frame(1)[0]).astype(int)
            for k in (1, 4) for m, c in ((False, clip), (True, mirrored))}
    y = np.array(clip.get_frame(1)[0])
    assert np.abs(luma[4, False] - enhance_planes(model, y, ensemble=4)).max() <= 1
    assert np.abs(luma[4, False] - luma[1, False]).max() >= 1
    # The mirrored clip's padding rows lie at the other edge, so rows near the top and bottom may differ by more
    # than rounding (step 18's weights: one pixel of the last row by 2).
    symmetric = np.abs(luma[4, False] - luma[4, True][::-1, ::-1])
    assert symmetric[8:-8].max() <= 1 and symmetric.max() <= 2
    # Above, the mirrored clip gets its own Z from the estimator. Here Z is held and there is no padding (176 rows),
    # so the four-copy mean is mirror-symmetric to float precision and one pass is not; trained towards the
    # ensemble (from step 9 on), one pass's asymmetry is mostly below a code value, so it is measured unrounded.
    # Two copies are the frame and its half turn, so their mean is symmetric under the half turn as well.
    t = to_tensor(y[:176], 255)
    z = model.estimate(t)

    def decode(u: torch.Tensor) -> torch.Tensor:
        return model.decoder(u, z)

    @torch.no_grad()
    def asymmetry(k: int) -> float:
        ahead = mirror_average(decode, t, k)
        back = mirror_average(decode, t.flip(-1, -2), k).flip(-1, -2)
        return float((ahead - back).abs().max()) * 255

    assert asymmetry(4) < 0.01 and asymmetry(2) < 0.01 and asymmetry(1) > 0.1
    whole_frame = np.array(enhance(clip, backend="torch-cpu", ensemble=4).get_frame(1)[0]).astype(int)
    assert np.abs(whole_frame - luma[4, False]).max() <= 1


@pytest.mark.parametrize("backend", ["ort-cpu", "torch-cpu"])
def test_strength_scales_the_correction(sample, backend):
    """strength=0 gives the input back; 0.5 changes each pixel by half what the model changes it by (up to
    rounding), on the float path and the whole-frame path alike."""
    y = np.array(sample.get_frame(2)[0]).astype(int)
    full, half, none = (np.array(enhance(sample, backend=backend, strength=s, temporal=0).get_frame(2)[0]).astype(int)
                        for s in (1, 0.5, 0))
    assert np.array_equal(none, y)
    assert np.abs(full - y).max() >= 2
    assert np.abs((half - y) - (full - y) / 2).max() <= 1
    with pytest.raises(vs.Error, match="strength must be between 0 and 2"):
        enhance(sample, backend=backend, strength=2.5)


def test_bits_keeps_the_correction_below_one_code_value(sample):
    """bits=10 on the 8-bit sample: chroma shifted up exactly, luma within a code value of four times the 8-bit
    output, and closer to the lossless reference than it (what rounding to 8 bits drops); bits below the
    clip's or on a float clip are refused."""
    reference = read_video_luma(SAMPLES / "reference.mkv")
    out8, out10 = (enhance(sample, backend="torch-cpu", temporal=0, bits=b) for b in (None, 10))
    assert out10.format.id == sample.format.replace(bits_per_sample=10).id
    src, a, b = (clip.get_frame(2) for clip in (sample, out8, out10))
    assert all(np.array_equal(c10, c8.astype(np.uint16) * 4) for c8, c10 in zip(planes(src)[1:], planes(b)[1:]))
    y8, y10 = planes(a)[0].astype(np.float64), planes(b)[0].astype(np.float64) / 4
    assert np.abs(y10 - y8).max() <= 1 and not np.array_equal(y10, np.rint(y10))
    assert psnr(y10, reference[2]) > psnr(y8, reference[2])
    with pytest.raises(vs.Error, match="bits must be between the clip's 10 and 16"):
        enhance(core.resize.Point(sample, format=vs.YUV420P10), backend="torch-cpu", bits=8)
    with pytest.raises(vs.Error, match="is float"):
        enhance(core.resize.Point(sample, format=vs.YUV420PS), backend="torch-cpu", bits=16)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda c: core.resize.Bicubic(c, format=vs.RGB24, matrix_in_s="709"), "RGB input is not supported"),
        (lambda c: core.std.Splice([c, core.resize.Point(c, width=160, height=96)], mismatch=True), "variable"),
        (lambda c: core.resize.Point(c, width=12, height=12, format=vs.YUV444P8), "at least 16x16"),
        (lambda c: core.resize.Point(c, format=vs.YUV410P8), "subsampling"),
    ],
)
def test_unsupported_input_is_a_clear_vs_error(sample, make, message):
    with pytest.raises(vs.Error, match=message):
        enhance(make(sample), backend="ort-cpu")


def test_unknown_backend_is_a_clear_vs_error(sample):
    with pytest.raises(vs.Error, match="unknown backend"):
        enhance(sample, backend="warp-drive")


def test_unsupported_ensemble_is_a_clear_vs_error(sample):
    with pytest.raises(vs.Error, match="ensemble must be one of 1, 2, 4"):
        enhance(sample, backend="ort-cpu", ensemble=3)


def test_vspipe_with_a_relative_input_from_another_folder_says_how_to_fix_it(tmp_path):
    (tmp_path / "in.mp4").symlink_to(SAMPLES / "sample.mp4")
    result = subprocess.run(["vspipe", "-i", "-a", "input=in.mp4", str(ROOT / "enhance.vpy"), "-"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "input in.mp4 not found" in result.stderr
    assert 'pass an absolute path, e.g. -a input="$PWD/in.mp4"' in result.stderr


@pytest.mark.parametrize("args, said", [(["-a", "input=/no/such/in.mp4"], "input /no/such/in.mp4: no such file"),
                                        (["-a", f"input={SAMPLES / 'sample.mp4'}", "-a", "strength=abc"],
                                         "-a strength=abc is not a number"),
                                        (["-a", f"input={SAMPLES / 'sample.mp4'}", "-a", "tile=1.5"],
                                         "-a tile=1.5 is not a whole number"),
                                        (["-a", f"input={SAMPLES / 'sample.mp4'}", "-a", "alpha=1"],
                                         "-a alpha=1, but BestSource gives no alpha plane")])
def test_vspipe_arguments_that_are_wrong_say_which(args, said):
    result = subprocess.run(["vspipe", "-i", *args, str(ROOT / "enhance.vpy"), "-"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and f"vapoursynth.Error: enhance.vpy: {said}" in result.stderr


def test_vspipe_into_ffmpeg(tmp_path):
    vspipe, ffmpeg = shutil.which("vspipe"), shutil.which("ffmpeg")
    assert vspipe and ffmpeg, "the README's setup installs both"
    out = tmp_path / "out.mkv"
    pipe = subprocess.Popen([vspipe, "-c", "y4m", "-a", f"input={SAMPLES / 'sample.mp4'}", "-a", "backend=ort-cpu",
                             str(ROOT / "enhance.vpy"), "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    enc = subprocess.run([ffmpeg, "-v", "error", "-i", "-", "-c:v", "ffv1", str(out)], stdin=pipe.stdout,
                         capture_output=True)
    pipe.stdout.close()
    assert pipe.wait(timeout=300) == 0, pipe.stderr.read().decode()[-2000:]
    assert enc.returncode == 0, enc.stderr.decode()
    enhanced, decoded = read_video_luma(out), read_video_luma(SAMPLES / "sample.mp4")
    reference = read_video_luma(SAMPLES / "reference.mkv")
    assert len(enhanced) == len(decoded) == 8
    before = np.mean([psnr(d, r) for d, r in zip(decoded, reference)])
    after = np.mean([psnr(e, r) for e, r in zip(enhanced, reference)])
    assert after >= before and any(not np.array_equal(e, d) for e, d in zip(enhanced, decoded))


def test_vspipe_by_hand_says_what_its_output_does_not_state_and_ffmpeg_restores_it(tmp_path):
    """An anamorphic, interlaced, PQ / BT.2020 broadcast picture: vspipe's y4m states none of that, so the script
    names the ffmpeg options that do; given to ffmpeg, the output has the input's aspect, field order and colour.
    A plain sample gets only its matrix named, and an alpha channel a note of -a alpha=1."""
    src = tmp_path / "broadcast.mkv"
    tags = ["-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc"]
    interlaced = ["-c:v", "libx264", "-flags", "+ildct+ilme", "-pix_fmt", "yuv420p10le"]
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-vf", "setsar=64/45", *interlaced, "-top", "1",
                    *tags, src], check=True)
    args = ["-a", f"input={src}", "-a", "backend=ort-cpu", str(ROOT / "enhance.vpy")]
    info = subprocess.run(["vspipe", "-i", *args, "-"], capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    restore = shlex.split(info.stderr.split("give ffmpeg's output ", 1)[1].splitlines()[0])
    assert restore[:4] == ["-vf", "setsar=64/45,setfield=tff", "-field_order", "tt"]
    out = tmp_path / "out.mkv"
    pipe = subprocess.Popen(["vspipe", "-c", "y4m", *args, "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    enc = subprocess.run(["ffmpeg", "-v", "error", "-i", "-", *restore, *interlaced, out], stdin=pipe.stdout,
                         capture_output=True, text=True)
    pipe.stdout.close()
    assert pipe.wait(timeout=300) == 0 and enc.returncode == 0, enc.stderr

    def stated(path):
        return subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=sample_aspect_ratio,field_order,"
                               "color_primaries,color_transfer,color_space", "-of", "csv=p=0", path],
                              capture_output=True, text=True, check=True).stdout
    assert stated(out) == stated(src) and "64:45" in stated(src) and "bt2020" in stated(src)
    plain = subprocess.run(["vspipe", "-i", "-a", f"input={SAMPLES / 'sample.mp4'}", str(ROOT / "enhance.vpy"), "-"],
                           capture_output=True, text=True, timeout=300)
    assert "give ffmpeg's output -colorspace 1\n" in plain.stderr and "alpha" not in plain.stderr
    graphic = tmp_path / "graphic.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-pix_fmt", "yuva420p", "-c:v", "ffv1",
                    graphic], check=True)
    alpha = subprocess.run(["vspipe", "-i", "-a", f"input={graphic}", str(ROOT / "enhance.vpy"), "-"],
                           capture_output=True, text=True, timeout=300)
    assert "-a alpha=1 with vspipe -c mkv keeps it" in alpha.stderr


def test_vspipe_by_hand_says_when_the_input_has_a_variable_frame_rate_and_writes_its_frame_times(tmp_path):
    """A phone-like variable-rate clip: vspipe's constant rate would drift from the audio; the script says so, and
    vspipe -t (which BestSource's undated last frame made fail) writes the input's own frame times."""
    src = tmp_path / "phone.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-vf",
                    "setpts='if(lt(N,4),N*0.04,0.16+(N-4)*0.1)/TB'", "-fps_mode", "vfr", "-c:v", "libx265",
                    "-x265-params", "log-level=error", src], check=True)
    shown = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time",
                            "-of", "csv=p=0", src], capture_output=True, text=True, check=True).stdout.split()
    times = subprocess.run(["vspipe", "-t", tmp_path / "times.txt", "-c", "y4m", "-a", f"input={src}", "-a",
                            "backend=ort-cpu", ROOT / "enhance.vpy", "-"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=300)
    assert times.returncode == 0, times.stderr
    assert "the input's frame rate varies (its frames up to 200 ms from where a constant 25 frames/s" in times.stderr
    written = (tmp_path / "times.txt").read_text().splitlines()
    assert written[0] == "# timecode format v2"
    assert [round(float(t)) for t in written[1:]] == sorted(round(1000 * float(t)) for t in shown)
    steady = subprocess.run(["vspipe", "-t", tmp_path / "steady.txt", "-i", "-a", f"input={SAMPLES / 'sample.mp4'}",
                             ROOT / "enhance.vpy", "-"], capture_output=True, text=True, timeout=300)
    assert steady.returncode == 0 and "frame rate varies" not in steady.stderr
