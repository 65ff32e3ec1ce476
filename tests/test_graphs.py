"""CUDA-graph replay of the denoiser: eager fall-through off CUDA, the graph key, the pipeline's ``graphs=``
switch, and (on a GPU) graphed sampling equal to eager sampling with the second call replaying."""

from __future__ import annotations

import pytest
import torch
from test_pipeline import tiny_audio_pipeline, tiny_denoiser
from torch import nn

from multidiff.nn.graphs import CudaGraphed, _signature
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
