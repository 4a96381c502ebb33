"""Train the x4 MR generator: phase 1 SRResNet (pixel loss), phase 2 SRGAN from it.

    PYTHONPATH=. python -m pipelines.train --pack .train/pack.npz --out runs/x \\
        --phase1-seconds 330 --phase2-seconds 100 --batch-size 64 --device cuda

Recipe (Ledig et al. 2017, see FACTS.md): HR crops 96x96 (LR 24x24), LR in [0, 1], HR in
[-1, 1]; Adam(beta1=0.9), lr 1e-4; phase 1 minimises MSE (``--loss l1`` optional);
phase 2 starts from the phase-1 generator and minimises content + 1e-3 x adversarial
(BCE on discriminator logits), lr 1e-4 for the first half of its budget then 1e-5.
The low-res inputs are made by ``medsr.codec.downsample`` itself (medsr.transforms).

Budgets are wall-clock seconds per phase (validation and checkpoints included), with
optional step caps. Everything is written flat into ``--out`` (at most 7 files):

- ``srresnet.safetensors`` / ``srgan.safetensors``: generator weights via
  ``medsr.models.registry.save_weights`` (metadata architecture/config/operator),
  rewritten in place every ``--checkpoint-seconds`` so a killed run leaves usable
  weights, and at the end of each phase;
- ``checkpoint.json``: phase, step, elapsed, whether the phase completed;
- ``log.csv``: step, losses, lr, it/s, validation PSNR/SSIM;
- ``eval.json``: bicubic / srresnet / srgan (and "+dc", data consistency) on the held-out
  source, FULL slices, PSNR with data_range = series max - min, foreground PSNR
  (original > 5% of the series' 99.5th percentile), SSIM (skimage, explicit data_range);
- optional ``discriminator.safetensors`` (``--save-discriminator``) and ``optimizer.pt``
  (``--save-optimizer``: torch.save of the Adam states, a pickle used only by ``--resume``;
  never ship it).

Imports only torch, numpy, scipy, scikit-image, safetensors, monai and medsr's codec,
models and transforms (no pydicom / nibabel / h5py / tqdm / matplotlib), so it runs
on a bare GPU machine with a carried monai wheel.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsr.codec import downsample, from_signed_unit, get_operator, pad_to_multiple, project_consistent, to_unit
from medsr.models.discriminator import Discriminator, DiscriminatorConfig
from medsr.models.registry import create_model, file_sha256, load_weights, save_weights
from medsr.models.srresnet import SRResNet, SRResNetConfig, fold_batch_norm
from medsr.transforms.pipeline import AugmentConfig, SliceSource, foreground_threshold, slice_items, training_dataset, \
    volume_window
from pipelines.prepare_data import Pack, PackVolume, load_pack

OPERATOR = "area4-v1"  # the default; --operator area2-v1 trains the x2 tier
VAL_J2K_RATIO = 100.0  # the JPEG 2000-base tier validates at the ratio its --ratio candidates meet most (docs/ratio.md)
FILES = {"srresnet": "srresnet.safetensors", "srgan": "srgan.safetensors"}
LOG_FIELDS = ["phase", "step", "elapsed_s", "it_s", "lr", "loss", "content", "adv", "d_loss", "data_wait",
              "val_psnr", "val_psnr_fg", "val_ssim"]


@dataclass
class TrainConfig:
    pack: Path = Path(".train/pack.npz")
    out: Path = Path("runs/train")
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16 (autocast)
    channels_last: str = "auto"  # auto (on cuda) | on | off
    compile: bool = False
    seed: int = 0
    batch_size: int = 16
    freeze_bn: bool = False  # fine-tuning: keep batch-norm statistics fixed (small CPU batches make them noisy)
    num_workers: int = -1  # -1 = auto: 0 on cpu, min(12, cores - 2) on cuda
    blocks: int = 16
    channels: int = 64
    batch_norm: bool = True  # False: the generator without batch norm (a warm start folds it in: fold_batch_norm)
    disc_channels: int = 64
    disc_dense: int = 1024
    loss: str = "mse"  # phase-1 pixel loss: mse | l1
    content: str = "mse"  # phase-2 content loss: mse | l1 | vgg54
    vgg19_weights: Path | None = None
    adv_weight: float = 1e-3
    lr: float = 1e-4
    lr_schedule: str = "constant"  # phase 1: constant | cosine (to lr * lr_min_ratio)
    lr_min_ratio: float = 0.01
    gan_lr: float = 1e-4
    gan_lr_final: float = 1e-5
    gan_lr_switch: float = 0.5  # fraction of phase 2 after which gan_lr_final is used
    phase1_seconds: float = 300.0
    phase2_seconds: float = 100.0
    phase1_steps: int | None = None
    phase2_steps: int | None = None
    val_every: int = 1000
    val_slices: int = 8
    log_every: int = 100
    checkpoint_seconds: float = 60.0
    save_discriminator: bool = False
    save_optimizer: bool = False
    resume: bool = False
    init_weights: Path | None = None
    operator: str = OPERATOR  # down-sampling operator (area4-v1: x4 tier, area2-v1: x2 tier)
    eval_only: bool = False
    eval_extra: bool = True  # also evaluate the "val-extra" (phantom) series
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def val_base_fraction(self) -> float | None:
        """Lossy-base tier: validate on the archive's default lossy base (``LOSSY_NEAR_FRACTION``)."""
        from medsr.codec.base import LOSSY_NEAR_FRACTION

        if self.augment.base_j2k_ratio:  # both bases: validated on the JPEG 2000 one (val_j2k_ratio)
            return None
        return LOSSY_NEAR_FRACTION if self.augment.base_near_fraction else None

    @property
    def val_j2k_ratio(self) -> float | None:
        """JPEG 2000-base tier: validate on the ``lossy-j2k`` base coded to 1/``VAL_J2K_RATIO`` of the pixel bytes."""
        return VAL_J2K_RATIO if (self.augment.base_j2k_psnr or self.augment.base_j2k_ratio) else None

    def generator_config(self) -> SRResNetConfig:
        return SRResNetConfig(blocks=self.blocks, channels=self.channels, scale=get_operator(self.operator).scale,
                              batch_norm=self.batch_norm)

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(crop_size=self.augment.crop_size, base_channels=self.disc_channels,
                                   dense=self.disc_dense)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


