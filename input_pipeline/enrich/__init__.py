"""FakeOut's audio enrichment: give FF++-derived records the audio of their YouTube originals.

  python -m input_pipeline.enrich --records=IN --out_dir=OUT --originals=DOWNLOADED_VIDEOS \
      --conversion_dict=conversion_dict.json [--verified=proper_audio_files.json]

FaceForensics++, DeeperForensics and FaceShifter ship silent videos; FF++'s mapping files say
which frames of which YouTube video each sequence is, so the original audio can be put back
(FakeOut §4.2, Fig. 3, App. G). Modules, one concern each: ``mapping`` (the mapping files and
whose audio a record carries), ``originals`` (find an original, cut the audio under a frame
range), ``runner`` (shards, resume, report). See docs/enrich.md.
"""
from input_pipeline.enrich.mapping import (REENACTMENTS, SWAPS, AudioSource, Mapping, MappingError,
                                           audio_source)
from input_pipeline.enrich.originals import OriginalError, Span, find, read_span
from input_pipeline.enrich.runner import REPORT, run, summary_line

__all__ = ["REENACTMENTS", "REPORT", "SWAPS", "AudioSource", "Mapping", "MappingError",
           "OriginalError", "Span", "audio_source", "find", "read_span", "run", "summary_line"]
