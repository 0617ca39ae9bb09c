"""Sampling from a trained generator: batched samples, PNG folders, .npz, grids, latent interpolations, GIFs,
and the vector arithmetic of Radford et al. 2015 (sec. 6.3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

Sampler = Callable[[torch.Tensor], torch.Tensor]  # z (B, nz) -> images (B, C, H, W) in [-1, 1]


def noise(n: int, nz: int, seed: int) -> torch.Tensor:
    """Seeded z ~ N(0, I), drawn on the CPU so the same seed gives the same z on any device."""
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed))


def in_batches(sample: Sampler, z: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """G(z) chunk by chunk, moved to the CPU: 50k samples never sit on the device at once."""
    for chunk in z.split(batch_size):
        yield sample(chunk).cpu()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8 (gray keeps one channel)."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def _pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def grid_image(images: torch.Tensor, nrow: int) -> Image.Image:
    grid = make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
    return _pil(to_uint8(grid.unsqueeze(0) * 2 - 1)[0])  # make_grid normalised to [0, 1]


def save_pngs(batches: Iterator[torch.Tensor], folder: Path) -> int:
    """One PNG per image, 000000.png, ... (the input clean-fid, torch-fidelity and pytorch-fid read)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for batch in batches:
        for pixels in to_uint8(batch):
            _pil(pixels).save(folder / f"{count:06d}.png")
            count += 1
    return count


def save_npz(batches: Iterator[torch.Tensor], path: Path) -> int:
    """All images as one uint8 array ``images`` of shape (N, H, W, C)."""
    images = np.concatenate([to_uint8(b) for b in batches])
    np.savez_compressed(path, images=images)
    return len(images)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016), row-wise: z0, z1 (P, nz), t (T,) -> (P, T, nz)."""
    unit0, unit1 = z0 / z0.norm(dim=1, keepdim=True), z1 / z1.norm(dim=1, keepdim=True)
    omega = torch.acos((unit0 * unit1).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]  # (P, 1, 1)
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * z0[:, None] + torch.sin(t * omega) * z1[:, None]) / torch.sin(omega)


def interpolation(sample: Sampler, z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Images along the slerp path of each pair: (P, steps, C, H, W)."""
    path = slerp(z0, z1, torch.linspace(0, 1, steps))  # (P, steps, nz)
    images = sample(path.reshape(-1, path.size(-1))).cpu()
    return images.reshape(path.size(0), steps, *images.shape[1:])


def save_gif(frames: Sequence[Image.Image], path: Path, ms_per_frame: int = 120, bounce: bool = True) -> None:
    """An animated GIF of the frames; ``bounce`` plays them forward, then back (a seamless loop)."""
    loop = [*frames, *frames[-2:0:-1]] if bounce else list(frames)
    loop[0].save(path, save_all=True, append_images=loop[1:], duration=ms_per_frame, loop=0)


def vector_arithmetic(z: torch.Tensor, a: Sequence[int], b: Sequence[int], c: Sequence[int]) -> torch.Tensor:
    """mean(z[a]) - mean(z[b]) + mean(z[c]): e.g. smiling woman - neutral woman + neutral man (paper, fig. 7)."""
    return z[list(a)].mean(0) - z[list(b)].mean(0) + z[list(c)].mean(0)


def arithmetic_row(
    pool: torch.Tensor, a: Sequence[int], b: Sequence[int], c: Sequence[int], variants: int, seed: int
) -> torch.Tensor:
    """z for one figure row: mean z[a], mean z[b], mean z[c], the result, then ``variants`` results plus
    0.25 * N(0, I) noise (as in the paper, to show how stable the result is). Indices point into ``pool``."""
    bad = [i for i in (*a, *b, *c) if not 0 <= i < len(pool)]
    if bad or not (a and b and c):
        raise ValueError(
            f"arithmetic indices a={list(a)}, b={list(b)}, c={list(c)}: each list needs at least one index in "
            f"0..{len(pool) - 1} (the numbered pool){f'; out of range: {bad}' if bad else ''}."
        )
    target = vector_arithmetic(pool, a, b, c)
    means = torch.stack([pool[list(group)].mean(0) for group in (a, b, c)])
    return torch.cat([means, target[None], target + 0.25 * noise(variants, pool.size(1), seed)])
