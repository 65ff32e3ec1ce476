"""CUDA-graph replay of a denoiser (or a vocoder), for generation that is bound by kernel launches.

Generating one clip with a small model is launch-bound: every sampler step calls the whole
:class:`~multidiff.core.denoiser.Denoiser` (the EDM preconditioning and the backbone), hundreds of small
kernels whose launch costs more host time than the GPU spends on them (12-26 ms a step for small
models). A CUDA graph records those launches once and replays them with one call.
:class:`CudaGraphed` wraps the denoiser, captures one graph per input signature with torch's own API
(``torch.cuda.CUDAGraph``, ``torch.cuda.graph``) and replays it on later calls; anything it cannot
capture runs eagerly. The same holds for an audio pipeline's Griffin-Lim vocoder, about 1,500 small
kernels over its iterations, which the audio pipeline replays with the same class (``f(x) -> Tensor``).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["AUTOCAST_LAYERS", "CudaGraphed", "autocast_shadows", "compiler_error", "replayer", "use_graphs"]


def use_graphs(graphs: bool | None, device: torch.device) -> bool:
    """Whether to replay from CUDA graphs: ``None`` means on a CUDA device; ``True`` off CUDA is an error.

    Raises:
        ValueError: ``graphs=True`` for a device that is not CUDA, saying what to pass instead.
    """
    if graphs is None:
        return device.type == "cuda"
    if graphs and device.type != "cuda":
        raise ValueError(
            f"graphs=True needs a pipeline on a CUDA device, but this one is on {device}; move it with "
            "to('cuda') or pass graphs=None (on where CUDA is) or graphs=False"
        )
    return bool(graphs)


@dataclass
class _Graph:
    """One captured graph: the static tensors it reads (x, σ where the call has one, then tensor keywords)
    and the one it writes."""

    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]
    output: Tensor


def compiler_error(err: BaseException) -> bool:
    """Whether ``err`` was raised by torch.compile's machinery (Dynamo or Inductor)."""
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))


def replayer(current: CudaGraphed | None, module: nn.Module) -> CudaGraphed:
    """``current`` if it replays ``module``, else a new :class:`CudaGraphed` of it (what a pipeline keeps
    across calls, so that later calls replay the graphs the first one captured)."""
    return current if current is not None and current.module is module else CudaGraphed(module)


def _sigma_vector(sigma: Tensor | float, x: Tensor) -> Tensor:
    """A Python-number σ as a float32 tensor [B] on x's device (as the Denoiser converts it); tensors unchanged."""
    if isinstance(sigma, Tensor):
        return sigma
    return torch.full((x.shape[0],), float(sigma), dtype=torch.float32, device=x.device)


