"""Every hook a gentool plugin can implement.

A plugin is any importable module (or object) named by an entry point in the
group ``gentool``. It implements some of the hooks below with the
:data:`gentool.hookimpl` marker. Each collection hook receives a ``register``
callable and registers **factories**, never instances: the core builds the
component later from the keyword arguments of a recipe table.

Factory conventions (shared by every kind):

* Positional parameters are supplied by the core (for example a data source's
  ``split`` or a conditioner's ``dim``); they are never recipe options.
* Keyword-only parameters are the recipe options. Their annotations are
  checked, their defaults are the only defaults, and the ``Args:`` block of the
  factory's docstring is the recipe reference.

``register(name, factory, default=True)`` declares the component the one a
recipe gets when it has no table of its kind (``[schedule]``, ``[sampler]``,
``[objective]``); a kind has at most one default, and the core names none.

Each hook belongs to one kind of :data:`gentool.kinds.KINDS` (``gentool_register_<plural>``);
a new kind is an entry there plus its hookspec here.

Time: every process has its own real-valued time (:mod:`gentool.process`);
on the discrete DDPM chain it is the 0-based step: the index ``t`` in
``0..T-1`` is the paper's ``t + 1`` in Ho et al. (2020), so ``betas[0]`` is
``beta_1`` and ``x_t`` with ``t = T - 1`` is the paper's ``x_T``.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gentool")


@hookspec
def gentool_register_autoencoders(register):
    """Register autoencoders: how images map to the latents a denoiser works on (the ``[autoencoder]`` table).

    An autoencoder factory takes keyword-only options and returns a
    :class:`gentool.Autoencoder`: an ``nn.Module`` with ``encode(x) -> z``
    (images ``[B, C, H, W]`` in [-1, 1] to latents ``[B, c, h, w]``, unscaled;
    the posterior mean for a KL autoencoder), ``decode(z) -> x``,
    ``latent_shape((C, H, W)) -> (c, h, w)`` and its inverse ``image_shape``,
    ``fingerprint`` (a hash of its weights: the latent cache is keyed by it)
    and ``scale_factor`` (``None``: the core measures 1/std of the training
    latents, as Rombach et al. 2022 do). An autoencoder with ``identity =
    True`` is pixel space: the core neither encodes, caches nor scales.

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_schedules(register):
    """Register noise schedules.

    A schedule factory takes keyword-only options (``timesteps`` among them)
    and returns the betas: a 1-D float64 tensor of length T with values in
    (0, 1). Everything else is derived from them by :class:`gentool.Diffusion`.
    A schedule applies to a process that takes betas (the discrete chain,
    ``[process] name = "vp"``, the default).

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_processes(register):
    """Register noise processes (the ``[process]`` table).

    A process factory takes keyword-only options and returns a
    :class:`gentool.Process`: the marginal x_t = alpha(t) x_0 + sigma(t) eps over
    real-valued t with ``alpha``, ``sigma``, ``log_snr`` and its inverse, the
    time range (``t_data``, ``t_max``), ``grid(steps, t_start, spacing)`` for
    samplers, ``prior_std``, ``noise_label`` and ``time_at``
    (:class:`gentool.ContinuousProcess` implements them from alpha and sigma).
    A factory that declares a keyword-only parameter ``betas`` receives the
    betas of the recipe's ``[schedule]`` (it is never a recipe option).

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_denoisers(register):
    """Register denoiser networks.

    A denoiser factory takes keyword-only options and returns a
    :class:`gentool.Denoiser`: an ``nn.Module`` called as ``net(x_t, t, cond)``
    returning a tensor of ``x_t``'s shape (twice its channels when the
    objective learns variances), with the attribute ``cond_dim`` (the width of
    the conditioning embedding it accepts, or ``None``). What the output means
    is the ``[objective]``'s ``prediction``.

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_conditioners(register):
    """Register conditioners.

    A conditioner factory is called as ``factory(dim, **options)`` where
    ``dim`` is the denoiser's ``cond_dim``, and returns a
    :class:`gentool.Conditioner`.

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_samplers(register):
    """Register samplers of the reverse process.

    A sampler is a plain function
    ``sampler(denoise, process, x_T, *, steps=None, t_start=None,
    generator=None, callback=None, **options) -> x_0``; see
    :class:`gentool.Sampler`. ``denoise(x, t)`` returns a
    :class:`gentool.Denoised` record (x0, eps, extras) with conditioning and
    guidance bound; ``process`` gives alpha, sigma and the time grid.
    ``steps``, ``t_start``, ``generator`` and ``callback`` are supplied by the
    core; the other keyword-only parameters are recipe options of the
    ``[sampler]`` table. A sampler that runs only on some processes says so
    with a ``supports(process) -> str | None`` attribute (the reason, or None),
    which ``gentool check`` asks.

    :param register: ``register(name, sampler)``.
    """


