"""Where the adaLN LayerNorm's backward spends its time at DiT-XL/2's shape (call 18): the column-tile
kernel at several tile settings, ATen's LayerNorm backward alone, and PyTorch's plain backward, each timed
with triton.testing.do_bench (median, ms). Writes a JSON line per part to stdout."""

import json

import torch
import triton

from multidiff.nn import _triton_kernels as K
from multidiff.nn.fused import layer_norm, ln_modulate, modulate

dev = torch.device("cuda")
B, L, D = 128, 256, 1152
x = torch.randn(B, L, D, device=dev, dtype=torch.bfloat16)
ada = torch.randn(B, 1, 2 * D, device=dev, dtype=torch.bfloat16)
sh, sc = (t.squeeze(1).contiguous() for t in ada.chunk(2, dim=-1))
dy = torch.randn_like(x)
mean = x.float().mean(-1).reshape(-1)
rstd = torch.rsqrt(x.float().var(-1, unbiased=False).reshape(-1) + 1e-6)
dxhat = torch.empty_like(x)


def part(name: str, ms: float, nbytes: int) -> None:
    print(json.dumps({"part": name, "ms": round(ms, 4), "TB/s": round(nbytes / ms / 1e9, 2)}), flush=True)


io = 3 * x.numel() * 2  # x, dy read; dx̂ written
for br, bc, w in (
    (16, 128, 8),
    (8, 128, 4),
    (32, 128, 8),
    (16, 64, 4),
    (8, 256, 8),
    (32, 64, 8),
    (64, 64, 8),
):
    for programs in (4096, 16384):
        cols = -(-D // bc)
        chunks = max(1, min(-(-L // br), -(-programs // (B * cols))))
        rows = -(-L // (chunks * br)) * br
        chunks = -(-L // rows)
        ds = torch.empty(B, chunks, D, device=dev)
        dh = torch.empty_like(ds)

        launch = K.ln_modulate_bwd_partial[(B, chunks, cols)]
        args = (x, sc, dy, mean, rstd, dxhat, ds, dh, L, D, sc.stride(0), rows, chunks)
        settings = {"BLOCK_R": br, "BLOCK_C": bc, "num_warps": w}
        ms = triton.testing.do_bench(
            lambda launch=launch, args=args, settings=settings: launch(*args, **settings)
        )
        part(f"column kernel R{br} C{bc} w{w} programs {B * chunks * cols}", ms, io)
stats = (B, L, 1)
part(
    "ATen native_layer_norm_backward (bf16)",
    triton.testing.do_bench(
        lambda: torch.ops.aten.native_layer_norm_backward(
            dxhat, x, [D], mean.view(stats), rstd.view(stats), None, None, [True, False, False]
        )
    ),
    3 * x.numel() * 2,
)
xr = x.clone().requires_grad_()
a = ada.clone().requires_grad_()
s1, c1 = a.chunk(2, dim=-1)
with torch.autocast("cuda", torch.bfloat16):
    yp = modulate(layer_norm(xr, 1e-6), s1, c1)
    yf = ln_modulate(xr, s1, c1)
for name, y in (("plain backward (autograd)", yp), ("fused backward (autograd)", yf)):
    g = dy.to(y.dtype)
    part(
        name,
        triton.testing.do_bench(lambda y=y, g=g: torch.autograd.grad(y, (xr, a), g, retain_graph=True)),
        io,
    )
