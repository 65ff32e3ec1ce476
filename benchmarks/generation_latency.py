"""Generation latency, multidiff against diffusers' own loops, side by side in one run (issue 13, 4-5).

Cases (random weights: only time matters):

* ``DiT-XL/2-b1``, ``-b16``: DiT-XL/2 on 4x32x32 latents, DDIM 50 steps, guidance 4. multidiff:
  ``Pipeline.sample`` over ``Denoiser(DiT, "eps", the scheduler's VP schedule)``, ``ddim`` sampler on the σ
  grid of diffusers' ``DDIMScheduler``; diffusers: the same weights as a ``DiTTransformer2DModel`` in the
  loop of ``DiTPipeline``. ``--decode`` adds one SD-VAE-sized decode to both sides.
* ``spoken-digits``: the bundled mel U-Net, ``AudioPipeline.generate`` of a 1 s clip (32 steps, guidance 2,
  Griffin-Lim included; also timed without it) against an equal-size ``UNet2DModel`` in a 32-step
  ``DPMSolverMultistepScheduler`` loop, decoded by torchaudio's Griffin-Lim with the same settings (and also
  ending at mel latents, against ours without the vocoder).
* ``moving-digits``: the bundled video U-Net, ``VideoPipeline.generate`` of 16 frames 32x32 (32 steps,
  guidance 1.5) against a ``UNet3DConditionModel`` of the same widths, one layer per block, in a 32-step
  DPM-Solver loop; both end at uint8 frames on the CPU.

Modes (``--modes``, run in the order given; each side runs the ones it has, a row each):

    mode             multidiff (Pipeline.sample / generate)            diffusers (the network)
    eager            graphs=False, nothing compiled                    nothing compiled
    graphs           graphs=True (the default on CUDA: the denoiser     (none)
                     and an audio pipeline's vocoder replayed), not
                     compiled
    compile          backbone torch.compile'd, graphs=False            torch.compile'd
    reduce-overhead  (none: graphs is its counterpart)                 torch.compile(mode="reduce-overhead")
    compile+graphs   backbone torch.compile'd inside our CUDA graphs   (none)
    autotune+graphs  the same, compiled "max-autotune-no-cudagraphs"   (none)
    max-autotune     (none: autotune+graphs is its counterpart)        torch.compile(mode="max-autotune")

``torch.compile`` runs in its default mode (inductor, no CUDA graphs of its own) but in ``reduce-overhead``
and ``max-autotune`` (torch's own CUDA graphs) and ``autotune+graphs`` (Inductor's kernel and convolution
choices timed on the card, our CUDA graphs). The last two run only when named: their autotuning takes
minutes.

A mode that fails is reported, and so is a graphed mode off CUDA ("needs CUDA"); a graphed row whose
capture fell back to eager is a failure, not a timing. Each graphed row also gives max |graphed - ungraphed|
of the output latents, same seed, against ``eager`` (``graphs``) or the same compile mode without graphs,
computed once per case; the markdown flags it above 1e-2 of the latents' std. The summary puts, per case
and multidiff side, its fastest mode beside the fastest compiled mode of the diffusers side doing the same
work, with their ratio (issue 13's bar: one-clip generation >= 3x faster) and each side's peak memory.

Time: median of ``--runs`` calls after ``--warmup``, synchronised, decode included (vocoder or
Griffin-Lim, frames to uint8). Precision is each library's own path: multidiff fp32 weights under bf16
autocast (its graphs read bf16 copies of the linear and convolution weights, the same numbers as the casts
they replace), diffusers bf16 weights and latents (``--ref-autocast``: multidiff's policy for both). Peak
memory: ``max_memory_allocated`` over the timed calls, weights and CUDA-graph pools included, the idle side
on the CPU; host syncs: one more call under ``set_sync_debug_mode``. Results are written after every row (a
side in a mode), so a run cut short keeps what it measured; put the modes that matter most first.

    python benchmarks/generation_latency.py --out OUT                      # on the device (H200)
    python benchmarks/generation_latency.py --only DiT-XL/2-b1 --only spoken-digits --no-compile
    for c in DiT-XL/2-b1 spoken-digits moving-digits; do                 # one case per command
        timeout 120 python benchmarks/generation_latency.py --only $c --runs 5 --warmup 2 \\
            --modes eager graphs reduce-overhead compile+graphs compile --out OUT/${c//\\//-}; done
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

from train_throughput import (  # noqa: E402
    CUDNN_BENCHMARK_HELP,
    _sync,
    backend_settings,
    compiled_copy,
    flop_counter,
)

from multidiff.core.denoiser import Denoiser  # noqa: E402
from multidiff.nn.dit import DIT_PRESETS, DiT  # noqa: E402
from multidiff.nn.unet import UNet  # noqa: E402
from multidiff.pipeline import Pipeline, SamplingConfig  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Mode:
    """How a side runs: ``compile`` is ``torch.compile``'s mode for the network (None: not compiled), and
    ``graphs`` multidiff's CUDA-graph replay of the denoiser (``Pipeline.sample(graphs=...)``)."""

    name: str
    compile: str | None = None
    graphs: bool = False


