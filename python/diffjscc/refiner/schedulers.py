"""Samplers for the refiner: the paper's respaced DDPM, DDIM and DPM-Solver.

All three are diffusers schedulers built from one stored training schedule
(Stable Diffusion's: 1000 steps, betas linear in sqrt from 0.00085 to 0.012,
epsilon prediction). "ddpm" reproduces DiffJSCC's ``SpacedSampler``: ancestral
sampling on the timesteps that improved-DDPM's respacing picks (``N`` steps
spread evenly over 0..999 with rounding), with the posterior variance of the
respaced chain ("fixed_small"), which is what diffusers' DDPMScheduler computes
when it is given those timesteps explicitly.
"""

from __future__ import annotations

from diffjscc.errors import ConfigError
from diffjscc.refiner._deps import require

SAMPLERS = ("ddpm", "ddim", "dpm-solver")

# Stable Diffusion 2.1-base's training schedule, as DiffJSCC's configs state it.
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


def respaced_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """Timesteps of improved-DDPM's respacing with one section, in sampling order (descending).

    ``steps`` points spread over [0, num_train_timesteps - 1] with a fractional
    stride, each rounded half-to-even as Python's ``round`` does.
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ConfigError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    stride = 1.0 if steps == 1 else (num_train_timesteps - 1) / (steps - 1)
    taken, position = set(), 0.0
    for _ in range(steps):
        taken.add(round(position))
        position += stride
    return sorted(taken, reverse=True)


def make_scheduler(name: str, steps: int, schedule: dict | None = None, device=None):
    """A diffusers scheduler with its timesteps set for ``steps`` sampling steps."""
    diffusers = require("diffusers")
    config = dict(SD_SCHEDULE if schedule is None else schedule)
    if name == "ddpm":
        sched = diffusers.DDPMScheduler.from_config(
            config, variance_type="fixed_small", clip_sample=False, thresholding=False
        )
        sched.set_timesteps(
            timesteps=respaced_timesteps(sched.config.num_train_timesteps, steps), device=device
        )
    elif name == "ddim":
        sched = diffusers.DDIMScheduler.from_config(
            config, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing"
        )
        sched.set_timesteps(steps, device=device)
    elif name in ("dpm-solver", "dpmsolver", "dpm"):
        sched = diffusers.DPMSolverMultistepScheduler.from_config(
            config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            final_sigmas_type="zero",
        )
        sched.set_timesteps(steps, device=device)
    else:
        raise ConfigError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return sched
