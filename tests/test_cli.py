"""`diffqe enhance IN OUT` with real vspipe, ffmpeg and x265."""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from conftest import SAMPLES
from diffqe.model.files import SHIPPED
from diffqe.plugin.batch import verify
from diffqe.plugin.cli import output_pix_fmt, probe_video
from diffqe.train.codec import read_video_luma
from diffqe.train.metrics import frame_change, psnr


def diffqe(*args, cwd=None) -> subprocess.CompletedProcess:
    exe = shutil.which("diffqe")
    assert exe, "the project's console script is installed"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "in.mkv"
    font = path.with_name("subtitles.ttf")  # an attachment as ASS subtitles' fonts travel; only copied, never read
    font.write_bytes(b"a font file")
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.32",
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-metadata", "title=DiffQE test",
                    "-attach", font, "-metadata:s:t", "mimetype=font/ttf", path], check=True)
    return path


def streams(path):
    with av.open(str(path)) as c:
        return ({s.type: s.codec_context.name for s in c.streams if s.type != "attachment"}, c.metadata,
                c.streams.video[0].format.name)


def attachments(path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "t", "-show_entries", "stream_tags=filename",
                          "-of", "csv=p=0", path], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_enhance_keeps_audio_metadata_and_frames(tmp_path, clip_with_audio):
    out = tmp_path / "out.mkv"
    result = diffqe("enhance", clip_with_audio, out, "--backend", "ort-cpu", "--lossless")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "frames" in result.stderr
    kinds, metadata, pix_fmt = streams(out)
    assert kinds == {"video": "ffv1", "audio": "aac"} and metadata.get("title") == "DiffQE test"
    assert attachments(out) == attachments(clip_with_audio) == ["subtitles.ttf"]
    assert pix_fmt == "yuv420p"
    enhanced, decoded = read_video_luma(out), read_video_luma(clip_with_audio)
    assert len(enhanced) == len(decoded) == 8
    with av.open(str(out)) as a, av.open(str(clip_with_audio)) as b:
        for fa, fb in zip(a.decode(video=0), b.decode(video=0)):
            assert np.array_equal(fa.to_ndarray()[192:], fb.to_ndarray()[192:]), "chroma unchanged"
    assert not list(tmp_path.glob(".*partial*"))


def test_the_command_line_runs_a_job_without_loading_pytorch(tmp_path):
    """diffqe itself (parsing, probing, checking the encoder, segments, the join) imports no PyTorch, which takes
    about 2 s a process here and a batch job pays for every file: only the filter's own process (vspipe) loads it."""
    out = tmp_path / "out.mkv"
    code = ("import sys\nfrom diffqe.plugin import cli\n"
            f"rc = cli.main(['enhance', {str(SAMPLES / 'sample.mp4')!r}, {str(out)!r}, '--backend', 'ort-cpu', "
            "'--lossless', '--quiet'])\nprint(rc, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.stdout.split() == ["0", "False"], result.stdout + result.stderr
    assert len(read_video_luma(out)) == 8


def test_rgb_video_is_refused_with_a_conversion_that_keeps_its_depth_and_alpha(tmp_path):
    """An RGBA overlay (PNG in QuickTime) has no luma: refused with an ffmpeg command, which run as given makes
    a file that is enhanced with its transparency kept."""
    src = tmp_path / "overlay.mov"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x192:d=0.16,format=rgba,"
                    "geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='min(X,255)'", "-c:v", "png", src], check=True)
    refused = diffqe("enhance", src, tmp_path / "out.mkv", "--backend", "ort-cpu")
    assert refused.returncode == 2 and "RGB video (rgba)" in refused.stderr and "with alpha" in refused.stderr
    command = shlex.split(refused.stderr.strip().split("): ffmpeg ", 1)[1])
    subprocess.run(["ffmpeg", "-v", "error", *command], check=True)
    converted = tmp_path / "overlay_yuv.mkv"
    done = diffqe("enhance", converted, tmp_path / "out.mkv", "--backend", "ort-cpu", "--quiet", "--lossless")
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    assert np.array_equal(alpha_plane(tmp_path / "out.mkv", "gray"), alpha_plane(converted, "gray"))
    assert np.abs(alpha_plane(converted, "gray").astype(int) - alpha_plane(src, "gray")).max() <= 1, "converted"


