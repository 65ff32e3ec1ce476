"""LTX-Video from a local diffusers folder: parity with diffusers' own pipeline."""

from __future__ import annotations

import pytest
import torch
from family_utils import (
    assert_frames_match,
    diffusers_text_to_video,
    edited_copy,
    randomize_,
    rel_error,
    word_tokenizer,
)

from multidiff.families import load_family
from multidiff.families.ltx import pack_latents, unpack_latents

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

FRAMES, SIZE, STEPS = 9, 32, 3
WORDS = ["a", "cat", "dog", "runs", "in", "the", "park", "slowly"]


def _tokenizer():
    """A word-level tokenizer standing in for T5's."""
    return word_tokenizer(["<pad>", "</s>", "<unk>"], WORDS, model_max_length=16)


@pytest.fixture(scope="module")
def ltx_folder(tmp_path_factory):
    """A tiny LTX-Video (transformer, causal video VAE, T5 encoder, flow-matching Euler with dynamic
    shifting as in the released config), saved as a diffusers folder."""
    return _make_ltx(tmp_path_factory.mktemp("ltx") / "ltx")


def _make_ltx(folder, timestep_conditioning=False):
    """The folder above; ``timestep_conditioning``: LTX 0.9.1's VAE, whose decoder takes a timestep."""
    d, t = diffusers, transformers
    torch.manual_seed(0)
    transformer = d.LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = d.AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=timestep_conditioning,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    text_encoder = t.T5EncoderModel(
        t.T5Config(vocab_size=16, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4)
    )
    randomize_(transformer, vae)
    with torch.no_grad():
        vae.latents_mean.copy_(torch.randn(8) * 0.1)
        vae.latents_std.copy_(torch.rand(8) + 0.5)
    scheduler = d.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
    )
    pipe = d.LTXPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(),
        transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder


def _theirs(folder, **kw):
    kw = dict(guidance_scale=2.5, frame_rate=20, max_sequence_length=16, **kw)
    return diffusers_text_to_video(diffusers.LTXPipeline, folder, SIZE, FRAMES, STEPS, **kw)


def _ours_kw():
    return dict(negative_prompt="dog", steps=STEPS, guidance=2.5, frame_rate=20, max_sequence_length=16)


def test_latents_match_diffusers(ltx_folder):
    ours = load_family(ltx_folder)
    assert type(ours).__name__ == "LTXPipeline"
    shape = ours.adapter.latent_shape(
        __import__("multidiff.modalities.base", fromlist=["Extent"]).Extent(frames=FRAMES, size=SIZE)
    )
    assert shape == (8, 3, 8, 8)  # temporal ratio 4, spatial ratio 4 in this tiny VAE
    noise = torch.randn(1, *shape, generator=torch.Generator().manual_seed(2))
    ref = _theirs(ltx_folder, latents=pack_latents(noise), output_type="latent")  # (1, L, C) packed
    got = ours.sample_latents("a cat runs in the park", FRAMES, SIZE, noise=noise, **_ours_kw())
    assert ref.abs().mean() > 0.05
    assert rel_error(pack_latents(got), ref) < 1e-4
    assert torch.equal(unpack_latents(pack_latents(got), shape), got)


def test_seeded_video_matches_diffusers_through_the_vae(ltx_folder):
    ours = load_family(ltx_folder)
    ref = _theirs(
        ltx_folder, generator=[torch.Generator().manual_seed(4)], output_type="np"
    )  # (1, F, H, W, 3)
    got = ours.generate(1, FRAMES, SIZE, prompt="a cat runs in the park", seed=4, **_ours_kw())
    assert_frames_match(got, ref, (1, FRAMES, SIZE, SIZE, 3))


@pytest.mark.parametrize("noise_scale", [None, 0.025, 0.0])
def test_timestep_conditioned_vae_decodes_with_diffusers_decode_noise(tmp_path, noise_scale):
    """LTX 0.9.1's VAE at diffusers' documented decode_timestep 0.03: the latents are mixed with noise drawn
    next from each sample's generator, weighted decode_noise_scale (None: the decode timestep)."""
    from multidiff.families.ltx import load_ltx

    folder = _make_ltx(tmp_path / "ltx", timestep_conditioning=True)
    ours = load_ltx(folder, decode_timestep=0.03, decode_noise_scale=noise_scale)
    assert ours.adapter.decode_noise == (noise_scale != 0.0)
    got = ours.generate(1, FRAMES, SIZE, prompt="a cat runs in the park", seed=4, **_ours_kw())
    # (one video: diffusers 0.42 sizes the decode timestep by prompts, not videos, so 2 per prompt fail there)
    ref = _theirs(folder, generator=[torch.Generator().manual_seed(4)], output_type="np", decode_timestep=0.03,
                  decode_noise_scale=noise_scale)  # fmt: skip
    assert_frames_match(got, ref, (1, FRAMES, SIZE, SIZE, 3))
    if noise_scale != 0.0:  # the noise matters: without it the frames differ
        plain = load_ltx(folder, decode_timestep=0.03, decode_noise_scale=0.0)
        other = plain.generate(1, FRAMES, SIZE, prompt="a cat runs in the park", seed=4, **_ours_kw())
        assert (other.float() - got.float()).abs().max() > 2


def test_latent_mask_follows_the_causal_frame_grouping(ltx_folder):
    from multidiff.modalities.base import Extent

    a = load_family(ltx_folder).adapter
    m = a.latent_mask(torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0]), Extent(frames=FRAMES, size=SIZE))
    assert m.flatten().tolist() == [1.0, 1.0, 0.0]  # frame 0; frames 1-4; frames 5-8 (not all known)


def test_unreproducible_settings_are_refused(ltx_folder, tmp_path):
    edits = {"scheduler/scheduler_config.json": {"stochastic_sampling": True}}
    bad = edited_copy(ltx_folder, tmp_path / "bad", edits)
    with pytest.raises(ValueError, match="stochastic_sampling"):
        load_family(bad)
    ours = load_family(ltx_folder)
    with pytest.raises(ValueError, match="temporal ratio"):
        ours.sample_latents("a cat", 8, SIZE, steps=1)
