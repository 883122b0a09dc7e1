"""wgan_jax: the Wasserstein GAN (Arjovsky, Chintala, Bottou 2017) in JAX/Flax."""

__version__ = '0.1.0'
