"""AnimateDiff from a local diffusers folder: parity with diffusers' own pipeline."""

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

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

FRAMES, SIZE, STEPS = 4, 16, 3
WORDS = ["a", "cat", "dog", "runs", "in", "the", "park"]


def _tokenizer():
    """A word-level tokenizer standing in for CLIP's."""
    return word_tokenizer(["<pad>", "<unk>", "</s>"], WORDS, model_max_length=12)


def _scheduler(kind: str):
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear")
    if kind == "ddim":
        return diffusers.DDIMScheduler(clip_sample=False, **common)
    if kind == "ddim_sd":  # Stable Diffusion's DDIM: leading spacing with offset, final ᾱ not 1
        return diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **common)
    if kind == "ddim_linspace":  # AnimateDiff's documented DDIM: its grid ends on t = 0 with final ᾱ = ᾱ(0)
        return diffusers.DDIMScheduler(
            clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="linspace", **common
        )
    return diffusers.EulerDiscreteScheduler(**common)


@pytest.fixture(scope="module")
def ad_folder(tmp_path_factory):
    return make_animatediff_folder(tmp_path_factory.mktemp("ad") / "ad")


def make_animatediff_folder(folder):
    """A tiny AnimateDiff (SD U-Net + motion adapter, per-frame AutoencoderKL, CLIP text encoder, DDIM),
    saved as a diffusers folder at ``folder``."""
    d, t = diffusers, transformers
    torch.manual_seed(0)
    unet = d.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=2,
    )
    motion = d.MotionAdapter(
        block_out_channels=(8, 16),
        motion_layers_per_block=1,
        motion_norm_num_groups=2,
        motion_num_attention_heads=2,
    )
    vae = d.AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
    )
    text_encoder = t.CLIPTextModel(
        t.CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            hidden_size=16,
            intermediate_size=24,
            num_attention_heads=2,
            num_hidden_layers=2,
            pad_token_id=0,
            vocab_size=16,
            max_position_embeddings=12,
        )
    )
    randomize_(unet, motion, vae)  # the motion modules' zero-initialised outputs too
    pipe = d.AnimateDiffPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(),
        unet=unet,
        motion_adapter=motion,
        scheduler=_scheduler("ddim"),
    )
    pipe.save_pretrained(folder)
    return folder


def _with_scheduler(folder, tmp_path, kind):
    if kind == "ddim":
        return folder
    sched = _scheduler(kind)
    out = edited_copy(
        folder, tmp_path / kind, {"model_index.json": {"scheduler": ["diffusers", type(sched).__name__]}}
    )
    sched.save_pretrained(out / "scheduler")
    return out


def _theirs(folder, **kw):
    return diffusers_text_to_video(
        diffusers.AnimateDiffPipeline, folder, SIZE, FRAMES, STEPS, guidance_scale=4.0, **kw
    )


@pytest.mark.parametrize("kind", ["ddim", "ddim_sd", "euler"])
def test_latents_match_diffusers(ad_folder, tmp_path, kind):
    folder = _with_scheduler(ad_folder, tmp_path, kind)
    ours = load_family(folder)
    assert type(ours).__name__ == "AnimateDiffPipeline"
    noise = torch.randn(1, 4, FRAMES, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(2))
    ref = _theirs(folder, latents=noise, output_type="latent")  # (1, C, F, h, w)
    got = ours.sample_latents(
        "a cat runs in the park", FRAMES, SIZE, negative_prompt="dog", steps=STEPS, guidance=4.0, noise=noise
    )
    assert ref.abs().mean() > 0.05
    assert rel_error(got, ref) < 1e-4, kind


def test_seeded_video_matches_diffusers_through_the_vae(ad_folder):
    ours = load_family(ad_folder)
    ref = _theirs(
        ad_folder, generator=[torch.Generator().manual_seed(9)], output_type="np"
    )  # (1, F, H, W, 3)
    got = ours.generate(
        1,
        FRAMES,
        SIZE,
        prompt="a cat runs in the park",
        negative_prompt="dog",
        steps=STEPS,
        guidance=4.0,
        seed=9,
    )
    assert_frames_match(got, ref, (1, FRAMES, SIZE, SIZE, 3))


def test_unreproducible_scheduler_settings_are_refused(ad_folder, tmp_path):
    bad = edited_copy(ad_folder, tmp_path / "bad", {"scheduler/scheduler_config.json": {"clip_sample": True}})
    with pytest.raises(ValueError, match="DDIMScheduler with clip_sample=True"):
        load_family(bad)


def test_ddim_with_linspace_spacing_is_refused_not_approximated(ad_folder, tmp_path):
    """diffusers' DDIM step goes from t to t - T // N; with linspace spacing that is not the next timestep of
    its own grid, so no σ chain reproduces it: refused, naming the setting."""
    sched = _scheduler("ddim_linspace")
    sched.set_timesteps(STEPS)
    gaps = set((sched.timesteps[:-1] - sched.timesteps[1:]).tolist())
    assert gaps != {sched.config.num_train_timesteps // STEPS}  # the reason for the refusal
    folder = _with_scheduler(ad_folder, tmp_path, "ddim_linspace")
    with pytest.raises(ValueError, match="timestep_spacing='linspace'.*'leading', or 'trailing' with a step"):
        load_family(folder)
    # trailing spacing leaves its own timesteps the same way unless N divides T: refused when sampling
    from multidiff.families._common import scheduler_grid

    trailing = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    assert scheduler_grid(trailing, 8)[0].shape == (9,)
    with pytest.raises(ValueError, match="timestep_spacing='trailing' at 7 steps"):
        scheduler_grid(trailing, 7)
