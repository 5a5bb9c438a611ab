"""What the machine can do, and the numeric precision every stage runs in.

``mixed_precision: auto`` (the default of every stage) picks bf16 autocast where the
hardware computes bf16 natively and fp32 everywhere else:

- CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and newer), else fp32;
- CPU: bf16 when torch's own probes find AVX512-BF16 or AMX *and* the kernels torch
  dispatches to may use AVX-512 (``ATEN_CPU_CAPABILITY=avx2`` turns that off), else fp32.

Why not bf16 everywhere: on a CPU without native bf16, autocast emulates it in software.
Measured (benchmarks/RESULTS.md, "Precision"): one AutoencoderKL (16, 32, 32) training
step on a 2x1x32^3 batch took 36 s in bf16 against 0.54 s in fp32 on a 2-core AVX2 AMD
EPYC (66x slower; 32x on another AVX2 machine), while on an AVX512-BF16 CPU bf16 was
1.5-2.2x faster than fp32.

An explicit ``bf16`` (or ``fp16``) is honoured, with a warning where it is emulated.
Every run records the choice: :class:`Precision` has the value used and the reason.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

#: values of every ``mixed_precision`` setting
PrecisionName = Literal["auto", "no", "bf16", "fp16"]
PRECISIONS = ("auto", "no", "bf16", "fp16")

#: the slowdown quoted in the warning (AutoencoderKL training step, 2-core AVX2 CPUs, see the module doc)
EMULATED_BF16_SLOWDOWN = "32-66x"

_warned: set[tuple[str, str]] = set()
_logged: set[tuple[str, str, str]] = set()


def cpu_capability() -> str:
    """The SIMD level torch's CPU kernels dispatch to: ``AVX2``, ``AVX512``, ``DEFAULT``, ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - very old torch or an exotic build
        return "unknown"