# ---------------------------------------------------------------- runtime


@dataclass
class Runtime:
    device: torch.device
    bf16: bool
    channels_last: bool

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def to(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, m: nn.Module) -> nn.Module:
        m = m.to(self.device)
        return m.to(memory_format=torch.channels_last) if self.channels_last else m


def make_runtime(cfg: TrainConfig) -> Runtime:
    if cfg.device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(cfg.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no CUDA device")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise SystemExit(f"error: --precision must be auto, fp32 or bf16, got {cfg.precision!r}")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.channels_last not in ("auto", "on", "off"):
        raise SystemExit(f"error: --channels-last must be auto, on or off, got {cfg.channels_last!r}")
    cl = cfg.channels_last == "on" or (cfg.channels_last == "auto" and dev.type == "cuda")
    return Runtime(dev, bf16, cl)


def device_name(rt: Runtime) -> str:
    if rt.device.type == "cuda":
        return torch.cuda.get_device_name(rt.device)
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------- data


def resolve_workers(cfg: TrainConfig, rt: Runtime) -> int:
    if cfg.num_workers >= 0:
        return cfg.num_workers
    return min(12, max((os.cpu_count() or 1) - 2, 1)) if rt.device.type == "cuda" else 0


def _worker_init(worker_id: int) -> None:
    """MONAI's per-worker reseeding, and one torch thread per worker (no OpenMP spin contention)."""
    from monai.data.utils import worker_init_fn

    torch.set_num_threads(1)
    worker_init_fn(worker_id)


def train_loader(pack: Pack, cfg: TrainConfig, rt: Runtime):
    from monai.data import DataLoader

    items: list[dict] = []
    for v in pack.split("train"):
        items += slice_items(SliceSource(v.name, v.data, v.axes, dict(v.keep)), cfg.augment.crop_size, cfg.operator) * v.repeat
    ds = training_dataset(items, cfg.augment, min_length=max(200_000, 50 * cfg.batch_size))
    g = torch.Generator().manual_seed(cfg.seed)
    nw = resolve_workers(cfg, rt)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=nw, generator=g,
                        worker_init_fn=_worker_init if nw > 0 else None,
                        pin_memory=rt.device.type == "cuda", persistent_workers=nw > 0,
                        prefetch_factor=4 if nw > 0 else None)
    return loader, len(items)


