"""Networks (encoder, decoder, estimator), the diffusion schedule and sampler, checkpoints."""
