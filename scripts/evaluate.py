#!/usr/bin/env python3
"""dPSNR and dSSIM of checkpoints (and classical post-filters) per QP and mixed, on reference images and
clips encoded on the fly with x265 (or --codec: another encoder, each QP on its own scale); every enhancer sees the
same encodes.

  python scripts/evaluate.py --images data/corpus/val --qps 27,32,37,42 --extra-qps 30,40 --crf 28
  python scripts/evaluate.py --clips ref1.mkv ref2.y4m --checkpoint full=runs/full/stage3 \\
      --checkpoint noest=runs/noest/stage1 --ffmpeg-filter deblock=deblock=filter=weak:block=8 --out docs/eval.md
  python scripts/evaluate.py --images data/corpus/val --qps "" --static 6     # the flicker check alone
  python scripts/evaluate.py --images data/corpus/val --ensemble 1,4           # with and without the mirror ensemble
  python scripts/evaluate.py --images data/corpus/val --strength 1,0.75        # the correction scaled
  python scripts/evaluate.py --images data/corpus/val --extra-qps 12,17 --qp-guard   # and by the source-QP guard
  python scripts/evaluate.py --images data/corpus/val --qps "" --static 6 --temporal 0,2   # and the stabilisation
  python scripts/evaluate.py --images a.png b.png --fade 1 --qps "" --crf 28 --temporal 0,2     # on fades
  python scripts/evaluate.py --images a.png --scroll 60 60 --qps "" --crf 14 --qp-guard    # a slide, then scrolling
  python scripts/evaluate.py --clips data/clips/*.mkv --max-frames 12 --temporal 2 --fusion   # and the fusion
  python scripts/evaluate.py --images data/corpus/val --bits 8,10        # 8-bit input enhanced to 10-bit output
  python scripts/evaluate.py --images data/corpus/val --hdr pq           # as 10-bit PQ (HDR10) video
  python scripts/evaluate.py --images data/corpus/val --codec av1 --qps "" --extra-qps 20,40 --crf 30   # AV1 sources
  python scripts/evaluate.py --images data/corpus/val --grain 3          # with sensor noise in the picture
  python scripts/evaluate.py --images data/fresh_screens --qps "" --extra-qps 22 --bands 16   # where losses sit
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.model import checkpoint, fusion
from diffqe.model.config import MAX_STRENGTH
from diffqe.model.files import SHIPPED, SHIPPED_FUSION
from diffqe.model.mirror import FLIPS
from diffqe.train.codec import CODERS
from diffqe.train.evaluate import (TRANSFERS, Condition, deepened, evaluate, faded, ffmpeg_enhancer, full_range, grainy,
                                   hdr, load_sources, markdown, model_enhancers, scrolled, temporal_change)
from diffqe.train.loop import pick_device
from diffqe.train.pairs import PAPER_QPS


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def named(text: str) -> tuple[str, str]:
    """NAME=VALUE, or a bare VALUE named after itself."""
    name, sep, value = text.partition("=")
    return (name, value) if sep and value else (text, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=named, action="append",
                    help="[NAME=]checkpoint stem, repeatable (default: the shipped weights)")
    ap.add_argument("--ffmpeg-filter", type=named, action="append", default=[],
                    help="[NAME=]ffmpeg video filter as a classical baseline, e.g. deblock=filter=weak:block=8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", nargs="*", type=Path, default=[], help="reference images or folders of them")
    ap.add_argument("--clips", nargs="*", type=Path, default=[], help="lossless reference clips")
    ap.add_argument("--max-frames", type=int, default=30)
    ap.add_argument("--clip-downscale", type=float, default=1.0,
                    help="shrink clips by this factor first (washes out the clips' own compression artefacts)")
    ap.add_argument("--qps", type=ints, default=list(PAPER_QPS), help="all-intra QPs averaged into 'mixed'")
    ap.add_argument("--extra-qps", type=ints, default=[], help="further all-intra QPs, reported apart")
    ap.add_argument("--crf", type=float, nargs="*", default=[], help="random-access CRF encodes")
    ap.add_argument("--codec", choices=CODERS, default="hevc",
                    help="the encoder of every condition: x265 (hevc, the default), x264 (h264), SVT-AV1 (av1), "
                         "libvpx (vp9, vp8), FFmpeg's MPEG-2 (mpeg2), MPEG-4 part 2 (mpeg4, as Xvid), Motion JPEG "
                         "(mjpeg), ProRes (prores, with --ten-bit) or DNxHR (dnxhr); QPs on its own scale (AV1, VP9, "
                         "VP8: 0-63; MPEG-2, MPEG-4, MJPEG: qscale 1-31; ProRes: the profile, 0-3; DNxHR: 0-2, LB to "
                         "HQ)")
    ap.add_argument("--fade", type=float, nargs="+", default=[],
                    help="turn each image into a 12-frame fade to black at these code values per frame")
    ap.add_argument("--scroll", type=int, nargs=2, metavar=("HELD", "MOVING"),
                    help="turn each image into a clip held HELD frames, then scrolled 4 rows a frame for MOVING")
    ap.add_argument("--full-range", action="store_true",
                    help="stretch every source from limited range (16..235) to full range (0..255) first")
    ap.add_argument("--grain", type=float, metavar="SIGMA",
                    help="add Gaussian noise of SIGMA code values to every source first (sensor noise, film grain)")
    ap.add_argument("--hdr", choices=TRANSFERS,
                    help="every source as 10-bit HDR video of this transfer (pq: HDR10's; hlg), SDR white where "
                         "BT.2408 places it, coded and scored at 10 bits")
    ap.add_argument("--ten-bit", action="store_true",
                    help="every source shifted to 10 bits (v -> 4v), coded and scored at 10 bits (ProRes needs it)")
    ap.add_argument("--static", type=int, default=0, help="flicker check on this many of the images as static clips")
    ap.add_argument("--static-crf", type=float, nargs="+", default=[28], help="CRFs the static clips are coded at")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", type=ints, default=[1],
                    help="mirror-ensemble sizes to run each checkpoint at, e.g. 1,4 (rows 'NAME' and 'NAME x4')")
    ap.add_argument("--qp-guard", action="store_true",
                    help="also run each model with the filter's source-QP guard (rows 'NAME g'): its correction "
                    "scaled by the QP the filter reads from the encode's bitstream")
    ap.add_argument("--strength", type=floats, default=[1.0],
                    help="correction scales to run each checkpoint at, e.g. 1,0.75 (rows 'NAME' and 'NAME s0.75')")
    ap.add_argument("--temporal", type=ints, default=[0],
                    help="temporal-stabilisation radii to run each checkpoint at, e.g. 0,2 (rows 'NAME' and 'NAME t2')")
    ap.add_argument("--fusion", type=Path, nargs="?", const=SHIPPED_FUSION,
                    help="also run each checkpoint with the temporal fusion (these weights; default: the shipped "
                         "ones) on all-intra encodes, at each --temporal radius up to 2 (rows 'NAME t2 f')")
    ap.add_argument("--bits", type=ints, default=[8],
                    help="output bit depths: above 8, the input shifted up first, as the filter's bits (e.g. 8,10)")
    ap.add_argument("--bf16", action="store_true",
                    help="also each checkpoint with its convolutions in bfloat16 on the CPU (backend torch-cpu-bf16)")
    ap.add_argument("--bands", type=int, default=0,
                    help="for every source that loses PSNR, the three bands of this many rows where it loses most")
    ap.add_argument("--out", type=Path, help="write the markdown table here (default: stdout)")
    args = ap.parse_args()
    if not set(args.ensemble) <= set(FLIPS):
        ap.error(f"--ensemble: sizes must be among {', '.join(map(str, FLIPS))}")
    if min(args.temporal) < 0:
        ap.error("--temporal: radii must be >= 0")
    if not all(0 <= s <= MAX_STRENGTH for s in args.strength):
        ap.error(f"--strength: scales must be between 0 and {MAX_STRENGTH}")
    if not all(8 <= b <= 16 for b in args.bits):
        ap.error("--bits: depths must be between 8 and 16")
    if args.bands < 0:
        ap.error("--bands: a band is a number of rows >= 1 (0: none)")
    if args.fusion and not max(args.temporal):
        ap.error("--fusion needs a --temporal radius above 0 (the frames it fuses), e.g. --temporal 2")
    device = pick_device(args.device)
    if args.bf16 and device.type != "cpu":
        ap.error("--bf16 measures the CPU's bfloat16 path: use it with --device cpu")
    net = fusion.load(args.fusion) if args.fusion else None
    enhancers, guards = {}, (False, True) if args.qp_guard else (False,)
    for name, stem in args.checkpoint or [("shipped", str(SHIPPED))]:
        model = checkpoint.load(Path(stem))[0].to(device)
        for k, bits, bf16 in ((k, b, h) for k in args.ensemble for b in args.bits for h in {False, args.bf16}):
            for (s, r, f, g), enhancer in model_enhancers(model, args.seed, k, args.temporal, args.strength, net,
                                                          bits, bf16, guards).items():
                enhancers[name + (" bf16" if bf16 else "") + (f" x{k}" if k > 1 else "")
                          + (f" b{bits}" if bits != 8 else "") + (f" s{s:g}" if s != 1 else "") + (f" t{r}" if r else "")
                          + (" f" if f else "") + (" g" if g else "")] = enhancer
    enhancers |= {name: ffmpeg_enhancer(vf) for name, vf in args.ffmpeg_filter}
    sources = load_sources(args.images, args.clips, args.max_frames, args.clip_downscale)
    coder = CODERS[args.codec]
    if args.full_range:
        sources = [full_range(s) for s in sources]
    if args.grain:
        sources = [grainy(s, args.grain, args.seed) for s in sources]
    if args.hdr or args.ten_bit:
        flag = "--hdr" if args.hdr else "--ten-bit"
        if args.ffmpeg_filter or args.static or args.fade or args.bits != [8] or (args.hdr and args.ten_bit):
            ap.error(f"{flag} takes none of --ffmpeg-filter, --static, --fade, --bits (their paths are 8-bit), "
                     "nor the other of --hdr and --ten-bit")
        if coder.pix_fmts[1] is None:
            ap.error(f"--codec {args.codec} codes 8-bit pictures only: drop {flag}")
        sources = [hdr(s, args.hdr) if args.hdr else deepened(s) for s in sources]
    elif coder.pix_fmts[0] is None:
        ap.error(f"--codec {args.codec} codes 10-bit pictures only: add --ten-bit")
    narrow = [s.name for s in sources if s.frames[0].shape[1] < coder.min_width]
    if narrow:
        print(f"note: {args.codec} codes frames at least {coder.min_width} pixels wide: left out "
              + ", ".join(narrow), file=sys.stderr)
        sources = [s for s in sources if s.name not in narrow]
    if args.fade:
        images = [s for s in sources if len(s.frames) == 1]
        sources = [faded(s, 12, step) for step in args.fade for s in images] + [s for s in sources if len(s.frames) > 1]
    if args.scroll:
        if min(args.scroll) < 0 or sum(args.scroll) < 1:
            ap.error("--scroll HELD MOVING: frame counts, at least one frame in all")
        sources = [scrolled(s, *args.scroll) if len(s.frames) == 1 else s for s in sources]
    if args.codec in ("mpeg2", "mpeg4", "mjpeg") and args.crf:
        ap.error("--crf: MPEG-2, MPEG-4 part 2 and MJPEG have none; give their quantisers as --extra-qps (qscale 1-31)")
    conditions = ([Condition(qp=q, codec=args.codec) for q in args.qps + args.extra_qps]
                  + [Condition(crf=c, codec=args.codec) for c in args.crf])
    if not conditions and not args.static:
        raise ValueError("nothing to evaluate: give --qps, --extra-qps, --crf or --static")
    text = ""
    if conditions:  # --qps "" --static N: the flicker check alone
        table, lossless = evaluate(enhancers, sources, conditions, tuple(args.qps), args.bands)
        text = markdown(table, f"{len(sources)} sources: " + ", ".join(s.name for s in sources), lossless)
    if args.static:
        stills = [s for s in sources if len(s.frames) == 1][: args.static]
        text += "".join("\n" + temporal_change(enhancers, stills, crf=crf) for crf in args.static_crf)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    run(main)
