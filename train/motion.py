"""Short synthetic videos from still images, coded all-intra: what the temporal fusion (model.fusion) learns from.

All-intra codes every frame on its own, so where a scene stands still its coding error differs from frame to
frame (a change anywhere earlier in the frame changes x265's decisions everywhere after it) and a mean over
frames cancels part of it; where the scene moves, a mean blurs.  Each video is a crop of one corpus image as
the background with zero to three crops of other images moving over it (ten to thirty in the "busy" series),
and on top, each with its own chance: the camera pans (nothing stands still), the scene is dark, fades or its
light drifts (nothing keeps its value), sensor noise that differs per frame.  Reproducible: a video depends
only on the seed, its series and its index.
"""

from __future__ import annotations

import numpy as np

from .codec import decode_luma, encode_video

SIDE = 256  # frame side: 32x32 blocks of 8, room for sprites to move across
BLACK = 16  # video's black level (limited range): dark scenes and fades settle there
QP_RANGE = (20, 44)  # beyond the paper's 27..42 on both sides: the fusion must hold back on clean input


def _shifted(image: np.ndarray, top: float, left: float, h: int, w: int) -> np.ndarray:
    """The HxW window of IMAGE at a fractional (TOP, LEFT), bilinear; float32."""
    t, l = int(np.floor(top)), int(np.floor(left))
    ft, fl = top - t, left - l
    win = image[t:t + h + 1, l:l + w + 1].astype(np.float32)
    rows = win[:-1] * (1 - ft) + win[1:] * ft
    return rows[:, :-1] * (1 - fl) + rows[:, 1:] * fl


def _velocity(rng: np.random.Generator, fastest: float) -> np.ndarray:
    """Pixels per frame (down, right): any direction, speeds from 0.05 to FASTEST spread evenly on a log scale,
    so the slow motions that a mean would blur only slightly, and that are hardest to tell from coding noise,
    are as common as the fast ones."""
    angle, speed = rng.uniform(0, 2 * np.pi), np.exp(rng.uniform(np.log(0.05), np.log(fastest)))
    return speed * np.array([np.sin(angle), np.cos(angle)])


def _mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A sprite's opacity: an ellipse or a rectangle, its edge hard or soft (up to 3 px)."""
    soft = rng.uniform(0.01, 3.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # distance inside the ellipse's edge, in pixels (approximately)
        r = np.sqrt(((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2)
        inside = (1 - r) * min(h, w) / 2
    else:
        inside = np.minimum(np.minimum(yy + 0.5, h - 0.5 - yy), np.minimum(xx + 0.5, w - 0.5 - xx))
    return np.clip(inside / soft, 0, 1)


def synthetic_video(images: list[np.ndarray], index: int, *, frames: int = 9, seed: int = 0,
                    busy: bool = False) -> tuple[np.ndarray, int]:
    """-> (uint8 [FRAMES, SIDE, SIDE] reference frames, the QP to code them at) for video number INDEX.  BUSY:
    one of a second series, in which the camera pans half the time and 10 to 30 objects move all over the
    frame, so that little or nothing stands still (a talking head, a crowd, a view from a moving car)."""
    rng = np.random.default_rng([seed, index, 1] if busy else [seed, index])
    big = [im for im in images if min(im.shape) >= SIDE + 8 * frames]  # room for the pan
    bg = big[rng.integers(len(big))]
    pan = _velocity(rng, 3) if rng.random() < (0.5 if busy else 0.25) else np.zeros(2)
    span = np.abs(pan) * (frames - 1)
    top = rng.uniform(span[0], bg.shape[0] - SIDE - 1 - span[0])
    left = rng.uniform(span[1], bg.shape[1] - SIDE - 1 - span[1])
    video = np.stack([_shifted(bg, top + pan[0] * t, left + pan[1] * t, SIDE, SIDE) for t in range(frames)])
    for _ in range(rng.integers(10, 31) if busy else rng.choice(4, p=[0.1, 0.35, 0.35, 0.2])):
        src = images[rng.integers(len(images))]
        h, w = (int(v) for v in rng.integers(24, min(128, *src.shape) + 1, 2))
        sy, sx = rng.integers(src.shape[0] - h + 1), rng.integers(src.shape[1] - w + 1)
        texture = src[sy:sy + h, sx:sx + w].astype(np.float32)
        alpha = _mask(h, w, rng)
        speed = _velocity(rng, 5) * (rng.random() < 0.85)  # some objects stand still
        y0, x0 = rng.uniform(-h / 2, SIDE - h / 2), rng.uniform(-w / 2, SIDE - w / 2)
        for t in range(frames):
            y, x = y0 + speed[0] * t, x0 + speed[1] * t
            iy, ix = int(np.floor(y)), int(np.floor(x))
            _over(video[t], _moved(texture, y - iy, x - ix, "edge"), _moved(alpha, y - iy, x - ix, "constant"), iy, ix)
    if rng.random() < 0.25:  # a dark scene, as films open and close: the picture squeezed above black
        video = BLACK + (video / 255) * rng.uniform(6, 80)
    if rng.random() < 0.25:  # a fade to or from black, or the light drifting a little; black stays black
        ends = rng.uniform(0, 1.2, 2) if rng.random() < 0.5 else 1 + rng.uniform(-0.1, 0.1, 2)
        gain = np.linspace(*ends, frames)[:, None, None]
        video = BLACK + (video - BLACK) * gain + rng.uniform(-1, 1) * np.arange(frames)[:, None, None]
    if rng.random() < 0.2:
        video = video + rng.normal(0, rng.uniform(0.3, 3.0), video.shape)
    qp = int(rng.integers(QP_RANGE[0], QP_RANGE[1] + 1))
    return np.clip(np.rint(video), 0, 255).astype(np.uint8), qp


def _moved(plane: np.ndarray, dy: float, dx: float, pad: str) -> np.ndarray:
    """HxW PLANE moved down and right by the fractions DY, DX (bilinear): (H+1)x(W+1), the outside padded by PAD."""
    h, w = plane.shape
    return _shifted(np.pad(plane, ((1, 2), (1, 2)), mode=pad), 1 - dy, 1 - dx, h + 1, w + 1)


def _over(frame: np.ndarray, sprite: np.ndarray, alpha: np.ndarray, top: int, left: int) -> None:
    """Blend SPRITE with opacity ALPHA into FRAME at (TOP, LEFT), clipped to the frame; in place."""
    h, w = alpha.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, frame.shape[0]), min(left + w, frame.shape[1])
    if t0 >= t1 or l0 >= l1:
        return
    win = (slice(t0 - top, t1 - top), slice(l0 - left, l1 - left))
    a = alpha[win]
    frame[t0:t1, l0:l1] = frame[t0:t1, l0:l1] * (1 - a) + sprite[win] * a


def coded_video(images: list[np.ndarray], index: int, *, frames: int = 9, seed: int = 0,
                busy: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """-> (reference, all-intra decoded, QP) of synthetic video INDEX (of the BUSY series): uint8 [FRAMES, SIDE,
    SIDE] each."""
    ref, qp = synthetic_video(images, index, frames=frames, seed=seed, busy=busy)
    return ref, np.stack(decode_luma(encode_video(list(ref), qp=qp, intra=True))), qp
