"""The training stages.

1. encoder + decoder, Eq. (10): ||GT - Dec(Y, Enc(Y, GT, QP))||^2
2. estimator, Eq. (11): ||Z_est - Z_enc||^2, with Z_est from the full T-step reverse process, started from
   random noise exactly as at inference (the encoder is frozen)
3. optional DiffIR-style refinement: decoder + estimator on ||GT - Dec(Y, Z_est)||^2 + w ||Z_est - Z_enc||^2
   (w = 0 refines shipped weights, which carry no encoder), optionally with a temporal term on static scenes
   (see still_loss) and a pull towards the starting weights' mirror ensemble (see mirror_target)

Where the weights carry no encoder, a table of one Z per QP (train/z_targets.py) can stand in for Z_enc.

Each stage writes RUN/stageN.{safetensors,json} every ``save_every`` steps and resumes from it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model import checkpoint
from ..model.config import ModelConfig
from ..model.diffqe import DiffQE
from ..model.inference import enhance_planes, to_planes, to_tensor
from ..model.mirror import mirror_average
from .metrics import frame_change, patch_dpsnr, psnr
from .pairs import Pair, PatchSampler
from .stills import Still, StillSampler
from .transplant import half_resolution_from, light_finest_from
from .z_targets import ZTable


@dataclass
class TrainConfig:
    stage: int = 1
    steps: int = 20000
    batch: int = 16
    patch: int = 128
    lr: float = 2e-4
    seed: int = 0
    val_every: int = 1000
    save_every: int = 500
    log_every: int = 50
    val_images: int = 16
    minutes: float = 0.0  # wall-clock budget (0: none); the LR schedule then runs on elapsed time
    z_weight: float = 1.0  # stage 3's ||Z_est - Z_enc||^2 term; 0 refines from weights without the encoder
    loss: str = "l2"  # reconstruction loss of stages 1 and 3: "l2" (the paper) or "dpsnr" (see recon_loss)
    harm_weight: float = 0.0  # "dpsnr" loss: extra weight on patches the output makes worse (see recon_loss)
    # CUDA arithmetic: "bf16" (autocast, TF32 convolutions; fast, for training from scratch) or "fp32" (for
    # refinements, whose gains on high-quality input are below bf16's resolution; see docs/training.md, step 5)
    precision: str = "bf16"
    estimator_only: bool = False  # stage 3 with the decoder frozen: teach Z to follow the input
    temporal_weight: float = 0.0  # stage 3: weight of the flicker term on static scenes (see still_loss)
    still_batch: int = 0  # stage 3: crop pairs of static scenes per step, besides BATCH crops of pairs
    val_stills: int = 8  # whole validation stills for the flicker figure (each is 8 frames: costly on a CPU)
    flips: int = 2  # crops flipped left-right (2) or also up-down (4); see PatchSampler
    # stage 3: weight of the reconstruction loss towards the starting weights' four-copy mirror ensemble
    # (0: none); teaches one pass what four mirrored ones agree on (docs/training.md, step 9)
    mirror_weight: float = 0.0
    # mirrored copies the teacher averages (4, 2, or 1: its plain output, a quarter of the teacher's time, for
    # distilling a shipped model that already learnt its ensemble into another network: step 12)
    mirror_copies: int = 4
    # stage 3: the mirror target only on crops where the teacher's ensemble beats the input; on the others the
    # reference stands in for it, so that the student does not learn a harm the teacher does (step 18)
    mirror_gate: bool = False
    # stages 2 and 3: a Z per QP (scripts/fit_z_table.py) as the Z target instead of the encoder's ("": encoder)
    z_targets: str = ""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def trainable(model: DiffQE, stage: int, estimator_only: bool = False) -> list[torch.nn.Parameter]:
    if stage == 1:
        modules = [model.decoder] + ([model.encoder] if model.uses_z else [])
    elif not model.uses_z:
        raise ValueError("the noest variant has no estimator: it trains in stage 1 only")
    elif stage == 2:
        modules = [model.estimator]
    elif stage == 3:
        modules = [model.estimator] if estimator_only else [model.decoder, model.estimator]
    else:
        raise ValueError(f"unknown stage {stage}; use 1, 2 or 3")
    return [p for m in modules for p in m.parameters()]


def recon_loss(out: torch.Tensor, gt: torch.Tensor, y: torch.Tensor, kind: str, harm: float = 0.0) -> torch.Tensor:
    """"l2": mean squared error, which weights each patch by how bad its input was, so high-quality input
    hardly counts.  "dpsnr": minus the mean per-patch dPSNR in dB, 10 log10(MSE_out / MSE_in), which counts a
    0.1 dB loss on a QP 22 or flat patch as much as a 0.1 dB gain on a QP 42 one (the floor in
    metrics.patch_dpsnr keeps lossless patches finite: there any change costs dearly).  HARM (dpsnr only) adds
    HARM times the mean dB lost on patches the output makes worse, so a loss counts 1 + HARM times a gain: the
    issue's do-no-harm rule (QP 22, already clean sources) as a training signal."""
    if kind == "l2":
        return F.mse_loss(out, gt)
    gain = patch_dpsnr(out.float(), gt, y)
    return -gain.mean() + harm * F.relu(-gain).mean()


