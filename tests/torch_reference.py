"""The PyTorch port of the reference, for the tests (it lives in the package,
``wgan_jax.reference_torch``, so that the benchmark can use it too)."""

from wgan_jax.reference_torch import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
