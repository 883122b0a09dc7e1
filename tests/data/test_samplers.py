"""The order in which examples are used."""

import numpy as np
import pytest

from wgan_jax import data as data_lib
from wgan_jax.errors import UserError


def test_epoch_sampler_covers_each_epoch_once():
  sampler = data_lib.EpochSampler(10, 3, seed=5)
  batches = sampler.indices(0, 6)  # 3 batches per epoch; the 10th example is dropped
  for epoch in (batches[:3], batches[3:]):
    assert len(set(epoch.ravel())) == 9
  assert not np.array_equal(batches[:3], batches[3:])
  np.testing.assert_array_equal(sampler.indices(4, 2), batches[4:6])
  with pytest.raises(UserError, match='larger than the dataset'):
    data_lib.EpochSampler(10, 11, seed=0)