@pytest.mark.parametrize("container", ["mp4", "hevc"])
def test_json_progress_reports_the_index_pass_then_every_frame(tmp_path, container):
    """A farm sees the backend and GPU the job runs on, the source filter's index pass (one decode of the whole
    input before the first frame: minutes for a long film) and then the frames of the total the index counted (a
    raw .hevc states none to ffprobe), as JSON lines on stderr; stdout stays empty."""
    src = tmp_path / f"new.{container}"  # a path BestSource has no index of
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-c", "copy", src], check=True)
    result = diffqe("enhance", src, tmp_path / "out.mkv", "--backend", "ort-cpu", "--lossless", "--progress", "json")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert events[0] == {"stage": "start", "backend": "ort-cpu", "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    stages = [e["stage"] for e in events[1:]]
    assert stages[0] == "index" and "enhance" in stages and "index" not in stages[stages.index("enhance"):]
    assert all(0 <= e["percent"] <= 100 for e in events if e["stage"] == "index")
    frames = [(e["frame"], e["frames"]) for e in events if e["stage"] == "enhance"]
    assert frames == sorted(frames) and frames[-1] == (8, 8)


def test_ten_bit_in_ten_bit_out(tmp_path):
    src = tmp_path / "in10.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "reference.mkv", "-c:v", "libx265", "-pix_fmt", "yuv420p10le",
                    "-x265-params", "log-level=error:crf=30", src], check=True)
    out = tmp_path / "out10.mp4"
    result = diffqe("enhance", src, out, "--backend", "ort-cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    assert streams(out)[2] == "yuv420p10le"
    assert read_video_luma(out)[0].dtype == np.uint16
    lower = diffqe("enhance", src, tmp_path / "out8.mkv", "--bits", "8")
    assert lower.returncode == 2 and "the input is 10-bit" in lower.stderr and not (tmp_path / "out8.mkv").exists()


@pytest.mark.parametrize("pix_fmt, bits, written", [("yuv420p", 10, "yuv420p10le"), ("yuvj422p", 12, "yuv422p12le"),
                                                    ("yuv444p", 16, "yuv444p16le"), ("gray", 10, "gray10le"),
                                                    ("nv12", 10, "yuv420p10le"), ("yuv420p10le", 10, "yuv420p10le"),
                                                    ("yuv420p", None, "yuv420p"), ("yuva444p12le", None, "yuv444p12le"),
                                                    ("yuva420p", 10, "yuv420p10le"), ("ya8", None, "gray"),
                                                    ("ya16le", 16, "gray16le")])
def test_bits_picks_the_inputs_layout_at_that_depth(pix_fmt, bits, written):
    assert output_pix_fmt({"pix_fmt": pix_fmt}, bits) == written
    if pix_fmt.startswith("yuva"):
        assert output_pix_fmt({"pix_fmt": pix_fmt, "keep_alpha": True}, bits) == written.replace("yuv", "yuva")
    if pix_fmt.startswith("ya"):  # gray with alpha: vspipe's Matroska carries no alpha beside gray
        assert output_pix_fmt({"pix_fmt": pix_fmt, "keep_alpha": True}, bits) == written


def alpha_plane(path, fmt: str = "gray16le", decoder: tuple = ()) -> np.ndarray:
    """PATH's alpha planes as ffmpeg decodes them (DECODER: input options), FMT's samples, frames stacked."""
    raw = subprocess.run(["ffmpeg", "-v", "error", *decoder, "-i", path, "-vf", f"alphaextract,format={fmt}", "-f",
                          "rawvideo", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint16 if "16" in fmt or "10" in fmt else np.uint8).reshape(-1, 192, 320)


def test_an_alpha_channel_is_kept_where_the_encoder_writes_one_and_named_where_it_does_not(tmp_path):
    """A graphic with transparency (ProRes 4444, FFV1): its alpha plane comes out as it went in (ProRes, FFV1 at 10
    bits with --bits 10: fully opaque stays fully opaque, VP9 into WebM with Matroska's AlphaMode flag) while the
    luma is enhanced; x265, which writes no alpha, and a VP9 alpha stream, which the source filter does not decode,
    are named in a warning."""
    ramp = "geq=lum='lum(X,Y)':cb='cb(X,Y)':cr='cr(X,Y)':a='min(X*{peak}/255,{peak})'"
    prores, ffv1 = tmp_path / "graphic.mov", tmp_path / "graphic.mkv"
    for path, fmt, peak, codec in ((prores, "yuva444p10le", 1023, ["prores_ks", "-profile:v", "4"]),
                                   (ffv1, "yuva420p", 255, ["ffv1"])):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=s=320x192:d=0.32,format={fmt},"
                        + ramp.format(peak=peak), "-c:v", *codec, path], check=True)
    kept = diffqe("enhance", prores, tmp_path / "out.mov", "--backend", "ort-cpu", "--quiet", "--codec", "prores_ks",
                  "--no-qp-guard")  # the guard would spare ProRes 4444 (test_source_qp.py): enhanced all the same
    assert kept.returncode == 0 and "warning" not in kept.stderr, kept.stderr
    assert np.array_equal(alpha_plane(tmp_path / "out.mov"), alpha_plane(prores))
    assert len(np.unique(alpha_plane(prores))) > 200, "a ramp, not a constant"
    assert not np.array_equal(read_video_luma(tmp_path / "out.mov"), read_video_luma(prores)), "enhanced"
    deeper = diffqe("enhance", ffv1, tmp_path / "deeper.mkv", "--backend", "ort-cpu", "--quiet", "--lossless",
                    "--bits", "10")
    assert deeper.returncode == 0 and "warning" not in deeper.stderr, deeper.stderr
    assert np.array_equal(alpha_plane(tmp_path / "deeper.mkv", "gray10le"),
                          np.round(alpha_plane(ffv1, "gray") * (1023 / 255)))
    webm = tmp_path / "graphic.webm"
    vp9 = diffqe("enhance", ffv1, webm, "--backend", "ort-cpu", "--quiet", "--codec", "libvpx-vp9", "--crf", "30")
    assert vp9.returncode == 0 and "warning" not in vp9.stderr, vp9.stderr
    flag = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream_tags=alpha_mode", "-of", "csv=p=0", webm],
                          capture_output=True, text=True).stdout
    assert flag.strip() == "1"
    assert np.abs(alpha_plane(webm, "gray", ("-c:v", "libvpx-vp9")).astype(int) - alpha_plane(ffv1, "gray")).max() <= 2
    in_mp4 = diffqe("enhance", ffv1, tmp_path / "graphic.mp4", "--backend", "ort-cpu", "--quiet", "--codec",
                    "libvpx-vp9", "--crf", "30")  # VP9's alpha is a second stream, which MP4 does not hold
    assert in_mp4.returncode == 0 and "which VP8/VP9 keep in .webm or .mkv only" in in_mp4.stderr, in_mp4.stderr
    gray = tmp_path / "graphic_gray.nut"  # gray with alpha (ya8): vspipe's Matroska holds no alpha beside gray
    subprocess.run(["ffmpeg", "-v", "error", "-i", ffv1, "-pix_fmt", "ya8", "-c:v", "ffv1", gray], check=True)
    for source, said in ((prores, "its alpha channel (transparency), which libx265 does not write"),
                         (webm, "a VP8/VP9 alpha stream beside the video"),
                         (gray, "its alpha channel (transparency), which DiffQE keeps beside YUV video only")):
        dropped = diffqe("enhance", source, tmp_path / f"opaque_{source.suffix[1:]}.mkv", "--backend", "ort-cpu",
                         "--quiet", *(["--lossless"] if source == gray else []))
        assert dropped.returncode == 0 and said in dropped.stderr, dropped.stderr
        written = subprocess.run(["ffprobe", "-v", "error", "-show_streams", tmp_path / f"opaque_{source.suffix[1:]}.mkv"],
                                 capture_output=True, text=True).stdout.lower()
        assert "alpha_mode" not in written and not re.search(r"pix_fmt=(yuva|ya)", written), "not marked as alpha"


def test_bits_writes_an_8_bit_input_at_10_bits(tmp_path):
    """--bits 10: the output's luma, a quarter of its code values, is closer to the reference than the decoded
    input; chroma is the input's shifted up; a depth outside 8..16 or below the input's is refused up front."""
    out = tmp_path / "out10.mkv"
    result = diffqe("enhance", SAMPLES / "sample.mp4", out, "--backend", "ort-cpu", "--lossless", "--quiet", "--bits", "10")
    assert result.returncode == 0, result.stderr
    assert streams(out)[2] == "yuv420p10le"
    enhanced, decoded = read_video_luma(out), read_video_luma(SAMPLES / "sample.mp4")
    reference = read_video_luma(SAMPLES / "reference.mkv")
    assert len(enhanced) == 8 and enhanced[0].dtype == np.uint16
    before = np.mean([psnr(d, r) for d, r in zip(decoded, reference)])
    assert np.mean([psnr(e / 4, r) for e, r in zip(enhanced, reference)]) > before
    with av.open(str(out)) as a, av.open(str(SAMPLES / "sample.mp4")) as b:
        fa, fb = next(a.decode(video=0)), next(b.decode(video=0))
        assert np.array_equal(fa.to_ndarray()[fa.height:], fb.to_ndarray()[fb.height:].astype(np.uint16) * 4)
    for depth, said in (("20", "--bits: a depth from 8 to 16"), ("7", "--bits: a depth from 8 to 16")):
        bad = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "bad.mkv", "--bits", depth)
        assert bad.returncode == 2 and said in bad.stderr and not (tmp_path / "bad.mkv").exists()