def train_mode(model: nn.Module, freeze_bn: bool = False) -> nn.Module:
    """``model.train()``; with ``freeze_bn`` its batch-norm layers stay in eval mode: they normalise
    with the running statistics and do not update them (their scale and shift still learn)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return model


def forever(loader) -> Iterator[dict]:
    while True:
        yield from loader


# ---------------------------------------------------------------- evaluation


@dataclass
class EvalSeries:
    """One held-out series, degraded exactly as the archive would (whole-series window)."""

    name: str
    source: str
    split: str
    hr: np.ndarray  # (k, H, W) stored integers: the kept slices
    lr: np.ndarray  # (k, H', W') low-res of the padded slices
    window: object
    data_range: float
    fg_threshold: float
    dtype: np.dtype
    operator: str = OPERATOR


def eval_series(v: PackVolume, base_near_fraction: float | None = None, operator: str = OPERATOR,
                base_j2k_ratio: float | None = None) -> EvalSeries:
    """``base_near_fraction``: also code the low-res with the archive's lossy JPEG-LS base
    (NEAR = ``lossy_near(window width, fraction)``), as ``medsr archive --base lossy`` does.
    ``base_j2k_ratio``: code it with the ``lossy-j2k`` base to 1/ratio of the volume's 16-bit pixel
    bytes, as ``medsr archive --ratio`` codes its JPEG 2000-base candidates (``codec.rate.j2k_base_to_budget``)."""
    scale = get_operator(operator).scale
    padded, _ = pad_to_multiple(v.data, scale)
    lr = downsample(padded, operator)
    window = volume_window(v.data, operator)
    if base_near_fraction:
        from medsr.codec.base import BASE_NEAR_LOSSLESS, lossy_near, prepare_base

        lr = prepare_base(lr, BASE_NEAR_LOSSLESS, lossy_near(window.width, base_near_fraction)).decoded
    if base_j2k_ratio:
        from medsr.codec.rate import j2k_base_to_budget

        lr = j2k_base_to_budget(lr, v.data.size * 2 / base_j2k_ratio).base.decoded
    keep = np.asarray(v.keep.get(0, np.arange(v.data.shape[0])), dtype=int)
    return EvalSeries(v.name, v.source, v.split, v.data[keep], lr[keep], window,
                      float(v.data.max()) - float(v.data.min()), foreground_threshold(v.data), v.data.dtype, operator)


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    t = torch.from_numpy(lr.astype(np.float64))[:, None]
    return F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[:, 0].numpy()


@torch.no_grad()
def upscale(model: nn.Module, s: EvalSeries, rt: Runtime, batch: int = 4) -> np.ndarray:
    """Network output in stored units (float64) for the padded slices of ``s``, fp32 (TF32 on cuda)."""
    outs = []
    for i in range(0, s.lr.shape[0], batch):
        x = torch.from_numpy(to_unit(s.lr[i:i + batch], s.window))[:, None]
        y = model(rt.to(x)).float()[:, 0].cpu().numpy()
        outs.append(from_signed_unit(y, s.window))
    return np.concatenate(outs)


def to_stored(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(x), info.min, info.max)


def slice_metrics(ref: np.ndarray, pred: np.ndarray, data_range: float, fg: np.ndarray) -> dict:
    from skimage.metrics import structural_similarity

    ref = ref.astype(np.float64)
    pred = pred.astype(np.float64)
    err = (ref - pred) ** 2

    def psnr(mse: float) -> float:
        return 99.0 if mse <= 0 else float(10 * np.log10(data_range**2 / mse))

    return {"psnr": psnr(float(err.mean())), "psnr_fg": psnr(float(err[fg].mean())) if fg.any() else float("nan"),
            "ssim": float(structural_similarity(ref, pred, data_range=data_range))}


def evaluate(models: dict[str, nn.Module], series: list[EvalSeries], rt: Runtime, *, dc: bool = True,
             baseline: bool = True, max_slices: int | None = None) -> dict[str, dict[str, list[dict]]]:
    """Per source, per method: a list of per-slice metric dicts on FULL slices."""
    out: dict[str, dict[str, list[dict]]] = {}
    left = max_slices if max_slices is not None else 1 << 30
    for s in series:
        if left <= 0:
            break
        s = replace(s, hr=s.hr[:left], lr=s.lr[:left]) if s.hr.shape[0] > left else s
        left -= s.hr.shape[0]
        h, w = s.hr.shape[1:]
        preds = {"bicubic": bicubic(s.lr, get_operator(s.operator).scale)} if baseline else {}
        for name, m in models.items():
            m.eval()
            y = upscale(m, s, rt)
            preds[name] = y
            if dc:
                preds[name + "+dc"] = project_consistent(y, s.lr, s.operator)
        per = out.setdefault(s.source, {})
        for method, p in preds.items():
            p = to_stored(p[:, :h, :w], s.dtype)
            for k in range(s.hr.shape[0]):
                fg = s.hr[k] > s.fg_threshold
                r = slice_metrics(s.hr[k], p[k], s.data_range, fg)
                per.setdefault(method, []).append({"series": s.name, "slice": k, **r})
    return out


def spread_slices(series: list[EvalSeries], total: int) -> list[EvalSeries]:
    """About ``total`` slices spread over every held-out series (evenly spaced within each), so the
    validation watched during training sees every validation source, not only the first one."""
    if total <= 0 or not series:
        return []
    per = max(1, -(-total // len(series)))
    out = []
    for s in series:
        n = s.hr.shape[0]
        idx = np.unique(np.linspace(0, n - 1, min(per, n)).round().astype(int))
        out.append(replace(s, hr=s.hr[idx], lr=s.lr[idx]))
    return out


def pooled_by_source(main: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """Headline over several validation sources: per method, the mean of the per-source means
    (each source weighs the same, whatever its slice count)."""
    per_source = {src: summarise(per) for src, per in main.items()}
    methods: dict[str, dict] = {}
    for summ in per_source.values():
        for method, m in summ.items():
            methods.setdefault(method, []).append(m)
    return {method: {k: float(np.mean([m[k] for m in ms])) for k in ms[0]} | {"n_sources": len(ms)}
            for method, ms in methods.items()}


def summarise(per_slice: dict[str, list[dict]]) -> dict[str, dict]:
    summ = {}
    for method, rows in per_slice.items():
        summ[method] = {k: float(np.nanmean([r[k] for r in rows])) for k in ("psnr", "psnr_fg", "ssim")}
        summ[method]["n_slices"] = len(rows)
    base = summ.get("bicubic")
    if base:
        for method, m in summ.items():
            m["gain_psnr_fg_vs_bicubic"] = m["psnr_fg"] - base["psnr_fg"]
            m["gain_ssim_vs_bicubic"] = m["ssim"] - base["ssim"]
    return summ


# ---------------------------------------------------------------- losses


def pixel_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "mse":
        return lambda a, b: F.mse_loss(a.float(), b.float())
    if kind == "l1":
        return lambda a, b: F.l1_loss(a.float(), b.float())
    raise SystemExit(f"error: unknown pixel loss {kind!r} (mse or l1)")


class VGG54Content(nn.Module):
    """MSE between VGG19 conv5_4 features (after ReLU) / 12.75, from a LOCAL weights file only."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: Path | None):
        super().__init__()
        try:
            import torchvision
        except Exception as e:
            raise SystemExit(f"error: --content vgg54 needs torchvision, which does not import here: "
                             f"{type(e).__name__}: {str(e).splitlines()[0][:120]}") from None
        if weights is None or not Path(weights).is_file():
            raise SystemExit("error: --content vgg54 needs --vgg19-weights FILE (a local torchvision VGG19 state "
                             "dict, .safetensors or .pth); weights are never downloaded")
        vgg = torchvision.models.vgg19(weights=None)
        if str(weights).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        vgg.load_state_dict(state)
        self.features = vgg.features[:36].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2).repeat(1, 3, 1, 1)
        return self.features((x - self.mean) / self.std) / 12.75

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self._phi(sr).float(), self._phi(hr).float())


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


# ---------------------------------------------------------------- logging and checkpoints


