"""Generation latency, multidiff against diffusers' own loops, side by side in one run (issue 13, 4-5).

Cases (random weights: only time matters):

* ``DiT-XL/2-b1``, ``-b16``: DiT-XL/2 on 4x32x32 latents, DDIM 50 steps, guidance 4. multidiff:
  ``Pipeline.sample`` over ``Denoiser(DiT, "eps", the scheduler's VP schedule)``, ``ddim`` sampler on the σ
  grid of diffusers' ``DDIMScheduler``; diffusers: the same weights as a ``DiTTransformer2DModel`` in the
  loop of ``DiTPipeline``. ``--decode`` adds one SD-VAE-sized decode to both sides.
* ``spoken-digits``: the bundled mel U-Net, ``AudioPipeline.generate`` of a 1 s clip (32 steps, guidance 2,
  Griffin-Lim included; also timed without it) against an equal-size ``UNet2DModel`` in a 32-step
  ``DPMSolverMultistepScheduler`` loop ending at mel latents.
* ``moving-digits``: the bundled video U-Net, ``VideoPipeline.generate`` of 16 frames 32x32 (32 steps,
  guidance 1.5) against a ``UNet3DConditionModel`` of the same widths, one layer per block, in a 32-step
  DPM-Solver loop; both end at uint8 frames on the CPU.

Each side runs eager, ``torch.compile``d and with ``mode="reduce-overhead"`` (the network only); a mode that
fails is reported. Time: median of ``--runs`` calls after ``--warmup``, synchronised. Precision is each
library's own path: multidiff fp32 weights under bf16 autocast, diffusers bf16 weights and latents
(``--ref-autocast``: multidiff's policy for both). Peak memory: ``max_memory_allocated`` over the timed calls,
weights included, the idle side on the CPU; host syncs: one more call under ``set_sync_debug_mode``.

    python benchmarks/generation_latency.py --out OUT                      # on the device (H200)
    python benchmarks/generation_latency.py --only DiT-XL/2-b1 --only spoken-digits --no-compile
    for c in DiT-XL/2-b1 DiT-XL/2-b16 spoken-digits moving-digits; do   # one case per command
        python benchmarks/generation_latency.py --only $c --out OUT/$c; done
    python benchmarks/generation_latency.py --tiny --device cpu --out OUT  # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import gc
import json
import math
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import _sync  # noqa: E402

from multidiff.core.denoiser import Denoiser  # noqa: E402
from multidiff.nn.dit import DIT_PRESETS, DiT  # noqa: E402
from multidiff.nn.unet import UNet  # noqa: E402
from multidiff.pipeline import Pipeline, SamplingConfig  # noqa: E402

MODES = ("eager", "compile", "reduce-overhead")
SD_VAE_SCALE = 0.18215


@dataclasses.dataclass(frozen=True)
class Options:
    device: str
    tiny: bool = False
    decode: bool = False
    ref_autocast: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def ref(self, model: nn.Module) -> nn.Module:
        """A diffusers module in its precision: bf16 on CUDA unless ``ref_autocast``, else float32."""
        return (model.to(torch.bfloat16) if self.cuda and not self.ref_autocast else model).eval()

    def precision(self, ours: bool) -> str:
        if not self.cuda:
            return "fp32"
        return "fp32 weights, bf16 autocast" if ours or self.ref_autocast else "bf16 weights and latents"


@dataclasses.dataclass
class Side:
    """``run(net)`` makes the case's clip(s) with ``net`` (or its compiled form) as the network;
    ``forward(net)`` is one network call (its FLOPs); ``modules`` go to the device while it is timed."""

    name: str
    net: nn.Module
    run: Callable[[nn.Module], Any]
    forward: Callable[[nn.Module], Any]
    modules: list[nn.Module]


class LearnedVarianceMean(nn.Module):
    """A DiT with a learned-variance head (2C output channels) as a Denoiser backbone: the first C."""

    def __init__(self, dit: DiT) -> None:
        super().__init__()
        self.dit = dit
        self.config = dit.config  # Pipeline reads num_classes here

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.dit(x, c_noise, **cond)[:, : x.shape[1]]  # (B, C, H, W)


def _amp(device_type: str, on: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``on`` (diffusers under ``--ref-autocast``), else nothing."""
    return (
        torch.autocast("cuda", torch.bfloat16) if on and device_type == "cuda" else contextlib.nullcontext()
    )


