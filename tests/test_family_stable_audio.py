"""Stable Audio Open from a local diffusers folder: multidiff's Pipeline matches diffusers' StableAudioPipeline.

The folder is built in code with Stable Audio Open's structure (StableAudioDiTModel, the Oobleck waveform
autoencoder, a T5 encoder, the seconds / text projection model and CosineDPMSolverMultistepScheduler with
v-prediction, σ_data = 1), small and random. diffusers' sampler draws its SDE noise from a Brownian tree;
the test replaces it with draws from each sample's own generator, as multidiff's sampler makes them, so both
loops see the same noise and must agree to float32 precision.
"""

import math

import pytest
import torch
from family_utils import reference

from multidiff.core.samplers import noise_like
from multidiff.families import load_family
from multidiff.interop.diffusers import CosineEDMSchedule, sigmas_from_scheduler
from multidiff.modalities.base import Extent

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def _t5_tokenizer():
    pieces = ["<pad>", "</s>", "<unk>", "▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += ["▁" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = [(p, 0.0 if i < 3 else -1.0 - 0.01 * i) for i, p in enumerate(pieces)]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=12)


def _stable_audio_folder(path):
    torch.manual_seed(0)
    transformer = diffusers.StableAudioDiTModel(
        sample_size=8,
        in_channels=3,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        num_key_value_attention_heads=2,
        out_channels=3,
        cross_attention_dim=4,
        time_proj_dim=8,
        global_states_input_dim=8,
        cross_attention_input_dim=4,
    )
    scheduler = diffusers.CosineDPMSolverMultistepScheduler(
        solver_order=2, prediction_type="v_prediction", sigma_data=1.0, sigma_schedule="exponential"
    )
    vae = diffusers.AutoencoderOobleck(
        encoder_hidden_size=6,
        downsampling_ratios=[2, 4],
        decoder_channels=3,
        decoder_input_channels=3,
        audio_channels=2,
        channel_multiples=[2, 4],
        sampling_rate=32,
    )
    tokenizer = _t5_tokenizer()
    t5 = transformers.T5EncoderModel(
        transformers.T5Config(
            vocab_size=len(tokenizer),
            d_model=8,
            d_kv=4,
            d_ff=16,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    projection = diffusers.StableAudioProjectionModel(
        text_encoder_dim=8, conditioning_dim=4, min_value=0, max_value=32
    )
    pipe = diffusers.StableAudioPipeline(
        vae=vae,
        text_encoder=t5,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(str(path))
    return path


class _SeededNoise:
    """Replaces diffusers' BrownianTreeNoiseSampler: N(0, 1) in order from one generator per sample."""

    def __init__(self, gens):
        self.gens = gens

    def __call__(self, x, **kw):
        return lambda sigma, sigma_next: torch.stack(
            [torch.randn(x.shape[1:], generator=g) for g in self.gens]
        )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _stable_audio_folder(tmp_path_factory.mktemp("stable_audio") / "pipe")


@pytest.mark.parametrize("guidance", [1.0, 7.0])
def test_stable_audio_waveform_matches_diffusers(folder, guidance, monkeypatch):
    import diffusers.schedulers.scheduling_cosine_dpmsolver_multistep as cos

    pipe = load_family(folder)
    assert pipe.sampling.sampler == "dpmpp_2m_sde" and isinstance(pipe.denoiser.schedule, CosineEDMSchedule)
    assert pipe.denoiser.prediction == "v" and pipe.max_seconds == 2.0
    ref_pipe = reference(diffusers.StableAudioPipeline, folder, local_files_only=True)
    steps, seconds, seed, prompt = 6, 1.5, 11, ["a hammer hits wood", "rain"]
    grid = sigmas_from_scheduler(ref_pipe.scheduler, steps)
    torch.testing.assert_close(pipe.sigmas(steps), grid, rtol=1e-5, atol=0)  # its default grid is diffusers'
    shape = pipe.adapter.latent_shape(Extent(seconds=seconds))
    assert shape == (3, 8)
    gens = [torch.Generator().manual_seed(seed + k) for k in range(2)]
    noise = noise_like(torch.empty(2, *shape), gens)  # multidiff's initial noise; the SDE noise follows
    monkeypatch.setattr(cos, "BrownianTreeNoiseSampler", _SeededNoise(gens))
    s0 = float(grid[0])
    with torch.no_grad():
        ref = ref_pipe(
            prompt,
            audio_end_in_s=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=noise * (s0 / math.sqrt(s0**2 + 1)),  # diffusers scales by init_noise_sigma = √(σ²+1)
            output_type="pt",
        ).audios  # (B, C, N)
    ours = pipe.generate(2, seconds, prompt=prompt, guidance=guidance, seed=seed, sigmas=grid, progress=False)
    assert ours.shape == ref.shape == (2, 2, 48)
    rel = float((ours - ref).norm() / ref.norm())
    assert rel < 1e-4, rel


def test_oobleck_adapter_round_trip_and_masks(folder, tmp_path):
    from multidiff.modalities.waveform import OobleckAdapter

    pipe = load_family(folder)
    a = pipe.adapter
    wave = torch.randn(1, 2, 64)
    z = a.encode(wave)
    assert z.shape == (1, 3, 8)
    want = a.vae.encode(wave).latent_dist.mean
    torch.testing.assert_close(z, want)
    torch.testing.assert_close(a.decode(z, Extent(seconds=1.0)), a.vae.decode(want).sample[..., :32])
    mask = torch.zeros(64)
    mask[:20] = 1  # 2.5 frames of hop 8: frames 0 and 1 are known
    assert a.latent_mask(mask, Extent(seconds=2.0)).flatten().tolist() == [1, 1] + [0] * 6
    a.save(tmp_path)
    again = OobleckAdapter.load(a.to_dict(), tmp_path)
    torch.testing.assert_close(again.encode(wave), z)
    with pytest.raises(ValueError, match="load_family"):
        pipe.save_pretrained(tmp_path / "out")
    with pytest.raises(ValueError, match="leave the model's 2.0 s"):
        pipe.generate(1, 3.0, progress=False)
