"""Procedurally generated face identities: the built-in data that needs no download.

Each identity is a fixed vector of facial parameters (face shape, skin, hair style and colour,
eye spacing/size/colour, brows, nose, mouth, glasses, beard, a mole). Each image of that identity
re-draws the nuisances a real face photo has: pose (in-plane rotation, yaw, translation, scale),
lighting (brightness, directional gradient, colour cast), expression (smile, open mouth, blink,
raised brows), background (colour, gradient, stripes), sensor noise and a random occluder.

Rendering is vectorised in torch (soft-edged signed-distance shapes alpha-blended over a
coordinate grid) and deterministic. Every random number is a hash of (seed, split, identity, image,
draw) -- a counter-based generator -- so image ``j`` of identity ``i`` is the same whichever images
are rendered with it, in which order, in which process. That is what lets
:class:`SyntheticFaceDataset` render images lazily, only the ones a batch asks for, in DataLoader
workers: a run's first step does not wait for the whole set to be drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

# Identity parameters: name -> (low, high) of a uniform draw.
_IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "face_w": (0.48, 0.66),
    "face_h": (0.62, 0.80),
    "skin_r": (0.35, 0.98),
    "skin_g": (0.25, 0.80),
    "skin_b": (0.15, 0.70),
    "hair_r": (0.02, 0.85),
    "hair_g": (0.02, 0.65),
    "hair_b": (0.02, 0.55),
    "hair_top": (0.05, 0.30),  # how far the hair rises above the face
    "hair_side": (0.00, 0.18),  # how far it falls beside the face
    "fringe": (-0.55, -0.15),  # where the hairline sits (face coords, y down)
    "eye_dx": (0.15, 0.27),
    "eye_y": (-0.22, -0.02),
    "eye_r": (0.06, 0.11),
    "iris_r": (0.02, 0.70),
    "iris_g": (0.02, 0.65),
    "iris_b": (0.02, 0.75),
    "brow_gap": (0.07, 0.16),
    "brow_thick": (0.015, 0.045),
    "brow_tilt": (-0.35, 0.35),
    "nose_len": (0.12, 0.30),
    "nose_w": (0.04, 0.10),
    "mouth_y": (0.28, 0.46),
    "mouth_w": (0.12, 0.28),
    "lip_r": (0.45, 0.95),
    "lip_g": (0.10, 0.45),
    "lip_b": (0.10, 0.45),
    "glasses": (0.0, 1.0),  # thresholded: ~25% wear glasses
    "beard": (0.0, 1.0),  # thresholded: ~25% have a beard
    "mole": (0.0, 1.0),  # thresholded: ~40% have a mole
    "mole_x": (-0.35, 0.35),
    "mole_y": (-0.10, 0.40),
}
_IDENTITY_KEYS = list(_IDENTITY_RANGES)

#: Per-split seeds so that train and validation identities never coincide.
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


@dataclass(frozen=True)
class SyntheticFaceConfig:
    """How hard the nuisances are; 1.0 is the default difficulty."""

    image_size: int = 64
    difficulty: float = 1.0
    occlusion_prob: float = 0.3


_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """PCG hash (Jarzynski & Olano, JCGT 2020) of uint32 values held in int64: a well-mixed uint32 per input.

    Products stay below 2**62, so int64 arithmetic never overflows.
    """
    state = (x * 747796405 + 2891336453) & _MASK32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & _MASK32
    return (word >> 22) ^ word


def _key(*parts: int | torch.Tensor) -> torch.Tensor:
    """Hash a tuple of integers (ints or int64 tensors, broadcast) into one uint32 key."""
    h = torch.zeros((), dtype=torch.int64)
    for part in parts:
        h = _hash32((h ^ (torch.as_tensor(part, dtype=torch.int64) & _MASK32)) & _MASK32)
    return h


def _uniform(keys: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """Uniform [0, 1) draws number ``first .. first+count-1`` of each key: (N, count) float32."""
    draw = _hash32(torch.arange(first, first + count, dtype=torch.int64))
    h = _hash32((keys.view(-1, 1) + draw.view(1, -1)) & _MASK32)
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def identity_params(num_identities: int, seed: int, split: str = "train") -> torch.Tensor:
    """Draw ``num_identities`` x len(_IDENTITY_KEYS) identity parameters.

    Identity ``i`` depends only on (seed, split, i), so growing the set keeps existing people.
    """
    if split not in _SPLIT_OFFSET:
        raise ValueError(f"split must be one of {sorted(_SPLIT_OFFSET)}, got {split!r}")
    lo = torch.tensor([r[0] for r in _IDENTITY_RANGES.values()])
    hi = torch.tensor([r[1] for r in _IDENTITY_RANGES.values()])
    keys = _key(seed, _SPLIT_OFFSET[split], torch.arange(num_identities), -1)
    return lo + _uniform(keys, 0, len(lo)) * (hi - lo)


def image_keys(seed: int, split: str, identity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The random key of image ``image`` of identity ``identity`` (int64 tensors, broadcast): all its nuisances."""
    return _key(seed, _SPLIT_OFFSET[split], identity, image)