def _like(cfg: Any, attn: str, kind: str) -> dict[str, Any]:
    """Settings of a diffusers U-Net mirroring a multidiff ``UNetConfig``: channels, widths, norm groups, and
    ``attn`` blocks (``"Attn"``, ``"CrossAttn"``) at its attention levels."""
    pick = [attn if i in cfg.attention_levels else "" for i in range(len(cfg.channels))]
    down, up = tuple(f"{p}Down{kind}" for p in pick), tuple(f"{p}Up{kind}" for p in reversed(pick))
    return dict(in_channels=cfg.in_channels, out_channels=cfg.in_channels, block_out_channels=cfg.channels,
                norm_num_groups=cfg.norm_groups, down_block_types=down, up_block_types=up)  # fmt: skip


def _noise(dev: str, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator(dev).manual_seed(0), device=dev).to(dtype)


# --------------------------------------------------------------------------------------------------
# Cases: case(opts) -> dict(name, batch, sides, notes)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def diffusers_dit_loop(model, scheduler, latents, labels, guidance: float, steps: int, autocast=False):
    """The sampling loop of diffusers' ``DiTPipeline``: doubled latents, guidance on the ε channels."""
    C, null = latents.shape[1], model.config.num_embeds_ada_norm
    x = torch.cat([latents, latents])  # (2B, C, H, W)
    y = torch.cat([labels, torch.full_like(labels, null)])  # (2B,)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        half = x[: len(x) // 2]
        x = scheduler.scale_model_input(torch.cat([half, half]), t)
        with _amp(x.device.type, autocast):
            out = model(x, timestep=t[None].to(x.device).expand(len(x)), class_labels=y).sample
        eps, rest = out[:, :C].to(x.dtype), out[:, C:].to(x.dtype)  # (2B, C, H, W) each
        cond, uncond = eps.chunk(2)
        half_eps = uncond + guidance * (cond - uncond)
        eps = torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)[:, :C]  # the mean half
        x = scheduler.step(eps, t, x).prev_sample
    return x[: len(x) // 2]


def dit_case(opts: Options, batch: int) -> dict[str, Any]:
    """DiT-XL/2, DDIM 50 steps, guidance 4: multidiff's Pipeline against the DiTPipeline loop."""
    from diffusers import AutoencoderKL, DDIMScheduler

    from multidiff.interop.convert import dit_to_diffusers
    from multidiff.interop.diffusers import schedule_from_config, sigmas_from_scheduler

    cfg, size, steps, guidance, dev = DIT_PRESETS["DiT-XL/2"], 32, 50, 4.0, opts.device
    if opts.tiny:
        cfg, size, steps = dataclasses.replace(cfg, width=32, depth=2, heads=2, num_classes=10), 8, 2
    # as DiT-XL/2 converted from diffusers: time features shifted by 1, one LayerNorm eps (convert.py)
    dit = DiT(dataclasses.replace(cfg, noise_freq_shift=1.0, norm_eps=1e-6))
    with torch.no_grad():  # fill the zero-initialised adaLN and output layers: a non-trivial function
        g = torch.Generator().manual_seed(0)
        for p in (p for p in dit.parameters() if not p.any()):
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if opts.tiny else 0.02))
    ref = opts.ref(dit_to_diffusers(dit, size))
    scheduler = DDIMScheduler(clip_sample=False)  # the DiT checkpoints' table: linear β 1e-4..0.02, ε
    grid = sigmas_from_scheduler(scheduler, steps)
    denoiser = Denoiser(LearnedVarianceMean(dit), "eps", schedule_from_config(scheduler.config))
    pipe = Pipeline(denoiser, sampling=SamplingConfig(sampler="ddim", steps=steps, guidance=guidance))
    labels = [k % cfg.num_classes for k in range(batch)]
    vae = None
    if opts.decode:  # the SD VAE's architecture (as DiT's sd-vae-ft-ema), random weights
        w = (8, 16) if opts.tiny else (128, 256, 512, 512)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * len(w),
            up_block_types=("UpDecoderBlock2D",) * len(w),
            block_out_channels=w,
            layers_per_block=2,
            norm_num_groups=min(w[0], 32),
        )
        vae = opts.ref(vae).to(dev)

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return latents if vae is None else vae.decode(latents.to(vae.dtype) / SD_VAE_SCALE).sample

    def ours(net: nn.Module) -> torch.Tensor:
        pipe.backbone.dit = net
        return decode(pipe.sample(batch, (4, size, size), sigmas=grid, label=labels, seed=0, progress=False))

    @torch.no_grad()  # as a diffusers pipeline's __call__
    def theirs(net: nn.Module) -> torch.Tensor:
        x, y = _noise(dev, batch, 4, size, size, dtype=ref.dtype), torch.tensor(labels, device=dev)
        return decode(diffusers_dit_loop(net, scheduler, x, y, guidance, steps, opts.ref_autocast))

    x2 = torch.randn(2 * batch, 4, size, size, device=dev)
    t2, y2 = torch.full((2 * batch,), 500, device=dev), torch.zeros(2 * batch, dtype=torch.long, device=dev)
    sides = [
        Side("multidiff", dit, ours, lambda n: n(x2, t2.float(), labels=y2), [pipe.denoiser]),
        Side("diffusers", ref, theirs, lambda n: n(x2.to(ref.dtype), t2, class_labels=y2), [ref]),
    ]
    decoded = "an SD-VAE-sized decode on both sides" if vae else "latents out (no VAE decode)"
    note = (
        f"{steps} DDIM steps on one σ grid, guidance {guidance}, the same weights on both sides (diffusers' "
        f"parameter count includes its per-block copies of the shared embedders); {decoded}."
    )
    parity = dict(pipe=pipe, ref=ref, scheduler=scheduler, grid=grid, labels=labels, shape=(4, size, size))
    return dict(name=f"DiT-XL/2-b{batch}", batch=batch, sides=sides, notes=[note], parity=parity)


