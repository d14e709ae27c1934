"""The benchmark table's inputs: batch synthesis from one pipeline example, the bench data each
paper config is pointed at, and the row arithmetic."""
import os

import numpy as np
import pytest

from benchmarks import input_pipeline as input_bench
from benchmarks import table, train_step
from fakedet import objectives
from fakedet.objectives import mmv_nce
from input_pipeline import config as input_config
from input_pipeline.synthetic import dataset as synthetic
from tests.tiny_configs import config_module

T = 10  # Frames per clip on the tiny records (25 fps, 16 kHz: 0.4 s = 6,400 samples).


def test_synth_batch_tiles_one_example_and_keeps_shapes():
  example = {"video": np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1),
             "waveform": np.linspace(-1, 1, 7, dtype=np.float32),
             "label": np.int32(1), "source": np.str_("forgery")}
  host = train_step.synth_batch(example, ("video", "waveform", "label"), 5)
  assert sorted(host) == ["label", "video", "waveform"]  # Only what the objective reads.
  assert host["video"].shape == (5, 2, 3, 3, 1) and host["video"].dtype == np.uint8
  assert host["waveform"].shape == (5, 7) and host["waveform"].dtype == np.float32
  for row in range(5):
    np.testing.assert_array_equal(host["video"][row], example["video"])
    np.testing.assert_array_equal(host["waveform"][row], example["waveform"])
  np.testing.assert_array_equal(host["label"], [0, 1, 0, 1, 0])  # Both classes.
  assert host["label"].dtype == np.int32
  zeros = train_step.synth_batch(example, ("video", "label"), 3, fill="zeros")
  assert zeros["video"].shape == (3, 2, 3, 3, 1) and not zeros["video"].any()
  assert zeros["label"].dtype == np.int32


def test_synth_batch_names_what_is_missing():
  with pytest.raises(KeyError, match=r"\['text'\].*check config.input.train_ops"):
    train_step.synth_batch({"video": np.zeros(3)}, ("video", "text"), 2)
  with pytest.raises(ValueError, match="fill='ones'"):
    train_step.synth_batch({"video": np.zeros(3)}, ("video",), 2, fill="ones")


def _tiny_source(config, tiny_dir, **kw):
  """``config``'s sources replaced by the conftest records (30 frames of 48 px, with words)."""
  config.input.sources = {"main": input_config.source_config(tiny_dir, "train", 4, **kw)}
  config.input.num_workers = 0
  config.input.clip_frames = T
  return config


def _check_batch(config, expected):
  """The example of the config's own pipeline, tiled to 3, holds every key the objective reads
  with exactly ``expected`` (shape without the batch axis, dtype)."""
  objective = objectives.build(config)
  example = input_bench.one_example(config)
  host = train_step.synth_batch(example, objective.input_keys, 3)
  assert sorted(host) == sorted(objective.input_keys) == sorted(expected)
  for key, (shape, dtype) in expected.items():
    assert host[key].shape == (3,) + shape, key
    assert host[key].dtype == dtype, key


