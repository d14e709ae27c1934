"""Raw videos → clip records: decode, detect/track/align faces, write resumable shards.

  python -m input_pipeline.preprocess --videos=DIR_OR_LIST.jsonl --out_dir=OUT --name=NAME

Modules, one concern each: ``decode`` (PyAV → 25 fps frames + 16 kHz int16 audio, typed
errors), ``faces`` (MTCNN or user landmark files → per-frame detections), ``tracking`` (IoU tracks
with gap interpolation), ``align`` (12-frame smoothing, similarity warp, face/mouth crops),
``video`` (the per-video transform), ``runner`` (multiprocessing, shards, resume, manifest),
``beam_pipeline`` (the same as an Apache Beam pipeline; imported on demand, needs the extra).
See docs/preprocessing.md.
"""
from input_pipeline.preprocess.decode import SKIP_KINDS, Media, MediaError, read_video
from input_pipeline.preprocess.runner import read_list, run, scan
from input_pipeline.preprocess.video import (PreprocessConfig, VideoItem, VideoResult,
                                             process_video)

__all__ = ["SKIP_KINDS", "Media", "MediaError", "PreprocessConfig", "VideoItem", "VideoResult",
           "process_video", "read_list", "read_video", "run", "scan"]
