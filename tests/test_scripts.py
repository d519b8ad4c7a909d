"""The README's main job and the evaluation script, run as a user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SAMPLES, run_script


def test_demo_enhances_the_bundled_sample_and_reports_dpsnr():
    result = run_script("demo.py")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)$", result.stdout, re.M)
    assert len(rows) == 8
    for _, before, after, delta in rows:
        assert abs(float(after) - float(before) - float(delta)) < 2e-3
        assert 30 < float(before) < 45
    assert re.search(r"^mean .* [+-]\d+\.\d+ dB$", result.stdout, re.M)


def test_demo_reports_a_missing_sample_without_traceback(tmp_path):
    result = run_script("demo.py", "--sample", tmp_path / "absent.mp4")
    assert result.returncode == 2
    assert "absent.mp4: no such file" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_writes_a_markdown_table(tmp_path):
    out = tmp_path / "table.md"
    result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "2", "--qps", "32,42",
                        "--extra-qps", "37", "--crf", "28", "--ensemble", "1,2", "--out", out)
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    header = next(line for line in table.splitlines() if line.startswith("| | "))
    labels = [c.strip() for c in header.strip("|").split("|")][1:]
    assert labels == ["QP 32", "QP 42", "QP 37", "CRF 28 RA", "mixed"]
    row = next(line for line in table.splitlines() if line.startswith("| PSNR in |"))
    psnr_in = dict(zip(labels, (float(v) for v in row.strip("|").split("|")[1:])))
    assert psnr_in["QP 32"] > psnr_in["QP 37"] > psnr_in["QP 42"]
    assert re.search(r"^\| shipped \| [-+]\d", table, re.M), "a dPSNR row for the shipped weights"
    assert re.search(r"^\| shipped x2 \| [-+]\d", table, re.M), "and one for its mirror ensemble"


def test_evaluate_qp_guard_rows_read_each_encodes_qp(tmp_path):
    """--qp-guard adds 'NAME g' rows: at x265 QP 6 (slice QP 3) the guard leaves the frames as decoded, at QP 37
    it changes nothing."""
    out = tmp_path / "table.md"
    result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "2", "--qps", "",
                        "--extra-qps", "6,37", "--qp-guard", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = dict(re.findall(r"^\| (shipped|shipped g) \| ([-+][\d.]+ \| [-+][\d.]+) \|$", out.read_text(), re.M)[:2])
    (plain_6, plain_37), (guarded_6, guarded_37) = ([float(v) for v in rows[k].split(" | ")]
                                                    for k in ("shipped", "shipped g"))
    assert guarded_6 == 0 and plain_6 != 0 and guarded_37 == plain_37 != 0, out.read_text()


def test_evaluate_codec_codes_every_condition_with_that_encoder(tmp_path):
    """--codec av1: SVT-AV1 at its own quantisers (labelled so), the finer the better, and the guard reading its
    quantiser index: at SVT-AV1's qp 4 (index 1) it leaves the frames as decoded.  MPEG-2 has no CRF, ProRes no
    8-bit pictures and DNxHR no 10-bit ones: refused."""
    out = tmp_path / "table.md"
    result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "2", "--qps", "",
                        "--extra-qps", "4,40", "--codec", "av1", "--qp-guard", "--out", out)
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    assert "| | av1 QP 4 | av1 QP 40 |" in table
    psnr_in = [float(v) for v in re.search(r"^\| PSNR in \| ([\d.]+) \| ([\d.]+) \|$", table, re.M).groups()]
    assert psnr_in[0] > psnr_in[1] + 10
    rows = dict(re.findall(r"^\| (shipped|shipped g) \| ([-+][\d.]+) \| [-+][\d.]+ \|$", table, re.M)[:2])
    assert float(rows["shipped g"]) == 0 != float(rows["shipped"]), table
    refused = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--codec", "mpeg2", "--crf", "20")
    assert refused.returncode == 2 and "MPEG-2, MPEG-4 part 2 and MJPEG have none" in refused.stderr
    eight_bit = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--codec", "prores", "--qps", "",
                           "--extra-qps", "3")
    assert eight_bit.returncode == 2 and "codes 10-bit pictures only: add --ten-bit" in eight_bit.stderr
    ten_bit = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--codec", "dnxhr", "--ten-bit",
                         "--qps", "", "--extra-qps", "2")
    assert ten_bit.returncode == 2 and "codes 8-bit pictures only: drop --ten-bit" in ten_bit.stderr


def test_evaluate_bits_scores_10_bit_output_against_the_8_bit_reference(tmp_path):
    """On a clean encode (QP 22) most of the correction is below one 8-bit code value: the 10-bit output keeps
    it and scores higher; --bits outside 8..16 is refused."""
    out = tmp_path / "table.md"
    result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "2", "--qps", "",
                        "--extra-qps", "22", "--bits", "8,10", "--out", out)
    assert result.returncode == 0, result.stderr
    dpsnr = dict(re.findall(r"^\| (shipped|shipped b10) \| ([-+][\d.]+) \|$", out.read_text(), re.M)[:2])
    assert float(dpsnr["shipped b10"]) > float(dpsnr["shipped"]), out.read_text()
    refused = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--bits", "7")
    assert refused.returncode == 2 and "--bits: depths must be between 8 and 16" in refused.stderr


def test_evaluate_full_range_codes_the_sources_stretched_to_0_255(tmp_path):
    """The sample is limited range (16..235): stretched, it is another picture with larger code-value steps, so
    the same QP gives another input PSNR."""
    def psnr_in(*extra: str) -> float:
        out = tmp_path / "table.md"
        result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "1", "--qps", "",
                            "--extra-qps", "32", *extra, "--out", out)
        assert result.returncode == 0, result.stderr
        return float(re.search(r"^\| PSNR in \| ([\d.]+) \|", out.read_text(), re.M)[1])
    assert psnr_in("--full-range") != psnr_in()


def test_evaluate_hdr_codes_the_sources_as_10_bit_pq_or_hlg_video(tmp_path):
    """--hdr: black at limited-range black (64), SDR white where BT.2408 places it (PQ: 203 cd/m2, 58 % of the
    range, 573; HLG: 75 %, 721); the sources coded at 10 bits and scored at 10 bits; 8-bit-only options refused."""
    from diffqe.train.evaluate import Source, hdr

    ramp = Source("ramp", [np.array([[16, 235]], np.uint8)])
    assert hdr(ramp, "pq").frames[0].dtype == np.uint16
    assert [hdr(ramp, t).frames[0].tolist() for t in ("pq", "hlg")] == [[[64, 573]], [[64, 721]]]
    out = tmp_path / "table.md"
    result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "1", "--qps", "",
                        "--extra-qps", "32", "--hdr", "pq", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "reference PQ" in out.read_text() and re.search(r"^\| shipped \| [-+]\d", out.read_text(), re.M)
    refused = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--hdr", "pq", "--bits", "8,10")
    assert refused.returncode == 2 and "--hdr takes none of" in refused.stderr


def test_evaluate_grain_adds_the_same_noise_of_the_given_strength(tmp_path):
    from diffqe.train.evaluate import Source, grainy

    flat = Source("flat", [np.full((64, 64), 128, np.uint8)] * 2)
    a, b = grainy(flat, 3.0, seed=1), grainy(flat, 3.0, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames)), "the same seed, the same grain"
    assert not np.array_equal(*a.frames), "fresh grain each frame"
    assert abs(np.std(np.stack(a.frames).astype(float)) - 3.0) < 0.1
    out = tmp_path / "table.md"
    result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "1", "--qps", "",
                        "--extra-qps", "32", "--grain", "2", "--out", out)
    assert result.returncode == 0 and "reference grain 2" in out.read_text(), result.stderr


def test_evaluate_scroll_holds_an_image_then_scrolls_it(tmp_path, reference_frames):
    """--scroll 3 4: the image as it is for 3 frames, then 4 rows further up each frame, the mirrored image below
    it; the whole clip is coded and scored as one source."""
    from diffqe.train.evaluate import Source, scrolled

    y = reference_frames[5]
    clip = scrolled(Source("still", [y]), 3, 4)
    assert clip.name == "still held 3 scrolled 4" and len(clip.frames) == 7
    assert all(np.array_equal(f, y) for f in clip.frames[:3])
    assert np.array_equal(clip.frames[3][:-4], y[4:]) and np.array_equal(clip.frames[3][-4:], y[::-1][:4])
    assert np.array_equal(clip.frames[6][:-16], y[16:])
    Image.fromarray(y).save(tmp_path / "still.png")
    out = tmp_path / "scroll.md"
    result = run_script("evaluate.py", "--images", tmp_path / "still.png", "--scroll", "3", "4", "--qps", "",
                        "--crf", "28", "--qp-guard", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "still held 3 scrolled 4" in result.stderr and re.search(r"^\| shipped g \| [-+]\d", out.read_text(), re.M)
    refused = run_script("evaluate.py", "--images", tmp_path / "still.png", "--scroll", "0", "0", "--crf", "28")
    assert refused.returncode == 2 and "--scroll" in refused.stderr


def test_probe_source_qp_sets_what_the_guard_reads_beside_how_finely_a_codec_codes(tmp_path, reference_frames):
    """One row per source and CRF: its PSNR, the x265 all-intra QP that codes as finely, the QP the guard reads; a
    picture scrolled by x265 and the same picture held by x264 both read within 2 of how finely they are coded."""
    Image.fromarray(reference_frames[5]).save(tmp_path / "still.png")
    cases = (("hevc", "0/24", "still held 0 scrolled 24"), ("h264", "12/0", "still held 12 scrolled 0"))
    for codec, scroll, name in cases:
        out = tmp_path / f"{codec}.md"
        result = run_script("probe_source_qp.py", "--images", tmp_path / "still.png", "--scroll", scroll,
                            "--crf", "14", "--codec", codec, "--out", out)
        assert result.returncode == 0, result.stderr
        header, _, row = out.read_text().splitlines()
        assert ("libx265" if codec == "hevc" else "libx264") in header
        cells = row.split("|")[1:-1]
        db, coded_as, read = map(float, cells[2:5])
        assert cells[0].strip() == name and db > 40 and coded_as < 17 and abs(read - coded_as) < 2, cells
    refused = run_script("probe_source_qp.py", "--crf", "14")
    assert refused.returncode == 2 and "--images" in refused.stderr


def test_evaluate_bands_find_where_a_losing_source_loses(tmp_path, reference_frames):
    """A filter that paints rows 32..47 white loses, and there alone; --bands 16 names that band and no other."""
    Image.fromarray(reference_frames[5]).save(tmp_path / "still.png")
    out = tmp_path / "bands.md"
    result = run_script("evaluate.py", "--images", tmp_path / "still.png", "--qps", "", "--extra-qps", "32",
                        "--ffmpeg-filter", "box=drawbox=x=0:y=32:w=iw:h=16:color=white:t=fill",
                        "--ffmpeg-filter", "copy=null", "--bands", "16", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (\w+) \| QP 32 \| still \| (-[\d.]+) \| (\d+-\d+) \| ([\d.]+) \| ([\d.]+) \|$",
                      out.read_text(), re.M)
    assert [r[:3:2] for r in rows] == [("box", "32-47")], out.read_text()  # "copy" changes nothing: no band
    assert float(rows[0][4]) > 100 * float(rows[0][3])
    refused = run_script("evaluate.py", "--images", tmp_path / "still.png", "--bands", "-1")
    assert refused.returncode == 2 and "--bands" in refused.stderr


def test_average_checkpoints_of_one_checkpoint_is_that_checkpoint(tmp_path):
    from safetensors.numpy import load_file

    shipped = ROOT / "model" / "weights" / "diffqe"
    result = run_script("average_checkpoints.py", shipped, shipped, "--out", tmp_path / "avg")
    assert result.returncode == 0, result.stderr
    mean, original = load_file(tmp_path / "avg.safetensors"), load_file(f"{shipped}.safetensors")
    assert mean.keys() == original.keys() and all((mean[k] == original[k]).all() for k in mean)
    qps = json.loads((tmp_path / "avg.json").read_text())["meta"]["qps"]
    assert qps and qps == json.loads(Path(f"{shipped}.json").read_text())["meta"]["qps"]  # the engines name them
    missing = run_script("average_checkpoints.py", shipped, tmp_path / "absent", "--out", tmp_path / "x")
    assert missing.returncode == 2 and "absent.safetensors is missing" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_evaluate_fusion_rows_fuse_all_intra_encodes_only(tmp_path):
    out = tmp_path / "table.md"
    result = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--max-frames", "3", "--qps", "32",
                        "--crf", "28", "--temporal", "2", "--fusion", "--out", out)
    assert result.returncode == 0, result.stderr
    # the first table is dPSNR: QP 32, CRF 28 RA, mixed
    crf = dict(re.findall(r"^\| (shipped t2|shipped t2 f) \| [-+][\d.]+ \| ([-+][\d.]+) \|", out.read_text(), re.M)[:2])
    assert set(crf) == {"shipped t2", "shipped t2 f"}, out.read_text()
    assert crf["shipped t2"] == crf["shipped t2 f"], "random-access frames are not fused"
    refused = run_script("evaluate.py", "--clips", SAMPLES / "reference.mkv", "--fusion")
    assert refused.returncode == 2 and "--fusion needs a --temporal radius" in refused.stderr


def test_evaluate_static_check_with_and_without_stabilisation(tmp_path, reference_frames):
    Image.fromarray(reference_frames[5]).save(tmp_path / "still.png")
    out = tmp_path / "static.md"
    result = run_script("evaluate.py", "--images", tmp_path / "still.png", "--qps", "", "--static", "1",
                        "--static-crf", "32", "--temporal", "0,2", "--out", out)
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    assert "CRF 32 RA" in table
    mean = {m[1]: float(m[2]) for m in re.finditer(r"^\| (decoded input|shipped|shipped t2) \| ([\d.]+) \|", table, re.M)}
    excess, left = mean["shipped"] - mean["decoded input"], mean["shipped t2"] - mean["decoded input"]
    assert excess > 0 and left < excess / 2, table
    fade = tmp_path / "fade.md"  # a fade to black: every pixel drifts, and the stabilisation must not blur it
    result = run_script("evaluate.py", "--images", tmp_path / "still.png", "--fade", "1", "--qps", "", "--crf", "28",
                        "--temporal", "0,2", "--out", fade)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (shipped|shipped t2) \| ([-+][\d.]+) \|$", fade.read_text(), re.M)
    dpsnr = dict(rows[:2])  # the first table is dPSNR, one column: CRF 28 RA
    assert "still fade 1" in fade.read_text() and abs(float(dpsnr["shipped t2"]) - float(dpsnr["shipped"])) <= 0.01


@pytest.mark.parametrize("intra", [[], ["--intra"]], ids=["random-access", "intra"])
def test_bench_vspipe_compares_the_pipeline_with_the_bare_backend(intra):
    result = run_script("bench_vspipe.py", "--backend", "ort-cpu", "--size", "256x144", "--frames", "4", *intra)
    assert result.returncode == 0, result.stderr
    row = re.search(r"^\| ort-cpu \| 256x144 \| 4 \| 2 \| ([\d.]+) \| ([\d.]+) \| (\d+) % \| ([\d.]+) \|$",
                    result.stdout, re.M)
    assert row, result.stdout
    bare, piped, kept, alone = float(row[1]), float(row[2]), int(row[3]), float(row[4])
    assert bare > 0 and piped > 0 and abs(kept - 100 * piped / bare) <= 1
    assert alone > piped, "the stabilisation alone runs faster than the model with it"


def test_bench_source_times_the_index_pass_and_states_its_share(tmp_path):
    """A clip encoded with x265 through PyAV: BestSource finds every frame; the share follows from the rates."""
    result = run_script("bench_source.py", "--size", "256x144", "--frames", "12", "--enhance-fps", "50,100")
    assert result.returncode == 0, result.stderr
    row = re.search(r"^\| 256x144 \| (\d+) \| \d+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) % / ([\d.]+) % \|$",
                    result.stdout, re.M)
    assert row, result.stdout
    frames, (index_fps, serve_fps, at50, at100) = int(row[1]), map(float, row.groups()[1:])
    assert frames == 12 and index_fps > 0 and serve_fps > 0
    assert abs(at50 - 5000 / index_fps) <= 0.1 and abs(at100 - 2 * at50) <= 0.2
    missing = run_script("bench_source.py", "--input", tmp_path / "none.mkv")
    assert missing.returncode == 2 and "none.mkv: no such file" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("network", [(), ("--model-config", "train/configs/light_finest.json")],
                         ids=["shipped", "light-untrained"])
def test_profile_parts_accounts_for_every_flop_of_the_model(network, tmp_path):
    """Each part timed alone: the parts' FLOPs add up to the whole model's (no convolution falls outside a
    part), every part has a positive time, and the table written to --out is the one printed."""
    result = run_script("profile_parts.py", *network, "--size", "96x64", "--out", tmp_path / "parts.md")
    assert result.returncode == 0, result.stderr
    rows = {m[1]: (float(m[2]), float(m[3])) for m in
            re.finditer(r"^\| ([\w. ]+) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \|", result.stdout, re.M)}
    assert {"estimator", "decoder.head", "decoder.down.0", "decoder.up.0.cbam", "decoder.tail",
            "sum of the parts", "whole model"} <= set(rows), result.stdout
    assert ("decoder.up.2.cbam" in rows) != bool(network), "the light network has no finest Z-CBAM"
    assert rows["sum of the parts"][0] == rows["whole model"][0] > 0
    assert all(seconds > 0 for _, seconds in rows.values())
    assert (tmp_path / "parts.md").read_text() == result.stdout.rstrip("\n") + "\n"


def test_bench_fusion_times_one_caller_and_several_and_profiles_a_window():
    result = run_script("bench_fusion.py", "--sizes", "256x144", "--threads", "2", "--frames", "4", "--profile")
    assert result.returncode == 0, result.stderr
    row = re.search(r"^\| (cpu|cuda) \| 256x144 \| ([\d.]+) \| ([\d.]+) \|$", result.stdout, re.M)
    assert row and float(row[2]) > 0 and float(row[3]) > 0, result.stdout
    assert re.search(r"256x144, one window:\n```\n.*aten::.*Self (CPU|CUDA) time total", result.stdout, re.S), result.stdout


def test_probe_fusion_reports_every_rule_and_the_trained_fusion_from_its_cache(tmp_path):
    args = ["--clips", SAMPLES / "reference.mkv", "--max-frames", "3", "--qps", "32,42",
            "--fusion", ROOT / "model" / "weights" / "fusion", "--cache", tmp_path]
    results = [run_script("probe_fusion.py", *args) for _ in range(2)]
    assert results[0].returncode == 0, results[0].stderr
    rows = dict(re.findall(r"^\| ([a-z<0-9 ]+?) \| [-+][\d.]+ \| [-+][\d.]+ \| ([-+][\d.]+) \|", results[0].stdout, re.M))
    assert set(rows) == {"per frame", "oracle", "dec<8", "dec<32", "p25x4", "guarded", "fusion"}, results[0].stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference_qp32.npz", "reference_qp42.npz"]
    assert results[1].stdout == results[0].stdout, "the second run reads the same encodes and outputs"
    moved = run_script("probe_fusion.py", *args, "--moved", "inf", "--moved", "0.4")
    rows_moved = dict(re.findall(r"^\| (fusion moved<[a-z0-9.]+) \| [-+][\d.]+ \| [-+][\d.]+ \| ([-+][\d.]+) \|",
                                 moved.stdout, re.M))
    assert list(rows_moved) == ["fusion moved<inf", "fusion moved<0.4"], moved.stdout
    assert rows_moved["fusion moved<0.4"] == rows["fusion"], "0.4 is the shipped motion test"


def test_probe_z_compares_own_and_mean_z(tmp_path, reference_frames):
    Image.fromarray(reference_frames[0]).save(tmp_path / "frame.png")
    result = run_script("probe_z.py", "--images", tmp_path, "--qps", "27,42", "--crop", "160", "--seeds", "2")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^2 inputs; mean \|Z\| [\d.]+; std of Z across inputs [\d.]+, across 2 seeds [\d.]+", result.stdout, re.M)
    rows = dict(re.findall(r"^\| (own Z|mean Z|own Z, oracle strength) \| ([-+][\d.]+ \| [-+][\d.]+) \|$", result.stdout, re.M))
    assert list(rows) == ["own Z", "mean Z", "own Z, oracle strength"], result.stdout
    own, oracle = ([float(v) for v in rows[k].split(" | ")] for k in ("own Z", "own Z, oracle strength"))
    # the best factor minimises the unrounded error: after rounding to code values it may lose a hair
    assert all(o >= w - 0.01 for o, w in zip(oracle, own)), result.stdout
    assert re.search(r"^best factor, mean \(min\.\.max\): QP 27 [\d.]+ \([\d.]+\.\.[\d.]+\), QP 42", result.stdout, re.M)


def test_probe_z_fits_zs_on_the_other_sources(tmp_path, reference_frames):
    """The fitted rows need two sources; the frames of one clip count as one."""
    for name, frame in (("clip_frame0", 0), ("clip_frame1", 4)):
        Image.fromarray(reference_frames[frame]).save(tmp_path / f"{name}.png")
    args = ("--images", tmp_path, "--qps", "27,42", "--crop", "96", "--seeds", "1", "--fit-steps", "2")
    result = run_script("probe_z.py", *args)
    assert result.returncode == 2 and "needs two or more sources, found ['clip']" in result.stderr, result.stderr
    (tmp_path / "clip_frame1.png").rename(tmp_path / "other.png")
    result = run_script("probe_z.py", *args)
    assert result.returncode == 0, result.stderr
    row = r"^\| Z fitted on other sources, (all QPs|per QP) \| [-+][\d.]+ \| [-+][\d.]+ \|$"
    fitted = re.findall(row, result.stdout, re.M)
    assert fitted == ["all QPs", "per QP"], result.stdout


def test_probe_ensemble_one_pass_and_mean_match_evaluate(tmp_path, reference_frames):
    """The probe's one pass and four-copy mean are what evaluate.py's ``--ensemble 1,4`` rows measure on the same
    encode; every other rule gets a row."""
    Image.fromarray(reference_frames[0]).save(tmp_path / "frame.png")
    probe = run_script("probe_ensemble.py", "--images", tmp_path, "--qps", "42")
    assert probe.returncode == 0, probe.stderr
    rows = dict(re.findall(r"^\| ([a-z /2-]+) \| ([-+][\d.]+) \([-+][\d.]+\) \|$", probe.stdout, re.M))
    assert list(rows) == ["one pass", "mean", "median", "mean where signs agree", "minmod", "mean - spread/2",
                          "mean - spread"], probe.stdout
    evaluate = run_script("evaluate.py", "--images", tmp_path, "--qps", "", "--extra-qps", "42", "--ensemble", "1,4",
                          "--out", tmp_path / "table.md")
    assert evaluate.returncode == 0, evaluate.stderr
    line = r"^(shipped(?: x4)?)\s+QP 42\s+frame\s+PSNR\s+[\d.]+ dPSNR ([-+][\d.]+)"
    measured = dict(re.findall(line, evaluate.stderr, re.M))
    assert (rows["one pass"], rows["mean"]) == (measured["shipped"], measured["shipped x4"]), evaluate.stderr


def test_probe_quality_reports_qp_prediction_and_strengths(tmp_path, reference_frames):
    from diffqe.train.pairs import make_pairs

    for split, frames in (("train", range(0, 6)), ("val", range(6, 8))):
        (tmp_path / "corpus" / split).mkdir(parents=True)
        for i in frames:
            Image.fromarray(reference_frames[i][:96, 40:136]).save(tmp_path / "corpus" / split / f"f{i}.png")
    manifest = make_pairs(tmp_path / "corpus", tmp_path / "pairs", qps=(27, 42), workers=2)
    result = run_script("probe_quality.py", "--pairs", manifest, "--crop", "64")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^12 training and 4 validation crops of 64px; QP from the decoder's pooled features: "
                     r"correlation [-\d.]+, mean error [\d.]+", result.stdout, re.M), result.stdout
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([-+][\d.]+ \| [-+][\d.]+ \| [-+][\d.]+) \|$", result.stdout, re.M))
    assert len(rows) == 4, result.stdout
    as_is, oracle = ([float(v) for v in rows[k].split(" | ")] for k in ("decoder as is", "each crop's own best factor (oracle)"))
    assert all(o >= a - 1e-6 for o, a in zip(oracle, as_is)), "the least-squares factor cannot do worse than 1"


def test_make_soft_screens_writes_the_copies_asked_for(tmp_path):
    import random

    import numpy as np

    from diffqe.train.corpus import screen_like

    screen = screen_like(random.Random(3))
    Image.fromarray(screen).save(tmp_path / "ui.png")
    result = run_script("make_soft_screens.py", tmp_path / "ui.png", "--out", tmp_path / "soft")
    assert result.returncode == 0, result.stderr
    shift, soft = (np.asarray(Image.open(tmp_path / "soft" / f"ui_{k}.png")) for k in ("shift", "soft"))
    assert shift.shape == soft.shape == screen.shape
    x = screen.astype(np.float32)
    assert np.array_equal(shift[:-1, :-1], np.rint((x[:-1, :-1] + x[1:, :-1] + x[:-1, 1:] + x[1:, 1:]) / 4))

    def energy(y: np.ndarray) -> float:
        return float(np.square(np.diff(y.astype(np.float32), axis=1)).mean())

    assert energy(soft) < energy(shift) < energy(screen), "each copy softer than the screen, the soft one most"
    fresh = run_script("make_soft_screens.py", "--synthetic", "1", "--out", tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(f.name for f in (tmp_path / "fresh").iterdir()) == [
        "fresh_screen_00.png", "fresh_screen_00_shift.png", "fresh_screen_00_soft.png"]
    apart = run_script("make_soft_screens.py", "--synthetic", "1", "--synthetic-from", "100", "--kinds", "upscaled",
                       "--out", tmp_path / "apart")
    assert apart.returncode == 0, apart.stderr
    assert sorted(f.name for f in (tmp_path / "apart").iterdir()) == [
        "fresh_screen_100.png", "fresh_screen_100_upscaled.png"]
    first, other = (np.asarray(Image.open(tmp_path / d / f"fresh_screen_{k}.png"))
                    for d, k in (("fresh", "00"), ("apart", "100")))
    assert not np.array_equal(first, other), "a set apart holds other screens"
    faint = run_script("make_soft_screens.py", tmp_path / "ui.png", "--kinds", "faint", "--out", tmp_path / "faint")
    assert faint.returncode == 0, faint.stderr
    faint_text = np.asarray(Image.open(tmp_path / "faint" / "ui_faint.png")).astype(int)
    changed = np.abs(faint_text - screen)[faint_text != screen]
    # A few lines of text added, most of their strokes within 40 code values of the ground they were drawn on
    # (where a line crosses other text or a panel's edge its strokes differ more).
    assert 0.002 < changed.size / screen.size < 0.1 and np.median(changed) <= 40
    wrong = run_script("make_soft_screens.py", "--synthetic", "1", "--kinds", "blurred", "--out", tmp_path / "x")
    assert wrong.returncode == 2 and "unknown blurred" in wrong.stderr and "Traceback" not in wrong.stderr
