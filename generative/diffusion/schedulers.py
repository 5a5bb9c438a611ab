"""Noise processes for training and samplers for inference, swappable by name.

Training uses one of two processes (MONAI schedulers):

* ``ddpm``: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps; the UNet predicts eps
  (``epsilon``) or v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (``v_prediction``).
* ``rflow`` (MONAI ``RFlowScheduler``): x_t = (1 - t/T) x0 + (t/T) eps; the UNet
  predicts the velocity x0 - eps (MAISI v2's convention).

Samplers, each a uniform ``timesteps`` + ``step(out, t, t_next, x)`` object:

=============  ==========================================  ==================
name           implementation                              trained with
=============  ==========================================  ==================
ddpm           monai DDPMScheduler (N steps, respaced)     ddpm
ddim           monai DDIMScheduler (eta 0)                 ddpm
dpm++          diffusers DPMSolverMultistepScheduler       ddpm
unipc          diffusers UniPCMultistepScheduler           ddpm
rflow          monai RFlowScheduler (Euler)                rflow
flow-euler     diffusers FlowMatchEulerDiscreteScheduler   rflow
=============  ==========================================  ==================

diffusers' schedulers are shape-agnostic, so they run on 5D latents unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

SAMPLERS_FOR = {
    "ddpm": ("ddpm", "ddim", "dpm++", "unipc"),
    "rflow": ("rflow", "flow-euler"),
}
#: MONAI schedule name -> diffusers beta_schedule (both with beta 1e-4 .. 2e-2)
_DIFFUSERS_BETAS = {"linear_beta": "linear", "scaled_linear_beta": "scaled_linear"}


@dataclass(frozen=True)
class ProcessSpec:
    """What the UNet was trained on; stored in pipeline.json so samplers match it."""

    kind: str = "rflow"  # ddpm | rflow
    prediction_type: str = "epsilon"  # ddpm: epsilon | v_prediction; rflow: velocity
    num_train_timesteps: int = 1000
    schedule: str = "scaled_linear_beta"
    sample_method: str = "uniform"

    def as_dict(self) -> dict:
        return asdict(self)


class NoiseProcess:
    """Training side: timesteps, noising and the regression target. Tensors (B, C, d, h, w)."""

    def __init__(self, spec: ProcessSpec):
        self.spec = spec
        T = spec.num_train_timesteps
        if spec.kind == "ddpm":
            self.scheduler = DDPMScheduler(num_train_timesteps=T, schedule=spec.schedule,
                                           prediction_type=spec.prediction_type, clip_sample=False)
        elif spec.kind == "rflow":
            self.scheduler = RFlowScheduler(num_train_timesteps=T, use_discrete_timesteps=True,
                                            sample_method=spec.sample_method)
        else:
            raise ValueError(f"scheduler kind {spec.kind!r} is not ddpm or rflow")

    def sample_timesteps(self, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) integer timesteps in [0, T), drawn from ``generator`` so a step is reproducible."""
        T = self.spec.num_train_timesteps
        if self.spec.kind == "rflow" and self.spec.sample_method == "logit-normal":
            u = torch.sigmoid(torch.randn(x0.shape[0], generator=generator))
        else:
            u = torch.rand(x0.shape[0], generator=generator)
        return (u * T).long().clamp(0, T - 1).to(x0.device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.spec.kind == "rflow":
            return x0 - noise
        if self.spec.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, t)
        return noise


class Sampler:
    """Inference side. ``timesteps``: the model's time inputs in order; ``step`` moves
    ``x`` from ``t`` to ``t_next`` (``t_next`` None at the last step)."""

    name: str
    timesteps: list

    def step(self, out: torch.Tensor, t, t_next, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``x0`` carried forward to time ``t`` (a value of ``timesteps``; None = the end, x0 itself)
        with ``noise``: what the sampler's state would be there if the sample were ``x0``. Used to
        hold known latents during inpainting."""
        raise NotImplementedError


class _MonaiDDPMFamily(Sampler):
    def __init__(self, name: str, spec: ProcessSpec, steps: int):
        cls = DDPMScheduler if name == "ddpm" else DDIMScheduler
        self.name = name
        self.s = cls(num_train_timesteps=spec.num_train_timesteps, schedule=spec.schedule,
                     prediction_type=spec.prediction_type, clip_sample=False)
        self.s.set_timesteps(steps)
        self.timesteps = [int(t) for t in self.s.timesteps]

    def step(self, out, t, t_next, x, generator):
        if self.name == "ddpm":
            return self.s.step(out, int(t), x, generator=generator)[0]
        return self.s.step(out, int(t), x, eta=0.0, generator=generator)[0]

    def noised(self, x0, noise, t):
        if t is None:
            return x0
        return self.s.add_noise(original_samples=x0, noise=noise, timesteps=torch.tensor([int(t)], device=x0.device))


class _MonaiRFlow(Sampler):
    def __init__(self, spec: ProcessSpec, steps: int):
        self.name = "rflow"
        self.s = RFlowScheduler(num_train_timesteps=spec.num_train_timesteps, use_discrete_timesteps=False)
        self.s.set_timesteps(steps)
        self.timesteps = [float(t) for t in self.s.timesteps]

    def step(self, out, t, t_next, x, generator):
        return self.s.step(out, t, x, next_timestep=0 if t_next is None else t_next)[0]

    def noised(self, x0, noise, t):
        if t is None:
            return x0
        s = float(t) / self.s.num_train_timesteps  # x_t = (1 - t/T) x0 + (t/T) noise
        return (1.0 - s) * x0 + s * noise


class _Diffusers(Sampler):
    """diffusers schedulers; they keep their own step index, so one object per sampling run."""

    def __init__(self, name: str, spec: ProcessSpec, steps: int):
        from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

        self.name = name
        T = spec.num_train_timesteps
        if name == "flow-euler":
            self.s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=1.0)
        else:
            cls = DPMSolverMultistepScheduler if name == "dpm++" else UniPCMultistepScheduler
            kw = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=2e-2,
                      beta_schedule=_DIFFUSERS_BETAS[spec.schedule], prediction_type=spec.prediction_type)
            if name == "dpm++":
                kw["algorithm_type"] = "dpmsolver++"
            self.s = cls(**kw)
        self.s.set_timesteps(steps)
        self.timesteps = [t for t in self.s.timesteps]
        self.T = T

    def step(self, out, t, t_next, x, generator):
        if self.name == "flow-euler":
            out = -out  # diffusers' flow velocity is eps - x0; ours is x0 - eps
        return self.s.step(out, t, x, return_dict=False)[0]

    def noised(self, x0, noise, t):
        if t is None:
            return x0
        if self.name == "flow-euler":  # shift 1: sigma = t / T, x = (1 - sigma) x0 + sigma noise
            s = float(t) / self.T
            return (1.0 - s) * x0 + s * noise
        return self.s.add_noise(x0, noise, torch.tensor([int(t)], device=x0.device))


def make_sampler(name: str, spec: ProcessSpec, steps: int) -> Sampler:
    """A fresh sampler for one run. Raises ValueError when ``name`` does not fit the training process."""
    allowed = SAMPLERS_FOR.get(spec.kind, ())
    if name not in allowed:
        raise ValueError(f"sampler {name!r} does not fit a model trained with {spec.kind!r} "
                         f"(use one of {', '.join(allowed)})")
    if name in ("ddpm", "ddim"):
        return _MonaiDDPMFamily(name, spec, steps)
    if name == "rflow":
        return _MonaiRFlow(spec, steps)
    return _Diffusers(name, spec, steps)
