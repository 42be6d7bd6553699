import numpy as np
import pytest
import torch

from wsss_lib.mixing import fmix_mask, fourier_noise, mix, random_permutation, sample_lambda


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- lambda and permutation -------------------------------------------------------------------

def test_sample_lambda_is_deterministic_given_the_generator():
    assert sample_lambda(1.0, gen(3)) == sample_lambda(1.0, gen(3))
    g = gen(3)
    first, second = sample_lambda(1.0, g), sample_lambda(1.0, g)
    assert first != second  # the generator advances between draws
    assert sample_lambda(1.0, gen(3)) != sample_lambda(1.0, gen(4))


def test_sample_lambda_follows_beta_alpha_alpha():
    g = gen(0)
    uniform = np.array([sample_lambda(1.0, g) for _ in range(2000)])
    u_shaped = np.array([sample_lambda(0.2, g) for _ in range(2000)])
    assert ((uniform >= 0) & (uniform <= 1)).all() and ((u_shaped >= 0) & (u_shaped <= 1)).all()
    # Beta(1, 1) is uniform: mean 1/2 (std of the mean ~0.0065), 20 % of mass in the two tails.
    assert abs(uniform.mean() - 0.5) < 0.03
    assert abs(((uniform < 0.1) | (uniform > 0.9)).mean() - 0.2) < 0.04
    # Beta(0.2, 0.2) piles up at both ends (~67 % of mass beyond 0.1 / 0.9), symmetric around 1/2.
    assert ((u_shaped < 0.1) | (u_shaped > 0.9)).mean() > 0.6
    assert abs((u_shaped < 0.5).mean() - 0.5) < 0.05


def test_sample_lambda_rejects_non_positive_alpha():
    with pytest.raises(ValueError):
        sample_lambda(0.0, gen(0))


def test_random_permutation_is_a_deterministic_permutation():
    perm = random_permutation(10, gen(5))
    assert sorted(perm.tolist()) == list(range(10))
    assert torch.equal(perm, random_permutation(10, gen(5)))


# --- mix --------------------------------------------------------------------------------------

def test_mix_scalar_matches_hand_computed_values():
    x = torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])  # manifold-mixup features (B, D)
    perm = torch.tensor([2, 0, 1])
    expected = torch.tensor([[0.25 * 1 + 0.75 * 100, 0.25 * 2 + 0.75 * 200],
                             [0.25 * 10 + 0.75 * 1, 0.25 * 20 + 0.75 * 2],
                             [0.25 * 100 + 0.75 * 10, 0.25 * 200 + 0.75 * 20]])
    torch.testing.assert_close(mix(x, perm, 0.25), expected)
    torch.testing.assert_close(mix(x, perm, torch.tensor(0.25)), expected)


def test_mix_with_mask_takes_each_pixel_from_one_image():
    x = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)  # (B, C, H, W)
    perm = torch.tensor([1, 0])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = mix(x, perm, mask)
    # Image 0, channel 1 is 6..11 and image 1, channel 1 is 18..23: pixels with mask 1 keep image 0.
    assert out[0, 1].tolist() == [[6.0, 19.0, 8.0], [21.0, 22.0, 11.0]]
    assert out[1, 0].tolist() == [[12.0, 1.0, 14.0], [3.0, 4.0, 17.0]]


def test_mix_endpoints_are_exact():
    x = torch.randn(4, 3, 5, 6, generator=gen(0))
    perm = random_permutation(4, gen(1))
    assert torch.equal(mix(x, perm, 1.0), x)
    assert torch.equal(mix(x, perm, 0.0), x[perm])
    assert torch.equal(mix(x, perm, torch.ones(5, 6)), x)
    assert torch.equal(mix(x, perm, torch.zeros(5, 6)), x[perm])


# --- FMix -------------------------------------------------------------------------------------

def low_frequency_energy_fraction(mask: torch.Tensor, radius: float) -> float:
    """Share of the mean-removed power spectrum at |f| <= radius (cycles per pixel)."""
    power = torch.fft.fft2(mask - mask.mean()).abs() ** 2
    height, width = mask.shape
    freqs = torch.sqrt(torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.fftfreq(width)[None, :] ** 2)
    return float(power[freqs <= radius].sum() / power.sum())


@pytest.mark.parametrize("size", [(32, 32), (17, 23)])
@pytest.mark.parametrize("lam", [0.1, 0.37, 0.5, 0.9])
def test_fmix_mask_is_binary_with_mean_lam(size, lam):
    mask = fmix_mask(lam, size, 3.0, gen(11))
    assert mask.shape == size and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs(mask.mean().item() - lam) <= 1.0 / (size[0] * size[1])


def test_fmix_mask_and_noise_are_deterministic_given_the_generator():
    assert torch.equal(fmix_mask(0.4, (17, 23), 3.0, gen(2)), fmix_mask(0.4, (17, 23), 3.0, gen(2)))
    assert not torch.equal(fmix_mask(0.4, (17, 23), 3.0, gen(2)), fmix_mask(0.4, (17, 23), 3.0, gen(3)))
    noise = fourier_noise((17, 23), 3.0, gen(2))
    assert noise.shape == (17, 23) and noise.dtype == torch.float32
    assert torch.isfinite(noise).all()  # the zero frequency's 1/f is clamped, not infinite
    assert torch.equal(noise, fourier_noise((17, 23), 3.0, gen(2)))


@pytest.mark.parametrize("size,radius", [((32, 32), 0.1), ((17, 23), 0.15)])
def test_fmix_mask_energy_is_concentrated_at_low_frequency(size, radius):
    # Thresholds: over 500 seeds the FMix fraction never fell below 0.70 (and a white-noise mask's
    # never rose above 0.09), so 0.5 / 0.2 leave a wide margin on either side.
    n_pixels = size[0] * size[1]
    for seed in range(6):
        for lam in (0.37, 0.5):
            fmix = fmix_mask(lam, size, 3.0, gen(seed))
            white = torch.zeros(n_pixels)
            white[torch.randperm(n_pixels, generator=gen(100 + seed))[:round(lam * n_pixels)]] = 1.0
            white = white.reshape(size)
            assert fmix.mean() == white.mean()
            assert low_frequency_energy_fraction(fmix, radius) > 0.5
            assert low_frequency_energy_fraction(white, radius) < 0.2


def test_fmix_mask_blobs_grow_with_decay_power():
    # Fewer 0/1 transitions between neighbours means larger, smoother regions.
    def boundary_length(mask: torch.Tensor) -> float:
        return float((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())
    smooth = sum(boundary_length(fmix_mask(0.5, (32, 32), 4.0, gen(s))) for s in range(5))
    rough = sum(boundary_length(fmix_mask(0.5, (32, 32), 0.0, gen(s))) for s in range(5))
    assert smooth < 0.3 * rough
