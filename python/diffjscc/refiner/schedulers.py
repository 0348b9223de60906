"""Samplers for the refiner: the paper's respaced DDPM, DDIM and DPM-Solver.

Samplers are chosen from a registry (:data:`SAMPLERS`, name -> factory), as
diffusers passes scheduler objects: the refiner's loop calls the
:class:`Sampler` interface and never branches on a sampler's name. All three
are diffusers schedulers built from one stored training schedule
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


class Sampler:
    """One sampling run's stepping rule around a diffusers scheduler.

    The refiner's loop calls only what is here, so a new sampler is a new class in
    :data:`SAMPLERS`, never a branch on a name inside the loop:

    - ``timesteps``: the model timesteps, in sampling order;
    - ``alphas_cumprod``: the training schedule's cumulative alphas (CPU);
    - ``step(eps, t, latents, index, generator, noise)``: the next latents; ``noise``
      replaces the ancestral noise of a stochastic sampler (None: drawn);
    - ``apply_guidance(latents, eps, x0, delta, t)``: what an x0 correction ``delta``
      does to the step, as ``(eps, mean_shift)``; the default re-derives epsilon from
      the corrected x0 (``mean_shift`` None).
    """

    name = ""
    stochastic = False  # takes per-step noise (``step_noise``)

    def __init__(self, scheduler):
        self.scheduler = scheduler

    @property
    def timesteps(self):
        return self.scheduler.timesteps

    @property
    def alphas_cumprod(self):
        return self.scheduler.alphas_cumprod

    @property
    def init_noise_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)

    def scale_model_input(self, latents, t):
        return self.scheduler.scale_model_input(latents, t)

    def step(self, eps, t, latents, index: int, generator=None, noise=None):
        if noise is not None:
            raise ConfigError(f"the {self.name} sampler is deterministic: it takes no step noise")
        return self.scheduler.step(eps, t, latents).prev_sample

    def apply_guidance(self, latents, eps, x0, delta, t):
        torch = require("torch")
        a = self.alphas_cumprod[int(t)].to(device=latents.device, dtype=torch.float32)
        corrected = x0 + delta
        eps = (latents.float() - a.sqrt() * corrected) / (1 - a).sqrt()
        return eps, None


class RespacedDDPM(Sampler):
    """The paper's sampler: ancestral DDPM on improved-DDPM's respaced timesteps, fixed_small.

    Guidance moves the posterior mean by half the x0 correction, as the official
    sampler does (``model_mean += 0.5 * delta``), epsilon itself unchanged.
    """

    name = "ddpm"
    stochastic = True

    @classmethod
    def create(cls, steps: int, schedule: dict, device=None) -> RespacedDDPM:
        diffusers = require("diffusers")
        sched = diffusers.DDPMScheduler.from_config(
            schedule, variance_type="fixed_small", clip_sample=False, thresholding=False
        )
        sched.set_timesteps(
            timesteps=respaced_timesteps(sched.config.num_train_timesteps, steps), device=device
        )
        return cls(sched)

    def step(self, eps, t, latents, index: int, generator=None, noise=None):
        if noise is None:
            return self.scheduler.step(eps, t, latents, generator=generator).prev_sample
        return ddpm_step_with_noise(self.scheduler, eps, t, latents, noise)

    def apply_guidance(self, latents, eps, x0, delta, t):
        return eps, 0.5 * delta


class DDIM(Sampler):
    name = "ddim"

    @classmethod
    def create(cls, steps: int, schedule: dict, device=None) -> DDIM:
        diffusers = require("diffusers")
        sched = diffusers.DDIMScheduler.from_config(
            schedule, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing"
        )
        sched.set_timesteps(steps, device=device)
        return cls(sched)


class DPMSolver(Sampler):
    """DPM-Solver++ (2nd order, trailing spacing): the fast option."""

    name = "dpm-solver"

    @classmethod
    def create(cls, steps: int, schedule: dict, device=None) -> DPMSolver:
        diffusers = require("diffusers")
        sched = diffusers.DPMSolverMultistepScheduler.from_config(
            schedule,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            final_sigmas_type="zero",
        )
        sched.set_timesteps(steps, device=device)
        return cls(sched)


# name -> factory ``(steps, schedule, device) -> Sampler``; add an entry to add a sampler
SAMPLERS: dict[str, type[Sampler]] = {"ddpm": RespacedDDPM, "ddim": DDIM, "dpm-solver": DPMSolver}
SAMPLER_ALIASES = {"dpmsolver": "dpm-solver", "dpm": "dpm-solver"}


def make_sampler(name: str, steps: int, schedule: dict | None = None, device=None) -> Sampler:
    """The sampler registered as ``name``, with its timesteps set for ``steps`` steps."""
    factory = SAMPLERS.get(SAMPLER_ALIASES.get(name, name))
    if factory is None:
        raise ConfigError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    num_train = int((schedule or SD_SCHEDULE)["num_train_timesteps"])
    if not 1 <= int(steps) <= num_train:
        raise ConfigError(f"steps must be in 1..{num_train}, got {steps}")
    return factory.create(int(steps), dict(SD_SCHEDULE if schedule is None else schedule), device)


def make_scheduler(name: str, steps: int, schedule: dict | None = None, device=None):
    """The diffusers scheduler of sampler ``name`` with its timesteps set for ``steps`` steps."""
    return make_sampler(name, steps, schedule, device).scheduler


def ddpm_step_with_noise(sched, eps, t, sample, noise):
    """One step of the respaced DDPM posterior with the given noise (same maths as DDPMScheduler)."""
    torch = require("torch")
    prev_t = int(sched.previous_timestep(t))
    acp = sched.alphas_cumprod
    a_t = acp[int(t)].double()
    a_prev = acp[prev_t].double() if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64)
    beta = 1 - a_t / a_prev
    x = sample.double()
    x0 = (x - (1 - a_t).sqrt() * eps.double()) / a_t.sqrt()
    mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + (
        (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)
    ) * x
    if prev_t >= 0:
        variance = ((1 - a_prev) / (1 - a_t) * beta).clamp_min(1e-20)
        mean = mean + variance.sqrt() * noise.to(device=x.device, dtype=torch.float64)
    return mean.to(sample.dtype)