@torch.no_grad()
def diffusers_cfg_loop(call, scheduler, latents, steps: int, guidance: float, autocast=False):
    """A text-to-video pipeline's loop: a [cond, uncond] batch, guidance on the output, scheduler.step."""
    scheduler.set_timesteps(steps, device=latents.device)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(torch.cat([x, x]), t)
        with _amp(x.device.type, autocast):
            cond, uncond = call(x_in, t).to(x.dtype).chunk(2)
        x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return x


def _bundled(name: str, opts: Options) -> Pipeline:
    """The bundled pipeline ``name``; with ``tiny``, its backbone swapped for a small one of the same kind."""
    from multidiff.models import resolve
    from multidiff.pipeline import load_pipeline

    pipe = load_pipeline(resolve(name))
    if opts.tiny:
        small = dict(channels=(16, 32), num_res_blocks=1, attention_levels=(1,), norm_groups=8, head_dim=16)
        pipe.denoiser.backbone = UNet(dataclasses.replace(pipe.backbone.config, **small)).eval()
    return pipe


def _with_backbone(pipe: Pipeline, fn: Callable[[], Any]) -> Callable[[nn.Module], Any]:
    """``run(net)``: ``fn()`` with ``net`` as the pipeline's backbone."""

    def run(net: nn.Module) -> Any:
        pipe.denoiser.backbone = net
        return fn()

    return run


