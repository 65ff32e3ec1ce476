"""Pipelines: save/load round trips and their errors, per-sample seeds, guidance with the null label,
inpainting, SDEdit, MultiDiffusion windows, and the audio pipeline's shapes, masks and continuation."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from media_utils import tiny_vae

from multidiff.core.denoiser import Denoiser
from multidiff.core.guidance import ClassifierFreeGuidance, Inpaint
from multidiff.core.schedules import VPSchedule
from multidiff.modalities.audio import MelAdapter, MelAdapterConfig, MelSpec
from multidiff.modalities.base import Extent
from multidiff.modalities.vocoders import HiFiGAN, HiFiGANConfig
from multidiff.nn.unet import UNet, UNetConfig
from multidiff.pipeline import (
    AudioPipeline,
    Pipeline,
    SamplingConfig,
    StaticThreshold,
    WindowedDenoiser,
    load_pipeline,
    mel_frame_mask,
    window_starts,
)

torch.set_num_threads(1)

SPEC = MelSpec(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=16, fmax=4000.0, edge_pad=96
)


def tiny_denoiser(
    num_classes: int | None = None, schedule=None, prediction: str = "edm", seed: int = 0
) -> Denoiser:
    torch.manual_seed(seed)
    cfg = UNetConfig(
        in_channels=1,
        channels=(8, 16),
        num_res_blocks=1,
        attention_levels=(),
        mid_attention=False,
        head_dim=8,
        norm_groups=4,
        num_classes=num_classes,
        noise_freq_dim=16,
        emb_dim=32,
    )
    unet = UNet(cfg)
    for name, p in unet.named_parameters():  # zero-initialised layers (the output, each residual branch's
        if name.endswith("conv_out.weight") or name.endswith("conv2.weight"):  # last conv) would hide labels
            torch.nn.init.normal_(p, std=0.05)
    return Denoiser(unet, prediction, schedule, sigma_data=0.5)


def tiny_audio_pipeline(num_classes: int | None = None, vocoder=None, **kwargs) -> AudioPipeline:
    adapter = MelAdapter(MelAdapterConfig(spec=SPEC), vocoder)
    t = torch.arange(8000) / 8000
    adapter.fit_stats([(0.5 * torch.sin(2 * math.pi * 440 * t) + 0.01 * torch.randn(8000))[None, None]])
    labels = [f"class{k}" for k in range(num_classes)] if num_classes else None
    sampling = kwargs.pop("sampling", SamplingConfig(sampler="euler", steps=4))
    return AudioPipeline(tiny_denoiser(num_classes), adapter, sampling=sampling, labels=labels, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------


def test_audio_pipeline_round_trip_gives_identical_samples(tmp_path) -> None:
    pipe = tiny_audio_pipeline(
        num_classes=2, window=12, sampling=SamplingConfig(sampler="euler_ancestral", steps=3, guidance=2.0)
    )
    a = pipe.generate(2, 0.25, seed=5, label="class1", progress=False)
    pipe.save_pretrained(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.json", "denoiser.safetensors"]
    loaded = load_pipeline(tmp_path / "p")
    assert type(loaded) is AudioPipeline
    assert loaded.sampling == pipe.sampling and loaded.labels == ["class0", "class1"]
    assert loaded.window == 12 and loaded.overlap == 3 and loaded.sample_rate == 8000
    assert torch.equal(loaded.adapter.mean, pipe.adapter.mean) and torch.equal(
        loaded.adapter.std, pipe.adapter.std
    )
    b = loaded.generate(2, 0.25, seed=5, label="class1", progress=False)
    assert a.shape == (2, 1, 2000) and torch.equal(a, b)


def test_round_trip_with_a_vp_schedule_and_a_hifigan_vocoder(tmp_path) -> None:
    torch.manual_seed(1)
    voc = HiFiGAN(
        HiFiGANConfig(
            n_mels=16,
            upsample_rates=(4, 4, 4),
            upsample_kernel_sizes=(8, 8, 8),
            upsample_initial_channel=16,
            resblock="2",
            resblock_kernel_sizes=(3,),
            resblock_dilation_sizes=((1, 3),),
        ),
        SPEC,
    )
    adapter = MelAdapter(MelAdapterConfig(spec=SPEC), voc)
    adapter.set_stats(torch.zeros(16), torch.ones(16))
    pipe = AudioPipeline(
        tiny_denoiser(schedule=VPSchedule(), prediction="v"),
        adapter,
        sampling=SamplingConfig(sampler="ddim", steps=3),
    )
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "vocoder.safetensors").is_file()
    loaded = AudioPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.denoiser.schedule, VPSchedule) and loaded.denoiser.prediction == "v"
    assert isinstance(loaded.adapter.vocoder, HiFiGAN)
    assert torch.equal(
        pipe.generate(1, 0.1, seed=0, progress=False), loaded.generate(1, 0.1, seed=0, progress=False)
    )


def test_save_with_ema_weights(tmp_path) -> None:
    pipe = Pipeline(tiny_denoiser())
    ema = {k: v + 1 for k, v in pipe.denoiser.state_dict().items()}
    pipe.save_pretrained(tmp_path, state_dict=ema)
    loaded = Pipeline.from_pretrained(tmp_path)
    for k, v in loaded.denoiser.state_dict().items():
        assert torch.equal(v, ema[k])
    # weights that would not load back (a LoRA's prefixed keys, a part of the model) are refused at saving
    prefixed = {f"base_model.{k}": v for k, v in ema.items()}
    for bad in (prefixed, dict(list(ema.items())[:3])):
        with pytest.raises(ValueError, match="state_dict must hold the denoiser's keys and shapes"):
            pipe.save_pretrained(tmp_path / "bad", state_dict=bad)
    assert not (tmp_path / "bad").exists()


def test_load_errors_name_the_folder_and_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such pipeline folder"):
        Pipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"missing config.json"):
        Pipeline.from_pretrained(tmp_path)
    tiny_audio_pipeline().save_pretrained(tmp_path / "a")
    broken = tmp_path / "b"
    shutil.copytree(tmp_path / "a", broken)
    (broken / "denoiser.safetensors").unlink()
    with pytest.raises(ValueError, match=rf"{broken}: missing denoiser.safetensors"):
        Pipeline.from_pretrained(broken)
    # weights of another size
    other = tmp_path / "c"
    shutil.copytree(tmp_path / "a", other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["backbone"]["config"]["channels"] = [8, 24]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError, match=r"denoiser.safetensors: the denoiser weights do not match config.json: .*shape"
    ):
        Pipeline.from_pretrained(other)
    # a folder of another pipeline kind
    plain = tmp_path / "d"
    Pipeline(tiny_denoiser()).save_pretrained(plain)
    with pytest.raises(ValueError, match=r"describes a 'Pipeline' pipeline, which AudioPipeline cannot load"):
        AudioPipeline.from_pretrained(plain)
    (plain / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="could not read the pipeline config"):
        Pipeline.from_pretrained(plain)


# ---------------------------------------------------------------------------------------------------
# Seeds, guidance, inpainting, SDEdit
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_per_sample_seeds_do_not_depend_on_the_batch(sampler: str) -> None:
    pipe = Pipeline(tiny_denoiser(), sampling=SamplingConfig(sampler=sampler, steps=4))
    batch = pipe.sample(4, (1, 16, 12), seed=10, progress=False)
    for k in (0, 2):
        single = pipe.sample(1, (1, 16, 12), seed=10 + k, progress=False)
        torch.testing.assert_close(batch[k : k + 1], single, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)  # different seeds, different samples


def test_guidance_uses_the_null_label() -> None:
    pipe = Pipeline(tiny_denoiser(num_classes=3), sampling=SamplingConfig(steps=2))
    labels = pipe.label_tensor([0, 2], 2)
    d = pipe.guided_denoiser({"labels": labels}, guidance=3.0)
    assert isinstance(d, ClassifierFreeGuidance)
    x, sigma = torch.randn(2, 1, 16, 8), torch.tensor([1.0, 2.0])
    c = pipe.denoiser(x, sigma, labels=labels)
    u = pipe.denoiser(x, sigma, labels=torch.full((2,), 3))
    assert (c - u).abs().max() > 1e-3  # the label reaches the output, so the check below can fail
    torch.testing.assert_close(d(x, sigma, labels=labels), u + 3.0 * (c - u), rtol=1e-5, atol=1e-5)
    assert pipe.guided_denoiser({}, guidance=3.0) is pipe.denoiser  # nothing to guide without labels
    with pytest.raises(ValueError, match="guidance 3 needs a label or a prompt"):  # not silently ignored
        pipe.sample(1, (1, 16, 8), guidance=3.0, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        pipe.label_tensor(3, 1)
    with pytest.raises(ValueError, match="without class labels"):
        Pipeline(tiny_denoiser()).label_tensor(0, 1)


def test_bf16_weights_sample_in_bf16_save_exactly_and_cast_back(tmp_path) -> None:
    pipe = Pipeline(
        tiny_denoiser(num_classes=3), sampling=SamplingConfig(sampler="euler", steps=4, guidance=2.0)
    )
    kw = dict(label=[0, 2], seed=1, progress=False)
    ref = pipe.sample(2, (1, 16, 8), **kw)
    assert pipe.to(dtype=torch.bfloat16) is pipe
    assert {p.dtype for p in pipe.backbone.parameters()} == {torch.bfloat16}
    half = pipe.sample(2, (1, 16, 8), **kw)  # runs under bf16 autocast on the CPU: inputs cast to the weights
    assert half.dtype == torch.float32 and not torch.equal(half, ref)
    assert (half - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 rounding, not a different model
    pipe.save_pretrained(tmp_path / "p")
    loaded = load_pipeline(tmp_path / "p")  # built in float32: the bf16 values, exactly
    for a, b in zip(loaded.backbone.parameters(), pipe.backbone.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b.float())
    pipe.to(dtype=torch.float32)
    assert {p.dtype for p in pipe.backbone.parameters()} == {torch.float32}
    assert torch.equal(pipe.sample(2, (1, 16, 8), **kw), loaded.sample(2, (1, 16, 8), **kw))
    with pytest.raises(ValueError, match="dtype must be torch.bfloat16 or torch.float32"):
        pipe.to(dtype=torch.float16)
    pipe.backbone.conv_out.to(torch.bfloat16)  # a backbone of mixed dtypes keeps them when it only moves
    pipe.to("cpu")
    assert pipe.backbone.conv_out.weight.dtype == torch.bfloat16
    assert pipe.backbone.conv_in.weight.dtype == torch.float32


def test_guidance_interval_and_rescale_come_from_the_sampling_config(tmp_path) -> None:
    """``SamplingConfig.guidance_interval`` and ``guidance_rescale`` reach the guided denoiser and survive a
    save/load: outside the interval the conditional prediction is returned, inside rescaled guidance."""
    from multidiff.core.guidance import cfg

    sampling = SamplingConfig(steps=2, guidance=6.0, guidance_interval=(0.5, 5.0), guidance_rescale=0.7)
    pipe = Pipeline(tiny_denoiser(num_classes=3), sampling=sampling)
    labels = pipe.label_tensor([0, 2, 1], 3)
    x, sigma = torch.randn(3, 1, 16, 8), torch.tensor([0.2, 2.0, 9.0])  # below, inside, above (0.5, 5]
    want = cfg(pipe.denoiser, 6.0, uncond={"labels": 3}, interval=(0.5, 5.0), rescale=0.7)(x, sigma, labels=labels)
    got = pipe.guided_denoiser({"labels": labels}, guidance=6.0)(x, sigma, labels=labels)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    c = pipe.denoiser(x, sigma, labels=labels)
    u = pipe.denoiser(x, sigma, labels=torch.full((3,), 3))
    torch.testing.assert_close(got[[0, 2]], c[[0, 2]], rtol=0, atol=1e-6)  # outside: unguided
    plain = u + 6.0 * (c - u)  # inside: guided, and rescaled (not plain guidance)
    assert (got[1] - c[1]).abs().max() > 1e-2 and (got[1] - plain[1]).abs().max() > 1e-3
    pipe.save_pretrained(tmp_path / "p")
    loaded = load_pipeline(tmp_path / "p")
    assert tuple(loaded.sampling.guidance_interval) == (0.5, 5.0) and loaded.sampling.guidance_rescale == 0.7
    again = loaded.guided_denoiser({"labels": labels}, guidance=6.0)(x, sigma, labels=labels)
    torch.testing.assert_close(again, got, rtol=0, atol=1e-6)


def test_sigma_grids_follow_the_sampling_config() -> None:
    from multidiff.core.schedules import exponential, karras

    d = tiny_denoiser()
    lo, hi = d.schedule.sigma_min, d.schedule.sigma_max
    karras5 = Pipeline(d, sampling=SamplingConfig(grid="karras", rho=5.0)).sigmas(8)
    assert torch.equal(karras5, karras(8, lo, hi, 5.0)) and not torch.equal(karras5, karras(8, lo, hi, 7.0))
    assert torch.equal(Pipeline(d, sampling=SamplingConfig(grid="exponential")).sigmas(8), exponential(8, lo, hi))
    pipe = Pipeline(d, sampling=SamplingConfig(steps=6))
    assert torch.equal(pipe.sigmas(), d.schedule.default_grid(6))
    assert torch.equal(pipe.sigmas(8, grid="karras"), karras(8, lo, hi, 7.0))  # the call overrides the config
    with pytest.raises(ValueError, match="unknown grid"):
        pipe.sigmas(8, grid="cosine")


def test_inpainting_keeps_the_known_region() -> None:
    pipe = Pipeline(tiny_denoiser(), sampling=SamplingConfig(sampler="heun", steps=4))
    known = torch.randn(2, 1, 16, 20)
    mask = torch.zeros(1, 1, 1, 20)
    mask[..., :8] = 1
    out = pipe.sample(2, (1, 16, 20), seed=0, known=known, mask=mask, progress=False)
    torch.testing.assert_close(out[..., :8], known[..., :8], rtol=0, atol=1e-6)
    assert (out[..., 8:] - known[..., 8:]).abs().mean() > 0.1
    assert isinstance(pipe.guided_denoiser({}, guidance=1.0, known=known, mask=mask), Inpaint)


def test_static_threshold_keeps_samples_in_the_training_range(tmp_path) -> None:
    lo = torch.linspace(-1.0, -0.2, 16).reshape(1, 16, 1)  # one bound per mel bin
    hi = lo + 0.5
    pipe = Pipeline(tiny_denoiser(), sampling=SamplingConfig(sampler="dpmpp_2m", steps=4), x0_range=(lo, hi))
    assert isinstance(pipe.guided_denoiser({}, guidance=1.0), StaticThreshold)
    out = pipe.sample(3, (1, 16, 10), seed=0, progress=False)
    assert bool((out >= lo - 1e-6).all() and (out <= hi + 1e-6).all())
    free = Pipeline(pipe.denoiser, sampling=pipe.sampling).sample(3, (1, 16, 10), seed=0, progress=False)
    assert not bool(((free >= lo) & (free <= hi)).all())  # without the clamp the samples leave the range
    pipe.save_pretrained(tmp_path)
    loaded = Pipeline.from_pretrained(tmp_path)
    assert torch.equal(loaded.x0_range[0], lo) and torch.equal(loaded.x0_range[1], hi)
    assert torch.equal(loaded.sample(3, (1, 16, 10), seed=0, progress=False), out)
    with pytest.raises(ValueError, match="lo <= hi"):
        Pipeline(tiny_denoiser(), x0_range=(hi, lo))


def test_sdedit_strength_starts_part_way_down_the_grid() -> None:
    pipe = Pipeline(tiny_denoiser(), sampling=SamplingConfig(sampler="euler", steps=10))
    grid = pipe.sigmas(10)
    known = torch.randn(1, 1, 16, 8)
    seen = []
    pipe.sample(
        1,
        (1, 16, 8),
        seed=0,
        known=known,
        strength=0.3,
        progress=False,
        callback=lambda d: seen.append(d["sigma"]),
    )
    assert len(seen) == 3 and seen[0] == pytest.approx(float(grid[7]))
    # a very small strength changes the input very little; strength 1 starts from sigma_max
    near = pipe.sample(1, (1, 16, 8), seed=0, known=known, strength=0.1, progress=False)
    far = pipe.sample(1, (1, 16, 8), seed=0, known=known, strength=1.0, progress=False)
    assert (near - known).abs().mean() < 0.5 * (far - known).abs().mean()
    with pytest.raises(ValueError, match="needs known"):
        pipe.sample(1, (1, 16, 8), strength=0.5, progress=False)


# ---------------------------------------------------------------------------------------------------
# MultiDiffusion windows
# ---------------------------------------------------------------------------------------------------


def test_window_starts() -> None:
    assert window_starts(10, 16, 4) == [0]
    assert window_starts(28, 16, 4) == [0, 12]
    assert window_starts(30, 16, 4) == [0, 12, 14]
    with pytest.raises(ValueError):
        window_starts(30, 16, 16)


def test_windowed_denoiser_averages_x0_over_windows() -> None:
    # A denoiser whose output is the window's own mean along time: the windowed output at each position
    # is the average of the means of the windows covering it (MultiDiffusion, Eq. 5).
    def window_mean(x, sigma, *, extra):
        assert extra.shape[-1] == x.shape[-1] == 4  # conditioning laid out like x is cut too
        return x.mean(-1, keepdim=True).expand_as(x) + extra

    x = torch.arange(10.0).reshape(1, 1, 1, 10)
    extra = torch.zeros(1, 1, 1, 10)
    d = WindowedDenoiser(window_mean, length=4, overlap=2, windows_per_call=2)
    out = d(x, torch.ones(1), extra=extra)
    means = {s: x[..., s : s + 4].mean().item() for s in window_starts(10, 4, 2)}  # starts 0, 2, 4, 6
    expected = [
        sum(m for s, m in means.items() if s <= t < s + 4) / sum(1 for s in means if s <= t < s + 4)
        for t in range(10)
    ]
    torch.testing.assert_close(out.flatten(), torch.tensor(expected))

    # a position-wise denoiser is unchanged by windowing; per-sample σ and labels reach every window
    def pointwise(x, sigma, *, labels):
        return x * sigma[:, None, None, None] + labels[:, None, None, None]

    x = torch.randn(2, 1, 16, 40)
    sigma, labels = torch.tensor([0.5, 3.0]), torch.tensor([1, 2])
    out = WindowedDenoiser(pointwise, 16, 4, windows_per_call=2)(x, sigma, labels=labels)
    torch.testing.assert_close(out, pointwise(x, sigma, labels=labels))


def test_long_audio_uses_windows() -> None:
    pipe = tiny_audio_pipeline(window=16)
    assert isinstance(pipe.guided_denoiser({}, guidance=1.0, length=40), WindowedDenoiser)
    assert pipe.guided_denoiser({}, guidance=1.0, length=16) is pipe.denoiser
    wave = pipe.generate(1, 0.5, seed=0, progress=False)  # 62 frames > 16
    assert wave.shape == (1, 1, 4000) and torch.isfinite(wave).all()


# ---------------------------------------------------------------------------------------------------
# Audio specifics
# ---------------------------------------------------------------------------------------------------


def test_mel_frame_mask_marks_frames_whose_window_is_known() -> None:
    n = 1280
    mask = torch.zeros(n)
    mask[:640] = 1
    frames = mel_frame_mask(mask, SPEC).flatten()
    assert frames.shape == (SPEC.num_frames(n),)
    # frame t spans samples [64 t - 96, 64 t + 160): known iff 64 t + 160 <= 640 (the left edge is padded)
    expected = torch.tensor([float(64 * t + 160 <= 640) for t in range(frames.numel())])
    assert torch.equal(frames, expected)


def test_continuation_keeps_the_clip_frames() -> None:
    pipe = tiny_audio_pipeline()
    t = torch.arange(2000) / 8000
    clip = (0.3 * torch.sin(2 * math.pi * 300 * t))[None]  # (1, N') = 0.25 s
    n = pipe.num_samples(0.5)
    extent = Extent(seconds=0.5)
    known = pipe.adapter.encode_known(clip, extent)
    mask = pipe.adapter.latent_mask(torch.arange(n) < 2000, extent)
    latents = pipe.sample(2, known.shape[1:], seed=0, known=known, mask=mask, progress=False)
    keep = mask.bool().expand_as(latents)
    assert keep.sum() > 0
    torch.testing.assert_close(latents[keep], known.expand_as(latents)[keep], rtol=0, atol=1e-6)
    waves = pipe.continue_audio(clip, 0.5, num=2, seed=0, progress=False)
    assert waves.shape == (2, 1, 4000)
    # the two samples share the clip's part and differ after it (Griffin-Lim spreads a little across the seam)
    first, rest = (waves[0] - waves[1]).abs()[0, :1500].mean(), (waves[0] - waves[1]).abs()[0, 2500:].mean()
    assert first < 0.2 * rest, (first, rest)
    mel_clip = pipe.adapter.encode(clip[None])  # the kept part, vocoded again, keeps the clip's mels
    mel_out = pipe.adapter.encode(waves[:1, :, :2000])
    inner = slice(3, mel_clip.shape[-1] - 4)  # frames whose windows lie inside the clip, both cuts
    err = (mel_out[..., inner] - mel_clip[..., inner]).abs().mean()  # normalised log-mels span about 40
    assert err < 1.0, err  # (a generated continuation is about 11 away from the clip's frames)


def test_audio_to_audio_and_labels_by_name() -> None:
    pipe = tiny_audio_pipeline(num_classes=2)
    wave = 0.3 * torch.sin(2 * math.pi * 500 * torch.arange(1600) / 8000)[None]
    out = pipe.audio_to_audio(wave, 0.5, seed=0, label="class0", progress=False)
    assert out.shape == (1, 1, 1600)
    # the strength sets how far from the input it starts: a light touch stays near it, full strength does not
    mel_in = pipe.adapter.encode(wave[None])
    dist = {}
    for strength in (0.1, 1.0):
        wave_out = pipe.audio_to_audio(wave, strength, seed=0, label="class0", progress=False)
        dist[strength] = (pipe.adapter.encode(wave_out) - mel_in).abs().mean().item()
    assert dist[0.1] < 0.5 * dist[1.0], dist
    with pytest.raises(ValueError, match="unknown label 'dog'"):
        pipe.generate(1, 0.1, label="dog", progress=False)
    a = pipe.generate(1, 0.1, label="class1", seed=0, progress=False)
    b = pipe.generate(1, 0.1, label=1, seed=0, progress=False)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------
# Video and image pipelines
# ---------------------------------------------------------------------------------------------------


def tiny_video_pipeline(channels: int = 3, cond: bool = True, vae=None, **kwargs):
    from multidiff.core.schedules import EDMSchedule
    from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
    from multidiff.modalities.video import VideoAdapter
    from multidiff.pipeline import VideoPipeline

    torch.manual_seed(0)
    unet = UNet(
        UNetConfig(
            in_channels=channels, channels=(8, 16), num_res_blocks=1, attention_levels=(), head_dim=8,
            norm_groups=4, emb_dim=32, noise_freq_dim=16, video=True, cond_channels=channels + 1 if cond else 0,
        )
    )  # fmt: skip
    config = ImageAdapterConfig(space="vae" if vae is not None else "pixels")
    image = ImageAdapter(config, vae)
    if vae is not None:
        image.set_stats(torch.linspace(-0.1, 0.1, 4), torch.linspace(0.5, 1.5, 4))
    sampling = SamplingConfig(sampler="euler", steps=3)
    return VideoPipeline(
        Denoiser(unet, "edm", EDMSchedule(), 0.5), VideoAdapter(image), sampling=sampling, **kwargs
    )


def test_video_pipeline_vae_round_trip_and_chunked_decode(tmp_path) -> None:
    from multidiff.pipeline import VideoPipeline

    pipe = tiny_video_pipeline(channels=4, vae=tiny_vae(), window=4, size=16)
    a = pipe.generate(2, 4, seed=3, progress=False)
    assert a.shape == (2, 4, 16, 16, 3) and a.dtype == torch.uint8
    # decoding one frame per VAE call gives the same frames
    assert torch.equal(pipe.generate(2, 4, seed=3, progress=False, decode_chunk=1), a)
    pipe.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "vae" / "config.json").is_file()  # the folder stands alone
    loaded = load_pipeline(tmp_path / "p")
    assert isinstance(loaded, VideoPipeline) and loaded.size == (16, 16) and loaded.window == 4
    assert torch.equal(loaded.adapter.image.std, pipe.adapter.image.std)
    assert torch.equal(loaded.generate(2, 4, seed=3, progress=False), a)


def test_frame_conditioned_pipeline_feeds_known_frames_as_channels() -> None:
    pipe = tiny_video_pipeline(size=8)
    seen: list[torch.Tensor] = []
    forward = pipe.backbone.forward

    def spy(x, c_noise, **kw):
        seen.append(kw["cond_channels"])
        return forward(x, c_noise, **kw)

    pipe.backbone.forward = spy
    pipe.generate(2, 3, seed=0, progress=False)
    assert seen and all(c.shape == (2, 4, 3, 8, 8) and float(c.abs().sum()) == 0 for c in seen)
    seen.clear()
    clip = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    out = pipe.continue_video(clip, 3, seed=0, progress=False)
    z = pipe.adapter.encode(clip[None])  # (1, 3, 2, 8, 8)
    for c in seen:
        assert (
            torch.allclose(c[:, :3, :2], z.expand(1, -1, -1, -1, -1)) and float(c[:, :3, 2].abs().sum()) == 0
        )
        assert torch.equal(c[:, 3, :2], torch.ones(1, 2, 8, 8)) and float(c[:, 3, 2].sum()) == 0
    assert torch.equal(out[0, :2], clip)  # and inpainting pins them


def test_long_video_windows_and_one_frame_images() -> None:
    pipe = tiny_video_pipeline(window=4, size=8)
    calls: list[int] = []
    forward = pipe.backbone.forward

    def spy(x, c_noise, **kw):
        calls.append(x.shape[2])
        assert kw["cond_channels"].shape[2] == x.shape[2]  # conditioning is cut into the same windows
        return forward(x, c_noise, **kw)

    pipe.backbone.forward = spy
    out = pipe.generate(1, 7, seed=0, progress=False)
    assert out.shape == (1, 7, 8, 8, 3) and set(calls) == {4}  # windows of the training length only
    calls.clear()
    image = pipe.generate(2, 1, seed=0, progress=False)  # a video model makes images as one-frame clips
    assert image.shape == (2, 1, 8, 8, 3) and set(calls) == {1}


def test_video_pipeline_errors() -> None:
    from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
    from multidiff.pipeline import VideoPipeline

    pipe = tiny_video_pipeline(size=8)
    with pytest.raises(ValueError, match="VideoPipeline needs a video adapter"):
        VideoPipeline(pipe.denoiser, ImageAdapter(ImageAdapterConfig()))
    with pytest.raises(ValueError, match="takes 5 cond_channels; a frame-mask model needs 4"):
        VideoPipeline(tiny_video_pipeline(channels=4).denoiser, pipe.adapter)  # 4-channel model, RGB pixels
    with pytest.raises(ValueError, match="5 known frames for a video of 3 frames"):
        pipe.generate(1, 3, known=torch.zeros(5, 8, 8, 3, dtype=torch.uint8), mask=torch.ones(3))
    with pytest.raises(ValueError, match="a mask needs known= media"):
        pipe.generate(1, 3, mask=torch.ones(3))
    first = torch.zeros(1, 3, 8, 8, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"mask= holds 3 samples for 1 asked for; give 1 \(for all\) or 1"):
        pipe.generate(1, 3, known=first, mask=torch.ones(3, 3))  # failed inside torch's expand before
    with pytest.raises(ValueError, match="known= holds 2 samples for 3 asked for"):
        pipe.generate(3, 3, known=first.expand(2, -1, -1, -1, -1), mask=torch.ones(3))
    with pytest.raises(ValueError, match="pass frames="):
        pipe.generate(1)


def test_image_pipeline_round_trip_and_latent_mask(tmp_path) -> None:
    from multidiff.core.schedules import EDMSchedule
    from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
    from multidiff.pipeline import ImagePipeline

    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=4, channels=(8, 16), num_res_blocks=1, attention_levels=(), head_dim=8,
                           norm_groups=4, emb_dim=32, noise_freq_dim=16))  # fmt: skip
    adapter = ImageAdapter(ImageAdapterConfig(space="vae"), tiny_vae())
    pipe = ImagePipeline(Denoiser(unet, "edm", EDMSchedule(), 0.5), adapter,
                         sampling=SamplingConfig(sampler="euler", steps=3), size=16)  # fmt: skip
    a = pipe.generate(2, seed=1, progress=False)
    assert a.shape == (2, 16, 16, 3) and a.dtype == torch.uint8
    pipe.save_pretrained(tmp_path / "p")
    loaded = ImagePipeline.from_pretrained(tmp_path / "p")
    assert loaded.size == (16, 16) and torch.equal(loaded.generate(2, seed=1, progress=False), a)
    # a latent pixel (2 x 2 pixels here) is known only where its whole patch is
    mask = torch.zeros(16, 16)
    mask[:, :5] = 1
    m = pipe.adapter.latent_mask(mask, Extent(size=(16, 16)))
    assert m.shape == (1, 1, 8, 8) and m[0, 0, 0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="cannot load"):
        from multidiff.pipeline import VideoPipeline

        VideoPipeline.from_pretrained(tmp_path / "p")


def test_arguments_that_would_be_misread_or_ignored_are_refused() -> None:
    """Python API: each of these was silently misread or ignored (or failed deep inside) before."""
    pipe = tiny_audio_pipeline(num_classes=2)  # labels "class0", "class1"
    x = torch.randn(1, 1, 16, 8)
    with pytest.raises(ValueError, match=r"unknown label '1'.*an index is an int"):
        pipe.label_tensor("1", 1)  # a named model: "1" is not taken as index 1
    with pytest.raises(ValueError, match="class name or an int index, got True"):
        pipe.label_tensor(True, 1)
    assert pipe.label_tensor(np.int64(1), 1).tolist() == [1] and pipe.seeds(2, np.int64(3)) == [3, 4]
    assert pipe.label_tensor(list(np.arange(2)), 2).tolist() == [0, 1]  # numpy ints in a list
    unnamed = Pipeline(tiny_denoiser(num_classes=3))
    assert unnamed.label_tensor("2", 1).tolist() == [2]  # no names: a number typed as text is an index
    with pytest.raises(ValueError, match="a mask of shape"):
        pipe.sample(1, (1, 16, 8), known=x, mask=torch.ones(3, 1, 1, 8), progress=False)
    with pytest.raises(ValueError, match="known= needs mask="):
        pipe.sample(1, (1, 16, 8), known=x, progress=False)
    with pytest.raises(ValueError, match=r"seeds must lie in \[0, 2\^63\)"):
        pipe.seeds(2, -1)  # torch would take it, and -1 + 1 = 0 would repeat the next call's first seed
    with pytest.raises(ValueError, match="seeds must lie"):
        pipe.seeds(2, [0, 2**63])
    with pytest.raises(ValueError, match="give steps= or sigmas=, not both"):
        pipe.sample(1, (1, 16, 8), steps=3, sigmas=pipe.sigmas(4), progress=False)
    with pytest.raises(ValueError, match="steps must be an int"):
        pipe.sample(1, (1, 16, 8), steps=True, progress=False)
    with pytest.raises(ValueError, match="shape= is for a pipeline without an adapter"):
        pipe.generate(1, 0.1, shape=(1, 16, 8), progress=False)
    with pytest.raises(ValueError, match="already 0.25 s"):
        pipe.continue_audio(torch.zeros(1, 2000), 0.2, progress=False)
    with pytest.raises(ValueError, match="dtype must be torch.bfloat16 or torch.float32"):
        pipe.to(torch.float16)  # a dtype given where torch's .to takes it, not read as a device
    assert pipe.to(torch.bfloat16) is pipe and next(pipe.backbone.parameters()).dtype == torch.bfloat16
    assert pipe.adapter.mean.dtype == torch.float32  # only the backbone is cast


def test_video_generate_takes_decode_keywords() -> None:
    pipe = tiny_video_pipeline(cond=False)
    frames = pipe.generate(1, 3, 8, decode={"out_device": "cpu"}, progress=False)
    assert frames.shape[:2] == (1, 3) and frames.dtype == torch.uint8
