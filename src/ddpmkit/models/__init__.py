"""Networks for x_t, t -> output [DDPM App. B]. They know nothing about the noise schedule."""

from ddpmkit.models.unet import NO_CLASS, PRESETS, UNet

__all__ = ["NO_CLASS", "PRESETS", "UNet"]