def _probe(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # noqa: BLE001
        return False


def cpu_features() -> dict[str, bool]:
    """torch's CPU feature probes (what the silicon has, whatever torch dispatches to)."""
    return {"avx2": _probe("_is_avx2_supported"), "avx512": _probe("_is_avx512_supported"),
            "avx512_bf16": _probe("_is_avx512_bf16_supported"), "amx": _probe("_is_amx_tile_supported"),
            "vnni": _probe("_is_vnni_supported")}


def cpu_bf16_native() -> bool:
    """True when this CPU computes bf16 in hardware and torch's kernels may use it."""
    f = cpu_features()
    if not (f["avx512_bf16"] or f["amx"]):
        return False
    # ATEN_CPU_CAPABILITY=avx2 (or an old torch build) keeps the kernels off AVX-512
    return cpu_capability().upper().startswith("AVX512")


def cpu_kind() -> str:
    """One short string for tables: e.g. ``AVX2, bf16 emulated`` or ``AVX512, bf16 native (AMX)``."""
    f = cpu_features()
    cap = cpu_capability()
    if cpu_bf16_native():
        how = "AMX" if f["amx"] else "AVX512-BF16"
        return f"{cap}, bf16 native ({how})"
    return f"{cap}, bf16 emulated"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Precision:
    """The precision a stage runs in. ``value`` is accelerate's name (no | bf16 | fp16)."""

    requested: str
    value: str
    device: str
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.value)

    @property
    def cpu_bf16(self) -> bool:
        """bf16 autocast on a CPU (the case :func:`guard_small_feature_maps` checks)."""
        return self.device == "cpu" and self.value == "bf16"

    @property
    def label(self) -> str:
        return {"no": "fp32"}.get(self.value, self.value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device_type(device: str | torch.device | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def cuda_bf16_supported() -> bool:
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


def resolve_precision(requested: str, device: str | torch.device | None = None, what: str = "") -> Precision:
    """Turn a ``mixed_precision`` setting into the precision used on ``device`` (default: CUDA
    when visible, else CPU). ``what`` names the stage in the log line and warning."""
    if requested not in PRECISIONS:
        raise ValueError(f"mixed_precision: {requested!r} is not one of {list(PRECISIONS)}")
    dev = _device_type(device)
    where = f"{what}: " if what else ""
    if requested == "auto":
        if dev == "cuda":
            ok = cuda_bf16_supported()
            name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cuda"
            p = Precision("auto", "bf16" if ok else "no", dev,
                          f"auto: {name} {'supports' if ok else 'does not support'} bf16")
        elif dev == "cpu":
            ok = cpu_bf16_native()
            p = Precision("auto", "bf16" if ok else "no", dev,
                          f"auto: CPU {cpu_kind()}" + ("" if ok else " -> fp32 (emulated bf16 is far slower)"))
        else:
            p = Precision("auto", "no", dev, f"auto: fp32 on {dev}")
    else:
        p = Precision(requested, requested, dev, "asked for explicitly")
        if dev == "cpu" and requested == "bf16" and not cpu_bf16_native():
            _warn_once(what, requested,
                       f"{where}mixed_precision=bf16 on a CPU without native bf16 ({cpu_kind()}): autocast emulates it, "
                       f"measured {EMULATED_BF16_SLOWDOWN} slower than fp32 for a 3D autoencoder step. "
                       "Use mixed_precision: auto (fp32 here) or no.")
        if dev == "cpu" and requested == "fp16":
            _warn_once(what, requested, f"{where}mixed_precision=fp16 on a CPU: most CPUs emulate fp16 and it is "
                       "usually slower than fp32. Use mixed_precision: auto or no.")
    key = (what, requested, p.value)
    if key not in _logged:
        _logged.add(key)
        log.info("%sprecision %s (%s)", where, p.label, p.reason)
    return p


#: the smallest side (voxels) a 3D feature map may have for CPU bf16 training: on torch 2.14.1 with AVX512-BF16,
#: Conv3d's weight gradient under bf16 autocast comes out NaN in 5-27 % of calls when an input side is 2 voxels
#: (kernel 3, padding 1; sides 1, 3, 4, 5 and 8 never did in 40-200 calls each; measured in session 9,
#: benchmarks/bench_bf16_small_conv.py)
CPU_BF16_MIN_SIDE = 3


def smallest_conv_side(runs) -> int | None:
    """The smallest side (voxels) of any input a ``torch.nn.Conv3d`` sees when each ``(network, input)`` of
    ``runs`` is run once (no gradients). None when a network cannot take its input (its own training will say
    why) or has no 3D convolution."""
    sides: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: sides.append(int(min(i[0].shape[2:]))))
             for net, _ in runs for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    modes = [net.training for net, _ in runs]
    try:
        with torch.no_grad():
            for net, x in runs:
                net.eval()(x)  # eval: batch statistics of a one-crop batch are not needed for shapes
    except (RuntimeError, ValueError):
        return None
    finally:
        for h in hooks:
            h.remove()
        for (net, _), mode in zip(runs, modes):
            net.train(mode)
    return min(sides) if sides else None


def guard_small_feature_maps(precision: Precision, smallest_side: int | None, what: str = "") -> Precision:
    """``precision`` unless it is bf16 on a CPU and a network's smallest 3D feature map has a side of 2
    voxels (:data:`CPU_BF16_MIN_SIDE`): then fp32 with a warning when bf16 came from ``auto``, and a
    ValueError when it was asked for. ``smallest_side``: the smallest side of any feature map a convolution
    of the trained networks sees (None: unknown, nothing changes)."""
    if smallest_side is None or not precision.cpu_bf16 or not 1 < smallest_side < CPU_BF16_MIN_SIDE:
        return precision
    where = f"{what}: " if what else ""
    why = (f"the networks' smallest feature map has a side of {smallest_side} voxels, and CPU bf16 3D convolutions "
           f"return NaN weight gradients at that size (torch {torch.__version__})")
    if precision.requested == "bf16":
        raise ValueError(f"{where}mixed_precision=bf16 on this CPU: {why}. Use larger crops (every side "
                         f">= {CPU_BF16_MIN_SIDE} voxels at the lowest level) or mixed_precision: no")
    _warn_once(what, "auto-small", f"{where}precision fp32 instead of bf16: {why}")
    return Precision(precision.requested, "no", "cpu", f"auto: CPU {cpu_kind()}, but {why} -> fp32")


def _warn_once(what: str, requested: str, message: str) -> None:
    if (what, requested) in _warned:
        return
    _warned.add((what, requested))
    log.warning(message)
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)


#: values of the ``memory_format`` settings
MemoryFormat = Literal["auto", "channels_last", "contiguous"]


def use_channels_last(setting: str, device: str | torch.device | None = None, precision: str = "no") -> bool:
    """Whether 3D conv nets run in ``torch.channels_last_3d``. ``auto``: on CPUs in fp32, where it
    was measured faster (0.80x the fp32 autoencoder step, 0.81x the ControlNet step, 0.77x the demo's
    SegResNet step on a 2-core AVX2 CPU, benchmarks/bench_precision.py); contiguous on GPUs and in
    bf16, where it was not measured. ``precision``: the resolved value (no | bf16 | fp16)."""
    if setting not in ("auto", "channels_last", "contiguous"):
        raise ValueError(f"memory_format: {setting!r} is not auto | channels_last | contiguous")
    if setting == "auto":
        return _device_type(device) == "cpu" and precision == "no"
    return setting == "channels_last"


def hardware_summary() -> dict[str, Any]:
    """What a benchmark line or bug report needs about the machine."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}"})
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(),
        "cpu_features": cpu_features(),
        "cpu_bf16_native": cpu_bf16_native(),
        "cpu_kind": cpu_kind(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "auto_precision_cpu": resolve_precision("auto", "cpu").label,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS",
                                           "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