def audio_case(opts: Options) -> dict[str, Any]:
    """spoken-digits (mel U-Net + Griffin-Lim) against an equal-size UNet2DModel, DPM-Solver 32 steps."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DModel

    pipe = _bundled("spoken-digits", opts)
    seconds, steps = (0.25, 2) if opts.tiny else (1.0, 32)
    cfg, dev, guidance = pipe.backbone.config, opts.device, pipe.sampling.guidance
    (C, M, T), stride = pipe.adapter.latent_shape(seconds), 2 ** (len(cfg.channels) - 1)
    T_ref = math.ceil(T / stride) * stride  # UNet2DModel needs a multiple of its stride
    # equal size: 4.56M parameters against 4.69M (multidiff: 1, 1, 2, 2 residual blocks per level)
    ref = UNet2DModel(
        sample_size=(M, T_ref),
        layers_per_block=1 if opts.tiny else 2,
        attention_head_dim=cfg.head_dim,
        num_class_embeds=cfg.num_classes + 1,
        **_like(cfg, "Attn", "Block2D"),
    )
    ref, scheduler = opts.ref(ref), DPMSolverMultistepScheduler()
    y = torch.tensor([0, cfg.num_classes], device=dev)

    @torch.no_grad()
    def theirs(net: nn.Module) -> torch.Tensor:
        call = lambda x_in, t: net(x_in, t, class_labels=y).sample  # noqa: E731
        x = _noise(dev, 1, C, M, T_ref, dtype=ref.dtype)
        return diffusers_cfg_loop(call, scheduler, x, steps, guidance, opts.ref_autocast)

    x2, x2_ref = torch.randn(2, C, M, T, device=dev), torch.randn(2, C, M, T_ref, device=dev).to(ref.dtype)
    kw = dict(label=pipe.labels[0], steps=steps, seed=0, progress=False)
    clip = _with_backbone(pipe, lambda: pipe.generate(1, seconds, **kw))
    latents = _with_backbone(pipe, lambda: pipe.sample(1, (C, M, T), **kw))
    forward, ours = (lambda n: n(x2, torch.rand(2, device=dev), labels=y)), [pipe.denoiser, pipe.adapter]
    sides = [
        Side("multidiff", pipe.backbone, clip, forward, ours),
        Side("multidiff (no vocoder)", pipe.backbone, latents, forward, ours),
        Side("diffusers", ref, theirs, lambda n: n(x2_ref, 500, class_labels=y), [ref]),
    ]
    vocoder = type(pipe.adapter.vocoder).__name__
    note = (
        f"{seconds} s clip, mel {C}x{M}x{T} (diffusers: {T_ref} frames), {steps} steps, guidance {guidance}; "
        f"'multidiff' includes the {vocoder} vocoder; 'multidiff (no vocoder)' and diffusers end at mels."
    )
    return dict(name="spoken-digits", batch=1, sides=sides, notes=[note])


def video_case(opts: Options) -> dict[str, Any]:
    """moving-digits (video U-Net in pixels) against a UNet3DConditionModel of the same widths, 32 steps."""
    from diffusers import DPMSolverMultistepScheduler, UNet3DConditionModel

    pipe = _bundled("moving-digits", opts)
    frames, size, steps = (4, 16, 2) if opts.tiny else (16, 32, 32)
    cfg, dev, guidance, width = pipe.backbone.config, opts.device, pipe.sampling.guidance, 32
    C = cfg.in_channels
    # one layer per block: its 3-D blocks also carry temporal convolutions and transformers (7.0M parameters,
    # 52 GFLOP per call of 2x3x16x32x32, against multidiff's 5.3M and 39 GFLOP; two layers: 10.4M)
    ref = UNet3DConditionModel(
        sample_size=size,
        layers_per_block=1,
        cross_attention_dim=width,
        attention_head_dim=2,  # diffusers' name for the number of heads here
        **_like(cfg, "CrossAttn", "Block3D"),
    )
    ref, label_tokens = opts.ref(ref), opts.ref(nn.Embedding(cfg.num_classes + 1, width))
    scheduler, y = DPMSolverMultistepScheduler(), torch.tensor([0, cfg.num_classes], device=dev)

    @torch.no_grad()
    def theirs(net: nn.Module) -> torch.Tensor:
        ctx = label_tokens(y)[:, None]  # (2, 1, D): as a pipeline encodes its prompt, once before the loop
        call = lambda x_in, t: net(x_in, t, encoder_hidden_states=ctx).sample  # noqa: E731
        x = _noise(dev, 1, C, frames, size, size, dtype=ref.dtype)
        x = diffusers_cfg_loop(call, scheduler, x, steps, guidance, opts.ref_autocast)  # (1, C, F, H, W)
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()

    x2 = torch.randn(2, C, frames, size, size, device=dev)
    mask_cond = torch.zeros(2, cfg.cond_channels, frames, size, size, device=dev)
    ctx0 = torch.zeros(2, 1, width, device=dev, dtype=ref.dtype)
    clip = _with_backbone(
        pipe, lambda: pipe.generate(1, frames, size, label=0, steps=steps, seed=0, progress=False)
    )
    forward = lambda n: n(x2, torch.rand(2, device=dev), labels=y, cond_channels=mask_cond)  # noqa: E731
    sides = [
        Side("multidiff", pipe.backbone, clip, forward, [pipe.denoiser, pipe.adapter]),
        Side("diffusers", ref, theirs, lambda n: n(x2.to(ref.dtype), 500, encoder_hidden_states=ctx0),
             [ref, label_tokens]),
    ]  # fmt: skip
    note = (
        f"{frames} frames {size}x{size}, {steps} steps, guidance {guidance}, uint8 frames on the CPU out; "
        "diffusers gets the label as one cross-attention token."
    )
    return dict(name="moving-digits", batch=1, sides=sides, notes=[note])


CASES: dict[str, Callable[[Options], dict[str, Any]]] = {
    "DiT-XL/2-b1": functools.partial(dit_case, batch=1),
    "DiT-XL/2-b16": functools.partial(dit_case, batch=16),
    "spoken-digits": audio_case,
    "moving-digits": video_case,
}


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------


def count_host_syncs(fn: Callable[[], Any]) -> int:
    """Host-device synchronisations in one call of ``fn`` (CUDA), counted as ``_sync_check.py`` does."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught)