MULTIDIFF_MODES = {
    m.name: m
    for m in (
        Mode("eager"),
        Mode("graphs", graphs=True),
        Mode("compile", compile="default"),
        Mode("compile+graphs", compile="default", graphs=True),
        Mode("autotune+graphs", compile="max-autotune-no-cudagraphs", graphs=True),
    )
}
DIFFUSERS_MODES = {
    m.name: m
    for m in (
        Mode("eager"),
        Mode("compile", compile="default"),
        Mode("reduce-overhead", "reduce-overhead"),
        Mode("max-autotune", "max-autotune"),
    )
}
MODES = ("eager", "graphs", "compile", "reduce-overhead", "compile+graphs")  # the default order
ALL_MODES = (*MODES, "autotune+graphs", "max-autotune")  # and those on request (minutes of autotuning)
GRAPH_TOLERANCE = 1e-2  # max |graphed - ungraphed| above this fraction of the latents' std is flagged
SD_VAE_SCALE = 0.18215
TINY_DIT = dict(width=32, depth=2, heads=2, num_classes=10)  # --tiny: DiT-XL/2's shape at CPU-test size


@dataclasses.dataclass(frozen=True)
class Options:
    device: str
    tiny: bool = False
    decode: bool = False
    ref_autocast: bool = False
    ours_bf16: bool = False  # multidiff's backbone in bf16 weights (still under autocast)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def ref(self, model: nn.Module) -> nn.Module:
        """A diffusers module in its precision: bf16 on CUDA unless ``ref_autocast``, else float32."""
        return (model.to(torch.bfloat16) if self.cuda and not self.ref_autocast else model).eval()

    def precision(self, ours: bool) -> str:
        if not self.cuda:
            return "fp32"
        if ours:
            # graphed, fp32 weights are read through bf16 copies of the linear and convolution weights
            # (CudaGraphed), which gives the same output as autocast casting them at every step
            return "bf16 weights, bf16 autocast" if self.ours_bf16 else "fp32 weights, bf16 autocast"
        return "fp32 weights, bf16 autocast" if self.ref_autocast else "bf16 weights and latents"


