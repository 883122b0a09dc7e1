"""A PyTorch port of the reference WGAN models and training loop.

The parity tests use it as their oracle, ``wgan_jax.benchmark`` as the
baseline to beat. Importing it needs ``torch`` (any CPU or CUDA build).

It follows the original code's DCGAN_G / DCGAN_D (and their no-BatchNorm
variants), MLP_G / MLP_D and weights_init layer by layer, with the original
module names (``initial:100-512:convt``, ``pyramid:512-256:convt``, ...), so
a ``state_dict`` of these modules has the keys of the reference's saved
checkpoints. Differences from the original that do not change the maths:
``nn.Module`` instead of the removed ``nn.Container``, no ``data_parallel``,
and the critic returns per-example scores (the original returns their mean).

``ReferenceTraining`` ports the original main.py's training loop, fed
explicit real batches and latents instead of a DataLoader and torch's RNG.
"""

from __future__ import annotations

from wgan_jax.errors import UserError

try:
  import torch
  from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
  raise UserError('the PyTorch reference needs torch: pip install torch '
                  "(or pip install -e '.[test]')") from e


def weights_init(m: nn.Module) -> None:
  classname = m.__class__.__name__
  if classname.find('Conv') != -1:
    m.weight.data.normal_(0.0, 0.02)
  elif classname.find('BatchNorm') != -1:
    m.weight.data.normal_(1.0, 0.02)
    m.bias.data.fill_(0)


class DCGAN_D(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ndf, n_extra_layers=0, use_bn=True):
    super().__init__()
    assert isize % 16 == 0, 'isize has to be a multiple of 16'
    main = nn.Sequential()
    main.add_module(f'initial:{nc}-{ndf}:conv',
                    nn.Conv2d(nc, ndf, 4, 2, 1, bias=False))
    main.add_module(f'initial:{ndf}:relu', nn.LeakyReLU(0.2, inplace=True))
    csize, cndf = isize / 2, ndf
    for t in range(n_extra_layers):
      main.add_module(f'extra-layers-{t}:{cndf}:conv',
                      nn.Conv2d(cndf, cndf, 3, 1, 1, bias=False))
      if use_bn:
        main.add_module(f'extra-layers-{t}:{cndf}:batchnorm', nn.BatchNorm2d(cndf))
      main.add_module(f'extra-layers-{t}:{cndf}:relu',
                      nn.LeakyReLU(0.2, inplace=True))
    while csize > 4:
      in_feat, out_feat = cndf, cndf * 2
      main.add_module(f'pyramid:{in_feat}-{out_feat}:conv',
                      nn.Conv2d(in_feat, out_feat, 4, 2, 1, bias=False))
      if use_bn:
        main.add_module(f'pyramid:{out_feat}:batchnorm', nn.BatchNorm2d(out_feat))
      main.add_module(f'pyramid:{out_feat}:relu', nn.LeakyReLU(0.2, inplace=True))
      cndf, csize = cndf * 2, csize / 2
    main.add_module(f'final:{cndf}-1:conv', nn.Conv2d(cndf, 1, 4, 1, 0, bias=False))
    self.main = main

  def forward(self, x):
    return self.main(x).view(-1)


