"""The WGAN objective: no sigmoid, no log.

The critic f maximises E[f(real)] - E[f(fake)], an estimate of the
Wasserstein-1 distance; the generator maximises E[f(G(z))]. Both are written
as losses to minimise. The reference code trains a critic of the opposite
sign (it minimises f(real) - f(fake)); its printed Loss_D equals
``critic_loss`` here and its Loss_G equals ``generator_loss``.
"""

import jax.numpy as jnp


def wasserstein_estimate(f_real, f_fake):
  return jnp.mean(f_real) - jnp.mean(f_fake)


def critic_loss(f_real, f_fake):
  return -wasserstein_estimate(f_real, f_fake)


def generator_loss(f_fake):
  return -jnp.mean(f_fake)
