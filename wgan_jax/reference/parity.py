"""Runs wgan_jax and the PyTorch port of the reference side by side.

Shared by ``tests/reference/test_parity.py`` and
``experiments/parity_report.py`` (needs torch). Both sides start from the
same weights (the torch port's, imported with ``wgan_jax.reference.importer``), see the same real batches and latents, and are
compared after conversion to our layout. A deviation is
``max|ours - reference| / max|reference|`` over one array (its largest
magnitude as the scale, so entries near zero do not blow it up), and the
largest such over a group of arrays.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import torch

from wgan_jax import configs, models, parallel, steps
from wgan_jax.reference import importer
from wgan_jax.reference import torch_model as ref
from wgan_jax.state import root_key

# These nets are tiny: torch's thread pool only fights the other processes
# (1.4 s per step instead of 15 ms on a busy 2-core machine).
torch.set_num_threads(1)


FORWARD_TOL = 1e-5
# The reference's own noise floor at its worst (1.0e-4, the largest over 20
# one-rounding-step moves, with an extra layer and clipping after); the tested
# comparisons' floors are 1e-5 and below.
TRAIN_TOL = 1e-4
# 30 critic steps and 6 generator steps: 7 critic steps in the warm-up
# iteration and in the boosted 4th, 4 otherwise.
SCHEDULE = dict(warmup_gen_iters=1, n_critic_warmup=7, n_critic=4, boost_every=4)
# The initial weights and inputs of the training comparisons. Some seeds hold a
# near-tie: a gradient that is almost all cancellation, whose sign float32
# rounding decides and RMSProp turns into a full step, so the reference moves
# by 1e-1 from itself when its weights move by one rounding step (the
# reference's settings, the largest over 40 such moves: seed 0 1.0e-1, seed 3
# 1.8e-1, seed 1 4.9e-6). From seed 1 no tested comparison moves by more than
# 2.3e-5 (``reference_noise_floor(..., perturbations=40)``).
SEED = 1
MLP = dict(generator='mlp', critic='mlp', ngf=16, ndf=16)


def make_config(**overrides):
  """A small config with the reference's hyper-parameters (lr 5e-5, clip 0.01,
  clipping before each critic step)."""
  config = configs.get_config()
  config.update(image_size=16, ngf=8, ndf=8, nz=8, batch_size=8, channels=3,
                clip_when='before', progress_bar=False)
  config.update(overrides)
  return config


POINTS = ('gaussians8', 'gaussians25', 'swissroll')


def data_shape_of(config):
  if config.dataset in POINTS:
    return (2,)
  return (config.image_size, config.image_size, config.channels)


# The reference's nets and loop for a config (shared with the benchmark).
torch_models = ref.make_models
reference_trainer = ref.make_trainer


def state_dict(net) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def to_torch(x: np.ndarray) -> torch.Tensor:
  """Our NHWC images (or points) as the reference's NCHW tensor."""
  x = torch.from_numpy(np.ascontiguousarray(x))
  return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


def from_torch(x: torch.Tensor, data_shape) -> np.ndarray:
  """The reference's NCHW output in our layout (MLP_G's points come as
  (B, 2, 1, 1))."""
  x = x.detach()
  if len(data_shape) == 3:
    x = x.permute(0, 2, 3, 1)
  return x.reshape(x.shape[0], *data_shape).numpy()


def deviation(ours, reference) -> float:
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  assert ours.shape == reference.shape, (ours.shape, reference.shape)
  scale = np.max(np.abs(reference))
  return float(np.max(np.abs(ours - reference)) / scale) if scale else \
      float(np.max(np.abs(ours)))


def tree_deviation(ours, reference) -> float:
  """The largest deviation over the leaves of two trees of the same structure."""
  assert jax.tree.structure(ours) == jax.tree.structure(reference)
  devs = [deviation(a, b) for a, b in zip(jax.tree.leaves(ours),
                                          jax.tree.leaves(reference))]
  return max(devs, default=0.0)


