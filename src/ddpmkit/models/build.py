"""From a run's config to its network: the one place that turns [model] and [diffusion].variance into a UNet.

It sits below both the pipeline (ddpmkit.load) and store/ (the diffusers import and export), so that neither has
to import the other to build the same network; `ddpmkit.pipeline.build_model` re-exports it for older code.
"""

from __future__ import annotations

from ddpmkit.config import RunConfig
from ddpmkit.models.unet import UNet
from ddpmkit.parameterization import output_channels


def build_model(config: RunConfig, image_size: int, channels: int) -> UNet:
    """The configured U-Net for (channels, image_size, image_size) data; 2C outputs for learned variances (the
    second half is log sigma^2 for "learned", the interpolation weight v of [IDDPM Eq. 15] for "learned_range")."""
    out_channels = output_channels(config.diffusion.variance, channels)
    options = config.model.overrides()
    if "attn_resolutions" in options:
        # resolutions the user names refer to this data's size; a preset's own refer to the preset's size, so
        # on other data attention stays at the same levels (the net is convolutional)
        options["image_size"] = image_size
    return UNet.from_preset(config.model.preset, in_channels=channels, out_channels=out_channels, **options)
