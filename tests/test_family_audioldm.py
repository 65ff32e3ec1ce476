"""AudioLDM from a local diffusers folder: multidiff's Pipeline matches diffusers' AudioLDMPipeline waveform.

The folder is built in code: a small random model with AudioLDM's structure (a U-Net taking the CLAP text
embedding as its class embedding, a mel VAE, a CLAP text tower and a SpeechT5 HiFi-GAN with AudioLDM's
upsample rates 5, 4, 2, 2, 2 and kernels 16, 16, 8, 4, 4 at 16 kHz), saved with diffusers' save_pretrained.
"""

import json
import math

import pytest
import torch
from family_utils import reference

from multidiff.core.samplers import noise_like
from multidiff.families import family_of, load_family
from multidiff.interop.diffusers import sigmas_from_scheduler
from multidiff.modalities.base import Extent

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def _byte_unicode() -> list[str]:
    """The printable characters byte-level BPE (GPT-2, RoBERTa) uses for the 256 bytes (Radford et al. 2019)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def _roberta_tokenizer():
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *_byte_unicode()])}
    return transformers.RobertaTokenizer(vocab=vocab, merges=[], model_max_length=24)


def _audioldm_folder(path, set_alpha_to_one=True):
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
        attention_head_dim=4,
        norm_num_groups=4,
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=16,
        class_embeddings_concat=True,
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=set_alpha_to_one,
        steps_offset=1,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
    )
    tokenizer = _roberta_tokenizer()
    clap = transformers.ClapTextModelWithProjection(
        transformers.ClapTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=24,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            projection_dim=16,
        )
    )
    vocoder = transformers.SpeechT5HifiGan(
        transformers.SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=32,
            upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        )
    )
    pipe = diffusers.AudioLDMPipeline(
        vae=vae, text_encoder=clap, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder
    )
    pipe.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(2)
    return _audioldm_folder(tmp_path_factory.mktemp("audioldm") / "pipe")


@pytest.mark.parametrize(
    "guidance,changes",
    [(1.0, {}), (2.5, {}), (2.5, {"set_alpha_to_one": False}), (2.5, {"_class_name": "EulerDiscreteScheduler"}),
     (2.5, {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading"}),
     (2.5, {"_class_name": "DPMSolverMultistepScheduler"})],
    ids=["ddim-unguided", "ddim", "ddim-final-alpha", "euler", "euler-leading", "dpm-solver"],
)  # fmt: skip
def test_audioldm_waveform_matches_diffusers_for_the_same_seeds(folder, tmp_path, guidance, changes):
    """The same seeds give diffusers' waveforms: multidiff draws sample k from seed + k and starts where the
    scheduler starts (noise · init_noise_sigma in its own space), on its σ grid (DDIM's ending above σ = 0
    without set_alpha_to_one, AudioLDM's own setting), for DDIM and for the other schedulers it takes."""
    if changes:
        folder = _with_scheduler(folder, tmp_path, **changes)
    pipe = load_family(folder)
    assert family_of(folder) == "AudioLDMPipeline"
    ref_pipe = reference(diffusers.AudioLDMPipeline, folder, local_files_only=True)
    steps, seconds, seed, prompt = 4, 0.16, 3, ["a hammer hits wood", "rain on a roof"]
    assert pipe.adapter.latent_shape(Extent(seconds=seconds)) == (4, 8, 4)  # 16 frames, 8 mel bins, VAE 2
    with torch.no_grad():
        ref = ref_pipe(
            prompt,
            audio_length_in_s=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(seed + k) for k in range(2)],
            output_type="pt",
        ).audios  # (B, N)
    ours = pipe.generate(2, Extent(seconds=seconds), prompt=prompt, guidance=guidance, seed=seed, steps=steps,
                         progress=False)  # fmt: skip
    assert ours.shape == (2, 1, 2560) and ref.shape == (2, 2560)
    rel = float((ours[:, 0] - ref).norm() / ref.norm())
    assert rel < 1e-4, rel
    # diffusers' exact grid passed as sigmas= gives the same waveforms
    again = pipe.generate(2, Extent(seconds=seconds), prompt=prompt, guidance=guidance, seed=seed,
                          sigmas=sigmas_from_scheduler(ref_pipe.scheduler, steps), progress=False)  # fmt: skip
    assert float((again[:, 0] - ref).norm() / ref.norm()) < 1e-4