def test_avcl_batch_has_the_waveform(tiny_dir):
  config = config_module("avcl").get_config()
  config = _tiny_source(config, tiny_dir)
  # The paper's ops with the crop shrunk to the 48-px records.
  config.input.train_ops = config.input.train_ops.replace("size=88, resize=88",
                                                          "size=40, resize=40")
  _check_batch(config, {"video": ((T, 40, 40, 3), np.uint8),
                        "waveform": ((T * 16000 // 25,), np.float32)})


def test_mmv_batch_has_text_and_its_validity(tiny_dir, tmp_path):
  mmv = config_module("mmv")
  config = _tiny_source(mmv.get_config(), tiny_dir, labels=(0,))
  vocab = tmp_path / "words.txt"
  vocab.write_text("hello\nworld\n")
  config.model.text_backbone.vocab_path = str(vocab)
  config.input.train_ops, _ = mmv.ops(str(vocab), crop=40, size=32, num=2, words=2)
  _check_batch(config, {"video": ((T, 32, 32, 3), np.uint8),
                        "audio": ((4 * T, 80), np.float32),  # 10 ms hops: 4 per 40-ms frame.
                        "text": ((2, 16), np.int32),  # num narrations × max_words tokens.
                        "text_valid": ((2,), np.bool_)})


def test_crop_size_is_the_largest_window():
  assert input_bench.crop_size(config_module("stage1").get_config().input.train_ops) == 140
  assert input_bench.crop_size(config_module("fakeout").get_config().input.train_ops) == 224
  assert input_bench.crop_size("flip|log_mel") == 0


def test_bench_preset_is_big_enough_for_the_paper_ops():
  full = input_bench.bench_preset("synthetic:demo", 224, 63)
  assert (full.resolution, full.num_frames, full.splits) == (224, 64, ("train",))
  assert full.families == synthetic.preset("demo").families and full.name == "bench_demo_224px"
  mouth = input_bench.bench_preset("synthetic:extra_mouth", 88, 50)  # Already 96-px mouths.
  assert (mouth.mouth_size, mouth.resolution, mouth.name) == (96, 96, "bench_extra_mouth_96px")
  with pytest.raises(ValueError, match="'/data/ffpp'.*synthetic:<preset>"):
    input_bench.bench_preset("/data/ffpp", 140, 25)


@pytest.fixture
def fake_ensure(monkeypatch):
  """No dataset is built: each bench twin's directory is named after its preset."""
  monkeypatch.setattr(synthetic, "ensure", lambda cfg: f"/bench/{cfg.name}")


def test_on_bench_data_points_each_source_at_its_demo_twin(fake_ensure):
  config = input_bench.on_bench_data("configs/stage2.py:baseline")
  assert config.input.sources.forgery.data_dir == "/bench/bench_demo_140px"
  assert config.input.sources.reals.data_dir == "/bench/bench_extra_140px"
  assert config.input.train_ops == config_module("stage2").get_config(
      "baseline").input.train_ops  # The paper's ops, unchanged.
  assert config.input.num_workers == 0


def test_on_bench_data_fills_the_vocabulary_the_paper_config_leaves_empty(fake_ensure):
  config = input_bench.on_bench_data("configs/mmv.py")
  vocab = "/bench/bench_narrated_140px/vocabulary.txt"
  assert config.model.text_backbone.vocab_path == vocab
  assert f"vocab_path={vocab!r}" in config.input.train_ops
  assert f"vocab_path={vocab!r}" in config.input.eval.ops  # The objective checks both ops.
  mmv_nce.MMVObjective.check(config)
  assert "random_crop(size=140, resize=200)" in config.input.train_ops  # Paper ops kept.
  assert config.input.clip_frames == 32


def test_bench_twin_takes_the_paper_configs_sample_rate():
  assert input_bench.bench_preset("synthetic:demo", 224, 63, sample_rate=44100).sample_rate == 44100
  assert input_bench.bench_preset("synthetic:demo", 224, 63).sample_rate == (
      synthetic.preset("demo").sample_rate)


def test_a_failed_row_names_the_exception_not_the_trailing_note():
  out = ("Traceback (most recent call last):\n  File \"x.py\"\nValueError: records at 16000 Hz\n"
         "For simplicity, Grain has removed its internal frames from the traceback.\n")
  assert table.error_line(out, 1) == "ValueError: records at 16000 Hz"
  assert table.error_line("killed\n", 137) == "killed"
  assert table.error_line("", 137) == "exit status 137"


def test_table_row_arithmetic():
  row = dict(method="stage1", params=30_500_000, batch=4, step_s=2.0, compile_s=61.2,
             flops=3.0e12, devices=1, processes=1, input_per_core=12.5, host_cores=8,
             peak_tflops=10.0)
  # 4 clips / 2 s = 2 clips/s; 3 TFLOP / 2 s = 1,500 GFLOP/s = 15 % of 10 TFLOP/s.
  assert table.format_row(row) == ("| stage1 | 30.5 M | 4 | 2.000 | 2.00 | 3000.0 | 1500.0 | "
                                   "15.0 % | 12.5 | 100.0 | 2.00 | 61 |")
  assert "| — |" in table.format_row(dict(row, peak_tflops=0.0))
  assert table.header().count("|") == 2 * (len(table.COLUMNS) + 1)
  failed = table.format_row(dict(method="mmv", error="boom"))
  assert failed.startswith("| mmv | failed: boom |") and failed.count("|") == len(table.COLUMNS) + 1


def test_table_rejects_unknown_methods(capsys):
  with pytest.raises(SystemExit):
    table.parse_args(["--methods=stage1,stage3"])
  assert "stage3" in capsys.readouterr().err
  assert sorted(table.parse_args([])[1]) == sorted(table.METHODS)
  assert all(os.path.isfile(p.partition(":")[0]) for p in table.METHODS.values())