@dataclasses.dataclass
class Side:
    """``run(net, graphs)`` makes the case's clip(s) with ``net`` (or its compiled form) as the network,
    replaying CUDA graphs if ``graphs`` (multidiff; diffusers ignores it); ``forward(net)`` is one network
    call (its FLOPs); ``modules`` go to the device while it is timed; ``pipe``: multidiff's pipeline;
    ``against``: for a multidiff side, the diffusers side doing the same work that its ratios are taken
    against (in the audio case, with a vocoder or ending at mels)."""

    name: str
    net: nn.Module
    run: Callable[[nn.Module, bool], Any]
    forward: Callable[[nn.Module], Any]
    modules: list[nn.Module]
    pipe: Pipeline | None = None
    against: str = "diffusers"

    @property
    def modes(self) -> dict[str, Mode]:
        return MULTIDIFF_MODES if self.pipe is not None else DIFFUSERS_MODES


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
        cfg, size, steps = dataclasses.replace(cfg, **TINY_DIT), 8, 2
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

    def latents(net: nn.Module, graphs: bool) -> torch.Tensor:
        pipe.backbone.dit = net
        kw = dict(sigmas=grid, label=labels, seed=0, progress=False, graphs=graphs)
        return pipe.sample(batch, (4, size, size), **kw)

    @torch.no_grad()  # as a diffusers pipeline's __call__
    def theirs(net: nn.Module, graphs: bool) -> torch.Tensor:
        x, y = _noise(dev, batch, 4, size, size, dtype=ref.dtype), torch.tensor(labels, device=dev)
        return decode(diffusers_dit_loop(net, scheduler, x, y, guidance, steps, opts.ref_autocast))

    x2 = torch.randn(2 * batch, 4, size, size, device=dev)
    t2, y2 = torch.full((2 * batch,), 500, device=dev), torch.zeros(2 * batch, dtype=torch.long, device=dev)
    sides = [
        Side("multidiff", dit, lambda n, g: decode(latents(n, g)), lambda n: n(x2, t2.float(), labels=y2),
             [pipe.denoiser], pipe),
        Side("diffusers", ref, theirs, lambda n: n(x2.to(ref.dtype), t2, class_labels=y2), [ref]),
    ]  # fmt: skip
    decoded = "an SD-VAE-sized decode on both sides" if vae else "latents out (no VAE decode)"
    note = (
        f"{steps} DDIM steps on one σ grid, guidance {guidance}, the same weights on both sides (diffusers' "
        f"parameter count includes its per-block copies of the shared embedders); {decoded}."
    )
    parity = dict(pipe=pipe, ref=ref, scheduler=scheduler, grid=grid, labels=labels, shape=(4, size, size))
    return dict(
        name=f"DiT-XL/2-b{batch}", batch=batch, sides=sides, notes=[note], parity=parity, latents=latents
    )


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


def _with_backbone(pipe: Pipeline, fn: Callable[[bool], Any]) -> Callable[[nn.Module, bool], Any]:
    """``run(net, graphs)``: ``fn(graphs)`` with ``net`` as the pipeline's backbone."""

    def run(net: nn.Module, graphs: bool) -> Any:
        pipe.denoiser.backbone = net
        return fn(graphs)

    return run