def test_aspect_ratio_and_field_order_survive(tmp_path):
    """Anamorphic interlaced video (PAL 16:9 as broadcast): vspipe's y4m states neither its pixel shape nor its
    field order, and without them the output plays stretched and is never deinterlaced."""
    src = tmp_path / "pal.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-vf", "setsar=64/45,setfield=tff",
                    "-flags", "+ilme+ildct", "-c:v", "libx264", "-field_order", "tt", src], check=True)

    def tags(path):
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                              "stream=sample_aspect_ratio,field_order", "-of", "csv=p=0", path],
                             capture_output=True, text=True, check=True).stdout
        return out.strip()

    assert tags(src) == "64:45,tt"
    for name, codec in (("out.mkv", "libx265"), ("out.mp4", "libx264")):
        result = diffqe("enhance", src, tmp_path / name, "--backend", "ort-cpu", "--quiet", "--codec", codec)
        assert result.returncode == 0, result.stderr
        assert tags(tmp_path / name) == "64:45,tt", name
    with av.open(str(tmp_path / "out.mp4")) as c:  # x264 coded the fields as fields
        assert next(c.decode(video=0)).interlaced_frame


@pytest.mark.parametrize("name, said, codec", [
    ("out.jpg", "a .jpg file does not hold hevc video (written, it reads back as mjpeg)", "libx265"),
    ("out.avi", "a .avi file does not hold hevc video", "libx265"),
    ("out", "give the output a video container's suffix", "libx265"),
    ("out.xyz", "ffmpeg knows no file format by the output's suffix", "libx265"),
    ("out.mkv", "choose another --codec", "a64multi")])
def test_an_output_that_cannot_hold_the_video_is_refused_before_the_model_runs(tmp_path, name, said, codec):
    """ffmpeg writes HEVC into an image name or AVI without complaint, and neither reads back as video; the
    Commodore 64's a64multi goes into the Matroska segments, but no container of the join takes it."""
    result = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / name, "--backend", "ort-cpu", "--codec", codec)
    assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "frames" not in result.stderr, "refused before vspipe ran"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("degrees", [90, 180])
def test_a_phones_rotated_video_comes_out_upright(tmp_path, degrees):
    """Phones store frames sideways with a display matrix; vspipe's y4m carries none, so the frames must be turned
    before they are written: at strength 0 the output is what ffmpeg itself shows of the input."""
    src = tmp_path / "phone.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-c", "copy", "-metadata:s:v",
                    f"rotate={degrees}", src], check=True)
    out = tmp_path / "out.mkv"
    result = diffqe("enhance", src, out, "--backend", "ort-cpu", "--lossless", "--strength", "0", "--quiet")
    assert result.returncode == 0, result.stderr

    def shown(path):
        return subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                              capture_output=True, check=True).stdout

    assert streams(out)[0] == {"video": "ffv1"} and shown(out) == shown(src)
    with av.open(str(out)) as c:  # stored upright: players that ignore display matrices show it right too
        assert c.streams.video[0].height == (320 if degrees == 90 else 192)


def test_timecode_video_tags_and_cover_picture_survive(tmp_path):
    """A camera's timecode, the video stream's language, title and default flag and a cover picture go along
    (into MP4 the timecode as a QuickTime timecode track); Matroska's statistics of the input's coded video do
    not (they describe another video). A container that cannot hold the cover says so."""
    cover = tmp_path / "cover.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48", "-frames:v", "1", cover], check=True)
    tags = {"timecode": "01:02:03:04", "language": "jpn", "title": "Camera A", "BPS-eng": "1234",
            "NUMBER_OF_FRAMES": "8"}
    src = tmp_path / "camera.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-c", "copy", "-attach", cover,
                    "-metadata:s:t", "mimetype=image/png",
                    *[a for k, v in tags.items() for a in ("-metadata:s:v:0", f"{k}={v}")], src], check=True)

    def probe(path):
        info = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", path], capture_output=True,
                              text=True, check=True).stdout
        video, *others = json.loads(info)["streams"]
        pictures = [s["index"] for s in others if s["disposition"]["attached_pic"]]
        with av.open(str(path)) as c:
            pictures = [bytes(next(c.demux(c.streams[i]))) for i in pictures]
        return ({k.lower(): v for k, v in video.get("tags", {}).items()} | {"default": video["disposition"]["default"]},
                pictures, [s.get("codec_tag_string") for s in others if s["codec_type"] == "data"])

    for suffix, timecode_track in ((".mkv", []), (".mp4", ["tmcd"])):
        out = tmp_path / f"out{suffix}"
        result = diffqe("enhance", src, out, "--backend", "ort-cpu", "--preset", "ultrafast", "--quiet")
        assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
        video_tags, pictures, data = probe(out)
        assert {k: video_tags.get(k) for k in ("timecode", "language", "default")} == {
            "timecode": "01:02:03:04", "language": "jpn", "default": 1}  # default: Matroska's default-track flag
        assert "bps-eng" not in video_tags and "number_of_frames" not in video_tags
        assert video_tags.get("title") == ("Camera A" if suffix == ".mkv" else None)  # MP4 has no track titles
        assert pictures == [cover.read_bytes()] and data == timecode_track
        # the enhanced HEVC takes Apple's sample entry, the cover picture beside it keeps its own
        assert probe_video(out)["codec_tag_string"] == ("hvc1" if suffix == ".mp4" else "[0][0][0][0]")
    result = diffqe("enhance", src, tmp_path / "out.ts", "--backend", "ort-cpu", "--preset", "ultrafast", "--quiet")
    assert result.returncode == 0 and "a cover picture that a .ts file does not hold" in result.stderr, result.stderr


def test_hdr10_metadata_and_colour_tags_survive(tmp_path):
    """A PQ / BT.2020 10-bit source with mastering-display and content-light-level SEI: the enhanced HEVC carries
    the same values (a display tone-maps by them); FFV1, which cannot carry them, says so."""
    src = tmp_path / "hdr.mkv"
    hdr = ("master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400:"
           "colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc")
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-pix_fmt", "yuv420p10le", "-c:v", "libx265",
                    "-preset", "ultrafast", "-x265-params", f"log-level=error:{hdr}", "-color_primaries", "bt2020",
                    "-color_trc", "smpte2084", "-colorspace", "bt2020nc", src], check=True)

    def metadata(path):
        from diffqe.plugin.hdr import LIGHT_LEVEL, MASTERING, side_data

        tags = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=color_primaries,color_transfer,"
                               "color_space,pix_fmt", "-of", "csv=p=0", path], capture_output=True, text=True).stdout
        return tags.strip(), [d for d in side_data(path, {}) if d["side_data_type"] in (MASTERING, LIGHT_LEVEL)]

    tags, side = metadata(src)
    assert tags == "yuv420p10le,bt2020nc,smpte2084,bt2020" and len(side) == 2
    result = diffqe("enhance", src, tmp_path / "out.mkv", "--backend", "ort-cpu", "--quiet")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    assert metadata(tmp_path / "out.mkv") == (tags, side)
    lossless = diffqe("enhance", src, tmp_path / "ffv1.mkv", "--backend", "ort-cpu", "--quiet", "--lossless")
    assert lossless.returncode == 0 and "only --codec libx265 writes" in lossless.stderr