@torch.no_grad()
def forward_gflop(side: Side) -> float:
    """GFLOP of one network call of ``side`` (2 per multiply-add), eager."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        side.forward(side.net)
    return counter.get_total_flops() / 1e9


def time_side(side: Side, device: str, mode: str, runs: int, warmup: int) -> dict[str, Any]:
    """Median seconds per call, first-call seconds, peak memory and host syncs of ``side`` in ``mode``."""
    cuda = device.startswith("cuda")
    torch._dynamo.reset()
    net = side.net if mode == "eager" else torch.compile(side.net, mode=None if mode == "compile" else mode)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    side.run(net)
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        side.run(net)
    _sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = side.run(net)
        _sync(device)
        times.append(time.perf_counter() - t0)
    if not torch.isfinite(out.float()).all():
        raise RuntimeError(f"{side.name} ({mode}) generated non-finite values")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    syncs = count_host_syncs(lambda: side.run(net)) if cuda else None
    return dict(seconds=statistics.median(times), first_call_s=first, peak_gib=peak, host_syncs=syncs)


def run_case(name: str, opts: Options, modes: list[str], runs: int, warmup: int) -> dict[str, Any]:
    """Time every side of case ``name`` in every mode (a failure is recorded, not raised); add the ratios."""
    spec = CASES[name](opts)
    rows = []
    for side in spec["sides"]:
        for m in (m for s in spec["sides"] for m in s.modules):
            m.to("cpu")
        for m in side.modules:
            m.to(opts.device)
        params = sum(p.numel() for p in side.net.parameters()) / 1e6
        precision = opts.precision(ours=side.name != "diffusers")
        base = dict(case=name, side=side.name, batch=spec["batch"], precision=precision, params_m=params)
        base["gflop_per_call"] = forward_gflop(side)
        for mode in modes:
            try:
                r = time_side(side, opts.device, mode, runs, warmup)
                r["seconds_per_clip"] = r["seconds"] / spec["batch"]
            except Exception as err:  # a mode that fails (e.g. reduce-overhead) is a result, not the end
                r = dict(error=f"{type(err).__name__}: {err}"[:500])
            rows.append({**base, "mode": mode, **r})
            shown = f"{r['seconds']:.4f} s" if "seconds" in r else r["error"]
            print(f"  {name:<14} {side.name:<24} {mode:<16} {shown}", flush=True)
    ref = {r["mode"]: r["seconds"] for r in rows if r["side"] == "diffusers" and "seconds" in r}
    for r in rows:
        if "seconds" in r and r["mode"] in ref:
            r["ratio"] = ref[r["mode"]] / r["seconds"]  # diffusers / this: > 1 is faster than diffusers
    notes = spec["notes"]
    del spec
    gc.collect()
    if opts.cuda:
        torch.cuda.empty_cache()
    return dict(name=name, notes=notes, rows=rows)


def table(rows: list[dict]) -> str:
    """Markdown table of a case: a row per side and mode; the ratio is diffusers' time in that mode / it."""
    lines = [
        "| side | mode | s/call | s/clip | diffusers/this | peak GiB | host syncs | first call s | params M "
        "| GFLOP/call | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    na = lambda v, f="{}": "n/a" if v is None else f.format(v)  # noqa: E731
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['side']} | {r['mode']} | failed: {r['error'][:150]} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['side']} | {r['mode']} | {r['seconds']:.4f} | {r['seconds_per_clip']:.4f} | "
            f"{na(r.get('ratio'), '{:.2f}x')} | {na(r['peak_gib'], '{:.2f}')} | {na(r['host_syncs'])} | "
            f"{r['first_call_s']:.1f} | {r['params_m']:.1f} | {r['gflop_per_call']:.1f} | {r['precision']} |"
        )
    return "\n".join(lines)


