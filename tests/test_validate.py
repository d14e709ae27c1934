"""Validator CLI: a clean dataset passes; every kind of damage is reported with file and index."""
import os
import subprocess
import sys

import pytest

from input_pipeline import records, validate
from tests.conftest import write_tiny
from tests.test_pipeline import _corrupt_dataset


def test_clean_dataset_has_no_problems(tmp_path):
  write_tiny(tmp_path, num_real=4, num_fake=2, with_mask=True)
  assert validate.validate(str(tmp_path), progress=False) == []


def test_reports_bad_records_checksums_and_format_mismatch(tmp_path):
  data_dir, path = _corrupt_dataset(tmp_path, {"frames": [b"notajpeg"] * 30})
  problems = validate.validate(data_dir, progress=False)
  assert any(p.startswith(f"{path} record 2:") and "not a decodable image" in p for p in problems)
  assert any("SHA-256 differs" in p for p in problems)
  assert any("formats hold different bytes at record(s) [2]" in p for p in problems)
  assert not any("record 1:" in p for p in problems)


def test_wrong_sample_rate_and_truncated_tfrecord(tmp_path):
  manifest = write_tiny(tmp_path, num_real=3, num_fake=0, num_shards=1)
  problems = validate.validate(str(tmp_path), sample_rate=44100, progress=False)
  assert sum("expected 44100 Hz" in p for p in problems) == 2 * (3 + 5)  # both formats; train 3 + val 5 records
  tfr = records.split_files(str(tmp_path), manifest, "train", "tfrecord")[0]
  with open(tfr, "r+b") as f:
    f.truncate(os.path.getsize(tfr) - 10)
  problems = validate.validate(str(tmp_path), splits=["train"], checksums=False, progress=False)
  assert any(p.startswith(f"{tfr} record 2:") and "corrupted TFRecord" in p for p in problems)


@pytest.mark.integration
def test_cli_exit_status(tmp_path):
  write_tiny(tmp_path, num_real=2, num_fake=0, num_shards=1)
  ok = subprocess.run([sys.executable, "-m", "input_pipeline.validate", str(tmp_path)],
                      capture_output=True, text=True, check=False)
  assert ok.returncode == 0, ok.stderr
  assert "0 problem(s)" in ok.stdout
  os.remove(tmp_path / "manifest.json")
  bad = subprocess.run([sys.executable, "-m", "input_pipeline.validate", str(tmp_path)],
                       capture_output=True, text=True, check=False)
  assert bad.returncode == 1 and "not a finished fakedet dataset" in bad.stdout
