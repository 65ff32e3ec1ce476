"""``multidiff ui``: a local web page (Gradio, the ``ui`` extra) to generate from a trained or bundled pipeline.

    multidiff ui --ckpt runs/sounds             # a run, checkpoint or pipeline folder
    multidiff ui --model NAME                   # a bundled model (multidiff models)
    multidiff ui --ckpt runs/clips --port 7861 --host 0.0.0.0

The page adapts to the model: a label menu for class-conditional models, a prompt box for captioned ones,
then seed, sampler steps, sampler, guidance and length (seconds of audio, frames of video, pixels of an
image). Audio plays in the page with its spectrogram below it (time in s, frequency in Hz); video plays
inline (an H.264 mp4, enlarged for small frame sizes) with a strip of its frames; images are shown enlarged.
A second tab continues an uploaded audio clip (audio models) or animates an uploaded picture as the first
frame (image-to-video, video models). Every file made is kept in ``--out`` (default: a temporary folder).

The work is done by :func:`render` (no Gradio needed), which the page calls and tests call directly.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Request", "Result", "render", "build_app", "main", "SAMPLER_CHOICES", "NO_LABEL"]

#: The label menu's entry for "no class" (the null label: unconditional samples).
NO_LABEL = "(none)"
#: Sampler names offered (each algorithm once; the A1111/ComfyUI aliases are left out of the menu).
SAMPLER_CHOICES = (
    "euler", "euler_ancestral", "ddim", "ddpm", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m",
    "dpmpp_3m_sde", "unipc", "unipc_3", "dpm_adaptive",
)  # fmt: skip
#: Frames are enlarged (each pixel repeated) to at least this many pixels for display.
DISPLAY_PX = 192


@dataclass(frozen=True)
class Request:
    """What the page asks for.

    Attributes:
        label: A class name, or None / :data:`NO_LABEL`.
        prompt: A caption (captioned models), or None / empty.
        seed: The sample's seed.
        steps: Sampler steps (None: the pipeline's default).
        sampler: Sampler name (None: the pipeline's default).
        guidance: Classifier-free guidance scale (None: the pipeline's default; only used with a label or
            a prompt).
        length: Seconds (audio), frames (video) or pixels (image: ``N`` or ``"N"`` for N x N, ``"HxW"``);
            None: the training length or size.
        known: For continuation, an audio file path; for image-to-video, an image ``[H, W, C]`` uint8.
    """

    label: str | None = None
    prompt: str | None = None
    seed: int = 0
    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None
    length: float | str | None = None
    known: Any = None


@dataclass(frozen=True)
class Result:
    """Files made for one request: ``media`` (wav, mp4 or png), ``picture`` (the spectrogram, the frame
    strip, or None for images) and a one-line description."""

    media: Path
    picture: Path | None
    text: str


def _enlarge(frames: np.ndarray) -> np.ndarray:
    """Repeat pixels so that frames ``[..., H, W, C]`` are at least :data:`DISPLAY_PX` tall, keeping H.264's
    even sizes."""
    h = frames.shape[-3]
    k = max(1, -(-DISPLAY_PX // h))
    out = frames.repeat(k, axis=-3).repeat(k, axis=-2)
    return out


def image_size(value: float | str | None) -> tuple[int, int] | None:
    """The image page's size field: None or empty (the training size), ``N`` (N x N) or ``HxW``.

    Raises:
        ValueError: For anything else, saying what to type.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().lower().replace(" ", "").replace("×", "x")
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))  # the number field's 64.0
    match = re.fullmatch(r"(\d{1,5})(?:x(\d{1,5}))?", text)
    if match is None or int(match[1]) < 1 or int(match[2] or match[1]) < 1:
        raise ValueError(f"size: give whole pixels as N or HxW (e.g. 64 or 64x96), got {value!r}")
    return int(match[1]), int(match[2] or match[1])


