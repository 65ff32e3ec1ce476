"""Where float8 training beats bf16 for multidiff's DiT training step (issue 13, point 2).

At every point of a grid widths x token counts, one training step (``time_training`` of
``train_throughput.py``: forward under bf16 autocast, MSE to a random target, backward, fused AdamW) is
timed ``torch.compile``d three ways: bf16; torchao float8, tensorwise scaling; float8, rowwise scaling
(``Float8LinearConfig.from_recipe_name``). float8 replaces the blocks' token-wise linears (QKV, attention
output, MLP); the adaLN linears see one row per sample and stay bf16. TFLOP/s count the bf16 FLOPs.

Tokens: ``N`` is a square image latent 4 x 2√N x 2√N, patch 2, the DiT-XL/2 preset at another width and
depth; ``FxS`` is a video latent of F frames of S tokens, patch (1, 2, 2), factorised attention as
VideoDiT-B/2. Heads are width/64. Loss-parity mode (``--loss-steps N``, instead of the grid) trains bf16
and ``--loss-recipe`` float8 from the same weights on the same seeded data at the first grid point and
reports the relative difference of their mean loss over the last 10% of steps (issue bar: 1% at 2,000).

On the device (float8 needs CUDA capability >= 8.9 and torchao; otherwise one line says why, exit 0).
Each point compiles three models; split the grid across runs (one width per ``--out``) if time is short:

    pip install torchao
    python benchmarks/fp8_map.py --out OUT                     # widths 384..2048 x 256, 1024, 16x256
    python benchmarks/fp8_map.py --widths 1152 --tokens 256 --loss-steps 2000 --batch 64 --out OUT
    python benchmarks/fp8_map.py --tiny --out OUT              # CPU smoke test: bf16 only
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import importlib.metadata
import importlib.util
import itertools
import json
import math
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import _sync, compiled_copy, count_flops, time_training  # noqa: E402

from multidiff.nn.dit import DIT_PRESETS, DiT, DiTConfig  # noqa: E402
from multidiff.train.fp8 import FP8_RECIPES, fp8_unavailable, to_float8_training  # noqa: E402

RECIPES = FP8_RECIPES
VARIANTS = ("bf16",) + tuple(f"fp8-{r}" for r in RECIPES)


def latent_shape(tokens: str) -> tuple[int, ...]:
    """Latent (C, H, W) for ``"N"`` (N square) or (C, F, H, W) for ``"FxS"`` (S square), patch 2."""
    m = re.fullmatch(r"(?:(\d+)x)?(\d+)", tokens)
    side = math.isqrt(int(m[2])) if m else 0
    if not m or side == 0 or side * side != int(m[2]) or m[1] is not None and int(m[1]) == 0:
        raise ValueError(f"fp8_map: --tokens entry {tokens!r} is not N or FxS with N, S positive squares")
    return (4, int(m[1]), 2 * side, 2 * side) if m[1] else (4, 2 * side, 2 * side)


def dit_config(width: int, depth: int, shape: tuple[int, ...]) -> DiTConfig:
    """DiT settings for latents of ``shape``: image, the DiT-XL/2 preset; video, factorised as VideoDiT-B/2."""
    cfg = dataclasses.replace(DIT_PRESETS["DiT-XL/2"], width=width, depth=depth, heads=max(width // 64, 1))
    if len(shape) == 4:  # tubelets (1, 2, 2), spatial + temporal block pairs, no classes
        video = dict(patch=(1, 2, 2), depth=2 * math.ceil(depth / 2), attention="factorised")
        cfg = dataclasses.replace(cfg, out_channels=None, num_classes=None, **video)
    return cfg


def variant_model(base: nn.Module, variant: str, device: str) -> nn.Module:
    """A device copy of ``base``; for ``fp8-<recipe>`` with the linears of ``multidiff.train.fp8.fp8_filter``
    swapped for torchao ``Float8Linear`` of that recipe (``to_float8_training``, as ``--fp8`` does)."""
    model = copy.deepcopy(base).to(device).train()
    return model if variant == "bf16" else to_float8_training(model, variant.removeprefix("fp8-"))


def n_tokens(shape: tuple[int, ...]) -> int:
    """Tokens of a latent of ``shape`` with patch 2 (video: patch (1, 2, 2))."""
    return math.prod(s // 2 for s in shape[-2:]) * (shape[1] if len(shape) == 4 else 1)


def _free(device: str) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def grid_point(
    width: int, tokens: str, args: argparse.Namespace, fp8_reason: str | None
) -> list[dict[str, Any]]:
    """Time every variant at one grid point; idle copies wait on the CPU."""
    device, shape = args.device, latent_shape(tokens)
    batch = args.batch or max(args.tokens_per_batch // n_tokens(shape), 1)
    base = DiT(dit_config(width, args.depth, shape))
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, *shape, device=device, generator=g)
    target = torch.randn(batch, base.config.out_ch, *shape[1:], device=device, generator=g)
    c_noise = torch.randn(batch, device=device, generator=g)

    def step(model: nn.Module) -> torch.Tensor:
        return F.mse_loss(model(x, c_noise).float(), target)

    def step_one(model: nn.Module) -> torch.Tensor:  # FLOPs are linear in the batch: count one sample
        return F.mse_loss(model(x[:1], c_noise[:1]).float(), target[:1])

    head = dict(width=width, depth=base.config.depth, tokens=n_tokens(shape), grid=tokens, batch=batch)
    head["params"] = sum(p.numel() for p in base.parameters())
    flops = batch * count_flops(base.to(device).train(), step_one, device)
    base.to("cpu")
    rows: list[dict[str, Any]] = []
    for variant in VARIANTS:
        if variant != "bf16" and fp8_reason is not None:
            rows.append(dict(head, variant=variant, skipped=fp8_reason))
            continue
        _free(device)
        try:
            model = variant_model(base, variant, device)
            r = time_training(model, step, device, compile=args.compile, steps=args.steps, warmup=args.warmup)
            sec, peak, first = r["step_s"], r["peak_bytes"] / 2**30, r["first_step_s"]
            rate = dict(step_ms=1000 * sec, samples_per_s=batch / sec, tflops=flops / sec / 1e12)
            rows.append(dict(head, variant=variant, **rate, peak_gib=peak, first_step_s=first))
            said = f"{batch / sec:9.1f}/s {flops / sec / 1e12:7.1f} TFLOP/s  peak {peak:6.2f} GiB"
        except Exception as e:  # an OOM or a compile failure costs one row, not the map
            rows.append(dict(head, variant=variant, error=f"{type(e).__name__}: {e}"[:500]))
            said = f"error {rows[-1]['error'][:120]}"
        model = None  # free the device copy before the next variant
        print(f"  {width:5d} {tokens:>7} {variant:<15} {said}", flush=True)
    bf16 = rows[0].get("samples_per_s")
    for row in rows[1:]:
        if bf16 and "samples_per_s" in row:
            row["ratio"] = row["samples_per_s"] / bf16
    _free(device)
    return rows


def train_losses(
    model: nn.Module, shape: tuple[int, ...], batch: int, device: str, *, steps: int, compile: bool
) -> list[float]:
    """Per-step losses of ``steps`` AdamW steps denoising N(0, I) latents; step k's data is seeded by k.

    EDM (Karras et al. 2022) noise levels, ln sigma ~ N(-1.2, 1.2^2), input scaled by 1/sqrt(1 + sigma^2),
    c_noise = ln(sigma)/4; the target is the noise (epsilon), the first C output channels.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.startswith("cuda"))
    run_model = compiled_copy(model) if compile else model
    losses = []
    for k in range(steps):
        g = torch.Generator(device).manual_seed(k)
        x0 = torch.randn(batch, *shape, device=device, generator=g)  # (B, C, *spatial)
        eps = torch.randn(batch, *shape, device=device, generator=g)  # (B, C, *spatial)
        sigma = (torch.randn(batch, device=device, generator=g) * 1.2 - 1.2).exp()  # (B,)
        s = sigma.view(-1, *[1] * len(shape))
        x = (x0 + s * eps) / (1 + s**2).sqrt()  # (B, C, *spatial)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            out = run_model(x, sigma.log() / 4)  # (B, C_out, *spatial)
        loss = F.mse_loss(out[:, : shape[0]].float(), eps)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    _sync(device)
    return torch.stack(losses).tolist()


