"""The Triton kernels of multidiff.nn.fused against their PyTorch reference paths.

The kernels run on CPU tensors through Triton's interpreter, which is chosen when ``triton.jit``
decorates them, so each check runs in a fresh interpreter with ``TRITON_INTERPRET=1``. Forward
values and every gradient are compared; bf16 results against a float64 reference, to the rounding
of one bf16 output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from multidiff.nn.fused import fused_available, ln_modulate, rms_rotary, rotary, split_linear

triton = pytest.importorskip(
    "triton", reason="the fused kernels are Triton kernels; Triton ships with Linux torch"
)

# Triton's interpreter before 3.8 (torch 2.11's Triton on the device, 2026-12-04) cannot use a kernel
# argument as a loop bound under NumPy 2 ("only 0-dimensional arrays can be converted to Python
# scalars"), and the register and stack figures below are those of Triton 3.8's compiler.
_TRITON_38 = tuple(int(p) for p in re.findall(r"\d+", triton.__version__)[:2]) >= (3, 8)
needs_triton_38 = pytest.mark.skipif(
    not _TRITON_38,
    reason=f"Triton {triton.__version__}: loops over argument bounds need Triton >= 3.8's interpreter",
)
compiled_by_triton_38 = pytest.mark.skipif(
    not _TRITON_38,
    reason=f"Triton {triton.__version__}: the register and stack limits are Triton 3.8's figures",
)


def _interpreted(code: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    prelude = "import torch\nfrom multidiff.nn import fused\ntorch.manual_seed(0)\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@needs_triton_38
def test_ln_modulate_kernel_matches_reference_values_and_gradients() -> None:
    _interpreted(
        """
        from multidiff.nn.fused import layer_norm, modulate

        def reference(x, sh, sc):
            return modulate(layer_norm(x.double(), 1e-6), sh.double(), sc.double())

        # D not a power of two; L ragged against the rows each backward program sums (B=2, L=1025
        # gives 513 programs a sample, of 2 rows, the last with 1); shift and scale are strided chunks.
        for B, L, D in ((3, 13, 48), (2, 1025, 8)):
            for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2 ** -7)):
                x = (3 * torch.randn(B, L, D) + 1).to(dtype).requires_grad_()
                ada = torch.randn(B, 1, 3 * D).to(dtype).requires_grad_()
                sh, sc, _ = ada.chunk(3, dim=-1)
                y = fused.ln_modulate(x, sh, sc, 1e-6)
                assert fused.fused_available(x) and y.dtype == dtype and y.shape == (B, L, D)
                ref = reference(x, sh, sc)
                g = torch.randn(B, L, D, dtype=torch.float64)
                gx, ga = torch.autograd.grad(y, (x, ada), g.to(dtype))
                rx, ra = torch.autograd.grad(ref, (x, ada), g)
                scale = ref.abs().max().item()
                assert (y.double() - ref).abs().max().item() <= tol * scale, (B, L, D, dtype)
                assert (gx.double() - rx).abs().max().item() <= tol * rx.abs().max().item(), "dx"
                # shift/scale gradients sum over L tokens: rounding of the inputs grows with L
                assert (ga.double() - ra).abs().max().item() <= 4 * tol * ra.abs().max().item(), "dada"
        """
    )


@needs_triton_38
def test_gated_residual_kernel_matches_reference_values_and_gradients() -> None:
    _interpreted(
        """
        # D not a multiple of the 128-column tile; L ragged against the 16-row tiles and against the
        # rows each backward program sums (B=2, L=1025: 65 tiles a sample, 8 programs); the gate a
        # strided chunk; a float32 residual stream with bf16 gate and sub-layer output (promotion).
        cases = [(3, 13, 200, torch.float32, torch.float32, 1e-5),
                 (2, 1025, 48, torch.bfloat16, torch.bfloat16, 2 ** -7),
                 (2, 37, 64, torch.float32, torch.bfloat16, 2 ** -7)]
        for B, L, D, x_dtype, h_dtype, tol in cases:
            x = torch.randn(B, L, D).to(x_dtype).requires_grad_()
            h = torch.randn(B, L, D).to(h_dtype).requires_grad_()
            ada = torch.randn(B, 1, 2 * D).to(h_dtype).requires_grad_()
            gate = ada.chunk(2, dim=-1)[1]
            y = fused.gated_residual(x, gate, h)
            ref = torch.addcmul(x.double(), gate.double(), h.double())
            assert fused.fused_available(x) and y.dtype == torch.addcmul(x, gate, h).dtype
            g = torch.randn(B, L, D, dtype=torch.float64)
            got = torch.autograd.grad(y, (x, h, ada), g.to(y.dtype))
            want = torch.autograd.grad(ref, (x, h, ada), g)
            assert (y.double() - ref).abs().max().item() <= tol * ref.abs().max().item(), (B, L, D)
            # the gate's gradient sums over L tokens: rounding of the inputs grows with L
            for name, a, b, t in zip(("dx", "dh", "dada"), got, want, (tol, tol, 4 * tol)):
                assert (a.double() - b).abs().max().item() <= t * b.abs().max().item(), (name, B, L, D)
            assert got[0].dtype == x_dtype and got[1].dtype == h_dtype and got[2].dtype == h_dtype
        """
    )


def test_split_linear_matches_the_rows_of_the_packed_linear() -> None:
    """Values and every gradient against F.linear on each part's rows, with and without a bias, with
    an output left unused (its gradient zero), and under CPU autocast (the GEMMs in bf16)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    for parts, bias in ((3, True), (2, False)):
        w = torch.randn(parts * 8, 12, dtype=torch.float64, requires_grad=True)
        b = torch.randn(parts * 8, dtype=torch.float64, requires_grad=True) if bias else None
        inputs = [t for t in (x, w, b) if t is not None]
        got = split_linear(x, w, b, parts)
        want = split_linear(x, w, b, parts, fused=False)
        assert len(got) == parts
        for a, r in zip(got, want):
            torch.testing.assert_close(a, r)

        def loss(outs: tuple[torch.Tensor, ...]) -> torch.Tensor:  # the last output unused
            return sum((o * (i + 1)).sin().sum() for i, o in enumerate(outs[:-1]))

        for a, r in zip(torch.autograd.grad(loss(got), inputs), torch.autograd.grad(loss(want), inputs)):
            torch.testing.assert_close(a, r)
        assert torch.autograd.gradcheck(lambda *t, n=parts: split_linear(*t, n), (x, w, b))
    with pytest.raises(ValueError, match="equal parts"):
        split_linear(x, torch.randn(25, 12, dtype=torch.float64), None, 3)
    w32 = torch.randn(24, 12, requires_grad=True)
    x32 = torch.randn(2, 5, 12, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = split_linear(x32, w32, None, 3), split_linear(x32, w32, None, 3, fused=False)
    for a, r in zip(got, want):
        assert a.dtype == r.dtype == torch.bfloat16
        torch.testing.assert_close(a, r)
    ga = torch.autograd.grad(sum(o.float().sum() for o in got), (x32, w32))
    gr = torch.autograd.grad(sum(o.float().sum() for o in want), (x32, w32))
    for a, r in zip(ga, gr):
        assert a.dtype == r.dtype == torch.float32
        torch.testing.assert_close(a, r, rtol=2e-2, atol=2e-2)


def test_rotary_kernel_matches_reference_on_strided_heads() -> None:
    _interpreted(
        """
        from multidiff.nn.fused import apply_rotary
        from multidiff.nn.layers import rotary_tables

        B, L, nH, Dh = 2, 7, 3, 12
        cos, sin = rotary_tables((L,), Dh)
        for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 2 ** -7)):
            qkv = torch.randn(B, L, 3 * nH * Dh).to(dtype).requires_grad_()
            q = qkv.view(B, L, 3, nH, Dh).permute(2, 0, 3, 1, 4)[0]  # strided (B, nH, L, Dh)
            y = fused.rotary(q, cos, sin)
            assert type(y.grad_fn).__name__ == "_RotaryBackward"  # the kernel ran, not the reference
            ref = apply_rotary(q.double(), cos.double(), sin.double())
            g = torch.randn(B, nH, L, Dh, dtype=torch.float64)
            (gk,) = torch.autograd.grad(y, qkv, g.to(dtype))
            (gr,) = torch.autograd.grad(ref, qkv, g)
            assert y.dtype == dtype and y.shape == (B, nH, L, Dh)
            assert (y.double() - ref).abs().max().item() <= tol * ref.abs().max().item(), dtype
            assert (gk.double() - gr).abs().max().item() <= tol * gr.abs().max().item(), dtype
        """
    )


def test_qk_norm_rotary_kernel_matches_reference() -> None:
    _interpreted(
        """
        import torch.nn.functional as F
        from multidiff.nn.fused import apply_rotary
        from multidiff.nn.layers import rotary_tables

        B, L, nH, Dh = 2, 37, 3, 12  # 222 rows: 4 programs of 64, the last ragged
        cos, sin = rotary_tables((L,), Dh)
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2 ** -7)):
            qkv = (3 * torch.randn(B, L, 3 * nH * Dh) + 1).to(dtype).requires_grad_()
            k = qkv.view(B, L, 3, nH, Dh).permute(2, 0, 3, 1, 4)[1]  # strided (B, nH, L, Dh)
            w = (1 + 0.3 * torch.randn(Dh)).requires_grad_()
            y = fused.rms_rotary(k, w, 1e-6, cos, sin)
            assert type(y.grad_fn).__name__ == "_RMSRotaryBackward"  # the kernel ran, not the reference
            ref = apply_rotary(F.rms_norm(k.double(), (Dh,), w.double(), 1e-6), cos.double(), sin.double())
            g = torch.randn(B, nH, L, Dh, dtype=torch.float64)
            got = torch.autograd.grad(y, (qkv, w), g.to(dtype))
            exp = torch.autograd.grad(ref, (qkv, w), g)
            assert y.dtype == dtype and y.shape == (B, nH, L, Dh)
            assert (y.double() - ref).abs().max() <= tol * ref.abs().max(), dtype
            for a, b in zip(got, exp):
                assert (a.double() - b).abs().max() <= 2 * tol * b.abs().max(), dtype
        """
    )


@needs_triton_38
def test_video_dit_with_fused_kernels_matches_plain_ops() -> None:
    _interpreted(
        """
        import copy
        import dataclasses
        from multidiff.nn.dit import DiT, DiTConfig

        cfg = DiTConfig(in_channels=3, patch=(1, 2, 2), width=48, depth=2, heads=4, qk_norm=True,
                        attention="factorised", num_classes=5)
        fused_model = DiT(cfg)
        for p in fused_model.parameters():  # no adaLN-Zero zeros: every path carries signal
            torch.nn.init.normal_(p, std=0.05)
        plain = DiT(dataclasses.replace(cfg, fused_kernels=False))
        plain.load_state_dict(fused_model.state_dict())
        x = torch.randn(2, 3, 3, 4, 6)
        c = torch.tensor([0.3, -1.0])
        labels = torch.tensor([1, 4])
        calls = {}  # kernel launches per autograd Function, counted by wrapping each one's apply
        for kind in (fused._LNModulate, fused._GatedResidual, fused._RMSRotary):
            def counted(*args, _kind=kind, _apply=kind.apply):
                calls[_kind.__name__] = calls.get(_kind.__name__, 0) + 1
                return _apply(*args)
            kind.apply = counted
        outs, grads, launched = [], [], []
        for model in (fused_model, plain):
            calls.clear()
            out = model(x, c, labels=labels)
            launched.append(dict(calls))
            out.square().mean().backward()
            outs.append(out)
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        # depth 2, each block two adaLN norms and two gated residuals, q and k normed; the final layer's norm
        assert launched == [{"_LNModulate": 5, "_GatedResidual": 4, "_RMSRotary": 4}, {}], launched
        assert (outs[0] - outs[1]).abs().max().item() < 1e-5 * outs[1].abs().max().item()
        assert (grads[0] - grads[1]).abs().max().item() < 1e-4 * grads[1].abs().max().item()
        """
    )


@needs_triton_38
def test_group_norm_silu_kernel_matches_reference_in_both_layouts() -> None:
    _interpreted(
        """
        import copy
        from multidiff.nn.layers import GroupNorm

        N, C, G = 3, 24, 4  # 6 channels a group: not a power of two
        cases = [  # affine, modulated, silu, channels-last, dtype, size, programs aimed for
            (True, False, True, False, torch.float32, (5, 7), 2048),
            (False, True, True, True, torch.float32, (5, 7), 2048),
            (True, True, False, True, torch.float32, (5, 7), 2048),
            (True, True, True, False, torch.bfloat16, (5, 7), 2048),
            (True, True, True, True, torch.bfloat16, (5, 7), 2048),
            # 400 pixels: several tiles a sample, ragged last tile; with one program aimed for, each
            # program merges all its tiles' statistics (Chan et al.) before the groups are combined
            (True, True, True, False, torch.float32, (20, 20), 2048),
            (True, True, True, False, torch.float32, (20, 20), 1),
            (True, True, True, True, torch.float32, (20, 20), 1),
        ]
        for affine, modulated, silu, channels_last, dtype, (H, W), programs in cases:
            fused.GN_PROGRAMS = programs
            norm = GroupNorm(G, C, affine=affine)
            if affine:
                torch.nn.init.normal_(norm.weight)
                torch.nn.init.normal_(norm.bias)
            ref = copy.deepcopy(norm).double()
            ref.fused = False
            x = (2 * torch.randn(N, C, H, W) + 3).to(dtype)  # a mean away from zero
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            x.requires_grad_()
            emb = torch.randn(N, 2 * C, 1, 1, requires_grad=True)
            scale, shift = emb.chunk(2, dim=1) if modulated else (None, None)
            y = fused.group_norm_silu(norm, x, scale, shift, silu=silu)
            assert y.dtype == dtype and y.is_contiguous(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format
            ), "the kernel writes the layout it reads"
            r = fused.group_norm_silu(
                ref, x.double(), *(None if t is None else t.double() for t in (scale, shift)), silu=silu
            )
            g = torch.randn(N, C, H, W, dtype=torch.float64)
            wanted = [x, emb] * modulated or [x]
            got = torch.autograd.grad(y, [*wanted, *norm.parameters()], g.to(dtype))
            exp = torch.autograd.grad(r, [*wanted, *ref.parameters()], g)
            tol = 1e-5 if dtype == torch.float32 else 2 ** -6
            assert (y.double() - r).abs().max() <= tol * r.abs().max(), (affine, modulated, silu, dtype)
            for a, b in zip(got, exp):
                assert (a.double() - b).abs().max() <= tol * b.abs().max(), (affine, modulated, dtype)
        """
    )


@needs_triton_38
def test_video_unet_with_fused_kernels_matches_plain_ops() -> None:
    _interpreted(
        """
        import dataclasses
        from multidiff.nn.unet import UNet, UNetConfig

        cfg = UNetConfig(in_channels=3, channels=(16, 32), num_res_blocks=1, attention_levels=(1,),
                         head_dim=8, norm_groups=4, video=True, num_classes=3)
        fused_model = UNet(cfg)
        for p in fused_model.parameters():  # no zero-initialised layers: every path carries signal
            torch.nn.init.normal_(p, std=0.1)
        plain = UNet(dataclasses.replace(cfg, fused_kernels=False))
        plain.load_state_dict(fused_model.state_dict())
        x = torch.randn(2, 3, 3, 8, 8)
        c = torch.tensor([0.3, -1.0])
        labels = torch.tensor([1, 2])
        for memory_format in (torch.contiguous_format, torch.channels_last):
            outs, grads = [], []
            for model in (fused_model, plain):
                model.zero_grad()
                model.to(memory_format=memory_format)
                out = model(x, c, labels=labels)
                out.square().mean().backward()
                outs.append(out)
                grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
            assert (outs[0] - outs[1]).abs().max() < 1e-4 * outs[1].abs().max(), memory_format
            assert (grads[0] - grads[1]).abs().max() < 1e-4 * grads[1].abs().max(), memory_format
        """
    )


# Each kernel as fused.py launches it at the bar's shapes (DiT-XL/2 width 1,152; head width 64-128; the
# video U-Net's channels-last levels): constants, then warps (other arguments are ints, floats, pointers).
# The LayerNorm kernels' settings are their autotuners' first configs (the test compiles every config).
_COMPILE_CONSTANTS: dict[str, tuple[dict[str, object], int]] = {
    "ln_modulate_fwd": ({"BLOCK_D": 2048}, 8),
    "ln_modulate_bwd": ({"BLOCK_D": 2048, "STAGES": 1}, 16),
    "gated_residual_fwd": ({"BLOCK_R": 16, "BLOCK_D": 128}, 4),
    "gated_residual_bwd": ({"BLOCK_R": 16, "BLOCK_D": 128}, 4),
    "rotary": ({"BLOCK_R": 8, "BLOCK_H": 64}, 4),
    "rms_rotary_fwd": ({"BLOCK_R": 8, "BLOCK_H": 64}, 4),
    "rms_rotary_bwd": ({"BLOCK_R": 8, "BLOCK_H": 64}, 4),
    "group_norm_partial_stats": ({"BLOCK_HW": 32, "BLOCK_C": 128}, 8),
    "group_norm_combine": ({"BLOCK_P": 64, "BLOCK_CG": 16}, 4),
    "group_norm_apply": ({"SILU": True, "BLOCK_HW": 32, "BLOCK_C": 128}, 8),
    "group_norm_bwd_partial": ({"SILU": True, "BLOCK_HW": 256, "BLOCK_C": 16}, 8),
    "group_norm_bwd_dx": ({"SILU": False, "BLOCK_HW": 32, "BLOCK_C": 128}, 8),
}


@compiled_by_triton_38
def test_kernels_compile_for_hopper_without_a_gpu(tmp_path: Path) -> None:
    """The interpreter runs kernels as numpy and forgives what the compiler does not (loop-carried
    types, constexpr arithmetic): compile every kernel to a Hopper binary, as the device will, and check
    with the cuobjdump Triton ships that no thread spills registers to local memory."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from multidiff.nn import _triton_kernels as K

    kernels = {n: k for n, k in vars(K).items() if isinstance(k, triton.runtime.JITFunction) and n[0] != "_"}
    assert set(kernels) == set(_COMPILE_CONSTANTS), "a kernel without compile settings here"
    tuned = {n: k for n, k in vars(K).items() if isinstance(k, triton.runtime.Autotuner)}
    assert set(tuned) == {"ln_modulate_fwd_tuned", "ln_modulate_bwd_tuned"}
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    # every kernel at fused.py's fixed settings, and the autotuned ones at each setting they may pick
    launches = [(n, k, _COMPILE_CONSTANTS[n][1], {}, 128) for n, k in kernels.items()]
    for tuner in tuned.values():
        name = tuner.fn.__name__
        # fewer warps a row may take more registers; what must not happen anywhere is a spill
        launches += [(name, tuner.fn, c.num_warps, c.kwargs, 255) for c in tuner.configs]
    for i, (name, kernel, warps, tuned_consts, most) in enumerate(launches):
        consts = {**_COMPILE_CONSTANTS[name][0], **tuned_consts}
        signature = {}
        for arg in inspect.signature(kernel.fn).parameters:
            if arg in consts:
                signature[arg] = "constexpr"
            elif arg in ("eps", "sign"):
                signature[arg] = "fp32"
            elif arg in ("X", "Y", "DY", "DX", "SHIFT", "SCALE", "GATE", "H", "DH"):  # activations in bf16
                signature[arg] = "*bf16"
            elif arg.isupper() and len(arg) > 1 and arg not in ("HW",):  # statistics, tables, gains
                signature[arg] = "*fp32"
            else:
                signature[arg] = "i32"
        source = ASTSource(fn=kernel, signature=signature, constexprs=consts)
        options = {"num_warps": warps}
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        binary = tmp_path / f"{i}-{name}.cubin"
        binary.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run(
            [str(cuobjdump), "--dump-resource-usage", str(binary)], capture_output=True, text=True, check=True
        ).stdout
        registers = int(re.search(r"REG:(\d+)", usage).group(1))  # type: ignore[union-attr]
        assert "LOCAL:0" in usage and "STACK:0" in usage and registers <= most, (name, options, consts, usage)


def test_cpu_tensors_take_the_reference_path_without_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(2, 5, 8)
    assert not fused_available(x)
    sh, sc = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    expected = torch.nn.functional.layer_norm(x, (8,), eps=1e-6) * (1 + sc) + sh
    torch.testing.assert_close(ln_modulate(x, sh, sc), expected)
    q = torch.randn(1, 2, 5, 4)
    cos, sin = torch.ones(5, 2), torch.zeros(5, 2)  # zero angle: the identity
    torch.testing.assert_close(rotary(q, cos, sin), q)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need a CUDA device")
def test_compiled_kernels_on_cuda_match_the_reference() -> None:
    """The same comparisons on the GPU, with the kernels compiled rather than interpreted."""
    import copy

    from multidiff.nn import _triton_kernels as K
    from multidiff.nn import fused
    from multidiff.nn.fused import apply_rotary, layer_norm, modulate
    from multidiff.nn.layers import GroupNorm, rotary_tables

    dev = torch.device("cuda")
    g = torch.Generator(dev).manual_seed(0)
    B, L, D = 4, 256, 1152  # DiT-XL/2 at 256 px
    x = torch.randn(B, L, D, device=dev, generator=g).requires_grad_()
    ada = torch.randn(B, 1, 2 * D, device=dev, generator=g).requires_grad_()
    sh, sc = ada.chunk(2, dim=-1)
    r = modulate(layer_norm(x, 1e-6), sh, sc)
    dy = torch.randn(B, L, D, device=dev, generator=g)
    expected = torch.autograd.grad(r, (x, ada), dy, retain_graph=True)
    for tuner in (K.ln_modulate_fwd_tuned, K.ln_modulate_bwd_tuned):
        configs = tuner.configs
        try:
            for config in configs:  # every setting its autotuner may pick on some card, not only this one's
                tuner.configs, tuner.cache = [config], {}
                y = ln_modulate(x, sh, sc)
                torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
                for a, b in zip(torch.autograd.grad(y, (x, ada), dy), expected):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        finally:
            tuner.configs, tuner.cache = configs, {}
    h = torch.randn(B, L, D, device=dev, generator=g).requires_grad_()
    gate = ada[..., :D]
    y, r = fused.gated_residual(x, gate, h), torch.addcmul(x, gate, h)
    torch.testing.assert_close(y, r)
    for a, b in zip(torch.autograd.grad(y, (x, h, ada), dy), torch.autograd.grad(r, (x, h, ada), dy)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    q = torch.randn(B, 16, L, 72, device=dev, generator=g).requires_grad_()
    cos, sin = rotary_tables((16, 16), 72, device=dev)
    y, r = rotary(q, cos, sin), apply_rotary(q, cos, sin)
    torch.testing.assert_close(y, r)
    dy = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, q, dy)[0], torch.autograd.grad(r, q, dy)[0])
    w = (1 + 0.1 * torch.randn(72, device=dev, generator=g)).requires_grad_()
    y = rms_rotary(q, w, 1e-6, cos, sin)
    r = apply_rotary(torch.nn.functional.rms_norm(q, (72,), w, 1e-6), cos, sin)
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(y, (q, w), dy), torch.autograd.grad(r, (q, w), dy)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    norm = GroupNorm(32, 256).to(dev)
    ref = copy.deepcopy(norm)
    ref.fused = False
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(8, 256, 32, 32, device=dev, generator=g).to(memory_format=memory_format)
        x.requires_grad_()
        emb = torch.randn(8, 512, 1, 1, device=dev, generator=g).requires_grad_()
        s, t = emb.chunk(2, dim=1)
        y, r = norm.silu(x, s, t), ref.silu(x, s, t)
        assert y.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(y, r, rtol=1e-4, atol=1e-4)
        dy = torch.randn_like(r)
        got = torch.autograd.grad(y, (x, emb, norm.weight, norm.bias), dy)
        exp = torch.autograd.grad(r, (x, emb, ref.weight, ref.bias), dy)
        for a, b in zip(got, exp):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
