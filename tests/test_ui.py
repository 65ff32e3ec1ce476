"""multidiff ui: render() gives exactly what the pipeline gives for the same request (audio, continuation,
image-to-video with its first frame kept), and the Gradio page in a real headless Chromium: it loads, a
generation is asked for through the page, and the wav and its spectrogram appear, the wav being the same
file render() made."""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import torch

from multidiff.core.denoiser import Denoiser
from multidiff.modalities.audio import MelAdapter, MelAdapterConfig, MelSpec
from multidiff.nn.unet import UNet, UNetConfig
from multidiff.pipeline import AudioPipeline, SamplingConfig
from multidiff.ui import Request, render

SPEC = MelSpec(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=16, fmax=4000.0, edge_pad=96
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _unet(in_channels: int, video: bool = False, num_classes: int | None = None) -> UNet:
    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=in_channels, channels=(8, 16), num_res_blocks=1, attention_levels=(),
                           head_dim=8, norm_groups=4, emb_dim=32, noise_freq_dim=16, num_classes=num_classes,
                           video=video))  # fmt: skip
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
    return unet


def audio_pipeline() -> AudioPipeline:
    adapter = MelAdapter(MelAdapterConfig(spec=SPEC))
    t = torch.arange(8000) / 8000
    adapter.fit_stats([(0.5 * torch.sin(2 * math.pi * 440 * t))[None, None]])
    return AudioPipeline(Denoiser(_unet(1, num_classes=2), "edm", sigma_data=0.5), adapter,
                         sampling=SamplingConfig(sampler="euler", steps=3), labels=["hum", "hiss"], window=64)  # fmt: skip


def test_render_equals_the_pipeline(tmp_path) -> None:
    pipe = audio_pipeline()
    result = render(pipe, Request(label="hiss", seed=7, steps=3, guidance=2.0, length=0.5), tmp_path)
    direct = pipe.generate(1, 0.5, label="hiss", seed=7, steps=3, guidance=2.0, progress=False)[0]
    again = render(pipe, Request(label="hiss", seed=7, steps=4, guidance=2.0, length=0.5), tmp_path)
    assert again.media != result.media and result.media.is_file()  # same second, label and seed: kept apart
    wave, sr = sf.read(result.media, dtype="float32", always_2d=True)
    assert sr == 8000 and result.picture.suffix == ".png"
    np.testing.assert_allclose(wave.T, direct.clamp(-1, 1).numpy(), atol=1e-4)  # 16-bit wav at most
    # continuation: the given clip's frames are kept (inpainting); the output has the total length
    clip = tmp_path / "clip.wav"
    sf.write(clip, direct.numpy().T, 8000)
    cont = render(pipe, Request(label="hum", seed=1, length=1.0, known=str(clip)), tmp_path)
    assert sf.info(str(cont.media)).frames == 8000 and "continued" in cont.text
    with pytest.raises(ValueError, match="already"):
        render(pipe, Request(length=0.25, known=str(clip)), tmp_path)


def test_render_image_to_video_keeps_the_first_frame(tmp_path) -> None:
    from multidiff.io import read_video
    from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
    from multidiff.modalities.video import VideoAdapter
    from multidiff.pipeline import VideoPipeline

    pipe = VideoPipeline(Denoiser(_unet(3, video=True), "edm", sigma_data=0.5),
                         VideoAdapter(ImageAdapter(ImageAdapterConfig())),
                         sampling=SamplingConfig(sampler="euler", steps=2), size=8, window=4)  # fmt: skip
    first = np.zeros((8, 8, 3), dtype=np.uint8)
    first[2:6, 2:6] = (250, 20, 20)
    result = render(pipe, Request(seed=0, length=4, known=first), tmp_path)
    frames, _ = read_video(result.media)
    assert frames.shape[0] == 4 and frames.shape[1] >= 8 * 8 // 8  # enlarged for display
    k = frames.shape[1] // 8
    shown = frames[0, ::k, ::k].numpy().astype(int)  # back to 8 x 8
    assert np.abs(shown - first).mean() < 12  # the first frame is the picture (H.264 loses a little)


def test_render_image_takes_the_training_size_or_h_x_w(tmp_path) -> None:
    from multidiff.io import read_image
    from multidiff.modalities.image import ImageAdapter, ImageAdapterConfig
    from multidiff.pipeline import ImagePipeline

    pipe = ImagePipeline(Denoiser(_unet(3), "edm", sigma_data=0.5), ImageAdapter(ImageAdapterConfig()),
                         sampling=SamplingConfig(sampler="euler", steps=2), size=(8, 12))  # fmt: skip

    def made(length: object) -> tuple[str, tuple[int, int]]:
        result = render(pipe, Request(seed=0, length=length), tmp_path)
        return result.text.split(" px")[0], tuple(read_image(result.media).shape[:2])

    k = 192 // 8  # enlarged for display: each pixel repeated until the picture is 192 tall
    assert made(None) == made("") == ("8x12", (8 * k, 12 * k))  # the training size, not a square
    assert made("16x8") == made(" 16 X 8 ") == ("16x8", (16 * 12, 8 * 12))
    assert made(8) == made("8") == ("8x8", (8 * k, 8 * k))
    assert made(8.0) == ("8x8", (8 * k, 8 * k))  # the number a field gives
    for bad in ("8 by 12", "0x8", "8.5", "8x8x8", "inf", "1e3", "8x1e309", float("inf"), 8.5, "-8"):
        with pytest.raises(ValueError, match="HxW"):
            render(pipe, Request(seed=0, length=bad), tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_in_a_real_browser(tmp_path) -> None:
    # never skipped: the page is only tested in a real browser, so a machine without one fails here and says why
    assert CHROMIUM is not None and CHROMEDRIVER is not None, (
        "the UI test needs the chromium browser and its driver: apt-get install chromium chromium-driver"
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from multidiff.ui import build_app, light_theme

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    pipe = audio_pipeline()
    out = tmp_path / "made"
    app = build_app(pipe, title="test page", out_dir=out, summary="a tiny model")
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, allowed_paths=[str(out)],
               theme=light_theme(), quiet=True)  # fmt: skip
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,1000",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "generate"))
        assert "test page" in driver.page_source and "hum" in driver.page_source  # title, label menu
        seed = driver.find_element(By.CSS_SELECTOR, "#seed input")
        seed.clear()
        seed.send_keys("5")
        driver.find_element(By.ID, "generate").click()
        info = WebDriverWait(driver, 120).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#info textarea").get_attribute("value") or False
        )
        assert "hum" in info and "seed 5" in info
        link = (
            WebDriverWait(driver, 30)
            .until(lambda d: d.find_elements(By.CSS_SELECTOR, "#media a[download]") or False)[0]
            .get_attribute("href")
        )
        img = WebDriverWait(driver, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#picture img") or False
        )[0]
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return arguments[0].naturalWidth", img) > 0
        )
        wav = urllib.request.urlopen(link, timeout=30).read()  # the page's wav is the file render() made
        made = sorted(out.glob("*.wav"))
        assert len(made) == 1 and wav == made[0].read_bytes()
        seconds = round(pipe.default_extent().seconds, 2)  # the page's default length
        expected = pipe.generate(1, seconds, label="hum", seed=5, guidance=1.0, progress=False)[0]
        got, _ = sf.read(made[0], dtype="float32", always_2d=True)
        np.testing.assert_allclose(got.T, expected.clamp(-1, 1).numpy(), atol=1e-4)
    finally:
        driver.quit()
        app.close()
        time.sleep(0.2)