def with_dolby_vision(src, dst, profile: int, compatibility: int) -> None:
    """SRC (an MP4 of one HEVC track, its moov after the media) with a Dolby Vision configuration box (dvcC) in the
    track's sample entry, as a Dolby Vision file carries it (no RPUs: the filter never reads them)."""
    data = bytearray(src.read_bytes())
    fields = (profile << 9) | (6 << 3) | (1 << 2) | 1  # profile (7 bits), level 6, RPU present, no EL, BL present
    payload = bytes([1, 0]) + fields.to_bytes(2, "big") + bytes([compatibility << 4]) + bytes(19)
    box = (8 + len(payload)).to_bytes(4, "big") + b"dvcC" + payload
    parents, i, end = [], 0, len(data)
    while i < end:  # down to the sample entry, keeping each enclosing box's offset
        size, kind = int.from_bytes(data[i:i + 4], "big"), bytes(data[i + 4:i + 8])
        if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"hvc1"):
            parents.append(i)
            if kind == b"hvc1":
                break
            i, end = i + (16 if kind == b"stsd" else 8), i + size
        else:
            i += size
    entry_end = parents[-1] + int.from_bytes(data[parents[-1]:parents[-1] + 4], "big")
    data[entry_end:entry_end] = box
    for p in parents:
        data[p:p + 4] = (int.from_bytes(data[p:p + 4], "big") + len(box)).to_bytes(4, "big")
    dst.write_bytes(bytes(data))


def test_dolby_vision_profile_5_is_refused_and_a_compatible_base_layer_enhanced_with_a_warning(tmp_path):
    """Profile 5's pictures are in Dolby's IPTPQc2 colour space, right only with the Dolby Vision metadata that a
    re-encode drops: refused before anything runs. Profile 8.1's base layer is HDR10: enhanced, and said so."""
    for profile, compatibility in ((5, 0), (8, 1)):
        with_dolby_vision(SAMPLES / "sample.mp4", tmp_path / f"dv{profile}.mp4", profile, compatibility)
        side = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream_side_data=dv_profile", "-of",
                               "csv=p=0", tmp_path / f"dv{profile}.mp4"], capture_output=True, text=True).stdout
        assert side.split() == [str(profile)], "ffprobe reads the record"
    refused = diffqe("enhance", tmp_path / "dv5.mp4", tmp_path / "out5.mkv", "--backend", "ort-cpu")
    assert refused.returncode == 2 and "is Dolby Vision profile 5" in refused.stderr
    assert "frames" not in refused.stderr and not (tmp_path / "out5.mkv").exists()
    done = diffqe("enhance", tmp_path / "dv8.mp4", tmp_path / "out8.mkv", "--backend", "ort-cpu", "--quiet")
    assert done.returncode == 0 and "out8.mkv is its HDR10 base layer" in done.stderr, done.stderr


def with_t35_sei(stream: bytes, payload: bytes) -> bytes:
    """An Annex B HEVC STREAM with a prefix SEI of registered user data (ITU-T T.35) PAYLOAD before each picture,
    as broadcast encoders write closed captions and HDR10+ metadata."""
    def escaped(rbsp: bytes) -> bytes:  # emulation prevention: no 00 00 0x (x <= 3) inside a NAL unit
        out, zeros = bytearray(), 0
        for b in rbsp:
            if zeros >= 2 and b <= 3:
                out.append(3)
                zeros = 0
            out.append(b)
            zeros = zeros + 1 if b == 0 else 0
        return bytes(out)

    sei = b"\x4e\x01" + escaped(bytes([4, len(payload)]) + payload + b"\x80")  # PREFIX_SEI, payload type 4
    out = bytearray()
    for nal in (n.rstrip(b"\0") for n in re.split(b"\x00\x00\x01", stream) if n.strip(b"\0")):
        if (nal[0] >> 1) & 0x3F < 32 and nal[2] & 0x80:  # a picture's first slice
            out += b"\0\0\0\1" + sei
        out += b"\0\0\0\1" + nal
    return bytes(out)


def bit_fields(*fields: tuple[int, int]) -> bytes:
    """(value, width in bits) fields, packed and zero-padded to whole bytes."""
    text = "".join(format(value, f"0{width}b") for value, width in fields)
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big")


def test_closed_captions_and_hdr10_plus_in_the_video_are_named_in_a_warning(tmp_path):
    """Broadcast HEVC carries CEA-608/708 captions and HDR10+ metadata inside the video stream, where a re-encode
    from VapourSynth's frames cannot keep them: each is named, with what it leaves; a plain input warns of none."""
    annex_b = subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-c", "copy", "-bsf:v",
                              "hevc_mp4toannexb", "-f", "hevc", "-"], capture_output=True, check=True).stdout
    captions = b"\xb5\x00\x31GA94\x03" + bytes([0x41, 0xFF, 0xFC, 0x94, 0x2C, 0xFF])  # ATSC A/53: one cc_data pair
    hdr10_plus = b"\xb5\x00\x3c\x00\x01\x04" + bit_fields(  # SMPTE ST 2094-40, one window, no tone mapping
        (1, 8), (1, 2), (400, 27), (0, 1), (1000, 17), (1000, 17), (1000, 17), (100, 17), (1, 4), (50, 7), (100, 17),
        (0, 10), (0, 1), (0, 1), (0, 1))
    for name, payload, said in (("cc", captions, "its video carries closed captions (CEA-608/708"),
                                ("hdr10plus", hdr10_plus, "its video carries HDR10+ dynamic metadata")):
        src = tmp_path / f"{name}.hevc"
        src.write_bytes(with_t35_sei(annex_b, payload))
        result = diffqe("enhance", src, tmp_path / f"{name}.mkv", "--backend", "ort-cpu", "--quiet")
        assert result.returncode == 0 and said in result.stderr, result.stderr
    plain = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "plain.mkv", "--backend", "ort-cpu", "--quiet")
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr


def test_a_broadcast_multiplex_keeps_the_sound_of_the_enhanced_videos_own_program(tmp_path):
    """A transport stream of two programs (a recorded multiplex): the first video is enhanced, with its own
    program's audio, not the other program's; what is left behind is named."""
    src = tmp_path / "mux.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-f", "lavfi", "-i", "sine=f=440:d=0.32",
                    "-f", "lavfi", "-i", "testsrc2=s=320x192:d=0.32", "-f", "lavfi", "-i", "sine=f=880:d=0.32",
                    "-map", "0:v", "-map", "1:a", "-map", "2:v", "-map", "3:a", "-c:v", "libx265", "-preset",
                    "ultrafast", "-x265-params", "log-level=error", "-c:a", "aac", "-program", "title=One:st=0:st=1",
                    "-program", "title=Two:st=2:st=3", src], check=True)

    def sound(path, index):  # decoded: the transport stream's AAC has ADTS headers, Matroska's none
        with av.open(str(path)) as c:
            return np.concatenate([f.to_ndarray().ravel() for f in c.decode(c.streams[index])])

    out = tmp_path / "out.mkv"
    result = diffqe("enhance", src, out, "--backend", "ort-cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"], "one program's sound, not both"
    assert np.array_equal(sound(out, 1), sound(src, 1))
    assert "stream #3 (audio, aac): of another program than the enhanced video's (1)" in result.stderr