@hookspec
def gentool_register_tasks(register):
    """Register tasks that ``gentool run`` and the CLI can execute.

    A task is a function ``task(run, out_dir, **options) -> TaskResult`` taking a
    built :class:`gentool.Run` and the folder to write into; see
    :class:`gentool.Task`.

    :param register: ``register(name, task)``.
    """


@hookspec
def gentool_register_data_sources(register):
    """Register data sources.

    A data-source factory is called as ``factory(split, **options)`` with
    ``split`` in ``{"train", "test"}`` and returns a
    ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, the image a float
    tensor ``[C, H, W]`` in [-1, 1] and the label an ``int`` (``-1`` when the
    data set has none); see :class:`gentool.DataSource`. A factory may also
    have a ``shape(split, **options) -> (N, C, H, W)`` attribute that tells
    the split's size without loading it, which ``gentool check`` asks instead.

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_feature_extractors(register):
    """Register feature extractors for evaluation metrics (FID, KID, ...).

    A feature-extractor factory is called as ``factory(**options)`` and returns
    a ``torch_fidelity.FeatureExtractorBase`` instance.

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_objectives(register):
    """Register training objectives (what the network learns; the ``[objective]`` table).

    An objective factory takes keyword-only options and returns an object with
    a ``parameterisation`` (what the network outputs; :class:`gentool.Parameterisation`)
    or the classic ``prediction`` string (``"eps"``, ``"x0"`` or ``"v"``),
    optionally ``learned_variance`` (default ``False``) and
    ``check(process) -> str | None``,
    ``draw(process, x0, generator) -> (t, noise)`` and
    ``loss(net, process, x0, labels, t, noise) -> (per_example_loss, extras)``;
    see :class:`gentool.Objective`. The engine, the test loss, ``gentool eval``
    and ``gentool bench`` all train and measure through it. An objective that
    needs the run (a distillation's teacher) may have ``start(run, fresh=...)``,
    and one with state between steps ``state_dict()``/``load_state_dict()``,
    which checkpoints keep.

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_loggers(register):
    """Register loggers: where training metrics, sample grids and the recipe go.

    A logger factory is called as ``factory(run_dir, **options)`` and returns
    an object with ``log_scalars(step, scalars)``, ``log_image(step, name,
    image)``, ``log_text(step, name, text)`` and ``close()``; see
    :class:`gentool.Logger`. ``[run] loggers`` picks the loggers of a run. A
    logger that raises is reported once and switched off.

    :param register: ``register(name, factory)``.
    """


@hookspec
def gentool_register_commands(register):
    """Register ``gentool`` subcommands.

    A command is a plain Typer command function (typed parameters with
    ``typer.Argument``/``typer.Option`` defaults, its docstring the help); it
    shows in ``gentool --help`` and ``gentool list-plugins``. Keep the module
    defining it cheap to import: import torch inside the function.

    :param register: ``register(name, function)``.
    """