def stage_loss(model: DiffQE, stage: int, y, gt, qp, noise, z_weight: float = 1.0, kind: str = "l2",
               mirror: torch.Tensor | None = None, mirror_weight: float = 0.0,
               z_table: ZTable | None = None, harm: float = 0.0) -> torch.Tensor:
    """The stage's loss on one batch; in stage 3, MIRROR (the teacher's ensemble output, see mirror_target)
    is a second target, weighted by MIRROR_WEIGHT.  Z_TABLE, if given, supplies the Z target by QP."""
    if stage == 1:
        z = model.encoder(y, gt, qp) if model.uses_z else None
        return recon_loss(model.decoder(y, z), gt, y, kind, harm)
    z_est = model.estimator(y, noise)
    loss = 0.0
    if stage == 3:
        out = model.decoder(y, z_est)
        loss = recon_loss(out, gt, y, kind, harm)  # harm against the reference only: the teacher is not the truth
        if mirror is not None:
            loss = loss + mirror_weight * recon_loss(out, mirror, y, kind)
    weight = 1.0 if stage == 2 else z_weight
    if weight:  # the encoder (or the table) is frozen: it only supplies the target
        with torch.no_grad():
            z_target = z_table(qp) if z_table is not None else model.encoder(y, gt, qp)
        loss = loss + weight * F.mse_loss(z_est, z_target)
    return loss


@torch.no_grad()
def mirror_target(teacher: DiffQE, y: torch.Tensor, noise: torch.Tensor, copies: int = 4,
                  gt: torch.Tensor | None = None) -> torch.Tensor:
    """The frozen TEACHER's inference output averaged over COPIES mirror images of each crop (4: the
    ``ensemble=4`` of the filter).  It beats one pass of the same weights at every QP and on every source
    measured (docs/results.md, "Mirror ensemble"), most where one pass invents detail; as a target it shows
    a single pass what to drop, at no cost at inference.  Given GT, crops where it is no better than the
    input Y take GT instead (the teacher's harms, such as soft text sharpened, are not taught)."""
    z = teacher.estimator(y, noise)
    target = mirror_average(lambda x: teacher.decoder(x, z), y, copies).clamp(0, 1)
    if gt is None:
        return target
    helps = patch_dpsnr(target.float(), gt, y) > 0
    return torch.where(helps[:, None, None, None], target, gt)


# Half-resolution positions the transplanted decoder's new head and tail are fitted on (train/transplant.py),
# in training crops: 262k rows for the tail's 577 unknowns per output plane (the light finest level fits on
# the same crops at full resolution, four times the rows).
TRANSPLANT_POSITIONS = 2**18
FLICKER_FLOOR = 1e-4  # mean absolute change, [0, 1] units (0.03 code values): a still patch stays finite