# ---------------------------------------------------------------------------
# Forward passes.


def forward_deviations(config, seed=0, batch=4) -> dict[str, float]:
  """G and D of the same weights on the same inputs, in training mode (output
  and updated running statistics) and then in eval mode."""
  data_shape = data_shape_of(config)
  net_g, net_d = torch_models(config, data_shape, seed)
  rng = np.random.default_rng(seed)
  # Non-trivial running statistics, so eval mode means something.
  with torch.no_grad():
    for net in (net_g, net_d):
      for name, buf in net.named_buffers():
        if name.endswith('running_mean'):
          buf.copy_(torch.from_numpy(rng.normal(0, 0.5, buf.shape).astype(np.float32)))
        elif name.endswith('running_var'):
          buf.copy_(torch.from_numpy(rng.uniform(0.5, 2, buf.shape).astype(np.float32)))
  g_vars = importer.generator_variables(state_dict(net_g), config, data_shape)
  d_vars = importer.critic_variables(state_dict(net_d), config, data_shape)
  generator = models.make_generator(config, data_shape)
  critic = models.make_critic(config, data_shape)
  z = rng.standard_normal((batch, config.nz)).astype(np.float32)
  x = rng.uniform(-1, 1, (batch, *data_shape)).astype(np.float32)

  @functools.partial(jax.jit, static_argnums=(0, 3))
  def apply(module, variables, inputs, train):
    out, mutated = module.apply(variables, inputs, train=train, mutable=['batch_stats'])
    return out, mutated.get('batch_stats', {})

  result = {}
  for mode, train in (('train', True), ('eval', False)):
    net_g.train(train)
    net_d.train(train)
    with torch.no_grad():
      t_fake = net_g(torch.from_numpy(z))
      t_score = net_d(to_torch(x))
    fake, g_stats = apply(generator, g_vars, z, train)
    score, d_stats = apply(critic, d_vars, x, train)
    result[f'generator_{mode}'] = deviation(fake, from_torch(t_fake, data_shape))
    # Ours is the paper's critic: the reference's, negated.
    result[f'critic_{mode}'] = deviation(-np.asarray(score), t_score.numpy())
    if train:
      t_g = importer.generator_variables(state_dict(net_g), config, data_shape)
      t_d = importer.critic_variables(state_dict(net_d), config, data_shape)
      result['running_stats'] = max(tree_deviation(g_stats, t_g['batch_stats']),
                                    tree_deviation(d_stats, t_d['batch_stats']))
      g_vars = {**g_vars, 'batch_stats': g_stats}
      d_vars = {**d_vars, 'batch_stats': d_stats}
  return result


# ---------------------------------------------------------------------------
# Training. Each side's run is reduced to the same form, in our layout and
# with our names: {'generator_params': tree, ..., 'critic_opt_nu': tree} and
# losses {'critic_loss': [...], 'critic_real': [...], ...}.


def _slots(opt_state) -> dict:
  """optax's per-parameter moments: {'nu': ...} (RMSProp) or mu and nu (Adam)."""
  for part in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, 'nu')):
    if hasattr(part, 'nu'):
      return {k: getattr(part, k) for k in ('mu', 'nu') if hasattr(part, k)}
  raise ValueError(opt_state)


def ours_as_trees(state) -> dict:
  trees = {}
  for role in ('generator', 'critic'):
    ts = getattr(state, role)
    trees[f'{role}_params'] = ts.params
    trees[f'{role}_batch_stats'] = ts.batch_stats
    for slot, tree in _slots(ts.opt_state).items():
      trees[f'{role}_opt_{slot}'] = tree
  return trees


# The torch optimisers' names for optax's moments.
_TORCH_SLOT = {'square_avg': 'nu', 'exp_avg_sq': 'nu', 'exp_avg': 'mu'}


