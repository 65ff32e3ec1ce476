"""CUDA-graph replay of the denoiser: eager fall-through off CUDA, the graph key, the pipeline's ``graphs=``
switch, and (on a GPU) graphed sampling equal to eager sampling with the second call replaying."""

from __future__ import annotations

import pytest
import torch
from test_pipeline import tiny_audio_pipeline, tiny_denoiser
from torch import nn

from multidiff.nn.dit import DiT, DiTConfig
from multidiff.nn.graphs import CudaGraphed, _Shadows, _signature, autocast_shadows
from multidiff.pipeline import Pipeline, SamplingConfig

torch.set_num_threads(1)

SHAPE = (1, 16, 12)


def test_off_cuda_the_wrapper_calls_through() -> None:
    d = tiny_denoiser(num_classes=3)
    g = CudaGraphed(d)
    x = torch.randn(2, *SHAPE)
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        for sigma in (torch.tensor([1.5, 0.3]), 0.7):
            torch.testing.assert_close(g(x, sigma, labels=labels), d(x, sigma, labels=labels), rtol=0, atol=0)
    assert g.graphs == 0


def test_graphs_go_stale_when_weights_move_or_the_backbone_is_swapped() -> None:
    """What the graphs read is remembered at capture: moving or casting the weights, or swapping the backbone
    for another module over the same weights (its compiled wrapper), makes them stale; in-place updates do not."""
    d = tiny_denoiser(num_classes=3)
    g = CudaGraphed(d)
    assert not g._stale()  # nothing captured yet
    g._remember()
    with torch.no_grad():
        next(d.parameters()).add_(1.0)  # an in-place update (load_state_dict, EMA): the graphs still hold
    assert not g._stale()
    d.backbone = nn.Sequential(d.backbone)[0]  # the same module again: nothing changed
    assert not g._stale()
    original = d.backbone
    d.backbone = nn.Identity()  # another module
    assert g._stale()
    d.backbone = original
    assert not g._stale()
    d.double()  # new storage for every weight
    assert g._stale()
    g.reset()
    assert not g._stale()
    g._remember()
    layer = next(m for m in d.backbone.modules() if isinstance(m, nn.Conv2d))
    layer.weight = nn.Parameter(
        layer.weight.detach().clone()
    )  # another tensor (load_state_dict(assign=True))
    assert g._stale()


def test_before_any_capture_the_weight_copies_go_stale_when_their_sources_move() -> None:
    d = tiny_denoiser(num_classes=3)
    g = CudaGraphed(d)
    g._shadows[torch.bfloat16] = _Shadows.of(d, torch.bfloat16)  # made by a call whose capture then failed
    assert not g._stale()
    d.double()
    assert g._stale()
    g.reset()
    assert g._shadows == {} and not g._stale()


def test_a_float_sigma_and_its_tensor_share_a_key() -> None:
    x = torch.randn(2, *SHAPE)
    labels = torch.tensor([0, 1])
    key_float, tensors, names = _signature(x, 0.5, {"labels": labels, "context": None})
    key_tensor, _, _ = _signature(x, torch.full((2,), 0.5), {"context": None, "labels": labels})
    assert key_float == key_tensor
    assert tensors[1].shape == (2,) and tensors[1].dtype == torch.float32
    assert names == ["labels"]
    assert _signature(x, 0.5, {"labels": labels[:1]})[0] != key_float  # another shape, another graph
    assert _signature(x, 0.5, {"flag": True})[0] != _signature(x, 0.5, {"flag": 1})[0]
    assert _signature(x, 0.5, {"steps": [1, 2]}) is None  # unhashable: eager


def test_a_module_without_sigma_has_its_own_key_and_calls_through() -> None:
    """A vocoder is graphed as ``f(x)``: no σ in its key or its call, off CUDA the plain call."""
    x = torch.randn(2, *SHAPE)
    key, tensors, names = _signature(x, None, {})
    assert len(tensors) == 1 and tensors[0] is x and names == []
    assert key != _signature(x, 0.5, {})[0]
    pipe = tiny_audio_pipeline()
    g = CudaGraphed(pipe.adapter.vocoder)
    mel = torch.randn(1, pipe.adapter.spec.n_mels, 10)
    torch.testing.assert_close(g(mel), pipe.adapter.vocoder(mel), rtol=0, atol=0)
    assert g.graphs == 0


def test_audio_generate_decodes_through_the_vocoder_it_is_given() -> None:
    """Off CUDA no graphed vocoder is made; a vocoder passed to decode replaces the adapter's own."""
    pipe = tiny_audio_pipeline()
    wave = pipe.generate(1, 0.1, seed=2, progress=False)
    assert pipe._graphed_vocoder is None
    seen = []

    def vocoder(mel: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(mel.shape))
        return pipe.adapter.vocoder(mel)

    again = pipe.generate(1, 0.1, seed=2, progress=False, decode={"vocoder": vocoder})
    assert seen == [(1, pipe.adapter.spec.n_mels, pipe.adapter.latent_shape(0.1)[-1])]
    torch.testing.assert_close(again, wave, rtol=0, atol=0)