class Log:
    def __init__(self, out: Path, append: bool):
        self.path = out / "log.csv"
        new = not (append and self.path.exists())
        self.f = open(self.path, "w" if new else "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        if new:
            self.w.writeheader()

    def row(self, **kw) -> None:
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in kw.items()})
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str, allow_nan=True))
    tmp.replace(path)


def save_generator(g: nn.Module, cfg: TrainConfig, path: Path, *, phase: str, step: int, complete: bool,
                   n_train: int) -> str:
    kind = "perceptual" if phase == "srgan" else "fidelity"
    loss = cfg.loss if phase == "srresnet" else f"{cfg.content}+{cfg.adv_weight:g}*adversarial"
    return save_weights(g, path, architecture="srresnet", config=cfg.generator_config().to_dict(), operator=cfg.operator,
                        extra={"phase": phase, "kind": kind, "loss": loss, "step": step, "complete": complete,
                               "train_data": "sag-anon (MIT), colin27 (mricron-data, BSD-style)",
                               "train_slices": n_train, "trainer": "pipelines/train.py"})


# ---------------------------------------------------------------- phases


@dataclass
class PhaseResult:
    steps: int
    seconds: float
    it_s: float
    last: dict


class Phase:
    """Shared loop: time/step budget, lr schedule, logging, validation, periodic saves."""

    def __init__(self, name: str, cfg: TrainConfig, rt: Runtime, log: Log, batches: Iterator[dict],
                 budget_s: float, max_steps: int | None, lr_at: Callable[[float], float],
                 optimizers: list[torch.optim.Optimizer], validate: Callable[[], dict], save: Callable[[int, bool], None],
                 start_step: int = 0):
        self.name, self.cfg, self.rt, self.log, self.batches = name, cfg, rt, log, batches
        self.budget_s, self.max_steps, self.lr_at = budget_s, max_steps, lr_at
        self.optimizers, self.validate, self.save, self.start_step = optimizers, validate, save, start_step

    def run(self, step_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]) -> PhaseResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        last_save = t0
        step = self.start_step
        done = 0
        wait = 0.0
        tl, sl = t0, step
        val_s = 0.0  # validation time since the last log line, left out of it/s
        acc: dict[str, torch.Tensor] = {}
        last: dict = {}
        last_val: tuple[int, dict] = (-1, {})
        print(f"[{self.name}] start: budget {self.budget_s:.0f} s"
              + (f", at most {self.max_steps} steps" if self.max_steps else ""), flush=True)
        while True:
            el = time.perf_counter() - t0
            frac = el / self.budget_s if self.budget_s > 0 else 1.0
            if self.max_steps is not None:
                frac = max(frac, done / max(self.max_steps, 1))
            if frac >= 1.0:
                break
            lr = self.lr_at(frac)
            for opt in self.optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
            tw = time.perf_counter()
            b = next(self.batches)
            lr_t, hr_t = self.rt.to(b["lr"]), self.rt.to(b["hr"])
            wait += time.perf_counter() - tw
            losses = step_fn(lr_t, hr_t)
            for k, v in losses.items():
                acc[k] = acc.get(k, 0) + v.detach()
            step += 1
            done += 1
            val = {}
            if cfg.val_every and step % cfg.val_every == 0:
                tv = time.perf_counter()
                val = self.validate()
                last_val = (step, val)
                val_s += time.perf_counter() - tv
            if step % cfg.log_every == 0 or val:
                now = time.perf_counter()
                n = step - sl
                means = {k: float(v) / max(n, 1) for k, v in acc.items()}
                it_s = n / max(now - tl - val_s, 1e-9)
                last = dict(phase=self.name, step=step, elapsed_s=now - t0, it_s=it_s, lr=lr,
                            data_wait=wait / max(now - tl - val_s, 1e-9), **means, **val)
                self.log.row(**last)
                vtxt = (f" | val psnr {val['val_psnr']:.2f} fg {val['val_psnr_fg']:.2f} ssim {val['val_ssim']:.4f}"
                        if val else "")
                ltxt = " ".join(f"{k} {v:.5f}" for k, v in means.items())
                print(f"[{self.name}] step {step} {ltxt} lr {lr:.2e} {it_s:.1f} it/s "
                      f"({it_s * cfg.batch_size:.0f} img/s) data-wait {100 * last['data_wait']:.0f}% "
                      f"{now - t0:.0f}/{self.budget_s:.0f} s{vtxt}", flush=True)
                acc, tl, sl, wait, val_s = {}, time.perf_counter(), step, 0.0, 0.0
            if time.perf_counter() - last_save >= cfg.checkpoint_seconds:
                self.save(step, False)
                last_save = time.perf_counter()
        secs = time.perf_counter() - t0
        val = last_val[1] if last_val[0] == step else self.validate()
        last = dict(phase=self.name, step=step, elapsed_s=secs, it_s=done / max(secs, 1e-9), **val)
        self.log.row(**last)
        self.save(step, True)
        print(f"[{self.name}] done: {done} steps in {secs:.0f} s ({done / max(secs, 1e-9):.1f} it/s)"
              + (f" | val psnr {val['val_psnr']:.2f} fg {val['val_psnr_fg']:.2f} ssim {val['val_ssim']:.4f}"
                 if val else ""), flush=True)
        return PhaseResult(done, secs, done / max(secs, 1e-9), last)


def constant_or_cosine(lr: float, schedule: str, min_ratio: float) -> Callable[[float], float]:
    if schedule == "constant":
        return lambda frac: lr
    if schedule == "cosine":
        lo = lr * min_ratio
        return lambda frac: lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * min(frac, 1.0)))
    raise SystemExit(f"error: --lr-schedule must be constant or cosine, got {schedule!r}")