def _soft(sdf: torch.Tensor, edge: float) -> torch.Tensor:
    """Soft inside-mask of a signed distance (negative inside)."""
    return torch.sigmoid(-sdf / edge)


def _ellipse(x: torch.Tensor, y: torch.Tensor, cx, cy, rx, ry) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse (broadcasting over images)."""
    return (torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * torch.minimum(
        torch.as_tensor(rx), torch.as_tensor(ry)
    )


def _blend(img: torch.Tensor, mask: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Alpha-blend ``color`` (N,3) into ``img`` (N,3,H,W) where ``mask`` (N,H,W) is 1."""
    return img.lerp_(color[:, :, None, None].expand_as(img), mask.unsqueeze(1))


def render_faces(params: torch.Tensor, keys: torch.Tensor, cfg: SyntheticFaceConfig) -> torch.Tensor:
    """Render one image per row of identity ``params`` (N, P) -> uint8 (N, 3, S, S).

    The identity is fixed by ``params``; the nuisances (pose, light, expression, background,
    occluder, noise) are hashed from ``keys`` (N,) (:func:`image_keys`), so each image depends on
    its own row only.
    """
    n, s, d = params.shape[0], cfg.image_size, cfg.difficulty
    if keys.shape != (n,):
        raise ValueError(f"one key per image: {n} images, keys of shape {tuple(keys.shape)}")
    p = {k: params[:, i].view(n, 1, 1) for i, k in enumerate(_IDENTITY_KEYS)}
    drawn = 0  # draws used so far: every image uses the same draw numbers for the same quantity

    def rnd(lo: float, hi: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
        nonlocal drawn
        count = math.prod(shape)
        u = _uniform(keys, drawn, count).view(n, *shape)
        drawn += count
        return lo + (hi - lo) * u

    def nuisance(width: float) -> torch.Tensor:  # symmetric draw scaled by difficulty
        return rnd(-width * d, width * d).view(n, 1, 1)

    lin = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    gx, gy = gx[None], gy[None]

    # Pose: image coords -> face coords (inverse similarity transform).
    theta = nuisance(0.30)
    scale = 1.0 + nuisance(0.15)
    tx, ty = nuisance(0.14), nuisance(0.12)
    cos, sin = torch.cos(theta), torch.sin(theta)
    ux, uy = (gx - tx) / scale, (gy - ty) / scale
    x = cos * ux + sin * uy
    y = -sin * ux + cos * uy
    yaw = nuisance(0.35)  # turning the head: inner features slide, the far side narrows
    fx = x - yaw * 0.45 * torch.clamp(1 - y**2, min=0)

    # Background: random colour, gradient and stripes.
    bg = rnd(0.0, 1.0, (3,))
    img = bg[:, :, None, None].expand(n, 3, s, s)
    ang = rnd(0, 2 * math.pi).view(n, 1, 1)
    grad = (gx * torch.cos(ang) + gy * torch.sin(ang)) * rnd(0, 0.35 * d).view(n, 1, 1)
    freq = rnd(2, 9).view(n, 1, 1)
    phase = rnd(0, 2 * math.pi).view(n, 1, 1)
    stripes = torch.sin(freq * (gx * torch.sin(ang) - gy * torch.cos(ang)) + phase)
    stripes = stripes * rnd(0, 0.15 * d).view(n, 1, 1)
    img = (img + (grad + stripes).unsqueeze(1)).clamp_(0, 1)

    # Expression.
    smile = nuisance(0.08)
    mouth_open = rnd(0, 0.06 * d).view(n, 1, 1)
    blink = rnd(0.35, 1.0).view(n, 1, 1)
    brow_raise = nuisance(0.04)

    skin = params[:, [_IDENTITY_KEYS.index(c) for c in ("skin_r", "skin_g", "skin_b")]]
    hair = params[:, [_IDENTITY_KEYS.index(c) for c in ("hair_r", "hair_g", "hair_b")]]
    iris = params[:, [_IDENTITY_KEYS.index(c) for c in ("iris_r", "iris_g", "iris_b")]]
    lips = params[:, [_IDENTITY_KEYS.index(c) for c in ("lip_r", "lip_g", "lip_b")]]
    edge = 1.5 / s

    # Hair mass behind the face, then the face.
    hair_rx = p["face_w"] + p["hair_side"]
    hair_ry = p["face_h"] * 0.75 + p["hair_top"] * 0.5
    hair_mask = _soft(_ellipse(x, y, 0.0, -p["face_h"] * 0.25 - p["hair_top"] * 0.3, hair_rx, hair_ry), edge)
    img = _blend(img, hair_mask, hair)
    face_rx = p["face_w"] * (1 - yaw.abs() * 0.25)
    face_mask = _soft(_ellipse(x, y, yaw * 0.1, 0.0, face_rx, p["face_h"]), edge)
    img = _blend(img, face_mask, skin)
    # Fringe: hair over the top of the face down to the hairline.
    fringe = face_mask * _soft(y - p["fringe"] + 0.04 * torch.sin(x * 9 + p["hair_side"] * 40), edge)
    img = _blend(img, fringe, hair)
    beard_on = (p["beard"] > 0.75).float()
    beard = face_mask * _soft(p["mouth_y"] - 0.12 - y, edge * 2) * beard_on * 0.85
    img = _blend(img, beard, hair * 0.7)

    # Eyes: sclera, iris, lids (blink), brows, glasses.
    for side in (-1.0, 1.0):
        ex = side * p["eye_dx"] * (1 - side * yaw * 0.5)
        ey = p["eye_y"]
        ry = p["eye_r"] * 0.6 * blink
        sclera = _soft(_ellipse(fx, y, ex, ey, p["eye_r"], ry), edge)
        img = _blend(img, sclera, torch.full_like(skin, 0.95))
        pupil = sclera * _soft(_ellipse(fx, y, ex + yaw * 0.05, ey, p["eye_r"] * 0.5, p["eye_r"] * 0.5), edge)
        img = _blend(img, pupil, iris)
        brow_y = ey - p["brow_gap"] - brow_raise + side * p["brow_tilt"] * (fx - ex) * 0.5
        brow = _soft(torch.maximum((y - brow_y).abs() - p["brow_thick"], (fx - ex).abs() - p["eye_r"] * 1.3), edge)
        img = _blend(img, brow, hair * 0.8)
        rim = (_ellipse(fx, y, ex, ey, p["eye_r"] * 1.7, p["eye_r"] * 1.4)).abs() - 0.012
        glasses = _soft(rim, edge) * (p["glasses"] > 0.75).float()
        img = _blend(img, glasses, torch.full_like(skin, 0.08))

    # Nose: a shaded wedge; mouth: lips with smile and opening.
    nose_top, nose_bot = p["eye_y"] + 0.05, p["eye_y"] + 0.05 + p["nose_len"]
    t = ((y - nose_top) / (nose_bot - nose_top)).clamp(0, 1)
    nose_halfwidth = p["nose_w"] * (0.3 + 0.7 * t)
    nose_sdf = torch.maximum((fx + yaw * 0.08).abs() - nose_halfwidth, torch.maximum(nose_top - y, y - nose_bot))
    img = _blend(img, _soft(nose_sdf, edge) * 0.55, skin * 0.55)
    curve = smile * (fx / p["mouth_w"]).clamp(-1, 1) ** 2 * -1.0
    my = p["mouth_y"] + curve
    mouth_sdf = torch.maximum(fx.abs() - p["mouth_w"], (y - my).abs() - (0.02 + mouth_open))
    img = _blend(img, _soft(mouth_sdf, edge), lips)
    inner = _soft(torch.maximum(fx.abs() - p["mouth_w"] * 0.8, (y - my).abs() - mouth_open * 0.7), edge)
    img = _blend(img, inner, torch.full_like(skin, 0.12))
    mole_on = (p["mole"] > 0.6).float()
    mole = _soft(_ellipse(fx, y, p["mole_x"], p["mole_y"], 0.025, 0.025), edge) * mole_on * face_mask
    img = _blend(img, mole, torch.full_like(skin, 0.1))

    # Lighting: brightness, directional shading, colour cast.
    bright = 1.0 + nuisance(0.35)
    lang = rnd(0, 2 * math.pi).view(n, 1, 1)
    shade = 1.0 + (gx * torch.cos(lang) + gy * torch.sin(lang)) * rnd(0, 0.45 * d).view(n, 1, 1)
    cast = 1.0 + rnd(-0.12 * d, 0.12 * d, (3,))
    img = img * (bright * shade).unsqueeze(1) * cast[:, :, None, None]

    # Occluder: a random rectangle (hand, microphone, scarf...).
    occ_on = (rnd(0, 1) < cfg.occlusion_prob).float().view(n, 1, 1)
    ocx, ocy = rnd(-0.8, 0.8).view(n, 1, 1), rnd(-0.8, 0.8).view(n, 1, 1)
    ow, oh = rnd(0.1, 0.45).view(n, 1, 1), rnd(0.1, 0.45).view(n, 1, 1)
    occ = _soft(torch.maximum((gx - ocx).abs() - ow, (gy - ocy).abs() - oh), edge) * occ_on
    img = _blend(img, occ, rnd(0, 1, (3,)))

    # Sensor noise: Gaussian per pixel. Hashing every pixel costs 3x torch.randn, so each image gets a
    # generator seeded by its own key instead (one call per image: as fast as one randn for the chunk).
    sigma = rnd(0.0, 0.08 * d).view(n, 1, 1, 1)
    noise = torch.empty(n, 3, s, s)
    for i, key in enumerate(keys.tolist()):
        torch.randn((3, s, s), generator=torch.Generator().manual_seed(key), out=noise[i])
    img = img + sigma * noise
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


class SyntheticFaceDataset(Dataset):
    """One split of synthetic faces, rendered lazily: an image is drawn the first time a batch asks for it.

    Images are identity-major (``labels`` = 0,0,..,1,1,..). Rendered images are kept (``keep=True``), so
    each is drawn once per process; with ``num_workers > 0`` each worker draws and keeps the ones it
    serves. Memory for the whole split is reserved up front but only touched pages are used.
    ``__getitems__`` serves a whole batch (rendering the missing images in chunks): no per-image work.
    """

    chunk = 64  # images rendered per call: small chunks keep every temporary in cache

    def __init__(
        self,
        num_identities: int,
        images_per_identity: int,
        seed: int,
        split: str,
        cfg: SyntheticFaceConfig,
        keep: bool = True,
    ) -> None:
        self.cfg, self.keep = cfg, keep
        self.params = identity_params(num_identities, seed, split)
        self.labels = torch.arange(num_identities).repeat_interleave(images_per_identity)
        image = torch.arange(images_per_identity).repeat(num_identities)
        self.keys = image_keys(seed, split, self.labels, image)
        self._images: torch.Tensor | None = None  # allocated on first use, in the process that renders
        self._done: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        # A worker started with spawn gets the recipe, not this process's images: torch would move pickled
        # tensors into shared memory (/dev/shm, often small) and mark images "done" that the worker lacks.
        state = self.__dict__.copy()
        state["_images"] = state["_done"] = None
        return state

    @property
    def rendered(self) -> int:
        """How many images this process has drawn and kept."""
        return 0 if self._done is None else int(self._done.sum())

    def render(self, idx: torch.Tensor) -> torch.Tensor:
        """Draw images ``idx`` (int64) now, without keeping them: uint8 (len(idx), 3, S, S)."""
        s = self.cfg.image_size
        out = torch.empty(len(idx), 3, s, s, dtype=torch.uint8)
        for start in range(0, len(idx), self.chunk):
            part = idx[start : start + self.chunk]
            out[start : start + len(part)] = render_faces(self.params[self.labels[part]], self.keys[part], self.cfg)
        return out

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.keep:
            return self.render(idx)
        if self._images is None or self._done is None:
            s = self.cfg.image_size
            self._images = torch.empty(len(self), 3, s, s, dtype=torch.uint8)
            self._done = torch.zeros(len(self), dtype=torch.bool)
        missing = torch.unique(idx[~self._done[idx]])
        if len(missing):
            self._images[missing] = self.render(missing)
            self._done[missing] = True
        return self._images[idx]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._gather(torch.tensor([i]))[0], self.labels[i], torch.tensor(i)

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.tensor(np.asarray(indices, dtype=np.int64))  # owns its memory: workers can share it
        return self._gather(idx), self.labels[idx], idx


def generate_split(
    num_identities: int,
    images_per_identity: int,
    seed: int,
    split: str,
    cfg: SyntheticFaceConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a whole split at once: uint8 images (N, 3, S, S) and int64 labels (N,), identity-major."""
    ds = SyntheticFaceDataset(num_identities, images_per_identity, seed, split, cfg, keep=False)
    return ds.render(torch.arange(len(ds))), ds.labels