def _tiny_dit() -> DiT:
    torch.manual_seed(0)
    dit = DiT(DiTConfig(in_channels=2, width=32, depth=2, heads=2, num_classes=3))
    with torch.no_grad():
        for p in dit.parameters():
            if not p.any():  # the zero-initialised adaLN and output layers: a non-trivial function
                p.normal_(0, 0.05)
    return dit.eval()


def test_low_precision_weight_copies_give_the_autocast_result_exactly() -> None:
    """Under autocast, the module run with bf16 copies of its linear and convolution weights in place
    (what the graphs read) equals the module casting its float32 weights at every call, bit for bit."""
    unet = tiny_denoiser(num_classes=3)
    dit = _tiny_dit()
    labels = torch.tensor([0, 3])
    for module, x in ((unet, torch.randn(2, *SHAPE)), (dit, torch.randn(2, 2, 8, 8))):
        shadows = autocast_shadows(module, torch.bfloat16)
        layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        assert len(shadows) == sum(1 for m in layers for _ in m.parameters(recurse=False))
        assert all(t.dtype == torch.bfloat16 for t in shadows.values())
        kept = {n for n, _ in module.named_parameters() if n not in shadows}  # autocast keeps them float32
        assert any(n.endswith("label_embed.table.weight") for n in kept), kept
        sigma = torch.tensor([1.5, 0.2])
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            plain = module(x, sigma, labels=labels)
            copied = torch.func.functional_call(module, shadows, (x, sigma), {"labels": labels})
        torch.testing.assert_close(copied, plain, rtol=0, atol=0)


def test_only_plain_linear_and_convolution_layers_are_copied() -> None:
    """Subclasses may read their weight otherwise (a float8 linear scales it) and parametrized layers compute
    it: neither is copied. An embedding tied to a linear head keeps its float32 weight under its own name."""
    from torch.nn.utils import parametrizations

    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * self.weight.abs().max()

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(5, 4), nn.Linear(4, 5, bias=False)
            self.head.weight = self.embed.weight  # tied
            self.plain, self.scaled = nn.Linear(4, 4), Scaled(4, 4)
            self.normed = parametrizations.weight_norm(nn.Linear(4, 4))
            self.up = nn.ConvTranspose1d(4, 4, 2)

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            e = self.embed(ids)  # (B, 4)
            h = self.normed(self.scaled(self.plain(e))) + self.up(e[..., None]).sum(-1)
            return e, self.head(h)

    model = Model()
    shadows = autocast_shadows(model, torch.bfloat16)
    assert set(shadows) == {"plain.weight", "plain.bias", "head.weight", "up.weight", "up.bias"}
    ids = torch.tensor([1, 3])
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        e, out = torch.func.functional_call(model, shadows, (ids,), tie_weights=False)
        e_ref, out_ref = model(ids)
    assert e.dtype == torch.float32  # the embedding read its own float32 weight
    torch.testing.assert_close((e, out), (e_ref, out_ref), rtol=0, atol=0)


def test_weight_copies_follow_in_place_updates_and_tied_weights_share_one() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 4))
    model[2].weight = model[0].weight  # tied
    shadows = _Shadows.of(model, torch.bfloat16)
    assert set(shadows.tensors) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert shadows.tensors["0.weight"] is shadows.tensors["2.weight"] and len(shadows.sources) == 3
    x = torch.randn(3, 4)
    with torch.autocast("cpu", torch.bfloat16):
        torch.testing.assert_close(
            torch.func.functional_call(model, shadows.tensors, (x,), tie_weights=False),
            model(x),
            rtol=0,
            atol=0,
        )
    shadows.tensors["2.bias"].zero_()  # a marker: copying this unchanged bias again would overwrite it
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # an in-place update (load_state_dict, EMA): its version moves
    shadows.refresh()
    torch.testing.assert_close(
        shadows.tensors["0.weight"], model[0].weight.detach().bfloat16(), rtol=0, atol=0
    )
    assert not shadows.tensors["2.bias"].any()  # its source did not change: not copied again
    assert not shadows.stale()
    model.double()  # new storage in another dtype: the copies no longer stand for the weights
    assert shadows.stale()


