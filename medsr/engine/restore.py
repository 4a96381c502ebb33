"""Run a restore method over a low-res stack, in batches, on a chosen device."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..codec import IntensityWindow, from_signed_unit, project_consistent, to_unit
from .interpolate import bicubic_upsample, nearest_upsample

METHODS = ("model", "bicubic", "nearest")


@dataclass(frozen=True)
class EngineConfig:
    method: str = "model"
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 0  # 0: choose
    consistency: bool = True  # project onto the stored low-res data
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16 never on CPU)


def select_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from ..errors import MedsrError

        raise MedsrError("--device cuda was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        from ..errors import MedsrError

        raise MedsrError(f"unknown device {name!r} (auto, cpu or cuda)")
    return name


def _precision(cfg: EngineConfig, device: str):
    import torch

    p = cfg.precision
    if p == "auto":
        p = "bf16" if device == "cuda" else "fp32"
    if device == "cpu" and p == "fp16":
        p = "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


def _run_model(module, x01: np.ndarray, device: str, cfg: EngineConfig, progress: Callable[[int], None] | None) -> np.ndarray:
    import torch

    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    dtype = _precision(cfg, device)
    module = module.to(device).eval()
    if device == "cuda":
        module = module.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    n, h, w = x01.shape
    bs = cfg.batch_size or (64 if device == "cuda" else 8)
    out = None
    with torch.inference_mode():
        for i in range(0, n, bs):
            t = torch.from_numpy(np.ascontiguousarray(x01[i:i + bs]))[:, None].to(device, non_blocking=True)
            if device == "cuda":
                t = t.contiguous(memory_format=torch.channels_last)
            if dtype is not None:
                with torch.autocast(device_type=device, dtype=dtype):
                    y = module(t)
            else:
                y = module(t)
            y = y.float()[:, 0].cpu().numpy()
            if out is None:
                out = np.empty((n,) + y.shape[1:], dtype=np.float32)
            out[i:i + len(y)] = y
            if progress:
                progress(len(y))
    return out


def restore_stack(lr: np.ndarray, window: IntensityWindow, scale: int, *, config: EngineConfig = EngineConfig(),
                  module=None, operator: str = "area4-v1",
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Low-res stack (stored units) -> high-res stack (stored units, float64, not rounded).

    ``method="model"`` needs ``module`` (a generator taking [0,1] and giving [-1,1]).
    With ``consistency`` the result is projected so that the archive operator applied
    to it gives back ``lr`` (exactly, before rounding).
    """
    if config.method == "bicubic":
        hr = bicubic_upsample(lr, scale)
        if progress:
            progress(len(lr))
    elif config.method == "nearest":
        hr = nearest_upsample(lr, scale)
        if progress:
            progress(len(lr))
    elif config.method == "model":
        if module is None:
            raise ValueError("method 'model' needs a model")
        device = select_device(config.device)
        y = _run_model(module, to_unit(lr, window), device, config, progress)
        hr = from_signed_unit(y, window)
    else:
        from ..errors import MedsrError

        raise MedsrError(f"unknown restore method {config.method!r} (one of {', '.join(METHODS)})")
    if config.consistency and config.method != "nearest":
        hr = project_consistent(hr, lr, operator)
    return hr


def to_stored(hr: np.ndarray, dtype: np.dtype, value_range: tuple[float, float]) -> np.ndarray:
    """Round half-to-even and clip to the stored value range, cast to ``dtype``."""
    lo, hi = value_range
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.clip(np.rint(hr), lo, hi).astype(dtype)
    return hr.astype(dtype)