def test_audioldm_refusals(folder, tmp_path):
    pipe = load_family(folder)
    with pytest.raises(ValueError, match="mel front end"):
        pipe.generate(1, Extent(seconds=0.16), known=torch.zeros(1, 2560), strength=0.5, prompt="x")
    with pytest.raises(ValueError, match="load_family"):
        pipe.save_pretrained(tmp_path / "out")
    # a component of another class is named with its setting
    index = json.loads((folder / "model_index.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in index:
        if not name.startswith("_") and (folder / name).is_dir():
            (bad / name).symlink_to(folder / name)
    (bad / "model_index.json").write_text(json.dumps({**index, "vocoder": ["transformers", "HifiGan"]}))
    with pytest.raises(ValueError, match="component 'vocoder' is 'HifiGan'"):
        load_family(bad)
    index2 = {**index, "_class_name": "AudioLDM2Pipeline"}
    (bad / "model_index.json").write_text(json.dumps(index2))
    with pytest.raises(ValueError, match="AudioLDM2Pipeline is not supported"):
        load_family(bad)


def _with_scheduler(folder, tmp_path, **changes):
    """The folder with its scheduler config changed (the other components linked); a ``_class_name`` change
    goes into ``model_index.json`` too, whose class is the one diffusers' pipeline loads."""
    out = tmp_path / "pipe"
    out.mkdir()
    for item in folder.iterdir():
        if item.name not in ("scheduler", "model_index.json"):
            (out / item.name).symlink_to(item)
    (out / "scheduler").mkdir()
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, **changes}))
    index = json.loads((folder / "model_index.json").read_text())
    if "_class_name" in changes:
        index["scheduler"] = ["diffusers", changes["_class_name"]]
    (out / "model_index.json").write_text(json.dumps(index))
    return out


@pytest.mark.parametrize(
    "changes",
    [{}, {"timestep_spacing": "trailing"}, {"steps_offset": 0}, {"set_alpha_to_one": False}],
    ids=["leading-offset-1", "trailing", "leading-offset-0", "final-alpha"],
)
def test_audioldm_default_grid_is_the_schedulers(folder, tmp_path, changes):
    """Without ``sigmas=``, the pipeline's own grid is the σ grid of the folder's scheduler at each spacing
    (AudioLDM's own: leading with offset 1, no ``set_alpha_to_one``, its grid ending above σ = 0)."""
    path = _with_scheduler(folder, tmp_path, **changes)
    pipe = load_family(path)
    scheduler = diffusers.DDIMScheduler.from_pretrained(str(path / "scheduler"), local_files_only=True)
    steps = (4, 8) if changes.get("timestep_spacing") == "trailing" else (4, 7)
    for n in steps:
        want = sigmas_from_scheduler(scheduler, n)
        torch.testing.assert_close(pipe.sigmas(n), want, rtol=1e-5, atol=0)
        assert (want[-1] > 0) == (changes.get("set_alpha_to_one") is False)
    assert not torch.equal(pipe.sigmas(4, grid="karras"), pipe.sigmas(4))  # multidiff's grids by name


def test_ddim_steps_off_its_own_timesteps_are_refused(folder, tmp_path):
    """diffusers' DDIM steps from t to t - T // N: with trailing spacing at N not dividing T (or linspace),
    each step lands beside the next timestep, so no σ grid reproduces it, and it is refused, not approximated."""
    pipe = load_family(_with_scheduler(folder, tmp_path, timestep_spacing="trailing"))
    with pytest.raises(ValueError, match="timestep_spacing='trailing' at 7 steps.*or a step count that divides"):
        pipe.generate(1, Extent(seconds=0.16), prompt="x", steps=7, progress=False)
    with pytest.raises(ValueError, match="give steps= or sigmas=, not both"):  # as every pipeline
        pipe.generate(1, Extent(seconds=0.16), prompt="x", steps=4, sigmas=pipe.sigmas(4), progress=False)
    (tmp_path / "lin").mkdir()
    with pytest.raises(ValueError, match="timestep_spacing='linspace'.*use timestep_spacing 'leading' in its config"):
        load_family(_with_scheduler(folder, tmp_path / "lin", timestep_spacing="linspace"))


def test_audioldm_trailing_waveform_matches_diffusers_on_its_own_grid(folder, tmp_path):
    path = _with_scheduler(folder, tmp_path, timestep_spacing="trailing")
    pipe = load_family(path)
    ref_pipe = reference(diffusers.AudioLDMPipeline, path, local_files_only=True)
    steps, seconds, seed, prompt = 4, 0.16, 1, ["a door creaks"]
    shape = pipe.adapter.latent_shape(Extent(seconds=seconds))
    s0 = float(pipe.sigmas(steps)[0])
    noise = noise_like(torch.empty(1, *shape), [torch.Generator().manual_seed(seed)])
    with torch.no_grad():
        ref = ref_pipe(
            prompt, audio_length_in_s=seconds, num_inference_steps=steps, guidance_scale=2.0,
            latents=noise * (s0 / math.sqrt(1 + s0**2)), output_type="pt",
        ).audios  # fmt: skip
    ours = pipe.generate(1, Extent(seconds=seconds), prompt=prompt, guidance=2.0, steps=steps, seed=seed, progress=False)
    rel = float((ours[:, 0] - ref).norm() / ref.norm())
    assert rel < 1e-4, rel
