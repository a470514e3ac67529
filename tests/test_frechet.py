import jax
import numpy as np
import pytest
import scipy.linalg

from dreamjax.methods import frechet
from dreamjax.training import models
from dreamjax.errors import ConfigError
from conftest import synthetic_images


def _scipy_reference(a, b):
  mu_a, mu_b = a.mean(0), b.mean(0)
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  covmean = scipy.linalg.sqrtm(ca @ cb).real
  return np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * covmean)


def test_matches_scipy_reference_and_gaussian_closed_form():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 6))
  b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 2.0
  assert frechet.frechet_distance(a, b) == pytest.approx(_scipy_reference(a, b), rel=1e-6)
  # Shift only: the distance is |shift|² (up to sampling of the means).
  big = rng.normal(size=(20000, 3))
  assert frechet.frechet_distance(big, big + 3.0) == pytest.approx(27.0, rel=1e-6)


def test_self_distance_is_zero_even_when_singular():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(50, 80))  # fewer samples than dimensions: singular covariance
  a[:, :10] = 0.0                # and dead features, as ReLU layers have
  assert abs(frechet.frechet_distance(a, a)) < 1e-6
  assert frechet.frechet_distance(a, a[::-1]) < 1e-6


def test_bad_shapes_refused():
  with pytest.raises(ConfigError, match="same D"):
    frechet.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ConfigError, match="at least 2"):
    frechet.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_real_splits_close_and_noise_far():
  x1, _ = synthetic_images(300, seed=1)
  x2, _ = synthetic_images(300, seed=2)
  x1, x2 = x1[..., None] / np.float32(255), x2[..., None] / np.float32(255)
  noise = np.random.default_rng(0).uniform(size=x1.shape).astype(np.float32)
  model = models.CNN(num_classes=10, conv_features=(4, 8), pool=(True, True), dense_features=(16,))
  variables = models.init_variables(model, jax.random.key(0), (28, 28, 1))
  feats = frechet.features(model, variables, x1, batch_size=128)  # padded last chunk
  assert feats.shape == (300, 16)
  np.testing.assert_allclose(
      feats[:5], np.asarray(models.apply_with_activations(model, variables, x1[:5])[1]["dense0"]),
      rtol=1e-5, atol=1e-6)
  same = frechet.fid(model, variables, x1, x1)
  real = frechet.fid(model, variables, x1, x2)
  far = frechet.fid(model, variables, x1, noise)
  assert same < 1e-6
  assert real < 0.1 * far
  with pytest.raises(ConfigError, match="fid_layer"):
    frechet.features(model, variables, x1, layer="nope")


def test_kernel_distance_is_unbiased_for_set_size_where_frechet_is_not():
  """Two samples of one distribution: KID is about zero at any size; the Fréchet
  distance of a small set is inflated (the bias the study's real sets showed)."""
  rng = np.random.default_rng(3)
  ref = rng.normal(size=(4000, 16))
  small, large = rng.normal(size=(100, 16)), rng.normal(size=(3000, 16))
  kid_small = frechet.kernel_inception_distance(small, ref)
  kid_large = frechet.kernel_inception_distance(large, ref)
  assert abs(kid_small) < 0.05 and abs(kid_large) < 0.01
  assert frechet.frechet_distance(small, ref) > 5 * frechet.frechet_distance(large, ref)
  shifted = frechet.kernel_inception_distance(rng.normal(size=(500, 16)) + 1.0, ref)
  assert shifted > 10 * max(abs(kid_small), abs(kid_large))


def test_kernel_distance_matches_a_direct_sum():
  rng = np.random.default_rng(4)
  a, b = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.5
  k = lambda x, y: (np.dot(x, y) / 3 + 1) ** 3
  want = (sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / 42
          + sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / 20
          - 2 * sum(k(x, y) for x in a for y in b) / 35)
  assert frechet.kernel_inception_distance(a, b) == pytest.approx(want, rel=1e-9)


def test_draws_are_disjoint_fixed_and_none_from_a_small_set():
  rows = frechet.draws(1050, 100, max_draws=20, seed=0)
  assert len(rows) == 10 and all(len(r) == 100 for r in rows)
  every = np.concatenate(rows)
  assert len(set(every.tolist())) == 1000 and every.max() < 1050
  again = frechet.draws(1050, 100, max_draws=20, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(rows, again))
  assert len(frechet.draws(250, 100, max_draws=10)) == 2
  assert frechet.draws(99, 100, max_draws=10) == []
  with pytest.raises(ConfigError, match="num_images"):
    frechet.draws(100, 1)


def test_sets_of_different_sizes_read_alike_at_a_matched_size():
  """The bias the study's real labeled sets showed (7.48 at N = 100, 0.66 at N = 5000):
  two sets of one distribution measured whole differ several-fold; measured on the
  same number of images they agree, and a set of another distribution stays far."""
  rng = np.random.default_rng(5)
  ref = rng.normal(size=(2000, 16))
  small, large = rng.normal(size=(100, 16)), rng.normal(size=(5000, 16))
  assert frechet.frechet_distance(small, ref) > 5 * frechet.frechet_distance(large, ref)
  at_small = frechet.matched_frechet(small, ref, 100, max_draws=10)
  assert at_small == pytest.approx(frechet.frechet_distance(small, ref))  # one draw: itself
  # What sets of 100 read, on average over ten of them, is what the large set reads.
  expected = np.mean([frechet.frechet_distance(rng.normal(size=(100, 16)), ref)
                      for _ in range(10)])
  at_large = frechet.matched_frechet(large, ref, 100, max_draws=10)
  assert abs(at_large - expected) < 0.1 * expected
  assert frechet.frechet_distance(large, ref) < 0.3 * expected
  far = frechet.matched_frechet(rng.normal(size=(5000, 16)) + 1.0, ref, 100, max_draws=10)
  assert far > 2 * at_large
  assert frechet.matched_frechet(small, ref, 101) is None