def test_relative_paths_and_the_mirror_ensemble(tmp_path):
    """vspipe runs the generated script from a temporary folder: relative paths must still find the input and
    the weights.  Relative names that ffmpeg would take for a protocol ("cam:1") or an option ("-out") are
    files.  --ensemble reaches the filter: its output differs from a single pass."""
    (tmp_path / "cam:1.mp4").symlink_to(SAMPLES / "sample.mp4")
    (tmp_path / "w").mkdir()
    for suffix in (".safetensors", ".json"):
        (tmp_path / "w" / f"diffqe{suffix}").symlink_to(SHIPPED.with_suffix(suffix))
    for k in (1, 2):
        result = diffqe("enhance", "cam:1.mp4", f"./-out{k}.mkv", "--backend", "ort-cpu", "--lossless", "--quiet",
                        "--checkpoint", "w/diffqe", "--ensemble", k, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    single, mirrored = (read_video_luma(tmp_path / f"-out{k}.mkv") for k in (1, 2))
    assert len(single) == len(mirrored) == 8
    assert any(not np.array_equal(a, b) for a, b in zip(single, mirrored))


def test_temporal_stabilisation_reaches_the_filter(tmp_path):
    """A static scene (the sample's photograph held for 8 frames, x265 random-access at CRF 32): each frame alone
    (--temporal 0), the output moves from frame to frame more than the decoded input; by default a good part of
    that excess goes (docs/results.md measures it)."""
    still = tmp_path / "still.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "reference.mkv", "-vf", r"select=eq(n\,5),loop=7:1:0",
                    "-c:v", "libx265", "-x265-params", "log-level=error:crf=32", still], check=True)
    for k in (0, 2):
        result = diffqe("enhance", still, tmp_path / f"t{k}.mkv", "--backend", "ort-cpu", "--lossless", "--quiet",
                        *(["--temporal", k] if k == 0 else []))
        assert result.returncode == 0, result.stderr
    moved_in = frame_change(np.stack(read_video_luma(still))).mean()
    per_frame, stabilised = (frame_change(np.stack(read_video_luma(tmp_path / f"t{k}.mkv"))).mean() for k in (0, 2))
    assert moved_in > 0 and per_frame > moved_in and stabilised < per_frame - (per_frame - moved_in) / 3
    bad = diffqe("enhance", still, tmp_path / "bad.mkv", "--temporal", "-1")
    assert bad.returncode == 2 and "--temporal" in bad.stderr and not (tmp_path / "bad.mkv").exists()


def test_strength_reaches_the_filter(tmp_path):
    """--strength 0 leaves the luma as decoded (lossless output); a strength outside 0..2 is refused up front."""
    out = tmp_path / "s0.mkv"
    result = diffqe("enhance", SAMPLES / "sample.mp4", out, "--backend", "ort-cpu", "--lossless", "--quiet",
                    "--strength", "0")
    assert result.returncode == 0, result.stderr
    enhanced, decoded = read_video_luma(out), read_video_luma(SAMPLES / "sample.mp4")
    assert len(enhanced) == 8 and all(np.array_equal(a, b) for a, b in zip(enhanced, decoded))
    bad = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "bad.mkv", "--strength", "3")
    assert bad.returncode == 2 and "--strength" in bad.stderr and not (tmp_path / "bad.mkv").exists()


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("a file where the output's folder would be")
    result = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "file" / "out.mkv", "--backend", "ort-cpu")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert str(tmp_path / "file") in result.stderr


@pytest.mark.parametrize("kind", ["missing", "corrupt", "same", "rgb", "audio-only", "folder"])
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, kind):
    src = tmp_path / "in.mp4"
    if kind == "folder":  # a folder of videos: diffqe batch's job
        src.mkdir()
        shutil.copy(SAMPLES / "sample.mp4", src)
    if kind == "rgb":  # a real video without luma: refused with the ffmpeg command that converts it
        subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "reference.mkv", "-frames:v", "2", "-c:v", "ffv1",
                        "-pix_fmt", "bgr0", "-f", "matroska", src], check=True)
    if kind == "audio-only":
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.2", "-f", "mp4", src], check=True)
    if kind == "corrupt":
        src.write_bytes((SAMPLES / "sample.mp4").read_bytes()[:3000])
    if kind == "same":
        shutil.copy(SAMPLES / "sample.mp4", src)
    out = src if kind == "same" else tmp_path / "out.mkv"
    before = src.read_bytes() if src.is_file() else None
    result = diffqe("enhance", src, out, "--backend", "ort-cpu")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert {"rgb": "RGB video (bgr0)", "audio-only": "has no video stream", "missing": "no such file",
            "corrupt": "not a readable video", "same": "must not be the input",
            "folder": f"{src} is a folder; diffqe enhance takes one video (diffqe batch"}[kind] in result.stderr
    assert (src.read_bytes() if src.is_file() else None) == before, "the input is never touched"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["in.mp4"] if src.exists() else [])


def test_a_frame_that_does_not_fit_in_memory_is_a_clear_error_that_tiles_fix(tmp_path):
    """A real allocation failure: a 2160p frame under a 6 GiB address-space limit (ONNX Runtime's whole-frame
    decoder wants 1 GB per activation); the error names the frame, the backend and the fix, which works."""
    src = tmp_path / "uhd.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-frames:v", "1", "-vf", "scale=3840:2160",
                    "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", src], check=True)
    limit = 6 << 30

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([shutil.which("diffqe"), "enhance", src, tmp_path / "out.mkv", "--backend", "ort-cpu",
                               "--temporal", "0", "--quiet", *extra], capture_output=True, text=True, timeout=600,
                              env=os.environ | {"MALLOC_ARENA_MAX": "2"},  # fewer reserved arenas: less per core
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))

    whole = run()
    assert whole.returncode == 2 and whole.stderr.startswith("error: ") and "Traceback" not in whole.stderr
    assert "frame 0 (3840x2160)" in whole.stderr and "ran out of memory" in whole.stderr
    assert "--tile 512" in whole.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["uhd.mkv"]
    tiled = run("--tile", "512")
    assert tiled.returncode == 0, tiled.stderr
    assert len(read_video_luma(tmp_path / "out.mkv")) == 1


def test_a_job_killed_midway_resumes_from_its_complete_segments_with_the_same_frames(tmp_path):
    """SIGKILL to the whole job (a node that dies) after two segments of five frames; the same command again
    starts at a segment boundary, without indexing the input again, and the joined video equals an uninterrupted
    run's, frame for frame."""
    src = tmp_path / "in.mkv"  # 24 frames: the sample three times
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-vf", "loop=loop=2:size=8:start=0",
                    "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", src], check=True)
    job = ["enhance", src, tmp_path / "out.mkv", "--backend", "ort-cpu", "--lossless", "--segment-seconds", "0.2",
           "--quiet"]
    assert diffqe("enhance", src, tmp_path / "whole.mkv", *job[3:]).returncode == 0
    work = tmp_path / ".out.partial.mkv.d"
    first = subprocess.Popen([shutil.which("diffqe"), *map(str, job)], stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while sum(len(p.read_text().splitlines()) for p in work.glob("run*.csv")) < 2:
        assert first.poll() is None and time.monotonic() < deadline, "the job ends before its second segment"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "out.mkv").exists()
    again = diffqe(*job[:-1], "--progress", "json")
    assert again.returncode == 0, again.stderr
    resumed = int(re.search(r"resuming from frame (\d+)", again.stderr).group(1))
    assert resumed in (10, 15, 20)
    assert '"stage": "index"' not in again.stderr, "the source's index is kept with the segments"
    with av.open(str(tmp_path / "out.mkv")) as a, av.open(str(tmp_path / "whole.mkv")) as b:
        ours, theirs = ([f.to_ndarray() for f in c.decode(video=0)] for c in (a, b))
    assert len(ours) == len(theirs) == 24 and all(np.array_equal(x, y) for x, y in zip(ours, theirs))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv", "whole.mkv"]


