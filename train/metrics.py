"""Luma quality metrics: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5) on planes; per-patch
dPSNR and the best scale of a residual on batches of [0, 1] tensors; a clip's dPSNR, frame by frame; where in a frame
the error sits, band by band."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


PSNR_CAP = 100.0  # identical frames score this instead of infinity, so averages stay finite
DPSNR_FLOOR = 4e-6  # ~ (0.5 code values)^2 in [0, 1] units: a lossless patch stays finite, and any change to it costly


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * np.log10(peak * peak / mse))


def clip_dpsnr(reference: np.ndarray, decoded: np.ndarray, output: np.ndarray) -> float:
    """[T,H,W] planes -> the mean over frames of OUTPUT's PSNR gain over DECODED, against REFERENCE (dB)."""
    return float(np.mean([psnr(y, r) - psnr(d, r) for r, d, y in zip(reference, decoded, output)]))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    x = torch.from_numpy(a.astype(np.float64))[None, None]
    y = torch.from_numpy(b.astype(np.float64))[None, None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]
    blur = lambda t: F.conv2d(t, win)  # noqa: E731  valid window, no padding bias at borders
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def band_mse(frames: np.ndarray, reference: np.ndarray, rows: int) -> np.ndarray:
    """[T,H,W] planes -> per band of ROWS rows (the last may be shorter), that band's squared error over the pixel
    count of the whole clip: its share of the MSE, so the bands sum to the MSE that PSNR is taken of."""
    err = (frames.astype(np.float64) - reference.astype(np.float64)) ** 2
    return np.array([err[:, top:top + rows].sum() for top in range(0, err.shape[1], rows)]) / err.size


def frame_change(planes: np.ndarray) -> np.ndarray:
    """[T,H,W] planes -> [T-1,H,W] absolute frame-to-frame differences (float32): what flicker is made of."""
    return np.abs(np.diff(planes.astype(np.float32), axis=0))


def patch_dpsnr(out: torch.Tensor, gt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dPSNR (dB) of each patch of [N,1,H,W] tensors in [0, 1]: 10 log10(MSE_in / MSE_out), both floored."""
    mse = lambda a: (a - gt).square().mean(dim=(1, 2, 3)) + DPSNR_FLOOR  # noqa: E731
    return 10 * torch.log10(mse(y) / mse(out))


def best_scale(res: torch.Tensor, err: torch.Tensor, top: float = 2.0) -> torch.Tensor:
    """Per patch [N], the factor s in [0, TOP] for which s * RES comes closest to ERR (least squares): the
    best strength of a residual, which only an oracle that knows the reference can pick."""
    dims = (1, 2, 3)
    return ((res * err).sum(dims) / res.square().sum(dims).clamp_min(1e-12)).clamp(0, top)