def make_adam(params, lr: float, rt: Runtime) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=rt.device.type == "cuda")


# ---------------------------------------------------------------- main flow


def read_checkpoint(out: Path) -> dict:
    p = out / "checkpoint.json"
    return json.loads(p.read_text()) if p.exists() else {}


def load_init_weights(g: nn.Module, path: Path) -> None:
    """Warm start: the whole generator when the shapes agree; across scales (x4 weights into an x2 generator)
    every tensor whose name and shape agree (head, residual body, first upsampling stage, tail), and the
    remaining ones stay at their initialisation. Two architecture trials start from the same function: into
    a generator without batch norm, the source's batch norm is folded into its convs (``fold_batch_norm``);
    residual blocks the source lacks (a deeper generator) start as identities (their last layer zeroed).
    Names what was not loaded."""
    from safetensors.torch import load_file

    src = load_file(str(path), device="cpu")
    own = g.state_dict()
    if not any(k.endswith("running_var") for k in own):
        src = fold_batch_norm(src)
    if set(src) == set(own) and all(src[k].shape == own[k].shape for k in own):
        g.load_state_dict(src)
        return
    same = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    g.load_state_dict(same, strict=False)
    fresh = sorted(k for k in own if k not in same)
    unused = sorted(k for k in src if k not in same)
    grown = sorted({int(k.split(".")[1]) for k in fresh if k.startswith("body.")})
    with torch.no_grad():
        for i in grown:  # a residual block the source lacks: x + 0 until training moves it
            last = g.body[i].bn2 if isinstance(g.body[i].bn2, nn.BatchNorm2d) else g.body[i].conv2
            last.weight.zero_()
            last.bias.zero_()
    print(f"init weights {path.name}: {len(same)}/{len(own)} tensors loaded; initialised fresh: "
          f"{', '.join(fresh) or 'none'}{' (residual blocks ' + ', '.join(map(str, grown)) + ' as identities)' if grown else ''}; "
          f"not used: {', '.join(unused) or 'none'}", flush=True)