def reference_as_trees(trainer, config, data_shape) -> dict:
  """The reference's nets and optimiser moments, converted to our layout (the
  critic's first moment changes sign with its last layer; the second does not)."""
  trees = {}
  for role in ('generator', 'critic'):
    net = trainer.netG if role == 'generator' else trainer.netD
    optimizer = trainer.optimizerG if role == 'generator' else trainer.optimizerD
    convert = (importer.generator_variables if role == 'generator'
               else importer.critic_variables)
    variables = convert(state_dict(net), config, data_shape)
    trees[f'{role}_params'] = variables['params']
    trees[f'{role}_batch_stats'] = variables['batch_stats']
    first = next(iter(net.parameters()))
    for torch_slot, slot in _TORCH_SLOT.items():
      if torch_slot not in optimizer.state[first]:
        continue
      tensors = state_dict(net)  # with the buffers: the converter wants a whole file
      for name, p in net.named_parameters():
        tensors[name] = optimizer.state[p][torch_slot].numpy().copy()
      kwargs = {} if role == 'generator' else {'negate_last': slot == 'mu'}
      trees[f'{role}_opt_{slot}'] = convert(tensors, config, data_shape,
                                            **kwargs)['params']
  return trees


def _loss_deviation(ours, theirs, scale=None) -> float:
  """Largest |ours - theirs| over a run, relative to ``scale`` (default: the
  largest |theirs|)."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  scale = np.max(np.abs(theirs)) if scale is None else scale
  return float(np.max(np.abs(ours - theirs)) / scale)


def compare_runs(ours_trees, ours_losses, their_trees, their_losses) -> dict:
  """Deviations of every tree and of the losses. Loss_D = D(real) - D(fake) is
  a difference of two nearly equal numbers (both ~1e-2, it down to ~1e-6): its
  rounding error is that of its terms, so it is measured against their scale."""
  assert set(ours_trees) == set(their_trees), (set(ours_trees), set(their_trees))
  result = {k: tree_deviation(ours_trees[k], their_trees[k]) for k in ours_trees}
  terms = max(np.max(np.abs(their_losses['critic_real'])),
              np.max(np.abs(their_losses['critic_fake'])))
  result['critic_loss'] = _loss_deviation(ours_losses['critic_loss'],
                                          their_losses['critic_loss'], terms)
  result['critic_real_fake'] = max(
      _loss_deviation(ours_losses[k], their_losses[k]) for k in ('critic_real',
                                                                 'critic_fake'))
  result['generator_loss'] = _loss_deviation(ours_losses['generator_loss'],
                                             their_losses['generator_loss'])
  return result


def _moved(state, initial) -> float:
  """How far the parameters went from the start (relative), to show a
  comparison is not of two untouched copies."""
  return max(tree_deviation(getattr(state, r).params, getattr(initial, r).params)
             for r in ('generator', 'critic'))


def _perturb(*nets, seed=1234):
  """Every weight x (1 +- 2^-23): one float32 rounding step."""
  rng = np.random.default_rng(seed)
  with torch.no_grad():
    for net in nets:
      for p in net.parameters():
        factor = 1 + np.float32(2**-23) * rng.choice([-1, 1], p.shape)
        p.mul_(torch.from_numpy(factor.astype(np.float32)))


def _inputs(config, data_shape, num_gen_iters, seed):
  """The schedule's critic counts, the real batches and the latents (one per
  critic step, then one per generator step, in the order they are used)."""
  counts = [steps.critic_iterations(i, config) for i in range(num_gen_iters)]
  rng = np.random.default_rng(seed + 1)
  shape = (sum(counts), config.batch_size, *data_shape)
  if len(data_shape) == 1:
    reals = rng.normal(0, 1, shape).astype(np.float32)
  else:
    reals = rng.uniform(-1, 1, shape).astype(np.float32)
  latents = rng.standard_normal((sum(counts) + num_gen_iters, config.batch_size,
                                 config.nz)).astype(np.float32)
  return counts, reals, latents


# Entries of a result that are not deviations of ours from the reference: the
# steps run, how far the weights moved, the floating dtypes of our final state,
# and each float32 run's distance from the reference in float64.
BOOKKEEPING = ('steps', 'moved', 'dtypes', 'float64')
_LOSS_NAMES = ('critic_loss', 'critic_real', 'critic_fake', 'generator_loss')


def run_ours(config, state, inputs):
  counts, reals, latents = inputs
  critic_step = jax.jit(functools.partial(
      steps.critic_step, clip=config.clip, clip_when=config.clip_when))
  generator_step = jax.jit(steps.generator_step)
  losses = {k: [] for k in _LOSS_NAMES}
  reals, latents = iter(reals), iter(latents)
  for n in counts:
    for _ in range(n):
      state, m = critic_step(state, next(reals), next(latents))
      for k in ('critic_loss', 'critic_real', 'critic_fake'):
        losses[k].append(float(m[k]))
    state, m = generator_step(state, next(latents))
    losses['generator_loss'].append(float(m['generator_loss']))
  return state, losses


def run_reference(trainer, inputs, dtype=torch.float32):
  """The reference loop on the inputs (as ``dtype``, its nets' dtype); its
  losses in our names and sign."""
  counts, reals, latents = inputs
  losses = {k: [] for k in _LOSS_NAMES}
  reals, latents = iter(reals), iter(latents)
  for n in counts:
    assert trainer.critic_iterations() == n  # the two schedules agree
    for _ in range(n):
      logs = trainer.critic_step(to_torch(next(reals)).to(dtype),
                                 torch.from_numpy(next(latents)).to(dtype))
      # Loss_D is critic_loss; the per-pass scores are ours negated.
      losses['critic_loss'].append(logs['errD'])
      losses['critic_real'].append(-logs['errD_real'])
      losses['critic_fake'].append(-logs['errD_fake'])
    losses['generator_loss'].append(
        trainer.generator_step(torch.from_numpy(next(latents)).to(dtype))['errG'])
  return losses


def _reference_run(config, inputs, seed, perturbation=None, float64=False):
  """The reference from ``seed``'s initial weights (moved by one rounding step
  with ``perturbation``, computing in float64 with ``float64``) on the inputs:
  its trees and losses, as ``reference_as_trees`` and ``run_reference`` give them."""
  data_shape = data_shape_of(config)
  net_g, net_d = torch_models(config, data_shape, seed)
  if perturbation is not None:
    _perturb(net_g, net_d, seed=1234 + perturbation)
  if float64:
    net_g, net_d = net_g.double(), net_d.double()
  trainer = reference_trainer(config, net_g, net_d)
  losses = run_reference(trainer, inputs, torch.float64 if float64 else torch.float32)
  return reference_as_trees(trainer, config, data_shape), losses


def train_side_by_side(config, num_gen_iters=6, seed=SEED, oracle_config=None,
                       float64=False) -> dict[str, float]:
  """``num_gen_iters`` generator iterations (with their critic schedule) through
  ``steps.critic_step``/``generator_step`` and through the reference loop, on
  the same batches and latents; returns the deviations of the final states
  and of the per-step losses. ``oracle_config`` runs the reference with other
  settings (to show what a real difference looks like). ``float64`` also runs
  the reference in float64 and adds ``result['float64']``: the largest
  deviation of ours and of the float32 reference from it (how far float32
  rounding on this CPU moves each)."""
  data_shape = data_shape_of(config)
  net_g, net_d = torch_models(config, data_shape, seed)
  initial = importer.state_from_reference(
      state_dict(net_g), state_dict(net_d), config, root_key(config),
      data_shape=data_shape)
  inputs = _inputs(config, data_shape, num_gen_iters, seed)
  state, ours = run_ours(config, initial, inputs)
  trainer = reference_trainer(oracle_config or config, net_g, net_d)
  theirs = run_reference(trainer, inputs)
  ours_trees, their_trees = ours_as_trees(state), reference_as_trees(trainer, config, data_shape)
  result = compare_runs(ours_trees, ours, their_trees, theirs)
  if float64:
    # The exact arithmetic that both float32 runs round.
    exact = _reference_run(oracle_config or config, inputs, seed, float64=True)
    result['float64'] = {'ours': largest(compare_runs(ours_trees, ours, *exact)),
                         'reference': largest(compare_runs(their_trees, theirs, *exact))}
  result['steps'] = (sum(inputs[0]), num_gen_iters)
  result['moved'] = _moved(state, initial)
  result['dtypes'] = sorted({str(x.dtype) for x in jax.tree.leaves(state)
                             if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)})
  return result


def reference_noise_floor(config, num_gen_iters=6, seed=SEED, perturbations=1
                          ) -> dict[str, float]:
  """The reference against itself, its initial weights moved by one float32
  rounding step (``perturbations`` different ones; the largest deviation of
  each entry over them): how much the training dynamics amplify rounding
  alone, and whether these inputs hold a near-tie (see ``SEED``)."""
  data_shape = data_shape_of(config)
  inputs = _inputs(config, data_shape, num_gen_iters, seed)
  runs = [_reference_run(config, inputs, seed, perturbation)
          for perturbation in [None, *range(perturbations)]]
  deviations = [compare_runs(*run, *runs[0]) for run in runs[1:]]
  result = {k: max(d[k] for d in deviations) for k in deviations[0]}
  result['steps'] = (sum(inputs[0]), num_gen_iters)
  return result


def train_iteration_side_by_side(config, num_gen_iters=3, seed=SEED) -> dict[str, float]:
  """As ``train_side_by_side``, through ``parallel.TrainIteration`` on one
  device, which draws the latents itself: the reference gets the same ones,
  drawn by the rule parallel.py documents. Only the last critic step's
  losses of each generator iteration come back from it."""
  data_shape = data_shape_of(config)
  net_g, net_d = torch_models(config, data_shape, seed)
  devices = jax.local_devices()[:1]
  initial = importer.state_from_reference(
      state_dict(net_g), state_dict(net_d), config, root_key(config),
      data_shape=data_shape, axis_name=parallel.AXIS)
  trainer = reference_trainer(config, net_g, net_d)
  iteration = parallel.TrainIteration(config, devices)
  p_state = parallel.replicate(initial, devices)
  base = jax.random.wrap_key_data(initial.rng, impl=config.rng_impl)
  counts, reals, _ = _inputs(config, data_shape, num_gen_iters, seed)
  ours = {k: [] for k in _LOSS_NAMES}
  theirs = {k: [] for k in _LOSS_NAMES}
  used = 0
  for i, n in enumerate(counts):
    batches = reals[used:used + n]
    p_state, metrics = iteration(p_state, None, batches[None])
    for k, v in jax.device_get(metrics).items():
      if k in ours:
        ours[k].append(float(v[0]))
    key = jax.random.fold_in(base, i)
    latents = [np.array(jax.random.normal(jax.random.fold_in(key, j),
                                          (config.batch_size, config.nz)))
               for j in range(n + 1)]
    logs = run_reference(trainer, ([n], batches, np.stack(latents)))
    for k in theirs:
      theirs[k].append(logs[k][-1])
    used += n
  state = parallel.unreplicate(p_state)
  result = compare_runs(ours_as_trees(state), ours,
                        reference_as_trees(trainer, config, data_shape), theirs)
  result['steps'] = (sum(counts), num_gen_iters)
  result['moved'] = _moved(state, initial)
  return result


def largest(result: dict) -> float:
  """The largest deviation of a result (ignoring the bookkeeping entries)."""
  return max(v for k, v in result.items() if k not in BOOKKEEPING)
