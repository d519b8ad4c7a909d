#!/usr/bin/env python3
"""How much could averaging the per-frame outputs of neighbouring frames gain on all-intra video, and can a
rule that sees only the decoded frames find where to average?  All-intra codes each frame on its own, so
where the scene stands still the coding error differs from frame to frame and a mean over frames cancels
part of it (MFQE's premise); where the scene moves, a mean blurs.

Per clip and QP: the shipped model on every frame, then for each frame the mean of its output and those of
the frames within RADIUS whose 8x8 block (and the 8 blocks around it) passes a rule:
  oracle   the reference is bit-identical there (knows the reference: the most a static detector could get);
  dec<T    the decoded blocks differ by a mean squared error below T (code values squared), blind;
  p25x4    ... below four times that frame pair's 25th percentile of block errors: a blind noise estimate;
  guarded  ... below the smaller of 8 and p25x4, where the frames do not drift apart (a fade: the mean
           difference over 5x5 blocks is small against its spread).

  python scripts/probe_fusion.py --clips data/clips/{vtest,Megamind,tree,carphone_pristine,bikes,bigbuckbunny}.mkv
  python scripts/probe_fusion.py --clips ... --cache runs/fusion/clips --fusion model/weights/fusion --moved inf --moved 0.4
  python scripts/probe_fusion.py --clips ... --cache runs/fusion/clips --fusion model/weights/fusion --fine 0 --fine 0.25
  python scripts/probe_fusion.py --clips ... --cache runs/fusion/clips --fusion model/weights/fusion --still 16 --still 32
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import run

from diffqe.model import checkpoint, fusion
from diffqe.model.files import SHIPPED, atomic_savez
from diffqe.model.inference import enhance_planes
from diffqe.model.temporal import dilate
from diffqe.train.evaluate import Condition, load_sources
from diffqe.train.metrics import clip_dpsnr
from diffqe.train.pairs import PAPER_QPS

BLOCK = 8
# (reference, decoded, frame t, frame k) -> [H/8, W/8] bool: the blocks where frame k's output may join t's
Rule = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]


def block_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return block_mean((a.astype(np.float32) - b) ** 2)


def box_mean(m: np.ndarray, r: int) -> np.ndarray:
    """The mean of M over the (2r+1)^2 blocks around each block (edges repeated)."""
    padded = np.pad(m, r, mode="edge")
    h, w = m.shape
    return sum(padded[i:i + h, j:j + w] for i in range(2 * r + 1) for j in range(2 * r + 1)) / (2 * r + 1) ** 2


def block_mean(d: np.ndarray) -> np.ndarray:
    h, w = d.shape
    return d.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean(axis=(1, 3))


def guarded(dec: np.ndarray, t: int, k: int) -> np.ndarray:
    e = block_mse(dec[t], dec[k])
    drift = box_mean(block_mean(dec[t].astype(np.float32) - dec[k]), 2) ** 2
    return calm((e < min(8.0, 4 * np.percentile(e, 25))) & (drift < 0.1 * box_mean(e, 2) + 0.01))


def calm(quiet: np.ndarray) -> np.ndarray:
    """QUIET blocks whose 8 neighbours are quiet too."""
    return ~dilate(~quiet, 1)


RULES: dict[str, Rule] = {
    "oracle": lambda ref, dec, t, k: calm(block_mse(ref[t], ref[k]) == 0),
    "dec<8": lambda ref, dec, t, k: calm(block_mse(dec[t], dec[k]) < 8),
    "dec<32": lambda ref, dec, t, k: calm(block_mse(dec[t], dec[k]) < 32),
    "p25x4": lambda ref, dec, t, k: calm((e := block_mse(dec[t], dec[k])) < 4 * np.percentile(e, 25)),
    "guarded": lambda ref, dec, t, k: guarded(dec, t, k),
}


def fused(ref: np.ndarray, dec: np.ndarray, out: np.ndarray, radius: int, rule: Rule) -> np.ndarray:
    frames = []
    for t in range(len(out)):
        total, count = out[t].astype(np.float32), np.ones(out[t].shape, np.float32)
        for k in range(max(0, t - radius), min(len(out), t + radius + 1)):
            if k != t:
                joins = np.kron(rule(ref, dec, t, k), np.ones((BLOCK, BLOCK), np.float32))
                total += joins * out[k]
                count += joins
        frames.append(np.rint(total / count))
    return np.stack(frames)


def per_frame(model, ref: np.ndarray, qp: int, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The all-intra decoded frames at QP and the shipped model's output on each, from CACHE where it has them."""
    if cache and cache.exists():
        with np.load(cache) as z:
            return z["dec"], z["out"]
    dec = np.stack(Condition(qp=qp).code(list(ref)))
    out = np.stack([enhance_planes(model, d) for d in dec])
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(cache, dec=dec, out=out)
    return dec, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", type=Path, required=True)
    ap.add_argument("--max-frames", type=int, default=12)
    ap.add_argument("--qps", default="22,27,32,37,42")
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--fusion", type=Path, action="append", default=[],
                    help="also score a trained fusion (model.fusion; weights stem), as a row named after it")
    ap.add_argument("--moved", type=float, action="append", default=[],
                    help="score each fusion with this motion test (model.fusion.MOVED; inf: none) instead of the "
                         "shipped one; repeatable, a row each")
    ap.add_argument("--fine", type=float, action="append", default=[],
                    help="score each fusion with this share for its fine joins (model.fusion.FINE_SHARE; 0: none) "
                         "instead of the shipped one; repeatable, a row each")
    ap.add_argument("--still", type=float, action="append", default=[],
                    help="score each fusion with this STILL guard (model.fusion.STILL) instead of the shipped one; "
                         "repeatable, a row each")
    ap.add_argument("--cache", type=Path, help="keep each clip and QP's decoded frames and per-frame outputs here "
                    "(npz), so that a later run with other rules codes and infers nothing again")
    args = ap.parse_args()
    model = checkpoint.load(args.checkpoint)[0].eval()
    moved, fine, still = args.moved or [fusion.MOVED], args.fine or [fusion.FINE_SHARE], args.still or [fusion.STILL]
    nets = {stem.name + (f" moved<{m:g}" if args.moved else "") + (f" fine {f:g}" if args.fine else "")
            + (f" still {t:g}" if args.still else ""):
            (fusion.load(stem), m, f, t) for stem in args.fusion for m in moved for f in fine for t in still}
    names = ["per frame", *RULES, *nets]
    rows: dict[tuple[str, int], list[float]] = {}
    for src in load_sources([], args.clips, args.max_frames):
        ref = np.stack(src.frames)
        for qp in map(int, args.qps.split(",")):
            dec, out = per_frame(model, ref, qp, args.cache and args.cache / f"{src.name}_qp{qp}.npz")
            outputs = [out, *(fused(ref, dec, out, args.radius, rule) for rule in RULES.values()),
                       *(fusion.fuse_clip(net, dec, out, moved=m, fine=f, still=t)
                         for net, m, f, t in nets.values())]
            rows[src.name, qp] = [clip_dpsnr(ref, dec, y) for y in outputs]
            print(f"{src.name:20s} QP {qp}: " + " ".join(f"{n} {v:+.3f}" for n, v in zip(names, rows[src.name, qp])),
                  flush=True)
    qps = sorted({q for _, q in rows})
    print("\n| dPSNR (dB), mean over clips | " + " | ".join(f"QP {q}" for q in qps) + " | mixed | worst clip, any QP |")
    print("|---|" + "---:|" * (len(qps) + 2))
    for i, name in enumerate(names):
        per_qp = [np.mean([v[i] for (_, q), v in rows.items() if q == qp]) for qp in qps]
        paper = [v[i] for (_, q), v in rows.items() if q in PAPER_QPS]
        worst = min(rows.items(), key=lambda kv: kv[1][i])
        print(f"| {name} | " + " | ".join(f"{v:+.3f}" for v in per_qp) +
              f" | {f'{np.mean(paper):+.3f}' if paper else '-'} | {worst[1][i]:+.3f} ({worst[0][0]}, QP {worst[0][1]}) |")


if __name__ == "__main__":
    run(main)
