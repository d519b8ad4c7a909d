"""What enhance.vpy runs: the vspipe arguments (-a key=value) -> BestSource -> enhance -> output."""

from __future__ import annotations

from pathlib import Path

import vapoursynth as vs

from .filter import enhance

SCRIPT = "from diffqe.plugin.script import output_from_args\noutput_from_args(globals())\n"


def output_from_args(args: dict) -> None:
    if "input" not in args:
        raise vs.Error("enhance.vpy: give the input video with -a input=PATH")
    source = Path(args["input"])
    if not source.is_file():
        # vspipe runs a script from the script's own folder, so a relative path is looked up there.
        raise vs.Error(f"enhance.vpy: input {source} not found in {Path.cwd()} (vspipe's working directory is "
                       f"the script's folder); pass an absolute path, e.g. -a input=\"$PWD/{source}\"")
    clip = vs.core.bs.VideoSource(source=str(source))
    clip = enhance(
        clip,
        backend=args.get("backend") or None,
        checkpoint=args.get("checkpoint") or None,
        tile=int(args["tile"]) if args.get("tile") else None,
        overlap=int(args.get("overlap", 16)),
        seed=int(args.get("seed", 0)),
        ensemble=int(args.get("ensemble", 1)),
        strength=float(args.get("strength", 1)),
        temporal=int(args.get("temporal", 2)),
    )
    clip.set_output()