def train(cfg: TrainConfig) -> dict:
    t_start = time.perf_counter()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    rt = make_runtime(cfg)
    pack = load_pack(cfg.pack)
    val_main = [eval_series(v, cfg.val_base_fraction, cfg.operator, cfg.val_j2k_ratio) for v in pack.split("val")]
    if not val_main:
        raise SystemExit(f"error: {cfg.pack} has no 'val' volumes")
    print(f"device {device_name(rt)}, bf16 autocast {rt.bf16}, channels_last {rt.channels_last}, "
          f"batch {cfg.batch_size}, workers {resolve_workers(cfg, rt)}; validation source {pack.val_source} "
          f"({sum(s.hr.shape[0] for s in val_main)} slices)", flush=True)
    ckpt = read_checkpoint(out) if cfg.resume else {}
    info: dict = {"device": device_name(rt), "bf16": rt.bf16, "phases": {}}

    g = SRResNet(cfg.generator_config())
    if cfg.init_weights:
        load_init_weights(g, Path(cfg.init_weights))
    g = rt.prepare(g)
    g_run = torch.compile(g) if cfg.compile else g
    n_train = 0
    need_train = (cfg.phase1_seconds > 0 and not ckpt.get("srresnet_complete")) or cfg.phase2_seconds > 0
    loader = None
    batches: Iterator[dict] = iter(())
    if need_train:
        loader, n_train = train_loader(pack, cfg, rt)
        batches = forever(loader)
        print(f"training slices: {n_train} from {', '.join(v.source for v in pack.split('train'))}", flush=True)
    log = Log(out, append=cfg.resume)

    val_watch = spread_slices(val_main, cfg.val_slices)

    def validate(model: nn.Module) -> Callable[[], dict]:
        def run() -> dict:
            if not cfg.val_slices:
                return {}
            was = model.training
            res = evaluate({"g": model}, val_watch, rt, dc=False, baseline=False)
            if was:
                train_mode(model, cfg.freeze_bn)
            rows = [r for per in res.values() for r in per.get("g", [])]
            return {"val_psnr": float(np.mean([r["psnr"] for r in rows])),
                    "val_psnr_fg": float(np.nanmean([r["psnr_fg"] for r in rows])),
                    "val_ssim": float(np.mean([r["ssim"] for r in rows]))}
        return run

    def optim_state_path() -> Path:
        return out / "optimizer.pt"

    # ---- phase 1: SRResNet, pixel loss
    p1_path = out / FILES["srresnet"]
    if cfg.phase1_seconds > 0 and not ckpt.get("srresnet_complete"):
        crit = pixel_loss(cfg.loss)
        opt_g = make_adam(g.parameters(), cfg.lr, rt)
        start = 0
        if cfg.resume and ckpt.get("phase") == "srresnet" and p1_path.exists():
            load_weights(g, p1_path)
            start = int(ckpt.get("step", 0))
            if optim_state_path().exists():
                opt_g.load_state_dict(torch.load(optim_state_path(), map_location=rt.device)["g"])
        train_mode(g, cfg.freeze_bn)

        def step1(lr_t: torch.Tensor, hr_t: torch.Tensor) -> dict[str, torch.Tensor]:
            with rt.autocast():
                sr = g_run(lr_t)
            loss = crit(sr, hr_t)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            return {"loss": loss}

        def save1(step: int, complete: bool) -> None:
            save_generator(g, cfg, p1_path, phase="srresnet", step=step, complete=complete, n_train=n_train)
            if cfg.save_optimizer:
                torch.save({"g": opt_g.state_dict()}, optim_state_path())
            write_json(out / "checkpoint.json", {"phase": "srresnet", "step": step, "srresnet_complete": complete,
                                                 "elapsed_s": time.perf_counter() - t_start})

        r1 = Phase("srresnet", cfg, rt, log, batches, cfg.phase1_seconds, cfg.phase1_steps,
                   constant_or_cosine(cfg.lr, cfg.lr_schedule, cfg.lr_min_ratio), [opt_g], validate(g), save1,
                   start).run(step1)
        info["phases"]["srresnet"] = asdict(r1)
    elif p1_path.exists() and not cfg.init_weights:
        load_weights(g, p1_path)
    elif not cfg.init_weights and cfg.phase2_seconds > 0:
        print("warning: phase 2 starts from an untrained generator (no phase 1, no --init-weights)", flush=True)

    # ---- phase 2: SRGAN from the phase-1 generator
    p2_path = out / FILES["srgan"]
    if cfg.phase2_seconds > 0:
        d = rt.prepare(Discriminator(cfg.discriminator_config()))
        d_run = torch.compile(d) if cfg.compile else d
        content: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        if cfg.content == "vgg54":
            vgg = VGG54Content(cfg.vgg19_weights).to(rt.device)
            content = vgg
        else:
            content = pixel_loss(cfg.content)
        opt_g = make_adam(g.parameters(), cfg.gan_lr, rt)
        opt_d = make_adam(d.parameters(), cfg.gan_lr, rt)
        start = 0
        if cfg.resume and ckpt.get("phase") == "srgan" and p2_path.exists():
            load_weights(g, p2_path)
            if (out / "discriminator.safetensors").exists():
                load_weights(d, out / "discriminator.safetensors")
            start = int(ckpt.get("step", 0))
            if optim_state_path().exists():
                st = torch.load(optim_state_path(), map_location=rt.device)
                if "d" in st:
                    opt_g.load_state_dict(st["g"])
                    opt_d.load_state_dict(st["d"])
        train_mode(g, cfg.freeze_bn)
        d.train()

        def step2(lr_t: torch.Tensor, hr_t: torch.Tensor) -> dict[str, torch.Tensor]:
            with rt.autocast():
                sr = g_run(lr_t)
                d_real = d_run(hr_t)
                d_fake = d_run(sr.detach())
            d_loss = bce(d_real, True) + bce(d_fake, False)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            with rt.autocast():
                d_gen = d_run(sr)
            c = content(sr, hr_t)
            adv = bce(d_gen, True)
            loss = c + cfg.adv_weight * adv
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            return {"loss": loss, "content": c, "adv": adv, "d_loss": d_loss}

        def save2(step: int, complete: bool) -> None:
            save_generator(g, cfg, p2_path, phase="srgan", step=step, complete=complete, n_train=n_train)
            if cfg.save_discriminator or cfg.save_optimizer:
                save_weights(d, out / "discriminator.safetensors", architecture="srgan-discriminator",
                             config=cfg.discriminator_config().to_dict(), operator=cfg.operator)
            if cfg.save_optimizer:
                torch.save({"g": opt_g.state_dict(), "d": opt_d.state_dict()}, optim_state_path())
            write_json(out / "checkpoint.json", {"phase": "srgan", "step": step, "srresnet_complete": True,
                                                 "srgan_complete": complete,
                                                 "elapsed_s": time.perf_counter() - t_start})

        def gan_lr(frac: float) -> float:
            return cfg.gan_lr if frac < cfg.gan_lr_switch else cfg.gan_lr_final

        r2 = Phase("srgan", cfg, rt, log, batches, cfg.phase2_seconds, cfg.phase2_steps, gan_lr, [opt_g, opt_d],
                   validate(g), save2, start).run(step2)
        info["phases"]["srgan"] = asdict(r2)
    log.close()
    del batches, loader  # stop the workers before evaluation
    info["train_slices"] = n_train
    return finish(cfg, rt, pack, info, t_start)


