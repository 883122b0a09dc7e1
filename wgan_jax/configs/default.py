"""Default configuration: the reference WGAN code's settings.

Batch 64, 64px images, nz 100, ngf = ndf = 64, RMSProp with lr 5e-5 for both
nets, clip 0.01, 5 critic iterations per generator iteration (100 for the
first 25 and every 500th). Per-dataset presets in ``configs/__init__.py``
override a few fields: the default dataset, the embedded 8x8 digits, trains
at 16px with narrower nets so that it finishes in minutes on a CPU.

Every field has one comment (on its line, or the lines just above it): it is
also the help of the field's command-line flag (``--FIELD``), so a new field
gets its flag by being added here.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # --- Data ---
  # digits | stacked_digits | mnist5k | stacked_mnist5k | gaussians8 | gaussians25 |
  # swissroll (embedded), a tensorflow-datasets name (celeb_a, cifar10, mnist,
  # lsun/bedroom, ...), or folder:PATH (every image under PATH)
  c.dataset = 'digits'
  c.data_dir = ''  # tensorflow-datasets' data_dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.split = 'train'  # tensorflow-datasets split: train, test, train+test, all, ...
  c.image_size = 64  # DCGAN models need a multiple of 16
  c.channels = 0  # image channels; 0 = the dataset's own
  c.crop = 0  # centred square cut before resizing; 0 = the largest (108 for CelebA)
  c.cache_dir = ''  # where decoded images are cached; '' = beside the data
  c.data_on_device = 'auto'  # auto | true | false: keep the dataset on each device
  c.prefetch_batches = 32  # host-fed batches put on the devices ahead of use

  # --- Models ---
  c.generator = 'dcgan'  # dcgan | mlp
  c.critic = 'dcgan'  # dcgan | mlp
  c.nz = 100  # size of the latent vector z
  c.ngf = 64  # generator width (DCGAN: ngf * image_size / 8 at the bottom)
  c.ndf = 64  # critic width
  c.n_extra_layers = 0  # extra 3x3 conv layers in both DCGAN nets
  c.no_bn = False  # DCGAN generator without BatchNorm (the reference's --noBN)
  c.critic_bn = True  # BatchNorm in the DCGAN critic

  # --- Objective and optimisation ---
  # wgan | wgan-gp | gan; each sets its paper's optimiser, learning rates,
  # clip, schedule and critic BatchNorm where not set explicitly
  # (configs.LOSS_DEFAULTS; the values below are WGAN's).
  c.loss = 'wgan'
  c.optimizer = 'rmsprop'  # rmsprop (PyTorch's RMSprop) | adam
  c.lr_critic = 5e-5  # critic learning rate
  c.lr_gen = 5e-5  # generator learning rate
  c.beta1 = 0.5  # Adam only
  c.beta2 = 0.999  # Adam only
  c.clip = 0.01  # critic parameters are clipped to [-clip, clip]; 0: no clipping
  c.gp_weight = 10.0  # wgan-gp: weight of the gradient penalty (lambda)
  c.clip_when = 'after'  # after each critic update (paper) | before (reference code)

  # --- Schedule (in generator iterations) ---
  c.batch_size = 64  # global batch, split over the devices
  c.num_gen_iters = 100_000  # generator iterations to train
  c.n_critic = 5  # critic iterations per generator iteration
  c.n_critic_warmup = 100  # critic iterations during warm-up and on every boost_every-th
  c.warmup_gen_iters = 25  # generator iterations that get n_critic_warmup
  c.boost_every = 500  # every this many generator iterations the critic gets n_critic_warmup; 0: never

  # --- Outputs ---
  c.seed = 0  # random seed (initialisation, noise, data order)
  # train this many independent runs at once (seeds seed, seed + 1, ...; one
  # compile, vmapped), each with its own outputs in WORKDIR/seed_<seed>/
  c.num_seeds = 1
  c.rng_impl = 'rbg'  # rbg (fast; reproducible per backend) | threefry2x32 (same on all)
  c.sample_every = 500  # write a sample grid every this many generator iterations
  c.num_samples = 64  # samples in a grid, drawn from fixed noise
  c.log_every = 20  # fetch metrics from the devices every this many iterations
  c.progress_bar = True  # show a progress bar
  c.checkpoint_every = 500  # generator iterations between checkpoints; 0: at the end only
  c.keep_checkpoints = 3  # the newest this many are kept

  # --- Execution ---
  c.num_devices = 0  # local devices to use; 0 = all
  # How the strided convs are computed: the same numbers, different speed. auto:
  # on CPU the fastest per layer, timed once per shape (WGAN_JAX_CONV_TUNING=0: off).
  c.convt_impl = 'auto'  # auto | subpixel | dilated | mixed | gemm (the generator's)
  c.conv_impl = 'auto'  # auto | taps | xla | winograd (the critic's)
  c.conv_tuning = True  # auto on CPU: time each layer's formulations once (else a fixed rule)
  c.iteration_mode = 'auto'  # auto | scan | unroll | steps: how a generator iteration is compiled
  c.seeds_mode = 'auto'  # auto | vmap | map | unroll | hybrid | processes: how num_seeds > 1 seeds share the machine
  # float32 | bfloat16: the nets' arithmetic (bfloat16 pays on GPUs and TPUs,
  # not on CPUs without bfloat16 units); parameters, optimiser state, BatchNorm
  # statistics and losses stay float32
  c.compute_dtype = 'float32'
  c.compilation_cache_dir = ''  # jax's persistent compilation cache; '' = off
  return c
