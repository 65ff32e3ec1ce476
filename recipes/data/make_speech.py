"""Make a folder of spoken words offline with espeak-ng: the speech set of the audio benchmark.

    python recipes/data/make_speech.py --out DIR [--per-word K] [--heldout-per-word H] [--seed S]
                                       [--words zero,one,...] [--sample-rate 22050] [--seconds 1.0]

Needs the ``espeak-ng`` program (Debian/Ubuntu: ``apt-get install espeak-ng``; macOS:
``brew install espeak-ng``); nothing is downloaded. Every utterance draws, without repetition per
word, an English accent (American, British, Scottish, RP, Caribbean, Lancastrian, West Midlands), a
voice variant (male m1-m7, female f1-f5, Klatt formant voices), a speed in words per minute and a
pitch. The waveform is trimmed of the silence espeak-ng leaves around the word, resampled to
``--sample-rate`` mono, peak-normalised to -1 dBFS and, with ``--seconds``, zero-padded (or cut) to
that length.

Layout (labels are the subfolder names; ``metadata.csv`` repeats them with a caption)::

    DIR/train/<word>/<word>_0000.wav ...       K per word (.flac with --format flac)
    DIR/train/metadata.csv                     path,label,caption,voice,speed,pitch
    DIR/heldout/<word>/<word>_0000.wav ...     H per word, other draws of the same distribution
    DIR/heldout/metadata.csv
    DIR/speech.json                            the settings, for the record

The result is a pure function of the arguments and the espeak-ng version.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from multidiff.atomic import replacing
from multidiff.cli import OneLineParser
from multidiff.io.common import check_empty_folder

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
)
SPEEDS = (110, 200)  # words per minute, inclusive range (espeak-ng default 175)
PITCHES = (20, 80)  # espeak-ng pitch 0-99 (default 50)
INSTALL_HINT = (
    "espeak-ng was not found. Install it with your system's package manager, e.g. "
    "'apt-get install espeak-ng' (Debian/Ubuntu), 'dnf install espeak-ng' (Fedora) or "
    "'brew install espeak-ng' (macOS), or pass --espeak PATH"
)


@dataclass(frozen=True)
class Utterance:
    """One file to make.

    Attributes:
        split: ``"train"`` or ``"heldout"``.
        word: The text spoken (also the label).
        index: Number within the word and split.
        voice: espeak-ng voice, ``accent+variant``.
        speed: Words per minute.
        pitch: espeak-ng pitch (0-99).
    """

    split: str
    word: str
    index: int
    voice: str
    speed: int
    pitch: int
    ext: str = "wav"

    @property
    def path(self) -> str:
        """Path relative to the split folder."""
        return f"{self.word}/{self.word}_{self.index:04d}.{self.ext}"

    @property
    def caption(self) -> str:
        """A caption describing the clip, for caption-conditioned training."""
        sex = "female" if self.voice.split("+")[1].startswith("f") else "male"
        pace = "slowly" if self.speed < 140 else "quickly" if self.speed > 170 else "at a normal pace"
        tone = "low" if self.pitch < 40 else "high" if self.pitch > 60 else "medium"
        return f"the word {self.word} spoken {pace} by a {sex} voice with a {tone} pitch"


def find_espeak(explicit: str | None = None) -> str:
    """Path of the espeak-ng program; raises FileNotFoundError saying how to install it."""
    found = explicit if explicit and Path(explicit).is_file() else shutil.which(explicit or "espeak-ng")
    if found is None:
        raise FileNotFoundError(INSTALL_HINT)
    return found


def plan(
    words: tuple[str, ...],
    per_word: int,
    heldout_per_word: int,
    seed: int,
    ext: str = "wav",
    accents: tuple[str, ...] = ACCENTS,
) -> list[Utterance]:
    """Draw the voice, speed and pitch of every utterance; no combination repeats within a word."""
    rng = np.random.default_rng(seed)
    n_combos = len(accents) * len(VARIANTS) * (SPEEDS[1] - SPEEDS[0] + 1) * (PITCHES[1] - PITCHES[0] + 1)
    if per_word + heldout_per_word > n_combos:
        raise ValueError(
            f"at most {n_combos} distinct utterances per word, asked {per_word + heldout_per_word}"
        )
    out = []
    for word in words:
        seen: set[tuple[str, int, int]] = set()
        for split, count in (("train", per_word), ("heldout", heldout_per_word)):
            for index in range(count):
                while True:
                    voice = f"{accents[rng.integers(len(accents))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
                    combo = (
                        voice,
                        int(rng.integers(SPEEDS[0], SPEEDS[1] + 1)),
                        int(rng.integers(PITCHES[0], PITCHES[1] + 1)),
                    )
                    if combo not in seen:
                        seen.add(combo)
                        break
                out.append(Utterance(split, word, index, *combo, ext=ext))
    return out


def trim_silence(
    wave: np.ndarray, sample_rate: int, threshold_db: float = -40.0, margin_s: float = 0.02
) -> np.ndarray:
    """Cut leading and trailing samples below ``threshold_db`` relative to the peak, keeping a margin."""
    peak = float(np.abs(wave).max(initial=0.0))
    if peak == 0.0:
        return wave
    loud = np.flatnonzero(np.abs(wave) >= peak * 10.0 ** (threshold_db / 20.0))
    margin = int(margin_s * sample_rate)
    return wave[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


def synthesize(espeak: str, utt: Utterance, sample_rate: int, seconds: float | None) -> np.ndarray:
    """Speak one utterance; returns mono float32 at ``sample_rate``, peak -1 dBFS."""
    from multidiff.io import read_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        cmd = [
            espeak,
            "-v",
            utt.voice,
            "-s",
            str(utt.speed),
            "-p",
            str(utt.pitch),
            "-z",
            "-w",
            str(wav),
            utt.word,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"espeak-ng failed on {utt} ({' '.join(cmd)}): {result.stderr.strip()}")
        wave, _ = read_audio(wav, sample_rate=sample_rate, mono=True)  # (1, N)
    x = trim_silence(wave[0].numpy(), sample_rate)
    if x.size == 0 or not np.abs(x).max() > 0:
        raise RuntimeError(f"espeak-ng produced silence for {utt}")
    x = x * (10.0 ** (-1.0 / 20.0) / np.abs(x).max())
    if seconds is not None:
        n = int(round(seconds * sample_rate))
        x = np.pad(x, (0, max(0, n - x.size)))[:n]
    return x.astype(np.float32)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = OneLineParser(prog="make_speech", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder, new or empty (train/ and heldout/ are made inside)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    p.add_argument("--per-word", type=int, default=200, help="training utterances per word")
    p.add_argument("--heldout-per-word", type=int, default=50, help="held-out utterances per word")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--words", default=",".join(DIGITS), help="comma-separated words (default: the ten digits)"
    )
    p.add_argument(
        "--accents",
        default=",".join(ACCENTS),
        help="comma-separated espeak-ng voices the words are spoken in (default: seven English accents; "
        "others, e.g. de,fr-fr,es,it,nl, speak the English words with that language's sounds)",
    )
    p.add_argument("--sample-rate", type=int, default=22050)
    p.add_argument(
        "--format",
        default="wav",
        choices=("wav", "flac"),
        help="file format (flac: lossless, about half the size)",
    )
    p.add_argument("--seconds", type=float, default=None, help="pad or cut every clip to this length")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="espeak-ng processes at once")
    p.add_argument("--espeak", default=None, help="path of the espeak-ng program (default: found on PATH)")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Make the data set; returns the output folder."""
    args = build_parser().parse_args(argv)
    espeak = find_espeak(args.espeak)
    from multidiff.io import write_audio

    words = tuple(w.strip() for w in args.words.split(",") if w.strip())
    if not words or any("/" in w or w.startswith(".") for w in words):
        raise ValueError(f"--words needs plain comma-separated words, got {args.words!r}")
    if args.per_word < 1 or args.heldout_per_word < 0:
        raise ValueError(
            f"need --per-word >= 1 and --heldout-per-word >= 0, got {args.per_word}, {args.heldout_per_word}"
        )
    if args.seconds is not None and not args.seconds > 0:
        raise ValueError(f"--seconds must be positive, got {args.seconds}")
    version = subprocess.run(
        [espeak, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    accents = tuple(a.strip() for a in args.accents.split(",") if a.strip())
    if not accents:
        raise ValueError(f"--accents needs comma-separated espeak-ng voices, got {args.accents!r}")
    out = check_empty_folder(args.out, args.overwrite)
    utterances = plan(words, args.per_word, args.heldout_per_word, args.seed, args.format, accents)
    splits = ("train", "heldout") if args.heldout_per_word else ("train",)
    for split in splits:
        for word in words:
            (out / split / word).mkdir(parents=True, exist_ok=True)

    def make(utt: Utterance) -> None:
        wave = synthesize(espeak, utt, args.sample_rate, args.seconds)
        write_audio(out / utt.split / utt.path, wave, args.sample_rate)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for done, _ in enumerate(pool.map(make, utterances), 1):
            if done % 100 == 0 or done == len(utterances):
                print(f"{done}/{len(utterances)} utterances", file=sys.stderr)

    for split in splits:
        rows = [u for u in utterances if u.split == split]
        with replacing(out / split / "metadata.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "caption", "voice", "speed", "pitch"])
            for u in rows:
                writer.writerow([u.path, u.word, u.caption, u.voice, u.speed, u.pitch])
    record = {
        "espeak_ng": version,
        "words": list(words),
        "per_word": args.per_word,
        "heldout_per_word": args.heldout_per_word,
        "seed": args.seed,
        "sample_rate": args.sample_rate,
        "seconds": args.seconds,
        "accents": list(accents),
        "variants": list(VARIANTS),
        "speeds": list(SPEEDS),
        "pitches": list(PITCHES),
        "files": [asdict(u) for u in utterances],
    }
    (out / "speech.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {len(utterances)} clips of {len(words)} words to {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "make_speech"))