def audio_case(opts: Options) -> dict[str, Any]:
    """spoken-digits (mel U-Net + Griffin-Lim) against an equal-size UNet2DModel, DPM-Solver 32 steps."""
    import torchaudio
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
    def theirs(net: nn.Module, graphs: bool) -> torch.Tensor:
        call = lambda x_in, t: net(x_in, t, class_labels=y).sample  # noqa: E731
        x = _noise(dev, 1, C, M, T_ref, dtype=ref.dtype)
        return diffusers_cfg_loop(call, scheduler, x, steps, guidance, opts.ref_autocast)

    # diffusers has no vocoder of its own for these mels: its user's equivalent of ours is torchaudio's
    # Griffin-Lim, with ours's settings (iterations, momentum, from zero phase) after its mel inversion
    spec, gl_ours = pipe.adapter.spec, pipe.adapter.vocoder
    inverse_mel = torchaudio.transforms.InverseMelScale(
        spec.n_freqs,
        spec.n_mels,
        spec.sample_rate,
        float(spec.fmin),
        float(spec.fmax),
        spec.norm,
        spec.mel_scale,
    )
    griffin_lim = torchaudio.transforms.GriffinLim(
        spec.n_fft, gl_ours.n_iter, spec.win_length, spec.hop_length, power=float(spec.power),
        momentum=gl_ours.momentum, length=(T - 1) * spec.hop_length, rand_init=False,
    )  # fmt: skip

    @torch.no_grad()
    def theirs_audio(net: nn.Module, graphs: bool) -> torch.Tensor:
        latent = theirs(net, graphs)[..., :T].float().clamp(-4, 4)  # random weights: keep exp() finite
        mel = pipe.adapter.denormalise(latent)  # (1, 1, M, T) log-mel
        return griffin_lim(inverse_mel(torch.exp(mel[:, 0])))  # (1, N)

    x2, x2_ref = torch.randn(2, C, M, T, device=dev), torch.randn(2, C, M, T_ref, device=dev).to(ref.dtype)
    kw = dict(label=pipe.labels[0], steps=steps, seed=0, progress=False)
    clip = _with_backbone(pipe, lambda g: pipe.generate(1, seconds, graphs=g, **kw))
    latents = _with_backbone(pipe, lambda g: pipe.sample(1, (C, M, T), graphs=g, **kw))
    forward, ours = (lambda n: n(x2, torch.rand(2, device=dev), labels=y)), [pipe.denoiser, pipe.adapter]
    ref_forward, with_vocoder = (lambda n: n(x2_ref, 500, class_labels=y)), "diffusers + Griffin-Lim"
    sides = [
        Side("multidiff", pipe.backbone, clip, forward, ours, pipe, against=with_vocoder),
        Side("multidiff (no vocoder)", pipe.backbone, latents, forward, ours, pipe),
        Side("diffusers", ref, theirs, ref_forward, [ref]),
        Side(with_vocoder, ref, theirs_audio, ref_forward, [ref, pipe.adapter, inverse_mel, griffin_lim]),
    ]
    vocoder = type(gl_ours).__name__
    note = (
        f"{seconds} s clip, mel {C}x{M}x{T} (diffusers: {T_ref} frames), {steps} steps, guidance {guidance}; "
        f"'multidiff' includes the {vocoder} vocoder ({gl_ours.n_iter} iterations) and is compared with "
        f"'{with_vocoder}' (torchaudio's InverseMelScale and GriffinLim, the same iterations and momentum); "
        "'multidiff (no vocoder)' and 'diffusers' end at mels."
    )
    return dict(name="spoken-digits", batch=1, sides=sides, notes=[note], latents=latents)


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
    def theirs(net: nn.Module, graphs: bool) -> torch.Tensor:
        ctx = label_tokens(y)[:, None]  # (2, 1, D): as a pipeline encodes its prompt, once before the loop
        call = lambda x_in, t: net(x_in, t, encoder_hidden_states=ctx).sample  # noqa: E731
        x = _noise(dev, 1, C, frames, size, size, dtype=ref.dtype)
        x = diffusers_cfg_loop(call, scheduler, x, steps, guidance, opts.ref_autocast)  # (1, C, F, H, W)
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()

    x2 = torch.randn(2, C, frames, size, size, device=dev)
    mask_cond = torch.zeros(2, cfg.cond_channels, frames, size, size, device=dev)
    ctx0 = torch.zeros(2, 1, width, device=dev, dtype=ref.dtype)
    kw = dict(label=0, steps=steps, seed=0, progress=False)
    clip = _with_backbone(pipe, lambda g: pipe.generate(1, frames, size, graphs=g, **kw))
    # the latents generate() decodes: no known frames, so zero mask-conditioning channels (Pipeline.generate)
    shape = pipe.adapter.latent_shape(frames, size, size)
    cond = (
        {"cond_channels": torch.zeros(1, cfg.cond_channels, *shape[1:], device=dev)}
        if cfg.cond_channels
        else {}
    )
    latents = _with_backbone(pipe, lambda g: pipe.sample(1, shape, cond=cond, graphs=g, **kw))
    forward = lambda n: n(x2, torch.rand(2, device=dev), labels=y, cond_channels=mask_cond)  # noqa: E731
    sides = [
        Side("multidiff", pipe.backbone, clip, forward, [pipe.denoiser, pipe.adapter], pipe),
        Side("diffusers", ref, theirs, lambda n: n(x2.to(ref.dtype), 500, encoder_hidden_states=ctx0),
             [ref, label_tokens]),
    ]  # fmt: skip
    note = (
        f"{frames} frames {size}x{size}, {steps} steps, guidance {guidance}, uint8 frames on the CPU out; "
        "diffusers gets the label as one cross-attention token."
    )
    return dict(name="moving-digits", batch=1, sides=sides, notes=[note], latents=latents)


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
    """GFLOP of one network call of ``side`` (2 per multiply-add), eager, in the side's own precision
    (multidiff under bf16 autocast on CUDA, as its pipeline runs: needed once its weights are bf16)."""
    counter = flop_counter()
    device_type = next(side.net.parameters()).device.type
    with counter, _amp(device_type, side.pipe is not None):
        side.forward(side.net)
    return counter.get_total_flops() / 1e9


CAPTURE_FAILED = "graphs.py: cannot capture"  # CudaGraphed's warning when it falls back to eager