def test_a_second_job_writing_the_same_output_is_refused_and_the_first_completes(tmp_path):
    """Two jobs on one output (a farm that started a file twice) would resume from each other's segments and
    delete them; the second is refused at once and leaves the first's folder alone.  The first is paused
    while the second tries, so that no machine is fast enough to finish it first."""
    src = tmp_path / "in.mkv"  # 24 frames: the sample three times
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-vf", "loop=loop=2:size=8:start=0",
                    "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", src], check=True)
    job = ["enhance", src, tmp_path / "out.mkv", "--backend", "ort-cpu", "--lossless", "--segment-seconds", "0.2",
           "--quiet"]
    first = subprocess.Popen([shutil.which("diffqe"), *map(str, job)], stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    work, deadline = tmp_path / ".out.partial.mkv.d", time.monotonic() + 300
    while not list(work.glob("run*.csv")):  # the first job is encoding
        assert first.poll() is None and time.monotonic() < deadline, "the first job ends before it encodes"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = diffqe(*job)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 2 and "is being written by another diffqe enhance" in second.stderr, second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert len(read_video_luma(tmp_path / "out.mkv")) == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv"]


def test_a_file_system_without_locks_runs_the_job_and_says_what_is_unguarded(tmp_path, monkeypatch, capsys):
    """Some network and FUSE mounts refuse flock (EOPNOTSUPP, ENOLCK): the job runs there, with a warning, rather
    than failing on every file of a farm's share. (The refusal is simulated: no such mount here.)"""
    import errno
    import fcntl

    from diffqe.plugin.segments import Segments

    def refuse(fd, operation):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(fcntl, "flock", refuse)
    segments, resumed = Segments.open(tmp_path / "work", {"job": 1}, 25)
    assert segments.folder == tmp_path / "work" and not resumed
    assert "cannot be locked on its file system (Operation not supported)" in capsys.readouterr().err


def test_a_variable_frame_rate_input_keeps_its_frame_times_and_audio_sync(tmp_path):
    """Frames 0.04 s apart, then 0.1 s (a phone that slowed down), video starting 23 ms after the audio: vspipe's
    y4m has one constant rate, yet each output frame shows at its input frame's time (to Matroska's
    millisecond) and the audio stays where it was, across segments, into .mkv and .mp4."""
    src = tmp_path / "vfr.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-f", "lavfi", "-i", "sine=duration=2",
                    "-filter_complex", "[0:v]loop=loop=2:size=8:start=0,"
                    "setpts='if(lt(N,12),N*0.04,0.48+(N-12)*0.1)/TB'[v]", "-map", "[v]", "-map", "1:a",
                    "-fps_mode", "passthrough", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                    "log-level=error", "-c:a", "aac", "-shortest", src], check=True)

    def timeline(path):
        with av.open(str(path)) as c:
            return [f.time for f in c.decode(video=0)], c.streams.audio[0].start_time * c.streams.audio[0].time_base

    frames, audio = timeline(src)
    assert len(frames) == 24 and frames[13] - frames[12] > 0.07, "the input is variable-rate"
    for out in (tmp_path / "out 100%.mkv", tmp_path / "out.mp4"):  # '%' is special to the segment muxer
        result = diffqe("enhance", src, out, "--backend", "ort-cpu", "--segment-seconds", "0.2", "--quiet")
        assert result.returncode == 0, result.stderr
        times, start = timeline(out)
        assert len(times) == 24 and max(abs(a - b) for a, b in zip(times, frames)) < 0.0015
        assert abs(start - audio) < 0.0015