def loss_parity(args: argparse.Namespace, fp8_reason: str | None) -> dict[str, Any]:
    """bf16 against float8 (``--loss-recipe``) from the same weights and data at the first grid point."""
    width, tokens = args.widths[0], args.tokens[0]
    head = dict(width=width, grid=tokens, steps=args.loss_steps, recipe=args.loss_recipe)
    if fp8_reason is not None:
        return dict(head, skipped=fp8_reason)
    print(f"loss parity: width {width}, tokens {tokens}, {args.loss_steps} steps", flush=True)
    shape = latent_shape(tokens)
    batch = args.batch or max(args.tokens_per_batch // n_tokens(shape), 1)
    base = DiT(dit_config(width, args.depth, shape))
    tail = max(args.loss_steps // 10, 1)
    means = {}
    for variant in ("bf16", f"fp8-{args.loss_recipe}"):
        _free(args.device)
        model = variant_model(base, variant, args.device)
        losses = train_losses(model, shape, batch, args.device, steps=args.loss_steps, compile=args.compile)
        means[variant] = sum(losses[-tail:]) / tail
        del model
    rel = abs(means[f"fp8-{args.loss_recipe}"] - means["bf16"]) / means["bf16"]
    return dict(head, batch=batch, tail_steps=tail, mean_loss=means, rel_diff=rel, within_1pct=rel <= 0.01)


def verdict(rows: list[dict[str, Any]]) -> str:
    """fp8 pays at 1.2x; else a memory saver when its peak is 5% lower; else slower (or a small gain)."""
    fp8 = [r for r in rows if "ratio" in r]
    if not fp8:
        return "fp8 skipped" if any("skipped" in r for r in rows) else "error"
    best = max(r["ratio"] for r in fp8)
    if best >= 1.2:
        return "fp8 pays (>=1.2x)"
    if min(r["peak_gib"] for r in fp8) < 0.95 * rows[0]["peak_gib"]:
        return "memory saver only"
    return "slower" if best < 1.0 else f"gain < 1.2x ({best:.2f}x)"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one line per grid point, bf16 throughput, fp8/bf16 ratios, peaks and verdict."""
    lines = [
        "| width | tokens | batch | bf16 samples/s | fp8-tensorwise ratio | fp8-rowwise ratio | "
        "bf16 peak GiB | fp8-tensorwise peak GiB | fp8-rowwise peak GiB | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    points: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        points.setdefault((r["width"], r["grid"]), []).append(r)
    for (width, grid), group in points.items():
        by = {r["variant"]: r for r in group}

        def cell(variant: str, key: str, fmt: str, by: dict = by) -> str:
            r = by.get(variant, {})
            return format(r[key], fmt) if key in r else ("skipped" if "skipped" in r else "error")

        lines.append(
            f"| {width} | {group[0]['tokens']}{f' ({grid})' if 'x' in grid else ''} | {group[0]['batch']} | "
            f"{cell('bf16', 'samples_per_s', '.1f')} | {cell('fp8-tensorwise', 'ratio', '.2f')} | "
            f"{cell('fp8-rowwise', 'ratio', '.2f')} | "
            + " | ".join(cell(v, "peak_gib", ".2f") for v in VARIANTS)
            + f" | {verdict([by[v] for v in VARIANTS if v in by])} |"
        )
    return "\n".join(lines)


def write_results(out: Path, result: dict[str, Any]) -> None:
    """Write ``fp8_map.json`` (everything) and ``fp8_map.md`` (environment, table, notes) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "fp8_map.json").write_text(json.dumps(result, indent=2))
    notes = [f"fp8_map: skipped: {result['skipped']}"] if result["skipped"] else []
    notes += [f"fp8 rows skipped: {result['fp8_skipped']}"] if result["fp8_skipped"] else []
    if result["loss_parity"] is not None:
        notes.append(f"loss parity: `{json.dumps(result['loss_parity'])}`")
    parts = [f"`{json.dumps(result['env'])}`", *([table(result["rows"])] if result["rows"] else []), *notes]
    body = "\n\n".join(parts)
    (out / "fp8_map.md").write_text(body + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[384, 768, 1152, 1536, 2048])
    ap.add_argument("--tokens", nargs="+", default=["256", "1024", "16x256"], help="N (image) or FxS (video)")
    ap.add_argument("--depth", type=int, default=8, help="blocks (video: rounded up to even)")
    ap.add_argument("--batch", type=int, help="fixed batch (default: --tokens-per-batch / tokens)")
    ap.add_argument("--tokens-per-batch", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="eager (fp8 is slow eager)")
    ap.add_argument("--loss-steps", type=int, default=0, help="loss-parity mode: steps at the first point")
    ap.add_argument("--loss-recipe", choices=RECIPES, default="rowwise")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny widths, 2 steps, eager")
    ap.add_argument("--device", help="default: cpu with --tiny, else cuda")
    ap.add_argument("--out", type=Path, help="write fp8_map.json and fp8_map.md here")
    args = ap.parse_args(argv)
    if args.tiny:
        args.widths, args.tokens, args.depth, args.batch = [32, 64], ["16", "2x16"], 2, 2
        args.steps, args.warmup, args.compile = 2, 1, False
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    for width, tokens in itertools.product(args.widths, args.tokens):
        dit_config(width, args.depth, latent_shape(tokens))  # fail early on a bad grid

    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    env = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "python": platform.python_version(),
        "command": shlex.join(["python", "benchmarks/fp8_map.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    env["torchao"] = (
        importlib.metadata.version("torchao") if importlib.util.find_spec("torchao") else "missing"
    )
    print(json.dumps(env), flush=True)
    reason = fp8_unavailable(args.device)
    result: dict[str, Any] = dict(env=env, skipped=None, fp8_skipped=None, rows=[], loss_parity=None)
    if reason is not None and not args.tiny:  # the map is fp8 against bf16: nothing to draw without fp8
        print(f"fp8_map: skipped: {reason}", flush=True)
        result["skipped"] = reason
    else:
        if reason is not None:
            print(f"fp8_map: fp8 rows skipped: {reason}", flush=True)
            result["fp8_skipped"] = reason
        if args.loss_steps > 0:
            result["loss_parity"] = loss_parity(args, reason)
            print(f"loss parity: {json.dumps(result['loss_parity'])}", flush=True)
        for width, tokens in itertools.product(args.widths, args.tokens) if not args.loss_steps else ():
            result["rows"] += grid_point(width, tokens, args, reason)
            if args.out is not None:  # after every point, so a run cut short keeps what it measured
                write_results(args.out, result)
        print(f"\n{table(result['rows'])}" if result["rows"] else "", flush=True)
    if args.out is not None:
        write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