def _drop_graphs(side: Side) -> None:
    """Forget the CUDA graphs of ``side``'s pipeline between modes (its denoiser's and an audio pipeline's
    vocoder's), freeing their memory pools so that one mode's graphs do not count in the next one's peak
    memory (``CudaGraphed`` itself drops stale graphs when the backbone is swapped, eager for compiled). The
    pipeline has no public reset, hence the private attributes.
    """
    if side.pipe is not None:
        side.pipe._graphed = None
        if hasattr(side.pipe, "_graphed_vocoder"):  # an audio pipeline's replayed vocoder
            side.pipe._graphed_vocoder = None


def _graphs_held(side: Side) -> int:
    graphed = side.pipe._graphed if side.pipe is not None else None
    return 0 if graphed is None else graphed.graphs


def _first_call(side: Side, run: Callable[[], Any], mode: Mode) -> None:
    """The first call (it compiles, captures); in a graphed mode an error if it captured nothing or fell
    back to eager, since the timing would then be an eager one under a graphed name."""
    if not mode.graphs:
        run()
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=CAPTURE_FAILED)  # CudaGraphed warns once per wrapper
        run()
    failed = [str(w.message) for w in caught if str(w.message).startswith(CAPTURE_FAILED)]
    for w in caught:
        if not str(w.message).startswith(CAPTURE_FAILED):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if failed or not _graphs_held(side):
        raise RuntimeError(failed[0] if failed else "no CUDA graph was captured")


