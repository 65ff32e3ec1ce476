"""Reading and writing media files: audio, video and images.

Audio goes through soundfile (libsndfile); video through imageio's ffmpeg plugin (imageio-ffmpeg ships
the ffmpeg binary); GIF and still images through pillow, GIFs read with imageio's pillow plugin and
written frame by frame, so they need no ffmpeg. Each is imported inside the functions that need it.
Every write is atomic: the data goes to a temporary file in the destination folder, which then
replaces the destination with ``os.replace``, so an interrupted run never leaves a half-written file
under the final name.

Media arrays are channels-last and uint8: a video is ``[F, H, W, C]``, an image ``[H, W, C]``.

Every error about a file that exists but cannot be used is a :class:`MediaFileError` (a ValueError)
whose message starts with the path and says what is wrong; a missing file is a
:class:`MediaNotFoundError`, both a ValueError and a FileNotFoundError.
"""

from __future__ import annotations

from multidiff.io.audio import AUDIO_FORMATS, AudioInfo, probe_audio, read_audio, write_audio
from multidiff.io.common import (
    AudioFileError,
    ImageFileError,
    MediaFileError,
    MediaNotFoundError,
    VideoFileError,
    free_path,
)
from multidiff.io.image import IMAGE_EXTENSIONS, ImageInfo, probe_image, read_image, write_image
from multidiff.io.video import (
    VIDEO_EXTENSIONS,
    VideoInfo,
    num_resampled_frames,
    probe_video,
    read_video,
    source_frame_index,
    write_video,
)

__all__ = [
    "AUDIO_FORMATS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "AudioFileError",
    "AudioInfo",
    "ImageFileError",
    "ImageInfo",
    "MediaFileError",
    "MediaNotFoundError",
    "VideoFileError",
    "VideoInfo",
    "free_path",
    "num_resampled_frames",
    "probe_audio",
    "probe_image",
    "probe_video",
    "read_audio",
    "read_image",
    "read_video",
    "source_frame_index",
    "write_audio",
    "write_image",
    "write_video",
]