def test_a_broadcast_recording_cut_mid_gop_stays_in_sync_with_its_audio(tmp_path):
    """A transport stream cut at an arbitrary byte (a recording that began mid-broadcast): its first pictures
    cannot be decoded and the source filter drops them, so the packets count more frames than are enhanced.
    Each enhanced frame still shows at its own time against the audio, as the decoder shows the input."""
    whole = tmp_path / "whole.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "3", "-i", SAMPLES / "sample.mp4", "-f", "lavfi", "-i",
                    "sine=duration=1.28", "-map", "0:v", "-map", "1:a", "-c:v", "libx265", "-x265-params",
                    "log-level=error:keyint=8:bframes=3:open-gop=1", "-c:a", "aac", "-shortest", whole], check=True)
    data = whole.read_bytes()
    src = tmp_path / "cut.ts"
    src.write_bytes(data[len(data) // 3 // 188 * 188:])  # whole transport packets, as a recorder writes them

    def timeline(path):
        with av.open(str(path)) as c:
            video = [f.time for f in c.decode(video=0)]
        with av.open(str(path)) as c:
            audio = c.streams.audio[0]
            first = next(p.pts for p in c.demux(audio) if p.pts is not None) * audio.time_base
        return [t - first for t in video]  # frame times against the audio's start

    shown = timeline(src)
    with av.open(str(src)) as c:
        assert len(shown) < sum(1 for p in c.demux(video=0) if p.size), "the cut leaves packets no frame comes from"
    result = diffqe("enhance", src, tmp_path / "out.mkv", "--backend", "ort-cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    enhanced = timeline(tmp_path / "out.mkv")
    assert len(enhanced) == len(shown) and max(abs(a - b) for a, b in zip(enhanced, shown)) < 0.0015
    assert verify(src, tmp_path / "out.mkv") is None, "diffqe batch counts it done"


@pytest.fixture
def small_disk(tmp_path):
    """A file system of its own, sized by the test (a tmpfs: mounting one needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()

    def size(kib: int) -> None:
        options = f"size={kib}k" + (",remount" if os.path.ismount(disk) else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", disk], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"a full disk is simulated with a small tmpfs, which this user cannot mount: {done.stderr}")

    yield disk, size
    if os.path.ismount(disk):
        subprocess.run(["umount", disk], check=True)


def test_a_full_disk_is_a_clear_error_and_the_same_command_resumes_once_there_is_room(tmp_path, small_disk):
    """ffmpeg 5 reports a failed write of a file's end and exits 0: a full disk while the container is tried,
    while the segments are encoded or while they are joined into OUT must fail the job with that reason (no
    truncated OUT under its final name), keep what is complete and resume once there is room."""
    whole = tmp_path / "whole.mkv"
    job = ["--backend", "ort-cpu", "--lossless", "--quiet"]
    assert diffqe("enhance", SAMPLES / "sample.mp4", whole, *job).returncode == 0
    kib = whole.stat().st_size >> 10  # one segment, the joined video and OUT each take about this much
    disk, size = small_disk
    out = disk / "out.mkv"
    # full while the container is tried on one frame; while encoding; while joining
    for room, kept in ((4, 0), (kib // 4, 0), (kib * 5 // 2, 1)):
        size(room)
        failed = diffqe("enhance", SAMPLES / "sample.mp4", out, *job)
        assert failed.returncode == 2 and failed.stderr.startswith(("error: ", "kept")), failed.stderr
        assert "No space left on device" in failed.stderr and "the disk that holds the output is full" in failed.stderr
        assert "Traceback" not in failed.stderr and [p.name for p in disk.iterdir()] == [".out.partial.mkv.d"] * kept
    size(kib * 8)
    again = diffqe("enhance", SAMPLES / "sample.mp4", out, *job)
    assert again.returncode == 0 and "joining 1 segments kept" in again.stderr, again.stderr
    ours, theirs = read_video_luma(out), read_video_luma(whole)
    assert len(ours) == len(theirs) == 8 and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    assert [p.name for p in disk.iterdir()] == ["out.mkv"]


def test_segments_of_another_job_are_not_resumed(tmp_path):
    from diffqe.plugin.segments import Segments, job_identity

    src, weights = tmp_path / "in.mkv", tmp_path / "w.safetensors"
    src.write_bytes(b"video")
    weights.write_bytes(b"weights")
    work = tmp_path / ".out.partial.mkv.d"
    segments, resumed = Segments.open(work, job_identity(src, [weights], {"strength": 1.0}), 5)
    assert not resumed and work.is_dir()
    (work / "stale").write_text("from the first job")
    assert Segments.open(work, job_identity(src, [weights], {"strength": 1.0}), 5)[0].folder == work
    assert (work / "stale").exists(), "the same job keeps its folder"
    Segments.open(work, job_identity(src, [weights], {"strength": 0.5}), 5)
    assert not (work / "stale").exists(), "other options: started afresh"
    (work / "stale").write_text("from the second job")
    fusion = tmp_path / "fusion.safetensors"
    fusion.write_bytes(b"fusion weights")
    Segments.open(work, job_identity(src, [weights, fusion], {"strength": 0.5}), 5)
    assert not (work / "stale").exists(), "weights read besides the model's (the fusion's): started afresh"


def test_vspipe_reason_is_the_exception_that_stopped_the_script():
    from diffqe.plugin.progress import vspipe_reason

    log = ("Information: VideoSource track #0 index progress 100%\nError: Failed to retrieve frame 0 with error: \n"
           "Traceback (most recent call last):\n  File \"filter.py\", line 1, in process\n    y = run()\n"
           "onnxruntime.capi.onnxruntime_pybind11_state.Fail: [ONNXRuntimeError] : 1 : FAIL : Conv failed\n\n\n"
           "Output 0 frames in 2.47 seconds (0.00 fps)\n")
    assert vspipe_reason(log) == "[ONNXRuntimeError] : 1 : FAIL : Conv failed"
    assert vspipe_reason("Error: Failed to open the script\n") == "Failed to open the script"
    assert vspipe_reason("Output 3 frames in 1 seconds\n") is None


def test_mp4_output_takes_text_subtitles_and_refuses_what_it_cannot_hold(tmp_path):
    """SubRip from an MKV becomes mov_text in an MP4; PCM audio, which MP4 cannot hold, fails with the fix; a font
    attachment, which it cannot hold either, is named in a warning."""
    (tmp_path / "s.srt").write_text("1\n00:00:00,000 --> 00:00:00,300\nhello\n")
    src = tmp_path / "in.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "sample.mp4", "-i", tmp_path / "s.srt", "-f", "lavfi",
                    "-i", "anullsrc=r=8000:cl=mono", "-t", "0.32", "-map", "0:v", "-map", "1", "-map", "2",
                    "-c:v", "copy", "-c:s", "srt", "-c:a", "pcm_s16le", src], check=True)
    bad = diffqe("enhance", src, tmp_path / "out.mp4", "--backend", "ort-cpu", "--quiet")
    assert bad.returncode == 2 and "pcm_s16le" in bad.stderr and "write .mkv" in bad.stderr
    assert "Traceback" not in bad.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "s.srt"]
    speech = tmp_path / "speech.mkv"  # the same with AAC audio, which MP4 holds, and a font, which it does not
    (tmp_path / "subtitles.ttf").write_bytes(b"a font file")
    subprocess.run(["ffmpeg", "-v", "error", "-i", src, "-map", "0", "-c", "copy", "-c:a", "aac", "-attach",
                    tmp_path / "subtitles.ttf", "-metadata:s:t", "mimetype=font/ttf", speech], check=True)
    good = diffqe("enhance", speech, tmp_path / "out.mp4", "--backend", "ort-cpu", "--quiet")
    assert good.returncode == 0, good.stderr
    assert streams(tmp_path / "out.mp4")[0] == {"video": "hevc", "audio": "aac", "subtitle": "mov_text"}
    assert "the attachment subtitles.ttf (a subtitle font, say), which only .mkv holds" in good.stderr


@pytest.mark.parametrize("option, said", [(("--crf", "70"), "Valid quality based range"),
                                          (("--preset", "fastest"), "Error setting preset"),
                                          (("--codec", "libnothing"), "Unknown encoder 'libnothing'")])
def test_encoder_options_are_checked_before_the_model_runs(tmp_path, option, said):
    """A wrong --crf, --preset or --codec fails at once with the encoder's own words, not after the frames."""
    result = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "out.mkv", "--backend", "ort-cpu", *option)
    assert result.returncode == 2 and result.stderr.startswith("error: ffmpeg cannot encode the output with")
    assert said in result.stderr and "Traceback" not in result.stderr and "frames" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def x265_settings(path) -> str:
    """The options string x265 writes into its stream (an SEI message): what the encoder was told."""
    data = path.read_bytes()
    return data[data.index(b"options: "):].split(b"\x00")[0].decode(errors="replace")


def test_encoder_options_reach_the_encoder_and_what_would_break_the_job_is_refused(tmp_path):
    """--encoder-options: a bitrate replaces the default CRF, x265 parameters join DiffQE's own, -movflags reaches
    the MP4's muxer (its index before the media); an option the encoder would pass over, one that DiffQE sets
    itself, or one for another stream fails before the model runs. HEVC in MP4 gets the 'hvc1' sample entry that
    Apple's players need (ffmpeg's own default is 'hev1')."""
    out = tmp_path / "out.mp4"
    done = diffqe("enhance", SAMPLES / "sample.mp4", out, "--backend", "ort-cpu", "--quiet",
                  "--encoder-options", "-b:v 40k -x265-params aq-mode=3 -movflags +faststart")
    assert done.returncode == 0, done.stderr
    settings = x265_settings(out).split()
    assert {"rc=abr", "bitrate=40", "aq-mode=3", "log-level=0"} <= set(settings), settings
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    assert probe_video(out)["codec_tag_string"] == "hvc1"
    for options, said in (("-x265-params bogus=1", "Unknown option: bogus"),
                          ("-x264-params keyint=10", "has not been used for any stream"),
                          ("-tune grainy", "Error setting preset/tune"), ("-c:v libx264", "-c:v: use --codec"),
                          ("-b:a 96k", "the input's other streams are copied"), ("-pass 1", "two passes cannot run"),
                          ("-vf scale=64:64", "the output has the input's frames")):
        bad = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "bad.mkv", "--backend", "ort-cpu",
                     "--encoder-options", options)
        assert bad.returncode == 2 and said in bad.stderr and "Traceback" not in bad.stderr, (options, bad.stderr)
    bad = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "bad.mkv", "--crf", "20", "--encoder-options", "-qp 30")
    assert bad.returncode == 2 and "give one of them" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_each_encoder_gets_its_own_defaults_and_only_the_options_it_has(tmp_path):
    """SVT-AV1, whose presets are numbers, runs with its own preset (x265's "medium" stopped it) and DiffQE's CRF;
    MPEG-2, which has no CRF, is warned about its default rate; --crf for ProRes, which has none, is refused
    (ffmpeg would pass it over)."""
    av1 = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "av1.mkv", "--backend", "ort-cpu", "--quiet",
                 "--codec", "libsvtav1", "--temporal", "0")
    assert av1.returncode == 0, av1.stderr
    assert probe_video(tmp_path / "av1.mkv")["codec_name"] == "av1" and "warning" not in av1.stderr
    mpeg2 = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "mpeg2.mkv", "--backend", "ort-cpu", "--quiet",
                   "--codec", "mpeg2video", "--temporal", "0")
    assert mpeg2.returncode == 0 and "warning: mpeg2video has no CRF: it codes at its own default rate" in mpeg2.stderr
    quiet = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "mpeg2q.mkv", "--backend", "ort-cpu", "--quiet",
                   "--codec", "mpeg2video", "--temporal", "0", "--encoder-options", "-qscale:v 2")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
    prores = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "prores.mkv", "--codec", "prores_ks", "--crf", "20")
    assert prores.returncode == 2 and "prores_ks has no -crf option" in prores.stderr


