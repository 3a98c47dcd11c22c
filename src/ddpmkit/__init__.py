"""ddpmkit: Denoising Diffusion Probabilistic Models, equation by equation."""