def flicker_excess(out_a: torch.Tensor, out_b: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor) -> torch.Tensor:
    """Per patch [N], how much more (dB) the output changes from one frame to the next than the input does:
    20 log10 of the ratio of their mean absolute changes (the static-scene check's measure), both floored;
    0 where the output changes less."""
    moved = lambda d: d.abs().mean(dim=(1, 2, 3)) + FLICKER_FLOOR  # noqa: E731
    return F.relu(20 * torch.log10(moved(out_b - out_a) / moved(y_b - y_a)))


def still_loss(model: DiffQE, y_a, y_b, gt, noise, temporal_weight: float, kind: str,
               harm: float = 0.0) -> torch.Tensor:
    """Two consecutive frames of a static scene (coded random-access, so x265 re-codes a few blocks between
    them), restored with the same noise as at inference: reconstruction of both, plus TEMPORAL_WEIGHT times
    the flicker excess.  A restorer that maps both codings towards the same GT changes its output less than
    the input changes, so the term and the reconstruction pull the same way."""
    n = y_a.shape[0]
    y = torch.cat([y_a, y_b])
    out = model.decoder(y, model.estimator(y, torch.cat([noise, noise])))
    flicker = flicker_excess(out[:n].float(), out[n:].float(), y_a, y_b).mean()
    return recon_loss(out, torch.cat([gt, gt]), y, kind, harm) + temporal_weight * flicker


@torch.no_grad()
def validate_stills(model: DiffQE, stills: list[Still]) -> dict[str, float]:
    """Mean absolute frame-to-frame change of the inference path's output on whole validation stills, over
    the input's (code values; <= 1: no more flicker than the input)."""
    model.eval()
    moved_in = moved_out = 0.0
    for s in stills:
        moved_in += float(frame_change(s.frames).mean())
        moved_out += float(frame_change(enhance_planes(model, s.frames)).mean())
    model.train()
    return {"still_change_in": moved_in / len(stills), "still_change_out": moved_out / len(stills)}


@torch.no_grad()
def validate(model: DiffQE, pairs: list[Pair], stage: int) -> dict[str, float]:
    """Mean dPSNR (dB) of the inference path on validation pairs, overall and per QP.  Stage 1 has no
    estimator yet, so it validates with the encoder's Z (the oracle upper bound).  Pairs that the codec
    kept lossless (flat graphics) would swamp a dB average; they report the largest change instead."""
    model.eval()
    by_qp: dict[int, list[float]] = {}
    lossless_change = 0
    device = next(model.parameters()).device
    for p in pairs:
        if stage == 1:
            y, gt = to_tensor(p.decoded, 255, device), to_tensor(p.gt, 255, device)
            z = model.encoder(y, gt, torch.tensor([p.qp], device=device)) if model.uses_z else None
            out = to_planes(model.decoder(y, z), 255, p.gt.dtype)[0]
        else:
            out = enhance_planes(model, p.decoded)
        if np.array_equal(p.decoded, p.gt):
            lossless_change = max(lossless_change, int(np.abs(out.astype(np.int32) - p.gt).max()))
        else:
            by_qp.setdefault(p.qp, []).append(psnr(out, p.gt) - psnr(p.decoded, p.gt))
    model.train()
    result = {f"dpsnr_qp{qp}": float(np.mean(v)) for qp, v in sorted(by_qp.items())}
    result["lossless_max_change"] = lossless_change
    result["dpsnr"] = float(np.mean([d for v in by_qp.values() for d in v])) if by_qp else float("nan")
    return result


def _log(run: Path, record: dict) -> None:
    print(json.dumps(record), file=sys.stderr)
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _starting_weights(run: Path, cfg: TrainConfig, init: Path | None) -> Path:
    """Where a stage after the first starts: INIT or RUN/stage{N-1}."""
    previous = init or run / f"stage{cfg.stage - 1}"
    if not previous.with_suffix(".json").exists():
        raise FileNotFoundError(f"stage {cfg.stage} starts from {previous}.safetensors; train stage {cfg.stage - 1} first")
    return previous