def test_dnxhd_writes_dnxhr_at_any_size_into_quicktime_and_mxf(tmp_path):
    """--codec dnxhd: DNxHD's own profiles take only broadcast sizes (the sample is 320x192), so DNxHR HQ is
    written (HQX at --bits 10) unless the user names a profile; the segments are joined through QuickTime
    (PyAV's Matroska muxer does not take DNxHD) and MXF gets the source's frame rate (not the join's time base)."""
    source = read_video_luma(SAMPLES / "sample.mp4")
    rate = probe_video(SAMPLES / "sample.mp4")["avg_frame_rate"]
    for name, flags, profile, pix_fmt in (("hq.mov", [], "DNXHR HQ", "yuv422p"),
                                          ("hqx.mxf", ["--bits", "10"], "DNXHR HQX", "yuv422p10le"),
                                          ("sq.mxf", ["--encoder-options", "-profile:v dnxhr_sq"], "DNXHR SQ", "yuv422p")):
        done = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / name, "--backend", "ort-cpu", "--quiet",
                      "--codec", "dnxhd", *flags)
        assert done.returncode == 0, done.stderr
        video = probe_video(tmp_path / name)
        assert (video["profile"], video["pix_fmt"], video["avg_frame_rate"]) == (profile, pix_fmt, rate), video
        written = read_video_luma(tmp_path / name)
        assert len(written) == len(source) and written[0].shape == source[0].shape


def test_lossless_capture_codecs_that_pyavs_matroska_refuses_are_joined_through_nut(tmp_path):
    """UT Video and HuffYUV (lossless capture codecs): the segments are joined through NUT, keeping UT Video's
    FourCC (its plane layout: without it the stream decodes as RGBA and fails), and the output holds FFV1's
    frames bit for bit; AVI gets the source's frame rate as its time base (not half a frame's time, which it
    would fill with empty frames).  H.264 into AVI too (start codes, which AVI holds)."""
    rate = probe_video(SAMPLES / "sample.mp4")["avg_frame_rate"]
    outputs = {name: tmp_path / name for name in ("ffv1.mkv", "utvideo.mkv", "huffyuv.avi", "libx264.avi")}
    for name, out in outputs.items():
        codec = ["--lossless"] if name == "ffv1.mkv" else ["--codec", out.stem]
        done = diffqe("enhance", SAMPLES / "sample.mp4", out, "--backend", "ort-cpu", "--quiet", *codec)
        assert done.returncode == 0, done.stderr
    lossless = read_video_luma(outputs.pop("ffv1.mkv"))
    x264 = read_video_luma(outputs.pop("libx264.avi"))  # its start codes converted from the join's length prefixes
    assert len(x264) == len(lossless) and min(psnr(a, b) for a, b in zip(x264, lossless)) > 35
    for out in outputs.values():
        assert all(np.array_equal(a, b) for a, b in zip(read_video_luma(out), lossless, strict=True)), out
        assert probe_video(out)["avg_frame_rate"] == probe_video(out)["r_frame_rate"] == rate


def test_version_names_the_installed_distribution():
    from importlib.metadata import version

    done = diffqe("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"diffqe {version('diffqe')}"


def test_an_unknown_backend_is_refused_before_anything_runs(tmp_path):
    result = diffqe("enhance", SAMPLES / "sample.mp4", tmp_path / "out.mkv", "--backend", "cuda")
    assert result.returncode == 2 and "argument --backend: invalid choice: 'cuda'" in result.stderr
    assert "ort-cpu" in result.stderr and list(tmp_path.iterdir()) == []


def test_vspipe_gets_the_allocator_tuning_and_the_users_settings_win(monkeypatch):
    from diffqe.plugin import allocator

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    env = allocator.environment()
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(allocator.TUNING["MALLOC_MMAP_THRESHOLD_"])
    assert env["MALLOC_TRIM_THRESHOLD_"] == "12345" and env["PATH"] == os.environ["PATH"]


ARENAS = """
import ctypes, sys, threading
if sys.argv[1:] == ["tune"]:
    from diffqe.plugin import allocator
    allocator.tune()
barrier = threading.Barrier(4)
def work():  # four threads allocating at once: glibc gives each an arena of its own, unless told otherwise
    barrier.wait()
    kept = [bytearray(4096) for _ in range(100)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="glibc's allocator is what is tuned")
def test_a_script_run_by_hand_tunes_the_allocator_itself(monkeypatch):
    """vspipe started without diffqe enhance's variables: allocator.tune (which enhance.vpy and enhance() call)
    sets them through mallopt, so every frame thread shares one arena; a variable the user set wins."""
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)

    def arenas(*argv: str, **env: str) -> int:
        done = subprocess.run([sys.executable, "-c", ARENAS, *argv], capture_output=True, text=True,
                              env=os.environ | env, check=True)
        return done.stderr.count("Arena ")

    assert arenas() > 1 and arenas("tune") == 1 and arenas("tune", MALLOC_ARENA_MAX="3") == 3