def time_side(
    side: Side,
    device: str,
    mode: Mode,
    runs: int,
    warmup: int,
    check: Callable[[nn.Module], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Median seconds per call, first-call seconds, peak memory and host syncs of ``side`` in ``mode``, and
    the entries of ``check(net)`` (run after the timing)."""
    cuda = device.startswith("cuda")
    torch._dynamo.reset()
    _drop_graphs(side)
    # compiled as its own Module.compile does (multidiff's UNet.compile adds Inductor options)
    net = side.net if mode.compile is None else compiled_copy(side.net, mode.compile)
    run = functools.partial(side.run, net, mode.graphs)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    try:
        t0 = time.perf_counter()
        _first_call(side, run, mode)
        _sync(device)
        first = time.perf_counter() - t0
        for _ in range(warmup - 1):
            run()
        _sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = run()
            _sync(device)
            times.append(time.perf_counter() - t0)
        if not torch.isfinite(out.float()).all():
            raise RuntimeError(f"{side.name} ({mode.name}) generated non-finite values")
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        syncs = count_host_syncs(run) if cuda else None
        r = dict(seconds=statistics.median(times), first_call_s=first, peak_gib=peak, host_syncs=syncs)
        if mode.graphs:
            r["graphs_held"] = _graphs_held(side)
        if check is not None:  # its failure leaves the timing standing
            try:
                r.update(check(net))
            except Exception as err:
                r["check_error"] = f"{type(err).__name__}: {err}"[:300]
        return r
    finally:
        _drop_graphs(side)


def graph_check(graphed: torch.Tensor, reference: torch.Tensor, against: str) -> dict[str, Any]:
    """max |graphed - reference| of the latents of one seed, and that over the reference's std (flagged
    above ``GRAPH_TOLERANCE``, or when not finite)."""
    graphed, reference = graphed.detach().float().cpu(), reference.detach().float().cpu()
    diff = float((graphed - reference).abs().max())
    std = float(reference.std())
    rel = diff / std if std > 0 else math.inf
    flagged = not rel <= GRAPH_TOLERANCE  # NaN included
    return dict(graphs_vs=against, graphs_max_abs_diff=diff, graphs_diff_over_std=rel, graphs_flagged=flagged)


def _theirs(rows: list[dict], against: str, compiled: bool) -> dict | None:
    """The fastest timed row of diffusers side ``against``: eager, or compiled (any compiled mode)."""
    timed = [r for r in rows if not r["ours"] and r["side"] == against and "seconds" in r]
    return min(
        (r for r in timed if (r["mode"] != "eager") == compiled), key=lambda r: r["seconds"], default=None
    )


def add_ratios(rows: list[dict]) -> None:
    """``vs_diffusers_eager``, ``vs_diffusers_compiled``: the eager time, and the best compiled time
    (any compiled mode), of the diffusers side the row is compared with (its ``against``;
    a diffusers row, itself) over the row's time; > 1 is faster than diffusers."""
    for r in (r for r in rows if "seconds" in r):
        for key, compiled in (("vs_diffusers_eager", False), ("vs_diffusers_compiled", True)):
            theirs = _theirs(rows, r["against"], compiled)
            r[key] = None if theirs is None else theirs["seconds"] / r["seconds"]


def run_case(
    name: str,
    opts: Options,
    modes: list[str],
    runs: int,
    warmup: int,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Time every side of case ``name`` in each of ``modes`` it has, mode by mode in the order given (a
    failure is recorded, not raised), calling ``save(case)`` after every row.

    The graph check runs once per case and graphed mode: the case's multidiff latents with graphs against
    the same without (``eager`` for ``graphs``, ``compile`` for ``compile+graphs``; an ungraphed mode run
    earlier gives its latents, so its compilation is not repeated).
    """
    spec = CASES[name](opts)
    case: dict[str, Any] = dict(name=name, notes=spec["notes"], rows=[])
    sides, latents = spec["sides"], spec["latents"]
    graphed = [MULTIDIFF_MODES[m] for m in modes if m in MULTIDIFF_MODES and MULTIDIFF_MODES[m].graphs]
    needs_ref = {m.compile for m in graphed} if opts.cuda else set()
    refs: dict[str | None, torch.Tensor] = {}  # torch.compile mode -> ungraphed latents
    checks: dict[str, dict[str, Any]] = {}  # graphed mode -> its check

    def check(mode: Mode, net: nn.Module) -> dict[str, Any]:
        if mode.compile in needs_ref and mode.compile not in refs:
            refs[mode.compile] = latents(net, False)
        if mode.graphs and mode.name not in checks:
            against = {None: "eager", "default": "compile"}.get(mode.compile, f"compile {mode.compile}")
            checks[mode.name] = graph_check(latents(net, True), refs[mode.compile], against)
        return checks.get(mode.name, {}) if mode.graphs else {}

    info: dict[str, dict[str, Any]] = {}  # per side, measured once
    on_device = None
    for mode_name in modes:
        for side in (s for s in sides if mode_name in s.modes):
            if on_device is not side:
                for m in (m for s in sides for m in s.modules):
                    m.to("cpu")
                for m in side.modules:
                    m.to(opts.device)
                on_device = side
            ours = side.pipe is not None
            if side.name not in info:
                if ours and opts.ours_bf16 and opts.cuda:
                    side.pipe.to(dtype=torch.bfloat16)  # the backbone's weights, as `generate --dtype bf16`
                params = sum(p.numel() for p in side.net.parameters()) / 1e6
                info[side.name] = dict(case=name, side=side.name, ours=ours, batch=spec["batch"],
                                       against=side.against if ours else side.name,
                                       precision=opts.precision(ours), params_m=params,
                                       gflop_per_call=forward_gflop(side))  # fmt: skip
            mode = side.modes[mode_name]
            try:
                if mode.graphs and not opts.cuda:
                    r = dict(skipped="needs CUDA")
                else:
                    fn = functools.partial(check, mode) if ours else None
                    r = time_side(side, opts.device, mode, runs, warmup, fn)
                    r["seconds_per_clip"] = r["seconds"] / spec["batch"]
            except Exception as err:  # a mode that fails (e.g. reduce-overhead) is a result, not the end
                r = dict(error=f"{type(err).__name__}: {err}"[:500])
            case["rows"].append({**info[side.name], "mode": mode_name, **r})
            shown = f"{r['seconds']:.4f} s" if "seconds" in r else r.get("skipped") or r["error"]
            if "graphs_max_abs_diff" in r:
                shown += f", max |graphed - {r['graphs_vs']}| {r['graphs_max_abs_diff']:.2e}"
            print(f"  {name:<14} {side.name:<24} {mode_name:<16} {shown}", flush=True)
            add_ratios(case["rows"])
            if save is not None:  # after every row, so a run cut short keeps what it measured
                save(case)
    return case


def _na(v: Any, f: str = "{}") -> str:
    return "n/a" if v is None else f.format(v)


def _check_cell(r: dict) -> str:
    if "check_error" in r:
        return f"check failed: {r['check_error'][:150]}"
    if "graphs_max_abs_diff" not in r:
        return ""
    cell = f"{r['graphs_max_abs_diff']:.1e} vs {r['graphs_vs']} ({r['graphs_diff_over_std']:.1e} std)"
    return cell + (f" **over {GRAPH_TOLERANCE:g} std**" if r["graphs_flagged"] else "")


def table(rows: list[dict]) -> str:
    """Markdown table of a case: a row per side and mode (sides in their order); the ratios are diffusers'
    eager time and its best compiled time over the row's."""
    lines = [
        "| side | mode | s/call | s/clip | diffusers eager/this | diffusers compiled/this | peak GiB "
        "| max \\|graphed - ungraphed\\| | host syncs | first call s | params M | GFLOP/call | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(dict.fromkeys(r["side"] for r in rows))
    for r in sorted(rows, key=lambda r: order.index(r["side"])):
        if "seconds" not in r:
            shown = r.get("skipped") or f"failed: {r['error'][:150]}"
            lines.append(f"| {r['side']} | {r['mode']} | {shown} |" + " |" * 10)
            continue
        lines.append(
            f"| {r['side']} | {r['mode']} | {r['seconds']:.4f} | {r['seconds_per_clip']:.4f} | "
            f"{_na(r.get('vs_diffusers_eager'), '{:.2f}x')} | "
            f"{_na(r.get('vs_diffusers_compiled'), '{:.2f}x')} | "
            f"{_na(r['peak_gib'], '{:.2f}')} | {_check_cell(r)} | {_na(r['host_syncs'])} | "
            f"{r['first_call_s']:.1f} | {r['params_m']:.1f} | {r['gflop_per_call']:.1f} | {r['precision']} |"
        )
    return "\n".join(lines)


def summarise(cases: list[dict]) -> list[dict[str, Any]]:
    """Per case and multidiff side: its fastest mode, the fastest compiled mode (any) of the diffusers side doing the same work (the side's ``against``), each with its
    peak memory, and ``ratio`` = diffusers' time / multidiff's (the bar of issue 13: >= 3 for one clip)."""
    out = []
    for c in cases:
        timed = [r for r in c["rows"] if "seconds" in r]
        for side, against in dict.fromkeys((r["side"], r["against"]) for r in c["rows"] if r["ours"]):
            theirs = _theirs(c["rows"], against, compiled=True)
            ours = min((r for r in timed if r["side"] == side), key=lambda r: r["seconds"], default=None)
            pick = lambda r, k: None if r is None else r[k]  # noqa: E731
            ratio = theirs["seconds"] / ours["seconds"] if ours and theirs else None
            out.append(dict(case=c["name"], side=side, batch=(ours or theirs or {}).get("batch"),
                            mode=pick(ours, "mode"), seconds=pick(ours, "seconds"),
                            peak_gib=pick(ours, "peak_gib"), diffusers_side=against,
                            diffusers_mode=pick(theirs, "mode"),
                            diffusers_seconds=pick(theirs, "seconds"),
                            diffusers_peak_gib=pick(theirs, "peak_gib"), ratio=ratio))  # fmt: skip
    return out


def summary_table(summary: list[dict]) -> str:
    """Markdown table of :func:`summarise`."""
    lines = [
        "| case | multidiff side | best mode | s/call | peak GiB | diffusers side | compiled, best | s/call "
        "| peak GiB | diffusers / multidiff | >= 3x |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        ratio = s["ratio"]
        bar = "n/a" if ratio is None else "yes" if ratio >= 3 else "no"
        bar += f" (batch {s['batch']}: not the bar)" if s["batch"] != 1 else ""  # the bar is one clip
        lines.append(
            f"| {s['case']} | {s['side']} | {_na(s['mode'])} | {_na(s['seconds'], '{:.4f}')} | "
            f"{_na(s['peak_gib'], '{:.2f}')} | {s['diffusers_side']} | {_na(s['diffusers_mode'])} | "
            f"{_na(s['diffusers_seconds'], '{:.4f}')} | "
            f"{_na(s['diffusers_peak_gib'], '{:.2f}')} | {_na(ratio, '{:.2f}x')} | {bar} |"
        )
    return "\n".join(lines)


def write_results(out: Path, env: dict[str, Any], cases: list[dict]) -> None:
    """Write ``generation_latency.json`` (everything) and ``generation_latency.md`` (the summary, then a table
    per case)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(cases)
    parts = [f"`{json.dumps(env)}`", "### Summary", summary_table(summary)]
    for c in cases:
        parts += [f"### {c['name']}", table(c["rows"]), *c["notes"]]
    texts = {
        "generation_latency.json": json.dumps({"env": env, "summary": summary, "cases": cases}, indent=2),
        "generation_latency.md": "\n\n".join(parts) + "\n",
    }
    for name, text in texts.items():  # whole files only, should a time limit kill the run mid-write
        (out / f".{name}").write_text(text)
        (out / f".{name}").replace(out / name)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write generation_latency.json and .md here")
    ap.add_argument("--only", action="extend", nargs="+", choices=list(CASES), help="cases (repeatable)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, help="timed calls, median reported (default 10; --tiny 2)")
    ap.add_argument("--warmup", type=int, help="untimed calls first, compiling (default 3; --tiny 1)")
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=ALL_MODES,
        metavar="MODE",
        help=f"modes, run in this order, each by the sides that have it (see above): {' '.join(ALL_MODES)} "
        f"(default: {' '.join(MODES)}; --tiny: eager graphs)",
    )
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled modes")
    ap.add_argument("--decode", action="store_true", help="DiT cases: an SD-VAE-sized decode on both sides")
    ap.add_argument("--ours-bf16", action="store_true", help="multidiff: bf16 weights under bf16 autocast")
    ap.add_argument("--ref-autocast", action="store_true", help="diffusers: fp32 weights, bf16 autocast")
    ap.add_argument("--cudnn-benchmark", action="store_true", help=CUDNN_BENCHMARK_HELP)
    ap.add_argument("--tiny", action="store_true", help="tiny models, 2 steps (CPU smoke test)")
    args = ap.parse_args(argv)
    runs = args.runs if args.runs is not None else 2 if args.tiny else 10
    warmup = args.warmup if args.warmup is not None else 1 if args.tiny else 3
    if runs < 1 or warmup < 1:
        ap.error(f"--runs and --warmup must be >= 1, got {runs} and {warmup}")
    modes = list(dict.fromkeys(args.modes or (["eager", "graphs"] if args.tiny else MODES)))
    if args.no_compile:
        modes = [m for m in modes if MULTIDIFF_MODES.get(m, DIFFUSERS_MODES.get(m)).compile is None]
    if not modes:
        ap.error("no mode left to run (--no-compile leaves eager and graphs)")

    with backend_settings(args.cudnn_benchmark):
        return _run(args, modes, runs, warmup, argv)


def _run(
    args: argparse.Namespace, modes: list[str], runs: int, warmup: int, argv: list[str] | None
) -> list[dict]:
    """Every case asked for, its rows written after each, then the tables printed."""
    import diffusers

    opts = Options(
        args.device,
        tiny=args.tiny,
        decode=args.decode,
        ref_autocast=args.ref_autocast,
        ours_bf16=args.ours_bf16,
    )
    command = ["python", "benchmarks/generation_latency.py", *(sys.argv[1:] if argv is None else argv)]
    env = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": torch.cuda.get_device_name(args.device) if opts.cuda else platform.processor() or "cpu",
        "python": platform.python_version(),
        "command": shlex.join(command),
        "modes": modes,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    print(json.dumps(env), flush=True)
    results: list[dict] = []

    def save(case: dict[str, Any]) -> None:  # the cases done and the one under way
        if args.out is not None:
            write_results(args.out, env, [*results, case])

    for name in [n for n in CASES if not args.only or n in args.only]:
        print(f"case {name}", flush=True)
        results.append(run_case(name, opts, modes, runs, warmup, save))
        gc.collect()  # the case's models, now unreferenced
        if opts.cuda:
            torch.cuda.empty_cache()
        if args.out is not None:
            write_results(args.out, env, results)
    print(f"\n### Summary\n\n{summary_table(summarise(results))}")
    for c in results:
        print(f"\n### {c['name']}\n\n{table(c['rows'])}")
    return results


if __name__ == "__main__":
    main()
