"""wgan_jax: the Wasserstein GAN (Arjovsky, Chintala, Bottou 2017) in JAX/Flax.

The training core sits here: ``configs`` (every option, presets, precedence,
validation), ``models`` (the networks; ``layers``: their conv formulations and
BatchNorm), ``losses``, ``state``, ``steps`` (pure per-device steps),
``parallel`` (the one place that knows devices), ``checkpoints``, ``train``,
``generate`` and ``evaluate``. Small shared pieces: ``files`` (atomic
writes), ``pixels`` (uint8 <-> [-1, 1]), ``visualize``, ``writers``,
``runtime``, ``errors``, ``cli``. Subpackages: ``data`` (datasets and the
order of their examples), ``eval`` (sample measures, FID/KID, Inception),
``reference`` (the PyTorch port, the .pth reader, the importer) and
``benchmark`` (measurement only: ``python -m wgan_jax.benchmark``).
"""

__version__ = '0.1.0'