class DCGAN_G(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ngf, n_extra_layers=0, use_bn=True):
    super().__init__()
    assert isize % 16 == 0, 'isize has to be a multiple of 16'
    cngf, tisize = ngf // 2, 4
    while tisize != isize:
      cngf, tisize = cngf * 2, tisize * 2
    main = nn.Sequential()
    main.add_module(f'initial:{nz}-{cngf}:convt',
                    nn.ConvTranspose2d(nz, cngf, 4, 1, 0, bias=False))
    if use_bn:
      main.add_module(f'initial:{cngf}:batchnorm', nn.BatchNorm2d(cngf))
    main.add_module(f'initial:{cngf}:relu', nn.ReLU(True))
    csize = 4
    while csize < isize // 2:
      main.add_module(f'pyramid:{cngf}-{cngf // 2}:convt',
                      nn.ConvTranspose2d(cngf, cngf // 2, 4, 2, 1, bias=False))
      if use_bn:
        main.add_module(f'pyramid:{cngf // 2}:batchnorm', nn.BatchNorm2d(cngf // 2))
      main.add_module(f'pyramid:{cngf // 2}:relu', nn.ReLU(True))
      cngf, csize = cngf // 2, csize * 2
    for t in range(n_extra_layers):
      main.add_module(f'extra-layers-{t}:{cngf}:conv',
                      nn.Conv2d(cngf, cngf, 3, 1, 1, bias=False))
      if use_bn:
        main.add_module(f'extra-layers-{t}:{cngf}:batchnorm', nn.BatchNorm2d(cngf))
      main.add_module(f'extra-layers-{t}:{cngf}:relu', nn.ReLU(True))
    main.add_module(f'final:{cngf}-{nc}:convt',
                    nn.ConvTranspose2d(cngf, nc, 4, 2, 1, bias=False))
    main.add_module(f'final:{nc}:tanh', nn.Tanh())
    self.main = main

  def forward(self, z):
    return self.main(z.view(z.shape[0], z.shape[1], 1, 1))


class MLP_G(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ngf):
    super().__init__()
    self.main = nn.Sequential(
        nn.Linear(nz, ngf), nn.ReLU(True),
        nn.Linear(ngf, ngf), nn.ReLU(True),
        nn.Linear(ngf, ngf), nn.ReLU(True),
        nn.Linear(ngf, nc * isize * isize))
    self.nc, self.isize = nc, isize

  def forward(self, z):
    out = self.main(z.view(z.shape[0], -1))
    return out.view(out.shape[0], self.nc, self.isize, self.isize)


class MLP_D(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, isize, nz, nc, ndf):
    super().__init__()
    self.main = nn.Sequential(
        nn.Linear(nc * isize * isize, ndf), nn.ReLU(True),
        nn.Linear(ndf, ndf), nn.ReLU(True),
        nn.Linear(ndf, ndf), nn.ReLU(True),
        nn.Linear(ndf, 1))

  def forward(self, x):
    return self.main(x.reshape(x.shape[0], -1)).view(-1)


def count_parameters(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


def count_buffers(module: nn.Module) -> int:
  """Running means and variances (num_batches_tracked has no Flax counterpart)."""
  return sum(b.numel() for name, b in module.named_buffers()
             if not name.endswith('num_batches_tracked'))


class ReferenceTraining:
  """The reference main.py's training loop, one step at a time.

  As in the original: RMSprop(lr) (or Adam(lr, (beta1, 0.999))), both nets
  in training mode throughout, the critic's parameters clamped to [-c, c]
  before each critic step, real and fake batches through the critic in
  separate passes, errD = D(real) - D(fake) minimised by the critic, errG =
  D(G(z)) minimised by the generator, and ``Diters`` critic steps per
  generator step: ``n_critic_warmup`` (100) while ``gen_iterations <
  warmup_gen_iters`` (25) or ``gen_iterations % boost_every == 0`` (500),
  ``n_critic`` (5) otherwise. ``clip_when='after'`` clamps after each critic
  update instead (the paper's Algorithm 1), to check that variant too. The
  loop is fed explicit batches and latents; it does not stop a generator
  iteration early at the end of an epoch as the original's DataLoader does.
  """

  def __init__(self, netG, netD, *, lr_d, lr_g, clip, n_critic=5,  # pylint: disable=invalid-name
               n_critic_warmup=100, warmup_gen_iters=25, boost_every=500,
               clip_when='before', adam=False, beta1=0.5):
    self.netG, self.netD = netG, netD  # pylint: disable=invalid-name
    if adam:
      self.optimizerD = torch.optim.Adam(netD.parameters(), lr=lr_d, betas=(beta1, 0.999))
      self.optimizerG = torch.optim.Adam(netG.parameters(), lr=lr_g, betas=(beta1, 0.999))
    else:
      self.optimizerD = torch.optim.RMSprop(netD.parameters(), lr=lr_d)
      self.optimizerG = torch.optim.RMSprop(netG.parameters(), lr=lr_g)
    self.clip, self.clip_when = clip, clip_when
    self.n_critic, self.n_critic_warmup = n_critic, n_critic_warmup
    self.warmup_gen_iters, self.boost_every = warmup_gen_iters, boost_every
    self.gen_iterations = 0

  def critic_iterations(self) -> int:
    if self.gen_iterations < self.warmup_gen_iters or (
        self.boost_every and self.gen_iterations % self.boost_every == 0):
      return self.n_critic_warmup
    return self.n_critic

  def _clamp(self):
    for p in self.netD.parameters():
      p.data.clamp_(-self.clip, self.clip)

  def _critic_update(self, real, noise):
    for p in self.netD.parameters():
      p.requires_grad = True
    if self.clip_when == 'before':
      self._clamp()
    self.netD.zero_grad()
    err_d_real = self.netD(real).mean()
    err_d_real.backward()
    # The original's Variable(noise, volatile=True) and netG(noisev).data:
    # no graph through netG (its running statistics still move).
    with torch.no_grad():
      fake = self.netG(noise)
    err_d_fake = self.netD(fake).mean()
    err_d_fake.backward(torch.full_like(err_d_fake, -1.0))
    err_d = err_d_real - err_d_fake
    self.optimizerD.step()
    if self.clip_when == 'after':
      self._clamp()
    return {'errD': err_d, 'errD_real': err_d_real, 'errD_fake': err_d_fake}

  def critic_step(self, real, noise) -> dict[str, float]:
    """real: (B, C, H, W) (or (B, 2)); noise: (B, nz)."""
    return {k: v.item() for k, v in self._critic_update(real, noise).items()}

  def generator_step(self, noise) -> dict[str, float]:
    return {k: v.item() for k, v in self._generator_update(noise).items()}

  def _generator_update(self, noise):
    for p in self.netD.parameters():
      p.requires_grad = False
    self.netG.zero_grad()
    err_g = self.netD(self.netG(noise)).mean()
    err_g.backward()
    self.optimizerG.step()
    self.gen_iterations += 1
    return {'errG': err_g}

  def iteration(self, next_real, next_noise) -> dict[str, float]:
    """One generator iteration: ``critic_iterations()`` critic steps, each on
    ``next_real()`` and ``next_noise()``, then a generator step on
    ``next_noise()``; returns the last critic step's losses and errG. As
    the original, which prints them, it waits for them once per iteration."""
    for _ in range(self.critic_iterations()):
      logs = self._critic_update(next_real(), next_noise())
    logs = {**logs, **self._generator_update(next_noise())}
    return {k: v.item() for k, v in logs.items()}


def make_models(config, data_shape, seed: int = 0):
  """The reference's netG and netD for ``config`` (a wgan_jax config) and
  data of ``data_shape`` (H, W, C) or (2,), initialised as main.py does:
  weights_init on both DCGAN nets and on MLP_G (where it changes nothing);
  MLP_D keeps torch's default."""
  torch.manual_seed(seed)
  size, nc = (data_shape[0], data_shape[-1]) if len(data_shape) == 3 else (1, 2)
  if config.generator == 'mlp':
    net_g = MLP_G(size, config.nz, nc, config.ngf)
  else:
    net_g = DCGAN_G(size, config.nz, nc, config.ngf, config.n_extra_layers,
                    use_bn=not config.no_bn)
  net_g.apply(weights_init)
  if config.critic == 'mlp':
    net_d = MLP_D(size, config.nz, nc, config.ndf)
  else:
    net_d = DCGAN_D(size, config.nz, nc, config.ndf, config.n_extra_layers,
                    use_bn=config.critic_bn)
    net_d.apply(weights_init)
  return net_g, net_d


def make_trainer(config, net_g, net_d) -> ReferenceTraining:
  """The reference loop with ``config``'s optimiser, clipping and schedule."""
  return ReferenceTraining(
      net_g, net_d, lr_d=config.lr_critic, lr_g=config.lr_gen, clip=config.clip,
      n_critic=config.n_critic, n_critic_warmup=config.n_critic_warmup,
      warmup_gen_iters=config.warmup_gen_iters, boost_every=config.boost_every,
      clip_when=config.clip_when, adam=config.optimizer == 'adam',
      beta1=config.beta1)