def write_results(out: Path, env: dict[str, str], cases: list[dict]) -> None:
    """Write ``generation_latency.json`` (everything) and ``generation_latency.md`` (a table per case)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "generation_latency.json").write_text(json.dumps({"env": env, "cases": cases}, indent=2))
    parts = [f"`{json.dumps(env)}`"]
    for c in cases:
        parts += [f"### {c['name']}", table(c["rows"]), *c["notes"]]
    (out / "generation_latency.md").write_text("\n\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write generation_latency.json and .md here")
    ap.add_argument("--only", action="extend", nargs="+", choices=list(CASES), help="cases (repeatable)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, help="timed calls, median reported (default 10; --tiny 2)")
    ap.add_argument("--warmup", type=int, help="untimed calls first, compiling (default 3; --tiny 1)")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--decode", action="store_true", help="DiT cases: an SD-VAE-sized decode on both sides")
    ap.add_argument("--ref-autocast", action="store_true", help="diffusers: fp32 weights, bf16 autocast")
    ap.add_argument("--tiny", action="store_true", help="tiny models, 2 steps, eager (CPU smoke test)")
    args = ap.parse_args(argv)
    runs = args.runs if args.runs is not None else 2 if args.tiny else 10
    warmup = args.warmup if args.warmup is not None else 1 if args.tiny else 3
    if runs < 1 or warmup < 1:
        ap.error(f"--runs and --warmup must be >= 1, got {runs} and {warmup}")

    # Benchmark-level backend settings (the library never sets these).
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    import diffusers

    opts = Options(args.device, tiny=args.tiny, decode=args.decode, ref_autocast=args.ref_autocast)
    command = ["python", "benchmarks/generation_latency.py", *(sys.argv[1:] if argv is None else argv)]
    env = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": torch.cuda.get_device_name(args.device) if opts.cuda else platform.processor() or "cpu",
        "python": platform.python_version(),
        "command": shlex.join(command),
    }
    print(json.dumps(env), flush=True)
    modes = ["eager"] if args.no_compile or args.tiny else list(MODES)
    results = []
    for name in [n for n in CASES if not args.only or n in args.only]:
        print(f"case {name}", flush=True)
        results.append(run_case(name, opts, modes, runs, warmup))
        if args.out is not None:  # after every case, so a run cut short keeps what it measured
            write_results(args.out, env, results)
    for c in results:
        print(f"\n### {c['name']}\n\n{table(c['rows'])}")
    return results


if __name__ == "__main__":
    main()