def finish(cfg: TrainConfig, rt: Runtime, pack: Pack, info: dict, t_start: float) -> dict:
    """Evaluate the written weights files on the held-out source(s) and write eval.json."""
    t0 = time.perf_counter()
    out = cfg.out
    models, weights = {}, {}
    for name, fname in FILES.items():
        p = out / fname
        if p.exists():
            models[name] = rt.prepare(create_model(p).module)
            weights[fname] = file_sha256(p)
    series = [eval_series(v, cfg.val_base_fraction, cfg.operator, cfg.val_j2k_ratio) for v in pack.split("val")]
    main = evaluate(models, series, rt)
    result = {
        "val_source": pack.val_source,
        "operator": cfg.operator,
        "protocol": ("full slices; LR = medsr.codec.downsample of the padded slice; network input window = "
                     "intensity_window of the whole low-res series; outputs rounded and clipped to the stored dtype; "
                     "PSNR data_range = series max - min; foreground = original > 5% of the series' 99.5th "
                     "percentile; SSIM = skimage structural_similarity(data_range=series max - min); "
                     "'+dc' = project_consistent onto the stored low-res data; bicubic = torch bicubic, "
                     "align_corners=False; metrics are means over slices"),
        "note": ("srgan is the perceptual model: a PSNR/SSIM audit prefers srresnet (fidelity)."),
        "methods": pooled_by_source(main),
        "methods_note": "mean over validation sources of each source's mean over slices (see per_source)",
        "per_source": {src: summarise(per) for src, per in main.items()},
        "per_slice": {src: per for src, per in main.items()},
        "weights_sha256": weights,
    }
    if cfg.eval_extra and pack.split("val-extra"):
        extra = evaluate(models, [eval_series(v, cfg.val_base_fraction, cfg.operator, cfg.val_j2k_ratio) for v in pack.split("val-extra")], rt)
        result["extra_sources_not_anatomy"] = {src: summarise(per) for src, per in extra.items()}
    info["eval_seconds"] = time.perf_counter() - t0
    info["total_seconds"] = time.perf_counter() - t_start
    result["training"] = info
    result["config"] = cfg.to_dict()
    result["pack"] = {"file": str(cfg.pack), "volumes": [{k: m[k] for k in ("source", "subject", "split", "shape",
                                                                             "kept")}
                                                         for m in pack.meta["volumes"]]}
    write_json(out / "eval.json", result)
    print(f"eval on the validation split, {len(main)} sources (full slices, {info['eval_seconds']:.1f} s):", flush=True)
    for method, m in result["methods"].items():
        print(f"  {method:12s} psnr {m['psnr']:.2f}  psnr_fg {m['psnr_fg']:.2f}  ssim {m['ssim']:.4f}  "
              f"(fg {m['gain_psnr_fg_vs_bicubic']:+.2f} dB vs bicubic)", flush=True)
    for src, summ in result.get("extra_sources_not_anatomy", {}).items():
        txt = ", ".join(f"{k} fg {v['psnr_fg']:.2f}" for k, v in summ.items())
        print(f"  [{src}, not anatomy] {txt}", flush=True)
    print(f"wrote {out / 'eval.json'}; total {info['total_seconds']:.0f} s", flush=True)
    return result


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m pipelines.train", description="Train SRResNet then SRGAN on a prepared pack.")
    a = p.add_argument
    a("--pack", type=Path, default=d.pack, help="pack from pipelines/prepare_data.py")
    a("--out", type=Path, default=d.out, help="output folder (flat; weights, log.csv, eval.json)")
    a("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    a("--precision", default=d.precision, choices=["auto", "fp32", "bf16"], help="bf16 = autocast (auto: on cuda)")
    a("--channels-last", default=d.channels_last, choices=["auto", "on", "off"], help="auto: on cuda")
    a("--compile", action="store_true", help="torch.compile the networks (startup cost)")
    a("--seed", type=int, default=d.seed)
    a("--batch-size", type=int, default=d.batch_size)
    a("--num-workers", type=int, default=d.num_workers, help="DataLoader workers (-1 = auto)")
    a("--blocks", type=int, default=d.blocks)
    a("--channels", type=int, default=d.channels)
    a("--no-batch-norm", action="store_true", help="generator without batch norm (warm start: BN folded into the convs)")
    a("--disc-channels", type=int, default=d.disc_channels)
    a("--disc-dense", type=int, default=d.disc_dense)
    a("--loss", default=d.loss, choices=["mse", "l1"], help="phase-1 pixel loss")
    a("--content", default=d.content, choices=["mse", "l1", "vgg54"], help="phase-2 content loss")
    a("--vgg19-weights", type=Path, default=None, help="local VGG19 weights for --content vgg54 (never downloaded)")
    a("--adv-weight", type=float, default=d.adv_weight)
    a("--lr", type=float, default=d.lr, help="phase-1 learning rate")
    a("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"])
    a("--lr-min-ratio", type=float, default=d.lr_min_ratio)
    a("--gan-lr", type=float, default=d.gan_lr)
    a("--gan-lr-final", type=float, default=d.gan_lr_final)
    a("--phase1-seconds", type=float, default=d.phase1_seconds,
      help="0 skips phase 1: phase 2 then starts from --init-weights or OUT/srresnet.safetensors")
    a("--phase2-seconds", type=float, default=d.phase2_seconds)
    a("--steps", type=int, default=None, help="cap on the steps of each phase")
    a("--phase1-steps", type=int, default=None)
    a("--phase2-steps", type=int, default=None)
    a("--val-every", type=int, default=d.val_every, help="validate every N steps (0 = only at phase ends)")
    a("--val-slices", type=int, default=d.val_slices, help="full slices of the held-out source per validation")
    a("--log-every", type=int, default=d.log_every)
    a("--checkpoint-seconds", type=float, default=d.checkpoint_seconds)
    a("--save-discriminator", action="store_true")
    a("--save-optimizer", action="store_true", help="also torch.save Adam states (pickle, for --resume only)")
    a("--resume", action="store_true", help="continue from --out's checkpoint.json and weights")
    a("--init-weights", type=Path, default=None, help="start the generator from this safetensors file")
    a("--eval-only", action="store_true", help="only evaluate the weights already in --out")
    a("--no-eval-extra", action="store_true", help="skip the phantom (val-extra) series")
    a("--freeze-bn", action="store_true",
      help="fine-tuning: keep batch-norm running statistics fixed (batches of 16 on a CPU make them noisy)")
    a("--crop-size", type=int, default=d.augment.crop_size,
      help="high-res training crop (a multiple of 4; the paper's 96; larger crops give the net more context)")
    a("--fg-prob", type=float, default=d.augment.fg_prob)
    a("--gamma-prob", type=float, default=d.augment.gamma_prob)
    a("--noise-prob", type=float, default=d.augment.noise_prob)
    a("--remap-prob", type=float, default=d.augment.remap_prob,
      help="probability of a random non-monotone contrast remap of a crop (T2/PD/FLAIR-like from T1; 0 = off)")
    a("--operator", default=d.operator, choices=["area4-v1", "area2-v1"],
      help="down-sampling operator: area4-v1 (x4 tier) or area2-v1 (x2 tier; --init-weights from an x4 model "
           "loads every tensor but the second upsampling stage)")
    a("--base-near-fraction", default=None, metavar="LO,HI",
      help="lossy-base tier: code every low-res crop with the archive's JPEG-LS base, NEAR a fraction of the "
           "window width drawn from [LO, HI] (e.g. 0.005,0.035); validation then uses the default lossy base")
    a("--base-j2k-psnr", default=None, metavar="LO,HI",
      help="JPEG 2000-base tier: code every low-res crop with the lossy-j2k base's encoder at a PSNR (dB, relative "
           f"to the bit depth) drawn from [LO, HI] (e.g. 24,40); validation then codes the base at {VAL_J2K_RATIO:g}:1")
    a("--base-j2k-ratio", default=None, metavar="LO,HI",
      help="JPEG 2000-base tier, slice-level: code a slice-sized low-res region (up to --j2k-context high-res "
           "pixels a side) as the lossy-j2k base at an archive ratio N drawn from [LO, HI] (e.g. 60,200), then "
           f"crop; validation codes the base at {VAL_J2K_RATIO:g}:1")
    a("--j2k-context", type=int, default=d.augment.j2k_context, metavar="PX",
      help="high-res side of the region --base-j2k-ratio codes (default %(default)s)")
    a("--j2k-share", type=float, default=d.augment.j2k_share, metavar="P",
      help="with both --base-near-fraction and --base-j2k-ratio: the share of samples coded with the JPEG 2000 base, "
           "the others with JPEG-LS (default %(default)s); validation then uses the JPEG 2000 base")
    return p