def _initial_model(run: Path, cfg: TrainConfig, model_cfg: ModelConfig | None, init: Path | None,
                   train_pairs: list[Pair]) -> DiffQE:
    """Stage 1 starts fresh (MODEL_CFG is required there); a later stage from the starting weights.
    Where MODEL_CFG names the half-resolution decoder or the light finest level and the starting weights are
    the full decoder, the decoder is transplanted (train/transplant.py), its new head and tail fitted on crops of TRAIN_PAIRS;
    where it names another variant (NoDiff's estimator on the full model's stage 1), only the encoder and
    decoder carry over."""
    if cfg.stage == 1:
        return DiffQE(model_cfg)
    model = checkpoint.load(_starting_weights(run, cfg, init))[0]
    if model_cfg is None:
        return model
    transplant = (half_resolution_from if model_cfg.input_unshuffle != model.cfg.input_unshuffle else
                  light_finest_from if model_cfg.light_finest and not model.cfg.light_finest else None)
    if transplant is not None:
        count = -(-4 * TRANSPLANT_POSITIONS // cfg.patch**2)
        crops = PatchSampler(train_pairs, cfg.patch, count, cfg.seed, cfg.flips).sample()[0]
        model, fit = transplant(model, torch.from_numpy(crops))
        _log(run, {"transplant": fit})
    differ = {k: (v, getattr(model_cfg, k)) for k, v in asdict(model.cfg).items()
              if k not in ("variant", "condition_highpass") and getattr(model_cfg, k) != v}
    if model.cfg.condition_highpass and not model_cfg.condition_highpass:
        differ["condition_highpass"] = (True, False)
    if differ:
        raise ValueError(f"the starting weights' network differs from --model-config's in {differ} (starting, "
                         f"asked for); leave --model-config out to keep the starting network")
    if model.cfg == model_cfg:
        return model
    other = DiffQE(model_cfg)
    if model.cfg.variant != model_cfg.variant:  # another estimator: it starts afresh
        shared = {k: v for k, v in model.state_dict().items() if k.startswith(("encoder.", "decoder."))}
        other.load_state_dict(shared, strict=False)
        return other
    # The condition CNN gains the high-pass planes: their weights in its first convolution start at zero, so
    # the estimator starts out giving exactly the Zs it gave.
    state = model.state_dict()
    first = "estimator.condition.trunk.0.weight"
    state[first] = torch.cat([state[first], torch.zeros_like(state[first])], dim=1)
    other.load_state_dict(state, strict=False)
    return other


def train(run: Path, cfg: TrainConfig, model_cfg: ModelConfig | None, train_pairs: list[Pair], val_pairs: list[Pair],
          device: torch.device, init: Path | None = None, train_stills: list[Still] | None = None,
          val_stills: list[Still] | None = None) -> dict:
    """Run (or resume) one stage; returns the final validation metrics.  On CUDA the steps run in bf16
    autocast unless ``cfg.precision`` is "fp32" (the loss and the weights stay fp32 either way).  Stage 3
    with ``cfg.still_batch`` adds the temporal term on TRAIN_STILLS (see still_loss)."""
    run.mkdir(parents=True, exist_ok=True)
    stem = run / f"stage{cfg.stage}"
    torch.manual_seed(cfg.seed)
    sampler = PatchSampler(train_pairs, cfg.patch, cfg.batch, cfg.seed + cfg.stage, cfg.flips)
    if cfg.mirror_weight and cfg.stage != 3:
        raise ValueError("the mirror target needs stage 3 (a trained decoder and estimator to start from)")
    stills = None
    if cfg.still_batch:
        if cfg.stage != 3 or not train_stills:
            raise ValueError("the temporal term needs stage 3 and training stills (scripts/make_stills.py)")
        stills = StillSampler(train_stills, cfg.patch, cfg.still_batch, cfg.seed + 10)
    z_table = None
    if cfg.z_targets:
        if cfg.stage == 1:
            raise ValueError("--z-targets sets the estimator's target: stages 2 and 3 only")
        z_table = ZTable.load(Path(cfg.z_targets))
        z_table.covers(train_pairs, Path(cfg.z_targets))
    step, elapsed, opt_state = 0, 0.0, None
    if stem.with_suffix(".json").exists():
        model, meta, opt_state = checkpoint.load(stem, with_optimizer=True)
        step, elapsed = meta["step"], meta.get("elapsed", 0.0)
        sampler.restore(meta["sampler"])
        if stills:
            stills.restore(meta["still_sampler"])
        print(f"resuming stage {cfg.stage} from {stem} at step {step}", file=sys.stderr)
    else:
        model = _initial_model(run, cfg, model_cfg, init, train_pairs)
    if z_table is not None and z_table.z.shape[1] != model.cfg.z_dim:
        raise ValueError(f"{cfg.z_targets} holds Zs of {z_table.z.shape[1]} values, the network's have "
                         f"{model.cfg.z_dim}; fit the table through these weights with scripts/fit_z_table.py")
    model.to(device).train()
    # The teacher is always the starting weights as they were trained, also on resume (the target does not
    # drift) and when the student is another network (a transplanted decoder learns what the full one did).
    teacher = checkpoint.load(_starting_weights(run, cfg, init))[0].to(device) if cfg.mirror_weight else None
    cuda = device.type == "cuda"
    fast = cuda and cfg.precision == "bf16"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = fast
        model.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if fast else nullcontext
    params = trainable(model, cfg.stage, cfg.estimator_only)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    if opt_state:
        opt.load_state_dict(opt_state)
    noise_gen = torch.Generator(device=device)

    def save(metrics: dict) -> None:
        meta = {"stage": cfg.stage, "step": step, "elapsed": elapsed, "train": asdict(cfg), "val": metrics,
                "sampler": sampler.state(), "qps": sorted({p.qp for p in train_pairs})}
        if stills:
            meta["still_sampler"] = stills.state()
        checkpoint.save(stem, model, meta, opt.state_dict())

    metrics: dict = {}

    def progress() -> float:
        return max(step / cfg.steps, elapsed / (60 * cfg.minutes) if cfg.minutes else 0.0)

    t0, losses = time.time(), []
    while progress() < 1:
        started = time.time()
        lr = cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress())))  # cosine decay
        for group in opt.param_groups:
            group["lr"] = lr
        y, gt, qp = (torch.from_numpy(a).to(device) for a in sampler.sample())
        noise_gen.manual_seed(cfg.seed * 1_000_003 + step)
        noise = torch.randn(y.shape[0], model.cfg.z_dim, generator=noise_gen, device=device)
        with autocast():
            mirror = (mirror_target(teacher, y, noise, cfg.mirror_copies, gt if cfg.mirror_gate else None)
                      if teacher is not None else None)
            loss = stage_loss(model, cfg.stage, y, gt, qp, noise, cfg.z_weight, cfg.loss, mirror, cfg.mirror_weight,
                              z_table, cfg.harm_weight)
            if stills:
                y_a, y_b, still_gt = (torch.from_numpy(a).to(device) for a in stills.sample())
                still_noise = torch.randn(cfg.still_batch, model.cfg.z_dim, generator=noise_gen, device=device)
                loss = loss + still_loss(model, y_a, y_b, still_gt, still_noise, cfg.temporal_weight, cfg.loss,
                                          cfg.harm_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        elapsed += time.time() - started
        done = progress() >= 1
        if step % cfg.log_every == 0 or done:
            _log(run, {"stage": cfg.stage, "step": step, "loss": float(np.mean(losses)), "lr": lr,
                       "sec_per_step": (time.time() - t0) / len(losses)})
            t0, losses = time.time(), []
        if step % cfg.val_every == 0 or done:
            metrics = validate(model, val_pairs[: cfg.val_images], cfg.stage)
            if val_stills:
                metrics |= validate_stills(model, val_stills[: cfg.val_stills])
            _log(run, {"stage": cfg.stage, "step": step, **metrics})
        if step % cfg.save_every == 0 or done:
            save(metrics)
    return metrics
