"""Fixtures of the benchmark tests."""

import pytest


def _mlp_iteration_flops(batch, nz, width, pixels, n_critic):
  """By hand: the reference's MLP_G / MLP_D (3 hidden layers each)."""
  gen = [(nz, width), (width, width), (width, width), (width, pixels)]
  critic = [(pixels, width), (width, width), (width, width), (width, 1)]
  macs = lambda layers: batch * sum(i * o for i, o in layers)
  # Critic step: G forward; per batch (real, fake) the critic's forward, its
  # weight gradients, and input gradients of every layer but the first.
  critic_step = macs(gen) + 2 * (2 * macs(critic) + macs(critic[1:]))
  # Generator step: G and D forward, D's input gradients (all layers), G's
  # weight gradients and input gradients of all but its first layer.
  gen_step = 2 * macs(gen) + macs(gen[1:]) + 2 * macs(critic)
  return 2 * (n_critic * critic_step + gen_step)


@pytest.fixture
def mlp_iteration_flops():
  """``(batch, nz, width, pixels, n_critic) -> FLOPs`` of an MLP generator
  iteration, counted by hand."""
  return _mlp_iteration_flops
