"""``evaluate_samples(dataset, samples)``: the one entry point of the sample
measures of the embedded datasets (``points`` for the 2-D sets,
``classifier`` for digits and stacked digits, ``mnist_classifier`` for the
MNIST sets); plain floats, ready for JSON."""

from __future__ import annotations

from wgan_jax.errors import UserError
from wgan_jax.eval.classifier import digits_metrics, stacked_digits_metrics
from wgan_jax.eval.points import MIN_COUNT, NUM_STD, POINTS, W1_SAMPLES, points_metrics

MNIST5K = ('mnist5k', 'stacked_mnist5k')
DATASETS = ('digits', 'stacked_digits', *POINTS, *MNIST5K)

# How many samples each dataset's published protocol draws (the 2-D mixtures
# and Stacked-MNIST: VEEGAN and PacGAN); digits have none, so about three
# times the held-out digits.
NUM_SAMPLES = {'gaussians8': 2500, 'gaussians25': 2500, 'swissroll': 2500,
               'digits': 2000, 'stacked_digits': 26_000,
               # mnist5k: as many as the classifier's training digits (its floor draws each once).
               'mnist5k': 4000, 'stacked_mnist5k': 26_000}


def evaluate_samples(dataset_name: str, samples, *, seed: int = 0,
                     classifier_seed: int = 0, cache_dir: str | None = None,
                     num_std: float = NUM_STD, min_count: int = MIN_COUNT,
                     w1_samples: int = W1_SAMPLES) -> dict[str, float]:
  """The metrics of ``dataset_name`` for generated ``samples``, as floats.

  Args:
    dataset_name: one of ``DATASETS``.
    samples: points (N, 2) for the 2-D sets; images (N, S, S, C) in [-1, 1]
      (or uint8 pixels) for digits (C = 1 or 3) and stacked digits (C = 3),
      at the size the generator makes (a classifier is trained for it).
      ``NUM_SAMPLES`` gives the counts the published protocols use.
    seed: seeds the real draws that samples are compared with and KID's
      subsets; the same seed gives the same numbers.
    classifier_seed: which digits classifier (keep it fixed to compare runs).
    cache_dir: where the classifier is kept between processes (None: in
      memory only).
    num_std, min_count: the high-quality radius and the samples a mode needs
      to count as covered.
    w1_samples: at most this many samples enter the exact W1.

  Returns:
    gaussians8, gaussians25: ``modes``, ``modes_total``, ``high_quality``,
    ``w1``, ``w1_floor``, ``w1_floor_std``, ``w1_samples``, ``num_samples``;
    swissroll: the same without the modes; digits: see ``digits_metrics``;
    stacked_digits: see ``stacked_digits_metrics``; mnist5k, stacked_mnist5k:
    see ``wgan_jax.eval.mnist_classifier`` (its cache_dir None: the default
    cache directory).
  """
  if dataset_name in POINTS:
    return points_metrics(dataset_name, samples, seed=seed, num_std=num_std,
                          min_count=min_count, w1_samples=w1_samples)
  if dataset_name in MNIST5K:
    from wgan_jax.eval import mnist_classifier  # pylint: disable=g-import-not-at-top
    return mnist_classifier.evaluate_samples(
        dataset_name, samples, seed=seed, classifier_seed=classifier_seed,
        cache_dir=cache_dir, min_count=min_count)
  if dataset_name == 'digits':
    return digits_metrics(samples, seed=seed, classifier_seed=classifier_seed,
                          cache_dir=cache_dir)
  if dataset_name == 'stacked_digits':
    return stacked_digits_metrics(samples, seed=seed, classifier_seed=classifier_seed,
                                  cache_dir=cache_dir, min_count=min_count)
  raise UserError(f'no sample metrics for dataset {dataset_name!r}; they exist for '
                  f'{", ".join(DATASETS)} (for image datasets, use FID: wgan_jax.eval.fid).')