def _signature(
    x: Tensor, sigma: Tensor | float | None, cond: Mapping[str, Any]
) -> tuple[Hashable, list[Tensor], list[str]] | None:
    """The graph key of a call, its tensors in a fixed order and the names of the tensor keywords.

    The key holds the shape, dtype and device of x, σ (None for a module called without one) and every
    tensor keyword (in name order), the values of the other keywords, and the caller's CUDA autocast
    state. A Python-number σ counts as the float32 tensor [B] it is turned into, so a sampler passing
    floats does not make a new key each step.

    Returns:
        ``(key, tensors, names)``, or None when a keyword is neither a tensor nor hashable (run eagerly).
    """
    tensors = [x]
    parts: list[Hashable] = [(tuple(x.shape), x.dtype, x.device)]
    if sigma is None:
        parts.append(None)
    else:
        sigma = _sigma_vector(sigma, x)
        tensors.append(sigma)
        parts.append((tuple(sigma.shape), sigma.dtype, sigma.device))
    names = []
    for name in sorted(cond):
        value = cond[name]
        if isinstance(value, Tensor):
            tensors.append(value)
            names.append(name)
            parts.append((name, tuple(value.shape), value.dtype, value.device))
            continue
        try:
            hash(value)
        except TypeError:
            return None
        parts.append((name, type(value), value))  # the type keeps True and 1 apart
    parts.append((torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")))
    return tuple(parts), tensors, names


def _mirrored_autocast() -> torch.autocast:
    """The caller's CUDA autocast state without the weight-cast cache.

    Autocast caches the low-precision copies of the weights it casts; a copy made during capture would be
    freed when the capture ends while the graph keeps reading its memory. With the cache off the casts are
    part of the graph (and follow in-place weight updates).
    """
    return torch.autocast(
        "cuda",
        dtype=torch.get_autocast_dtype("cuda"),
        enabled=torch.is_autocast_enabled("cuda"),
        cache_enabled=False,
    )


#: The layers whose forward is exactly ``F.linear`` or ``F.conv*`` on their weight and bias. Subclasses are
#: left out: they may read the weight otherwise (torchao's float8 linear scales it, LoRA wrappers add to it).
AUTOCAST_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def autocast_shadows(module: nn.Module, dtype: torch.dtype) -> dict[str, Tensor]:
    """``dtype`` copies of the weights autocast casts on every call, by parameter name.

    Under autocast, linear layers and convolutions (transposed ones too) run in the low-precision dtype
    with every input cast to it, bias included. Their float32 parameters are therefore cast again at each
    call: one small kernel per weight (262 of the moving-digit U-Net's 377 parameters; 1.35 GB written a
    step for DiT-XL/2). Running the module with these
    copies in their place (``torch.func.functional_call``) gives the same result, since the cast rounds the
    same way, without those kernels. Only the weight and bias of the exact layer classes of
    :data:`AUTOCAST_LAYERS` without parametrizations are copied; other parameters (norms, embeddings, a
    weight tied to an embedding under its other name) keep their float32 tensors.
    """
    from torch.nn.utils import parametrize

    shadows: dict[str, Tensor] = {}
    made: dict[int, Tensor] = {}  # one copy per parameter, however many layers share it (tied weights)
    for prefix, layer in module.named_modules(remove_duplicate=False):
        if type(layer) not in AUTOCAST_LAYERS or parametrize.is_parametrized(layer):
            continue
        for name in ("weight", "bias"):
            p = layer._parameters.get(name)
            if p is not None and p.dtype == torch.float32:
                copy = made.setdefault(id(p), p.detach().to(dtype))
                shadows[f"{prefix}.{name}" if prefix else name] = copy
    return shadows


@dataclass
class _Shadows:
    """The low-precision copies for one autocast dtype, and what each source was when last copied.

    An in-place update moves a parameter's version counter (``copy_``, ``load_state_dict``, an EMA's
    ``lerp_``), which :meth:`refresh` follows; writes through ``param.data`` do not move it and are not
    seen. A parameter that now lives elsewhere or in another dtype (a moved or cast module) makes the
    copies :meth:`stale`.
    """

    tensors: dict[str, Tensor]
    sources: list[tuple[Tensor, Tensor, int, int]]  # (parameter, its copy, its _version, its data_ptr)

    @classmethod
    def of(cls, module: nn.Module, dtype: torch.dtype) -> _Shadows:
        """The copies of :func:`autocast_shadows` and their sources, a tied weight copied once."""
        with torch.inference_mode(False):  # ordinary tensors, which later calls may update in place
            tensors = autocast_shadows(module, dtype)
        params = dict(module.named_parameters(remove_duplicate=False))
        unique = {id(t): name for name, t in tensors.items()}.values()
        return cls(tensors, [(p, tensors[n], p._version, p.data_ptr()) for n in unique for p in (params[n],)])

    def refresh(self) -> None:
        """Copy again, in place (the graphs keep reading the same memory), each parameter updated in place."""
        for i, (param, shadow, version, ptr) in enumerate(self.sources):
            if param._version != version:
                shadow.copy_(param.detach())
                self.sources[i] = (param, shadow, param._version, ptr)

    def stale(self) -> bool:
        """Whether a source parameter moved to other storage or another dtype since the copies were made."""
        return any(p.data_ptr() != ptr or p.dtype != torch.float32 for p, _, _, ptr in self.sources)


class CudaGraphed(nn.Module):
    """A module ``f(x, sigma, **cond) -> Tensor`` (or ``f(x, **cond)``) replayed from CUDA graphs, one per
    input signature.

    Why: one-clip generation with a small model is launch-bound (12-26 ms a step, mostly spent launching
    the denoiser's kernels rather than running them); a graph replays all of a step's kernels with one call.

    What is captured: everything the wrapped module does, i.e. for the pipeline's
    :class:`~multidiff.core.denoiser.Denoiser` the preconditioning (c_skip, c_out, c_in, c_noise) and the
    backbone. Guidance, windows, thresholding and inpainting stay outside, as eager wrappers.

    The first call with a new signature (see :func:`_signature`) copies its tensors into static buffers,
    runs the module twice on a side stream (warm-up: lazy initialisation and per-device caches happen
    outside the capture) and captures one call into a graph; all graphs of a wrapper share one memory
    pool. Later calls with that signature copy their tensors into the static buffers (``copy_``), replay
    the graph and return a clone of the static output, since samplers keep earlier outputs that the next
    replay would overwrite. Warm-up, capture and replay run under an autocast that mirrors the caller's
    (enabled, dtype) with the weight-cast cache off (see :func:`_mirrored_autocast`). Under a bf16 or fp16
    autocast the graphs read low-precision copies of the float32 linear and convolution weights
    (:func:`autocast_shadows`), made at the first capture, so that a replay does not cast every weight again;
    the output is the same as with the casts.

    Static-buffer contract: the graphs read the module's parameters and buffers where they were at
    capture, so in-place updates (``load_state_dict``, an EMA ``copy_``) are seen by later replays (a
    weight's low-precision copy is copied again when its version counter moves, which writes through
    ``param.data`` do not do); moving or casting the module (new storage) is detected and drops the graphs,
    and so does :meth:`reset`.
    The module must not synchronise with the host (``.item()``, data-dependent Python branches) nor
    allocate from pageable host memory after its warm-up; if capture fails, the wrapper warns once and
    runs that signature eagerly from then on.

    Memory: each graph keeps its static inputs and output, and the shared pool keeps the largest
    intermediate activations of one call, i.e. about one extra forward pass of memory; at most
    ``max_graphs`` graphs are kept, the least recently used dropped first. The low-precision weight copies
    add half the float32 size of the linear and convolution weights.

    Eager calls (no graph): without CUDA, with gradients enabled, with any tensor off CUDA, with a
    keyword that is neither a tensor nor hashable, or while another graph is being captured.

    Args:
        module: The module to replay, ``forward(x, sigma, **cond) -> Tensor``; called without σ (a vocoder),
            ``forward(x, **cond) -> Tensor``.
        max_graphs: Graphs kept at once (>= 1).
    """

    def __init__(self, module: nn.Module, max_graphs: int = 4) -> None:
        super().__init__()
        if max_graphs < 1:
            raise ValueError(f"graphs.py: max_graphs must be >= 1, got {max_graphs}")
        self.module = module
        self.max_graphs = int(max_graphs)
        self._graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self._eager: set[Hashable] = set()  # signatures whose capture failed
        self._pool: Any = None  # one memory pool for all graphs, made at the first capture
        # (owner, its parameter or buffer table, name, tensor, data_ptr) at capture; held: the graphs read them
        self._weights: list[tuple[nn.Module, dict, str, Tensor, int]] = []
        self._children: list[int] = []  # ids of the module's children at capture
        self._shadows: dict[torch.dtype, _Shadows] = {}  # low-precision weights per autocast dtype
        self._warned = False

    @property
    def graphs(self) -> int:
        """Number of graphs held."""
        return len(self._graphs)

    def reset(self) -> None:
        """Drop all graphs, their pool and the record of failed captures."""
        self._graphs.clear()
        self._eager.clear()
        self._pool = None
        self._weights = []
        self._children = []
        self._shadows = {}

    def forward(self, x: Tensor, sigma: Tensor | float | None = None, **cond: Any) -> Tensor:
        if not x.is_cuda or torch.is_grad_enabled() or torch.cuda.is_current_stream_capturing():
            return self._call(x, sigma, cond)
        signature = _signature(x, sigma, cond)
        if signature is None:
            return self._call(x, sigma, cond)
        key, tensors, names = signature
        if key in self._eager or any(not t.is_cuda for t in tensors):
            return self._call(x, sigma, cond)
        if self._stale():
            self.reset()
        with torch.cuda.device(x.device), _mirrored_autocast():
            shadows = self._autocast_shadows()
            if shadows is not None:  # weights updated in place since the last call: their copies follow
                shadows.refresh()
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._capture(key, tensors, names, cond)
                if entry is None:
                    return self._call(x, sigma, cond)
            else:
                self._graphs.move_to_end(key)
                for static, new in zip(entry.inputs, tensors):
                    static.copy_(new)
            entry.graph.replay()
            return entry.output.clone()

    def _call(self, x: Tensor, sigma: Tensor | float | None, cond: Mapping[str, Any]) -> Tensor:
        """The module itself: ``module(x, sigma, **cond)``, or ``module(x, **cond)`` without σ."""
        return self.module(x, **cond) if sigma is None else self.module(x, sigma, **cond)

    def _call_static(self, inputs: list[Tensor], names: list[str], cond: Mapping[str, Any]) -> Tensor:
        """The module on the static buffers (tensor keywords from the buffers, the others as given)."""
        positional = len(inputs) - len(names)  # x, and σ where the call had one
        kwargs = dict(cond)
        kwargs.update(zip(names, inputs[positional:]))
        shadows = self._autocast_shadows()
        if shadows is None:
            return self._call(inputs[0], inputs[1] if positional == 2 else None, kwargs)
        args = tuple(inputs[:positional])
        # tie_weights=False: a weight tied to a non-linear layer (an embedding) keeps its float32 tensor there
        return torch.func.functional_call(self.module, shadows.tensors, args, kwargs, tie_weights=False)

    def _autocast_shadows(self) -> _Shadows | None:
        """The low-precision weight copies for the current CUDA autocast (made on first use), or None when
        autocast is off or not to bf16/fp16."""
        dtype = torch.get_autocast_dtype("cuda")
        if not torch.is_autocast_enabled("cuda") or dtype not in (torch.bfloat16, torch.float16):
            return None
        if dtype not in self._shadows:
            self._shadows[dtype] = _Shadows.of(self.module, dtype)
        return self._shadows[dtype]

    def _capture(
        self, key: Hashable, tensors: list[Tensor], names: list[str], cond: Mapping[str, Any]
    ) -> _Graph | None:
        """Warm up and capture one graph (torch's pattern); None, after marking ``key`` eager, on failure (of
        the warm-up too: the eager call that follows then shows the module's own error, if it has one)."""
        with torch.inference_mode(False):  # static buffers that later calls may copy into outside it
            inputs = [t.clone() for t in tensors]  # outside the graph pool
        current = torch.cuda.current_stream()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        capturing = False
        try:
            side = torch.cuda.Stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._call_static(inputs, names, cond)
            current.wait_stream(side)
            capturing = True
            with torch.cuda.graph(graph, pool=self._pool):  # its exit ends the capture, also on error
                output = self._call_static(inputs, names, cond)
        except Exception as err:
            # capture_end failing (an invalidated capture) skips torch.cuda.graph's restoring of the stream
            torch.cuda.set_stream(current)
            if not capturing and compiler_error(err):
                raise  # a compiled module failing to compile in the warm-up fails eagerly too: once, as it is
            self._eager.add(key)
            if not self._graphs:  # nothing replays: the weight copies would only hold memory
                self._shadows = {}
            if not self._warned:
                self._warned = True
                root: BaseException = err
                while root.__context__ is not None:  # capture_end's error hides the call that broke capture
                    root = root.__context__
                lines = str(root).strip().splitlines()
                warnings.warn(
                    f"graphs.py: cannot capture {type(self.module).__name__} in a CUDA graph "
                    f"({type(root).__name__}: {lines[0] if lines else ''}); running it eagerly",
                    stacklevel=2,
                )
            return None
        if not self._weights:
            self._remember()
        self._graphs[key] = entry = _Graph(graph, inputs, output)
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry

    def _remember(self) -> None:
        """Note what the graphs read: every parameter and buffer (held, with the module that owns it under
        which name, and where it lives), and the module's children."""
        self._weights = [
            (owner, table, name, t, t.data_ptr())
            for owner in self.module.modules()
            for table in (owner._parameters, owner._buffers)
            for name, t in table.items()
            if t is not None
        ]
        self._children = [id(m) for m in self.module.children()]

    def _stale(self) -> bool:
        """Whether the graphs no longer match the module: a parameter or buffer is another tensor than at
        capture (one assigned anew, ``load_state_dict(assign=True)``) or lives elsewhere (a moved or cast
        module), or a child was replaced (e.g. the backbone swapped for its compiled wrapper, which shares the
        weights but not the kernels); before any capture, whether the low-precision copies' sources moved.
        A module deeper down replaced by another is not seen: :meth:`reset` after such surgery."""
        if not self._weights:  # nothing captured yet: only the weight copies can be out of date
            return any(shadows.stale() for shadows in self._shadows.values())
        return any(
            table.get(name) is not t or t.data_ptr() != ptr for _, table, name, t, ptr in self._weights
        ) or self._children != [id(m) for m in self.module.children()]