def _lo_hi(text: str | None, flag: str, ok, need: str) -> tuple[float, float] | None:
    """A ``LO,HI`` option as a pair (None when not given), checked by ``ok(lo, hi)``; ``need`` says the rule."""
    if not text:
        return None
    lo, hi = (float(x) for x in text.split(","))
    if not ok(lo, hi):
        raise SystemExit(f"{flag}: need {need} (got {text})")
    return lo, hi


def config_from_args(argv: list[str] | None) -> TrainConfig:
    a = build_parser().parse_args(argv)
    frac = _lo_hi(a.base_near_fraction, "--base-near-fraction", lambda lo, hi: 0 < lo <= hi < 0.5,
                  "0 < LO <= HI < 0.5")
    psnr = _lo_hi(a.base_j2k_psnr, "--base-j2k-psnr", lambda lo, hi: 10 <= lo <= hi <= 80, "10 <= LO <= HI <= 80 dB")
    j2k_ratio = _lo_hi(a.base_j2k_ratio, "--base-j2k-ratio", lambda lo, hi: 2 <= lo <= hi <= 10_000,
                       "2 <= LO <= HI <= 10000")
    if psnr and frac:
        raise SystemExit("--base-j2k-psnr and --base-near-fraction: one base per tier")
    if j2k_ratio:
        if psnr:
            raise SystemExit("--base-j2k-ratio and --base-j2k-psnr: one JPEG 2000 base per tier")
        if frac and not 0 < a.j2k_share < 1:
            raise SystemExit(f"--j2k-share: need 0 < P < 1 with both bases (got {a.j2k_share})")
        if a.j2k_context < a.crop_size:
            raise SystemExit(f"--j2k-context must be at least the crop ({a.crop_size}; got {a.j2k_context})")
    if a.crop_size < 32 or a.crop_size % 4:
        raise SystemExit(f"--crop-size: need a multiple of 4, at least 32 (got {a.crop_size})")
    aug = replace(AugmentConfig(), crop_size=a.crop_size, fg_prob=a.fg_prob, gamma_prob=a.gamma_prob, noise_prob=a.noise_prob,
                  remap_prob=a.remap_prob, base_near_fraction=frac, base_j2k_psnr=psnr, base_j2k_ratio=j2k_ratio,
                  j2k_context=a.j2k_context, j2k_share=a.j2k_share, op_id=a.operator)
    return TrainConfig(
        pack=a.pack, out=a.out, device=a.device, precision=a.precision, channels_last=a.channels_last,
        compile=a.compile, seed=a.seed,
        batch_size=a.batch_size, freeze_bn=a.freeze_bn, num_workers=a.num_workers, blocks=a.blocks, channels=a.channels,
        batch_norm=not a.no_batch_norm, disc_channels=a.disc_channels, disc_dense=a.disc_dense, loss=a.loss, content=a.content,
        vgg19_weights=a.vgg19_weights, adv_weight=a.adv_weight, lr=a.lr, lr_schedule=a.lr_schedule,
        lr_min_ratio=a.lr_min_ratio, gan_lr=a.gan_lr, gan_lr_final=a.gan_lr_final, phase1_seconds=a.phase1_seconds,
        phase2_seconds=a.phase2_seconds, phase1_steps=a.phase1_steps or a.steps, phase2_steps=a.phase2_steps or a.steps,
        val_every=a.val_every, val_slices=a.val_slices, log_every=a.log_every,
        checkpoint_seconds=a.checkpoint_seconds, save_discriminator=a.save_discriminator,
        save_optimizer=a.save_optimizer, resume=a.resume, init_weights=a.init_weights, eval_only=a.eval_only,
        eval_extra=not a.no_eval_extra, augment=aug, operator=a.operator)


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(argv)
    if not cfg.pack.exists():
        print(f"error: {cfg.pack}: no such pack (run pipelines/prepare_data.py --out {cfg.pack})")
        return 2
    if cfg.eval_only:
        rt = make_runtime(cfg)
        finish(cfg, rt, load_pack(cfg.pack), {"device": device_name(rt), "eval_only": True}, time.perf_counter())
        return 0
    train(cfg)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
