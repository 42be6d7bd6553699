"""Mixed-sample data augmentation: mixup, manifold mixup and FMix.

* mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018, Sec. 2):
  ``x~ = lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(alpha, alpha)``.
* manifold mixup (Verma et al., ICML 2019) applies the same interpolation to hidden features,
  so :func:`mix` accepts tensors of any shape ``(B, ...)``.
* FMix (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation", 2020, Sec. 3): the
  interpolation weight is a binary mask obtained by thresholding a low-frequency random image
  sampled in Fourier space.

Every random draw goes through an explicit ``torch.Generator`` so that a training run is
reproducible from its seed alone, independent of global RNG state touched by other code.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["sample_lambda", "random_permutation", "mix", "fourier_noise", "fmix_mask"]

# Largest seed drawn from the torch generator for numpy; any non-negative int is a valid
# numpy seed, and staying below 2**62 keeps torch.randint's int64 bound comfortably satisfied.
_SEED_BOUND = 2**62


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """Draw the mixing ratio ``lam ~ Beta(alpha, alpha)`` (mixup, Zhang et al. 2018, Sec. 2).

    torch has no generator-aware Beta sampler, so a seed is drawn from ``generator`` and handed to
    numpy's Beta sampler: the result is a deterministic function of the generator's state, and the
    generator advances so consecutive calls give different values.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    seed = int(torch.randint(0, _SEED_BOUND, (1,), generator=generator).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def random_permutation(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Partner index for each sample of the batch (``x_j = x[perm]`` in mixup)."""
    return torch.randperm(batch_size, generator=generator)


def mix(x: torch.Tensor, perm: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """``weight * x + (1 - weight) * x[perm]`` (mixup Sec. 2; FMix Sec. 3 with a mask as weight).

    ``weight`` is either a scalar (mixup on images, manifold mixup on features of any shape
    ``(B, ...)``) or a tensor broadcastable to ``x`` over its trailing dimensions, e.g. an FMix
    ``(H, W)`` mask shared by every image and channel of a ``(B, C, H, W)`` batch.

    Written as two products rather than ``x[perm] + weight * (x - x[perm])`` so that weight 1
    returns ``x`` and weight 0 returns ``x[perm]`` exactly, not up to rounding.
    """
    if isinstance(weight, torch.Tensor):
        weight = weight.to(dtype=x.dtype, device=x.device)
    return weight * x + (1 - weight) * x[perm]


def _frequency_magnitude(size: tuple[int, int]) -> torch.Tensor:
    """``f = sqrt(fy^2 + fx^2)`` in cycles per pixel over the ``rfft2`` grid ``(H, W // 2 + 1)``."""
    height, width = size
    fy = torch.fft.fftfreq(height, dtype=torch.float64)
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def fourier_noise(size: tuple[int, int], decay_power: float, generator: torch.Generator) -> torch.Tensor:
    """Low-frequency grey image ``(H, W)`` from FMix (Harris et al. 2020, Sec. 3).

    Sec. 3: ``Z ~ Complex(N(0, I), N(0, I))``, ``filter(Z, delta)[i, j] = Z[i, j] / f[i, j]**delta``,
    ``g = Re(F^-1(filter(Z, delta)))``; larger ``decay_power`` leaves only the coarsest blobs.
    The zero frequency would have ``1/f = inf``; FMix clamps ``f`` from below at
    ``1 / max(H, W)``, the lowest non-zero frequency along the longer side, which gives the DC term
    the same weight as the fundamental instead of dominating (or dropping) the image. The DC term
    only shifts the image uniformly, so it cannot change which pixels :func:`fmix_mask` selects.

    The spectrum lives on the ``rfft2`` half-plane, so ``irfft2`` yields a real image directly
    (its Hermitian symmetry is implied rather than enforced by hand).
    """
    height, width = size
    freqs = _frequency_magnitude(size)
    scale = 1.0 / torch.clamp(freqs, min=1.0 / max(height, width)) ** decay_power
    spectrum = torch.randn((2, *freqs.shape), generator=generator, dtype=torch.float64)
    complex_spectrum = torch.complex(spectrum[0], spectrum[1]) * scale
    return torch.fft.irfft2(complex_spectrum, s=(height, width)).to(torch.float32)


def fmix_mask(lam: float, size: tuple[int, int], decay_power: float,
              generator: torch.Generator) -> torch.Tensor:
    """Binary float32 ``(H, W)`` FMix mask with mean ``lam`` (Harris et al. 2020, Sec. 3).

    The top ``round(lam * H * W)`` pixels of :func:`fourier_noise` are set to 1. Thresholding by
    rank rather than by value makes the mask's mean match ``lam`` to within half a pixel's share
    ``1 / (2 H W)``, whatever the noise amplitude; callers should still mix the losses with the
    mask's actual mean, which is the exact area ratio.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    height, width = size
    noise = fourier_noise(size, decay_power, generator).flatten()
    n_on = round(lam * height * width)
    top = torch.argsort(noise, descending=True)[:n_on]
    mask = torch.zeros(height * width, dtype=torch.float32).index_fill(0, top, 1.0)
    return mask.reshape(height, width)