def render(pipe: Any, request: Request, out_dir: str | os.PathLike[str]) -> Result:
    """Generate one sample for ``request`` with ``pipe`` (an Audio-, Video- or ImagePipeline) and write its
    files into ``out_dir``.

    Audio: ``<stem>.wav`` and ``<stem>.png`` (spectrogram); with ``known`` (an audio file) the clip is
    continued to ``length`` seconds. Video: ``<stem>.mp4`` (enlarged for display) and ``<stem>.png`` (a strip
    of frames); with ``known`` (an image) it is the first frame. Image: ``<stem>.png`` (enlarged).

    Raises:
        ValueError: For a request the model cannot serve (a label of a model without labels, a prompt of
            one without captions, a bad length), with the reason.
    """
    import torch

    from multidiff.io import write_audio, write_image, write_video
    from multidiff.plots import spectrogram_png, video_strip

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = None if request.label in (None, "", NO_LABEL) else request.label
    prompt = request.prompt.strip() if request.prompt and request.prompt.strip() else None
    guided = label is not None or prompt is not None
    common: dict[str, Any] = {
        "steps": None if request.steps is None else int(request.steps),
        "sampler": request.sampler or None,
        "guidance": float(request.guidance) if guided and request.guidance is not None else None,
        "label": label,
        "prompt": prompt,
        "seed": int(request.seed),
        "progress": False,
    }
    if common["steps"] is not None and common["steps"] < 1:
        raise ValueError(f"steps must be >= 1, got {common['steps']}")
    what = label or (f'"{prompt}"' if prompt else "unconditional")
    stem = (  # unique: two requests in one second with one label and seed never share a file
        f"{pipe.modality}-{time.strftime('%H%M%S')}-{what.replace(' ', '_')[:24]}-seed{int(request.seed)}"
        f"-{uuid.uuid4().hex[:6]}"
    )
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    started = time.perf_counter()
    with torch.no_grad():
        if pipe.modality == "audio":
            seconds = request.length if request.length else pipe.default_extent().seconds
            if not seconds or seconds <= 0:
                raise ValueError("give a length in seconds (the model records no training length)")
            sr = pipe.sample_rate
            if request.known is not None:
                from multidiff.io import read_audio

                clip, _ = read_audio(str(request.known), sample_rate=sr, mono=pipe.channels == 1)
                clip = clip[: pipe.channels]
                if clip.shape[-1] >= pipe.num_samples(seconds):
                    raise ValueError(
                        f"the clip is already {clip.shape[-1] / sr:.2f} s long: ask for more than that to continue it"
                    )
                wave = pipe.continue_audio(clip, float(seconds), **common)[0]
                what = f"{what}, continued from {clip.shape[-1] / sr:.2f} s"
            else:
                wave = pipe.generate(1, float(seconds), **common)[0]
            media = write_audio(out / f"{stem}.wav", wave.cpu().clamp(-1, 1), sr)
            picture = spectrogram_png(
                wave.cpu(), sr, out / f"{stem}.png", title=f"{what}, seed {request.seed}"
            ).path
            text = f"{seconds:g} s at {sr} Hz, {what}, seed {request.seed}"
        elif pipe.modality == "video":
            frames = int(request.length) if request.length else pipe.window
            if not frames or frames < 1:
                raise ValueError("give a number of frames (the model records no training length)")
            if request.known is not None:
                from multidiff.data.common import resize_and_crop

                image = torch.as_tensor(np.asarray(request.known, dtype=np.uint8))
                if image.ndim == 2:
                    image = image[..., None].expand(*image.shape, 3)
                channels = pipe.adapter.config.channels
                image = resize_and_crop(image[None, ..., :3], pipe.size)[0][..., :channels]
                video = pipe.image_to_video(image, frames, **common)[0]
                what = f"{what}, from the picture given"
            else:
                video = pipe.generate(1, frames, **common)[0]
            arr = video.cpu().numpy()
            media = write_video(out / f"{stem}.mp4", _enlarge(arr), fps=8)
            picture = write_image(
                out / f"{stem}.png", video_strip(arr[None], frames=8, scale=max(1, 64 // arr.shape[1]))
            )
            text = f"{frames} frames of {arr.shape[1]}x{arr.shape[2]}, {what}, seed {request.seed}"
        elif pipe.modality == "image":
            image = pipe.generate(1, image_size(request.length), **common)[0].cpu().numpy()
            media = write_image(out / f"{stem}.png", _enlarge(image))
            picture = None
            text = f"{image.shape[0]}x{image.shape[1]} px, {what}, seed {request.seed}"
        else:
            raise ValueError(f"the page serves audio, video and image pipelines, not {pipe.modality!r}")
    return Result(
        Path(media),
        None if picture is None else Path(picture),
        f"{text} ({time.perf_counter() - started:.1f} s)",
    )


def build_app(
    pipe: Any, *, title: str = "multidiff", out_dir: str | os.PathLike[str] | None = None, summary: str = ""
) -> Any:
    """The Gradio page for ``pipe`` (not launched: call ``.launch()``).

    Element ids (for scripts and browser tests): ``label``, ``prompt``, ``seed``, ``steps``, ``sampler``,
    ``guidance``, ``length``, ``generate``, ``media``, ``picture``, ``info``; on the second tab
    ``known``, ``length2``, ``generate2``, ``media2``, ``picture2``, ``info2``.

    Raises:
        ValueError: If gradio is not installed (the message says how to install it).
    """
    try:
        import gradio as gr
    except ImportError:
        raise ValueError(
            'multidiff ui needs gradio: pip install "multidiff[ui]" (or pip install gradio)'
        ) from None

    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="multidiff-ui-"))
    modality = pipe.modality
    labels = list(pipe.labels or []) if pipe.num_classes else []
    if pipe.num_classes and not labels:
        labels = [str(i) for i in range(pipe.num_classes)]
    captions = pipe.text_encoder is not None
    default = pipe.default_extent()
    length_label, length_value, length_step = {
        "audio": ("length (seconds)", default.seconds or 2.0, 0.1),
        "video": ("length (frames)", pipe.window or 8, 1),
        "image": ("size (pixels, N or HxW)", "{}x{}".format(*(getattr(pipe, "size", None) or (64, 64))), 1),
    }[modality]
    if modality == "audio":
        length_value = round(float(length_value), 2)

    def run(request: Request) -> tuple[str, str | None, str]:
        try:
            result = render(pipe, request, out)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return str(result.media), None if result.picture is None else str(result.picture), result.text

    def media_output(elem_id: str) -> Any:
        if modality == "audio":
            return gr.Audio(label="audio", type="filepath", elem_id=elem_id, interactive=False)
        if modality == "video":
            return gr.Video(label="video", elem_id=elem_id, interactive=False, autoplay=True, loop=True)
        return gr.Image(label="image", type="filepath", elem_id=elem_id, interactive=False)

    picture_label = {"audio": "spectrogram", "video": "frames", "image": "picture"}[modality]
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}\n{summary}")
        with gr.Row():
            with gr.Column():
                label = gr.Dropdown(
                    [NO_LABEL, *labels], value=labels[0] if labels else NO_LABEL, label="label",
                    elem_id="label", visible=bool(labels),
                )  # fmt: skip
                prompt = gr.Textbox(label="prompt", elem_id="prompt", visible=captions, lines=1)
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                steps = gr.Number(
                    value=pipe.sampling.steps, precision=0, minimum=1, label="steps", elem_id="steps"
                )
                sampler = gr.Dropdown(
                    list(dict.fromkeys([pipe.sampling.sampler, *SAMPLER_CHOICES])), value=pipe.sampling.sampler,
                    label="sampler", elem_id="sampler",
                )  # fmt: skip
                guidance = gr.Number(
                    value=pipe.sampling.guidance, label="guidance (with a label or prompt)", elem_id="guidance",
                    visible=bool(labels) or captions,
                )  # fmt: skip
            with gr.Column():
                with gr.Tab("generate"):
                    if modality == "image":  # a height and width, not one number
                        length = gr.Textbox(value=length_value, label=length_label, elem_id="length", lines=1)
                    else:
                        length = gr.Number(
                            value=length_value, step=length_step, label=length_label, elem_id="length"
                        )
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                    media = media_output("media")
                    picture = gr.Image(label=picture_label, type="filepath", elem_id="picture", interactive=False,
                                       visible=modality != "image")  # fmt: skip
                    info = gr.Textbox(label="made", elem_id="info", interactive=False)
                tab2 = {"audio": "continue audio", "video": "image to video"}.get(modality)
                if tab2 is not None:
                    with gr.Tab(tab2):
                        if modality == "audio":
                            known = gr.Audio(label="clip to continue", type="filepath", elem_id="known")
                            length2 = gr.Number(value=round(2 * length_value, 2), step=0.1,
                                                label="total length (seconds)", elem_id="length2")  # fmt: skip
                        else:
                            known = gr.Image(label="first frame", type="numpy", elem_id="known")
                            length2 = gr.Number(
                                value=length_value, step=1, label="length (frames)", elem_id="length2"
                            )
                        button2 = gr.Button("Generate", variant="primary", elem_id="generate2")
                        media2 = media_output("media2")
                        picture2 = gr.Image(
                            label=picture_label, type="filepath", elem_id="picture2", interactive=False
                        )
                        info2 = gr.Textbox(label="made", elem_id="info2", interactive=False)

        settings = [label, prompt, seed, steps, sampler, guidance]

        def plain(lab: str, pr: str, sd: float, st: float, sa: str, g: float, n: float | str) -> tuple:
            return run(Request(lab, pr, int(sd or 0), None if st is None else int(st), sa, g, n or None))

        button.click(plain, [*settings, length], [media, picture, info])
        if tab2 is not None:

            def given(lab: str, pr: str, sd: float, st: float, sa: str, g: float, n: float, k: Any) -> tuple:
                if k is None:
                    raise gr.Error("give a clip first" if modality == "audio" else "give a picture first")
                return run(
                    Request(lab, pr, int(sd or 0), None if st is None else int(st), sa, g, n or None, k)
                )

            button2.click(given, [*settings, length2, known], [media2, picture2, info2])
    app.multidiff_out_dir = out  # where the files go (launch() must allow it)
    return app


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    from multidiff.cli import OneLineParser

    p = OneLineParser(prog="multidiff ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", help="run folder, checkpoint folder or pipeline folder")
    p.add_argument(
        "--model", help="a bundled model by name, instead of --ckpt ('multidiff models' lists them)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--out", help="folder for the generated files (default: a temporary folder)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return p.parse_args(list(argv))


def load(source: str, device: str | None = None) -> tuple[Any, Path, str]:
    """The pipeline of a run, checkpoint or pipeline folder on ``device``, its folder and a one-line summary."""

    from multidiff.models import describe
    from multidiff.pipeline import load_pipeline
    from multidiff.train.checkpoint import resolve_pipeline_dir

    folder = resolve_pipeline_dir(source)
    from multidiff.train.distributed import parse_device

    dev = parse_device(device)
    pipe = load_pipeline(folder, device=dev)
    return pipe, folder, describe(folder).summary


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the page until interrupted (``multidiff ui ARGS``)."""
    import sys

    import torch

    from multidiff.models import resolve_source

    args = _parse(sys.argv[1:] if argv is None else argv)
    source = resolve_source(args.ckpt, args.model)
    from multidiff.generation import check_positive

    check_positive(args, "threads")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must lie in 0..65535, got {args.port}")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    pipe, folder, summary = load(source, args.device)
    app = build_app(pipe, title=f"multidiff: {args.model or folder}", out_dir=args.out, summary=summary)
    print(f"serving {folder} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    app.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(app.multidiff_out_dir)],
               theme=light_theme(), show_error=True)  # fmt: skip


def light_theme() -> Any:
    """Gradio's default theme with the system's fonts (the default fetches web fonts, which an offline
    machine cannot)."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