def test_audio_generate_with_graphs_on_decodes_through_the_replayed_vocoder(monkeypatch) -> None:
    """The graphed branch, on the CPU (graphs forced on; CudaGraphed calls through off CUDA): the vocoder is
    wrapped once, kept across calls, and the waveform is the eager one."""
    import multidiff.pipeline
    import multidiff.pipeline_audio

    pipe = tiny_audio_pipeline()
    eager = pipe.generate(1, 0.1, seed=2, progress=False)
    for module in (multidiff.pipeline, multidiff.pipeline_audio):
        monkeypatch.setattr(module, "use_graphs", lambda graphs, device: True)
    first = pipe.generate(1, 0.1, seed=2, progress=False)
    wrapper = pipe._graphed_vocoder
    assert isinstance(wrapper, CudaGraphed) and wrapper.module is pipe.adapter.vocoder
    second = pipe.generate(1, 0.1, seed=2, progress=False)
    assert pipe._graphed_vocoder is wrapper
    for wave in (first, second):
        torch.testing.assert_close(wave, eager, rtol=0, atol=0)


def test_graphs_true_off_cuda_is_refused() -> None:
    pipe = Pipeline(tiny_denoiser(), sampling=SamplingConfig(sampler="euler", steps=2))
    with pytest.raises(ValueError, match="graphs=True needs a pipeline on a CUDA device"):
        pipe.sample(1, SHAPE, seed=0, progress=False, graphs=True)


def test_graphs_none_off_cuda_samples_eagerly() -> None:
    pipe = Pipeline(
        tiny_denoiser(num_classes=2), sampling=SamplingConfig(sampler="heun", steps=3, guidance=2.0)
    )
    auto = pipe.sample(2, SHAPE, seed=3, label=1, progress=False)
    eager = pipe.sample(2, SHAPE, seed=3, label=1, progress=False, graphs=False)
    torch.testing.assert_close(auto, eager, rtol=0, atol=0)
    assert pipe._graphed is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graphed_sampling_equals_eager_and_replays() -> None:
    pipe = Pipeline(
        tiny_denoiser(num_classes=2), sampling=SamplingConfig(sampler="dpmpp_2m", steps=6, guidance=2.0)
    ).to("cuda")
    eager = pipe.sample(2, SHAPE, seed=1, label=1, progress=False, graphs=False)
    first = pipe.sample(2, SHAPE, seed=1, label=1, progress=False, graphs=True)
    graphed = pipe._graphed
    assert graphed is not None and graphed.graphs == 1  # CFG: one signature, the doubled batch
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    second = pipe.sample(2, SHAPE, seed=1, label=1, progress=False)  # graphs=None: on, on CUDA
    assert pipe._graphed is graphed and graphed.graphs == 1  # replayed, not captured again
    torch.testing.assert_close(second, eager, rtol=1e-5, atol=1e-5)
    pipe.to("cpu")
    assert pipe._graphed is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graphed_audio_equals_eager_and_the_vocoder_replays() -> None:
    """generate() on CUDA replays the denoiser and the Griffin-Lim vocoder: the same waveform as eager."""
    pipe = tiny_audio_pipeline(num_classes=2, sampling=SamplingConfig(sampler="dpmpp_2m", steps=4)).to("cuda")
    eager = pipe.generate(1, 0.25, seed=1, label="class1", progress=False, graphs=False)
    assert pipe._graphed_vocoder is None
    first = pipe.generate(1, 0.25, seed=1, label="class1", progress=False)  # graphs=None: on, on CUDA
    vocoder = pipe._graphed_vocoder
    assert vocoder is not None and vocoder.graphs == 1
    second = pipe.generate(1, 0.25, seed=1, label="class1", progress=False)
    assert pipe._graphed_vocoder is vocoder and vocoder.graphs == 1  # replayed, not captured again
    for wave in (first, second):
        torch.testing.assert_close(wave, eager, rtol=1e-4, atol=1e-4)
    pipe.to("cpu")
    assert pipe._graphed_vocoder is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_replays_read_bf16_weight_copies_that_follow_in_place_updates() -> None:
    """Under bf16 autocast the graphs read bf16 copies of the float32 weights: the replay equals the eager
    call, and still does after the weights change in place (the copies are copied again)."""
    d = tiny_denoiser(num_classes=3).to("cuda").eval()
    g = CudaGraphed(d)
    x, sigma = torch.randn(2, *SHAPE, device="cuda"), torch.tensor([1.5, 0.2], device="cuda")
    labels = torch.tensor([0, 3], device="cuda")
    for _ in range(3):  # a fresh autocast each pass: its cast cache would hold the eager call's old casts
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            graphed, eager = g(x, sigma, labels=labels), d(x, sigma, labels=labels)
            torch.testing.assert_close(graphed, eager, rtol=0, atol=0)
            next(p for p in d.backbone.parameters() if p.ndim == 4).mul_(1.5)  # a conv weight, in place
    assert g.graphs == 1 and torch.bfloat16 in g._shadows
