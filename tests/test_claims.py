"""The stopping rule of experiments/claims.py on signals with known answers."""

import numpy as np

from experiments import claims
from wgan_jax import visualize


def _rule(values):
  values = np.asarray(values, np.float64)
  window = max(1, len(values) // 20)
  return claims.flattened_at(np.arange(len(values)), visualize.median_filter(values, window))


def test_a_signal_that_falls_then_levels_off_flattens_at_the_knee():
  rng = np.random.default_rng(0)
  t = np.arange(2000)
  signal = 0.2 + np.exp(-t / 150.0) + 0.01 * rng.standard_normal(t.size)
  flat = _rule(signal)
  # exp(-t/150) falls below 10% of the size (0.2 + exp(-200/150) ~ 0.46) at t ~ 580.
  assert flat is not None and 450 < flat < 750


def test_a_signal_still_falling_to_the_end_has_not_flattened():
  t = np.arange(2000)
  assert _rule(0.0025 - 0.002 * t / t[-1]) is None


def test_a_wasserstein_estimate_settling_at_zero_flattens():
  # Relative to the final value alone (almost 0), this noise would never be flat.
  rng = np.random.default_rng(1)
  t = np.arange(2000)
  signal = np.exp(-t / 100.0) + 0.002 * rng.standard_normal(t.size)
  flat = _rule(signal)
  assert flat is not None and flat < 1500


def test_a_warm_up_spike_does_not_hide_a_later_drift():
  t = np.arange(2000)
  signal = np.where(t < 25, 50.0, 1.0 - 0.5 * t / t[-1])
  assert _rule(signal) is None
  assert _rule(np.where(t < 25, 50.0, 1.0)) <= 50


def test_summarize_applies_the_rule_again_to_a_stored_run():
  t = list(range(200))
  falling = {'gen_iter': t, 'median': [1.0 - 0.9 * i / 199 for i in t], 'flat_from': 0}
  result = {'seeds': [{'training': falling, 'evaluation': [{'gen_iter': 199, 'w1': 0.1}]}]}
  ruled = claims.ruled(result)
  assert ruled['seeds'][0]['training']['flat_from'] is None
  assert ruled['summary']['flat_from'] == [None]
  assert ruled['summary']['w1']['mean'] == 0.1


def test_a_shared_run_has_the_settings_of_the_run_it_reads():
  for (experiment, name), (from_experiment, from_name) in claims.SAME_AS.items():
    assert name in claims.RUNS[experiment] and from_name in claims.RUNS[from_experiment]
    assert claims.source(experiment, name) == (from_experiment, from_name)
    mine, theirs = (claims.run_config(*claims.RUNS[e][n]) for e, n in
                    ((experiment, name), (from_experiment, from_name)))
    assert claims.settings(mine) == claims.settings(theirs), (experiment, name)
  assert claims.source('mode_collapse', 'gaussians8-gan') == ('mode_collapse', 'gaussians8-gan')
