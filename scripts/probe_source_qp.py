#!/usr/bin/env python3
"""How finely a codec codes video against the QP the source-QP guard reads from its headers (no model runs).

Each source is coded by x265 (or ``--codec``) at each CRF (random access, the encoder's own group of pictures);
"coded as" is the slice QP at which x265 codes the source's first frame alone (all-intra) to the encode's mean
PSNR, whichever codec coded the encode: the scale the guard's ends (plugin.source_qp.FULL_QP, NO_QP) were measured
on; "read" is what the guard reads for it, as the evaluation's --qp-guard rows take it (``stream_qp``: the finest
of its groups of pictures; these encodes are one).  Images are turned into video held, scrolled, or held then
scrolled (``--scroll HELD/MOVING ...``).

  python scripts/probe_source_qp.py --images data/corpus/val/screen_0016.png --clips data/clips/bikes.mkv \\
      --scroll 24/0 0/40 40/40 --crf 10 14 18 22 [--codec h264] [--out table.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import run

from diffqe.plugin.source_qp import guard
from diffqe.train.codec import CODERS, decode_luma, encode_video
from diffqe.train.evaluate import Source, load_sources, scrolled, stream_qp
from diffqe.train.metrics import psnr

INTRA_QPS = range(2, 46, 2)  # x265 --qp; its intra pictures' slice QPs are 3 finer


def intra_curve(frame: np.ndarray) -> tuple[list[float], list[float]]:
    """FRAME coded alone at each of INTRA_QPS: (slice QPs, PSNRs), PSNR falling as QP rises."""
    qps, psnrs = [], []
    for qp in INTRA_QPS:
        stream = encode_video([frame], qp=qp, intra=True)
        qps.append(stream_qp(stream))
        psnrs.append(psnr(decode_luma(stream)[0], frame))
    return qps, psnrs


def probe(source: Source, crf: float, curve: tuple[list[float], list[float]], codec: str) -> tuple[float, float, float]:
    """SOURCE at CODEC's CRF: (mean PSNR, the x265 all-intra slice QP that codes as finely, the QP the guard reads)."""
    stream = encode_video(source.frames, codec=codec, crf=crf, intra=False)
    mean_psnr = float(np.mean([psnr(d, r) for d, r in zip(decode_luma(stream, codec), source.frames)]))
    qps, psnrs = curve
    return mean_psnr, float(np.interp(-mean_psnr, [-p for p in psnrs], qps)), stream_qp(stream, codec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="*", type=Path, default=[])
    ap.add_argument("--clips", nargs="*", type=Path, default=[], help="lossless reference clips")
    ap.add_argument("--max-frames", type=int, default=12, help="frames of each clip")
    ap.add_argument("--scroll", nargs="+", default=["24/0"], metavar="HELD/MOVING",
                    help="each image held HELD frames, then scrolled 4 rows a frame for MOVING")
    ap.add_argument("--crf", nargs="+", type=float, default=[10, 14, 18, 22], help="on the codec's own scale")
    ap.add_argument("--codec", choices=[c for c in CODERS if c != "mpeg2"], default="hevc",
                    help="the encoder of the random-access encodes (MPEG-2 has no CRF)")
    ap.add_argument("--out", type=Path, help="write the markdown table here (default: stdout)")
    args = ap.parse_args()
    images = load_sources(args.images, [], 1) if args.images else []
    sources = [scrolled(image, *map(int, hm.split("/"))) for image in images for hm in args.scroll]
    sources += load_sources([], args.clips, args.max_frames) if args.clips else []
    if not sources:
        raise ValueError("give --images and/or --clips")
    rows = [f"| source | {CODERS[args.codec].encoder} CRF | PSNR (dB) | coded as | read | read - coded as | "
            "guard: coded as / read |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for source in sources:
        curve = intra_curve(source.frames[0])
        for crf in args.crf:
            mean_psnr, coded_as, read = probe(source, crf, curve, args.codec)
            rows.append(f"| {source.name} | {crf:g} | {mean_psnr:.2f} | {coded_as:.1f} | {read:.1f} | "
                        f"{read - coded_as:+.1f} | {guard(coded_as):.2f} / {guard(read):.2f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    table = "\n".join(rows) + "\n"
    if args.out:
        args.out.write_text(table)
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    run(main)
