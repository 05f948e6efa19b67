"""Built-in autoencoders (the ``[autoencoder]`` table) and ``gentool autoencoder``.

* ``identity``: pixel space, the default: a recipe without ``[autoencoder]``;
* ``kl``: a small KL-regularised convolutional autoencoder (Rombach et al.
  2022) that gentool trains itself (``gentool autoencoder train RECIPE``);
* ``diffusers_kl``: diffusers' ``AutoencoderKL`` (Stable Diffusion's VAE and
  its kin) from a local folder.

The modules (and torch) are imported when a hook runs, so loading the plugins
for ``gentool --help`` stays cheap.
"""

import gentool


@gentool.hookimpl
def gentool_register_autoencoders(register):
    from gentool_autoencoders.diffusers_kl import diffusers_kl
    from gentool_autoencoders.identity import identity
    from gentool_autoencoders.kl import kl

    register("identity", identity, default=True)  # a recipe without [autoencoder]: pixel space
    register("kl", kl)
    register("diffusers_kl", diffusers_kl)


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool_autoencoders.command import autoencoder  # typer only; torch loads when the command runs

    register("autoencoder", autoencoder)
