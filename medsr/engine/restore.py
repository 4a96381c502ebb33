"""Run a restore method over a low-res stack, in batches, on a chosen device.

CUDA: bf16 autocast (``precision``), channels_last, cudnn benchmark, optional
``torch.compile``, pinned host memory with non-blocking copies, tiles with overlap for
large slices, and an out-of-memory fallback that halves the batch, then the tile.
CPU: all cores, channels_last, bf16 where the CPU has native bf16 (AMX/AVX512-BF16),
never fp16.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np

from ..codec import IntensityWindow, from_signed_unit, project_consistent, to_unit
from .interpolate import bicubic_upsample, nearest_upsample

log = logging.getLogger("medsr")
METHODS = ("model", "bicubic", "nearest")
TILE_OVERLAP = 16  # low-res pixels of context on each side of a tile


@dataclass(frozen=True)
class EngineConfig:
    method: str = "model"
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 0  # 0: choose
    consistency: bool = True  # project onto the stored low-res data
    consistency_tolerance: float = 0.0  # block-mean bound of the base (0: exact; JPEG-LS NEAR=k: k + 0.5)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16 never on CPU)
    tile: int = 0  # low-res tile size; 0: whole slices (tiles only after an out-of-memory)
    compile: bool = False  # torch.compile the model (CUDA)


def device_for(method: str, name: str = "auto") -> str:
    """The device a restore by ``method`` runs on (what audits record): classical methods (bicubic, nearest) are
    NumPy on the CPU whatever device is asked, and never import torch (over a second of start-up); a model asks
    ``select_device``. Archive, restore, ``--ratio`` and ``medsr rd`` all ask here."""
    if method in ("bicubic", "nearest"):
        if name not in ("auto", "cpu", "cuda"):
            from ..errors import MedsrError

            raise MedsrError(f"unknown device {name!r} (auto, cpu or cuda)")
        return "cpu"
    return select_device(name)


def select_device(name: str = "auto") -> str:
    import torch

    from ..errors import MedsrError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise MedsrError("--device cuda was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise MedsrError(f"unknown device {name!r} (auto, cpu or cuda)")
    return name


@lru_cache(maxsize=1)
def cpu_bf16_units() -> str | None:
    """The CPU's native bf16 units: ``"amx"``, ``"avx512"`` (AVX512-BF16) or None. Which one runs the network
    decides its rounding, so a bf16 restore is bit-identical only between CPUs with the same units."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return None
    return "amx" if " amx_bf16" in flags else "avx512" if " avx512_bf16" in flags else None


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AMX or AVX512-BF16)."""
    return cpu_bf16_units() is not None


def arithmetic(precision: str, device: str) -> str:
    """The arithmetic a network restore runs in, as an audit records it: ``cuda-bf16``, ``cpu-fp32``,
    ``cpu-bf16-amx``, ``cpu-bf16-avx512``... (``precision`` as asked, ``device`` resolved). Two restores of one
    archive with different arithmetic may round some pixels differently (measured: up to 5 units on 5 of 9
    archives between AMX and AVX512-BF16 CPUs, every figure within 0.001 dB); the same name is no promise of
    bit-identity (GPU models and libraries differ too), only the known cause of differences."""
    p = resolve_precision(precision, device)
    if device == "cpu" and p == "bf16":
        return f"cpu-bf16-{cpu_bf16_units() or 'emulated'}"
    return f"{device}-{p}"


def resolve_precision(precision: str, device: str) -> str:
    """auto -> bf16 on CUDA and on CPUs with native bf16, else fp32; fp16 is never used on CPU."""
    p = precision
    if p == "auto":
        p = "bf16" if device == "cuda" or cpu_has_fast_bf16() else "fp32"
    if device == "cpu" and p == "fp16":
        p = "fp32"
    if p not in ("fp32", "bf16", "fp16"):
        from ..errors import MedsrError

        raise MedsrError(f"unknown precision {precision!r} (auto, fp32, bf16, fp16)")
    return p


def default_batch(device: str, lr_pixels: int) -> int:
    """Slices per batch: ~64 slices of 64x64 on a GPU (scaled by size); on a CPU 8 slices of 64x64,
    scaled by size (2 of 128x128). Memory, measured with ``python -m pipelines.memory_bench --slices 22
    --size 512 --method model --runs archive`` (peak RSS of an archive with its audit): 961 MiB with
    8 slices of 128x128 per batch, 641 with 4, 541 with 2; CPU throughput at 128->512 drops to
    ~0.6-0.7x from 8 to 2 (``medsr bench`` model rows), the price of the 600 MB bound."""
    if device == "cuda":
        return max(1, min(256, (64 * 64 * 64) // max(lr_pixels, 1)))
    return max(1, min(8, (8 * 64 * 64) // max(lr_pixels, 1)))


def restore_step(config: "EngineConfig", lr_hw: tuple[int, int], scale: int) -> int:
    """Slices ``iter_restore`` hands its method at once: the network's batch (``default_batch`` unless set), or for
    bicubic/nearest 32 slices of 64x64 low-res at x4 (4 of 512x512 out: float64 batches of ~8 MiB, whatever
    the slice size). A caller restoring a stack in chunks that are multiples of it batches slices as one call."""
    h, w = lr_hw
    if config.method in ("bicubic", "nearest"):
        return max(1, min(32, (32 * 256 * 256) // max(1, h * w * scale * scale)))
    return config.batch_size or default_batch(select_device(config.device), h * w)


class ModelRunner:
    """A prepared model on a device: call it on (b, 1, h, w) float32 numpy in [0, 1]."""

    def __init__(self, module, device: str, cfg: EngineConfig):
        import torch

        self.torch = torch
        self.device = device
        if device == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        p = resolve_precision(cfg.precision, device)
        self.precision = p
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[p]
        module = module.to(device).eval().to(memory_format=torch.channels_last)
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
        if cfg.compile:
            module = torch.compile(module)
        self.module = module

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.device == "cuda":
            t = t.pin_memory().to("cuda", non_blocking=True)
        t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.dtype is not None:
                with torch.autocast(device_type=self.device, dtype=self.dtype):
                    y = self.module(t)
            else:
                y = self.module(t)
            return y.float().cpu().numpy()


def _tiled(runner: ModelRunner, x: np.ndarray, scale: int, tile: int) -> np.ndarray:
    """Run ``runner`` on (b, 1, h, w) in overlapping tiles of ``tile`` low-res pixels; stitch centres."""
    b, _, h, w = x.shape
    out = np.empty((b, 1, h * scale, w * scale), dtype=np.float32)
    o = TILE_OVERLAP
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - o), max(0, x0 - o)
            yb, xb = min(h, y1 + o), min(w, x1 + o)
            y = runner(x[:, :, ya:yb, xa:xb])
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                y[:, :, (y0 - ya) * scale:(y1 - ya) * scale, (x0 - xa) * scale:(x1 - xa) * scale]
    return out


def iter_model(module, x01: np.ndarray, scale: int, device: str, cfg: EngineConfig) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start index, (b, H, W) network output in [-1, 1]) batch by batch.

    On CUDA out-of-memory the batch is halved, then the tile, and the batch retried.
    """
    runner = ModelRunner(module, device, cfg)
    n, h, w = x01.shape
    bs = cfg.batch_size or default_batch(device, h * w)
    tile = cfg.tile or 0
    i = 0
    while i < n:
        xb = x01[i:i + bs, None]
        try:
            if tile and (h > tile or w > tile):
                y = _tiled(runner, xb, scale, tile)
            else:
                y = runner(xb)
        except Exception as e:  # torch.cuda.OutOfMemoryError subclasses RuntimeError
            if "out of memory" not in str(e).lower() or device != "cuda":
                raise
            runner.torch.cuda.empty_cache()
            if bs > 1:
                bs = max(1, bs // 2)
            else:
                tile = max(16, (tile or max(h, w)) // 2)
                if tile == 16 and cfg.tile == 16:
                    raise
            log.info("CUDA out of memory: retrying with batch %d, tile %s", bs, tile or "none")
            continue
        yield i, y[:, 0]
        i += len(y)


def iter_restore(lr: np.ndarray, window: IntensityWindow, scale: int, *, config: EngineConfig = EngineConfig(),
                 module=None, operator: str = "area4-v1") -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start index, high-res batch in stored units, float64, not rounded)."""
    if config.method in ("bicubic", "nearest"):
        step = restore_step(config, lr.shape[1:], scale)
        for i in range(0, len(lr), step):
            chunk = lr[i:i + step]
            hr = bicubic_upsample(chunk, scale) if config.method == "bicubic" else nearest_upsample(chunk, scale)
            if config.consistency and config.method == "bicubic":
                hr = project_consistent(hr, chunk, operator, config.consistency_tolerance)
            yield i, hr
        return
    if config.method != "model":
        from ..errors import MedsrError

        raise MedsrError(f"unknown restore method {config.method!r} (one of {', '.join(METHODS)})")
    if module is None:
        raise ValueError("method 'model' needs a model")
    device = select_device(config.device)
    x01 = to_unit(lr, window)
    for i, y in iter_model(module, x01, scale, device, config):
        hr = from_signed_unit(y, window)
        if config.consistency:
            hr = project_consistent(hr, lr[i:i + len(y)], operator, config.consistency_tolerance)
        yield i, hr


def restore_stack(lr: np.ndarray, window: IntensityWindow, scale: int, *, config: EngineConfig = EngineConfig(),
                  module=None, operator: str = "area4-v1",
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Low-res stack (stored units) -> high-res stack (stored units, float64, not rounded).

    ``method="model"`` needs ``module`` (a generator taking [0,1] and giving [-1,1]).
    With ``consistency`` the result is projected so that the archive operator applied
    to it gives back ``lr`` (exactly, before rounding).
    """
    n, h, w = lr.shape
    out = np.empty((n, h * scale, w * scale), dtype=np.float64)
    for i, hr in iter_restore(lr, window, scale, config=config, module=module, operator=operator):
        out[i:i + len(hr)] = hr
        if progress:
            progress(len(hr))
    return out


def to_stored(hr: np.ndarray, dtype: np.dtype, value_range: tuple[float, float]) -> np.ndarray:
    """Round half-to-even and clip to the stored value range, cast to ``dtype``."""
    lo, hi = value_range
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.clip(np.rint(hr), lo, hi).astype(dtype)
    return hr.astype(dtype)
