"""The objectives: WGAN, WGAN-GP and the standard GAN, as losses to minimise.

WGAN: the critic f maximises E[f(real)] - E[f(fake)], an estimate of the
Wasserstein-1 distance; the generator maximises E[f(G(z))]. No sigmoid, no
log. The reference code trains a critic of the opposite sign (it minimises
f(real) - f(fake)); its printed Loss_D equals ``critic_loss`` here and its
Loss_G equals ``generator_loss``.

WGAN-GP (Gulrajani et al. 2017): the same critic loss plus
``gp_weight * E[(||grad_x f(x)||_2 - 1)^2]`` at random interpolates of real
and fake examples, instead of weight clipping.

GAN (Goodfellow et al. 2014, as in DCGAN): the critic is a discriminator
whose output is a logit; it minimises the sigmoid cross-entropy of real
(label 1) and fake (label 0) examples, and the generator the non-saturating
``-log D(G(z))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from wgan_jax import configs

LOSSES = configs.CHOICES['loss'][0]


def wasserstein_estimate(f_real, f_fake):
  return jnp.mean(f_real) - jnp.mean(f_fake)


def critic_loss(f_real, f_fake):
  return -wasserstein_estimate(f_real, f_fake)


def generator_loss(f_fake):
  return -jnp.mean(f_fake)


def gan_discriminator_loss(logits_real, logits_fake):
  """-E[log D(real)] - E[log(1 - D(fake))], D = sigmoid(logits), computed from
  the logits (stable where D saturates); DCGAN's errD_real + errD_fake."""
  return (jnp.mean(optax.sigmoid_binary_cross_entropy(logits_real, 1.0))
          + jnp.mean(optax.sigmoid_binary_cross_entropy(logits_fake, 0.0)))


def gan_generator_loss(logits_fake):
  """The non-saturating generator loss -E[log D(G(z))]."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits_fake, 1.0))


def interpolates(real, fake, eps):
  """eps * real + (1 - eps) * fake, one eps in [0, 1] per example."""
  eps = eps.reshape(eps.shape + (1,) * (real.ndim - 1))
  return eps * real + (1.0 - eps) * fake


def gradient_penalty(critic_fn, x):
  """E[(||grad_x f(x)||_2 - 1)^2] over the examples of ``x``.

  ``critic_fn`` maps a batch to one score per example. Each score depends on
  its own example alone (a critic without BatchNorm), so the gradient of
  their sum is each example's own input gradient.
  """
  grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x)
  sq_norms = jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1)
  # The tiny constant keeps the penalty's own gradient finite at a zero input
  # gradient (where sqrt's derivative is infinite); elsewhere it is invisible.
  return jnp.mean(jnp.square(jnp.sqrt(sq_norms + 1e-12) - 1.0))
