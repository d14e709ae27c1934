"""The study's table and its ledger of scored runs (launch/study.py), without training: a cell is
the mean ± std over seeds, a partial cell says how many seeds it holds, and runs already in the
ledger are never run again."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["autoencoder_swap", "graphics_swap", "reenactment", "neural_texture"]


def _load():
  spec = importlib.util.spec_from_file_location(
      "study", os.path.join(ROOT, "launch", "study.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def study(monkeypatch):
  module = _load()
  monkeypatch.setattr(module, "dataset_families", lambda *a: list(FAMILIES))

  def no_subprocess(args, log):
    raise AssertionError(f"ran {args} although the ledger had the run")

  monkeypatch.setattr(module, "_run", no_subprocess)
  return module


def _entry(method, family, seed, auc, seen, steps=1000, patience=2):
  return {"method": method, "family": family, "seed": seed, "steps": steps,
          "patience": patience, "video_auc": auc, "seen_video_auc": seen}


def _write(path, entries):
  with open(path, "w") as f:
    f.write("".join(json.dumps(e) + "\n" for e in entries))


def test_cells_are_mean_and_population_std_over_seeds_and_partial_cells_say_n(study):
  runs = {"stage2": {f: [_entry("stage2", f, s, a, 0.9) for s, a in ((0, 0.7), (1, 0.9))]
                     for f in FAMILIES},
          "baseline": {"reenactment": [_entry("baseline", "reenactment", 0, 0.5, 0.8)]}}
  row_stage2, row_baseline = study.table(runs, FAMILIES, n_seeds=2).splitlines()[2:]
  # Per family: mean 80, population std 10; the per-seed means 0.7 and 0.9 likewise.
  assert row_stage2.count("80.0 ± 10.0") == 5 and "90.0 ± 0.0" in row_stage2
  assert "(n=" not in row_stage2
  cells = [c.strip() for c in row_baseline.split("|")[2:-1]]
  # One family of one seed: that cell says n=1; a mean over the other families' missing runs
  # would average a different set of families, so the means are "—".
  assert cells == ["—", "—", "50.0 (n=1)", "—", "—", "—"]


def test_a_ledger_run_is_not_run_again_and_the_table_is_built_from_the_ledger(study, tmp_path):
  ledger = tmp_path / "runs.jsonl"
  _write(ledger, [_entry("baseline", f, 0, 0.6, 0.8) for f in FAMILIES]
         # Another budget rule is another run: it must not stand in for this one.
         + [_entry("baseline", f, 0, 0.1, 0.1, steps=200) for f in FAMILIES])
  study.main([f"--workdir={tmp_path}", f"--ledger={ledger}", "--methods=baseline",
              "--seeds=0", "--steps=1000", "--patience=2"])
  md = (tmp_path / "study.md").read_text()
  assert md.count("60.0") == 5 and "80.0" in md and "10.0" not in md
  saved = json.loads((tmp_path / "study.json").read_text())
  assert [r["video_auc"] for r in saved["results"]["baseline"]["reenactment"]] == [0.6]


def test_table_only_runs_nothing_and_reports_what_is_missing(study, tmp_path, capsys):
  ledger = tmp_path / "runs.jsonl"
  _write(ledger, [_entry("stage2", "reenactment", 1, 0.75, 0.99)])
  work = tmp_path / "new"  # Not there yet: a table alone needs no earlier run.
  study.main([f"--workdir={work}", f"--ledger={ledger}", "--methods=stage2",
              "--seeds=0,1", "--steps=1000", "--patience=2", "--table_only"])
  out = capsys.readouterr().out
  assert "7 of 8 runs are not in" in out
  assert "75.0 (n=1)" in (work / "study.md").read_text()


def test_a_run_is_appended_to_the_ledger_as_it_finishes(study, tmp_path, monkeypatch):
  ledger = tmp_path / "runs.jsonl"
  done = []

  def fake_run(m, file, flags, init, family, seed, work, args):
    done.append(family)
    return {"seed": seed, "video_auc": 0.5 + 0.1 * len(done), "seen_video_auc": 0.9}

  monkeypatch.setattr(study, "_leave_one_out", fake_run)
  monkeypatch.setattr(study, "train", lambda *a, **k: None)  # The pretraining.
  _write(ledger, [_entry("stage2", "graphics_swap", 0, 0.99, 0.99)])
  study.main([f"--workdir={tmp_path}", f"--ledger={ledger}", "--methods=stage2", "--seeds=0",
              "--steps=1000", "--patience=2"])
  assert done == ["autoencoder_swap", "reenactment", "neural_texture"]
  lines = [json.loads(l) for l in ledger.read_text().splitlines()]
  assert [(l["family"], l["steps"], l["patience"]) for l in lines[1:]] == [
      (f, 1000, 2) for f in done]


def test_a_broken_ledger_line_names_the_file_and_line(study, tmp_path):
  ledger = tmp_path / "runs.jsonl"
  ledger.write_text(json.dumps(_entry("stage2", "reenactment", 0, 0.7, 0.9)) + "\n"
                    + json.dumps({"video_auc": 0.5}) + "\n")
  with pytest.raises(SystemExit, match=r"runs.jsonl:2: not a study run \(KeyError"):
    study.read_ledger(str(ledger))


def test_each_budget_trains_in_its_own_directory(study, tmp_path):
  """A patience-2 run that stopped early must not look finished to a patience-5 request (its
  ledger entry would score the patience-2 checkpoint); the same key finds its own directory
  again, so a killed run resumes."""
  work = str(tmp_path)
  p2 = study.run_directory(work, "stage2", "reenactment", 2, 1000, 2)
  os.makedirs(p2)
  with open(os.path.join(p2, "result.json"), "w") as f:
    json.dump({"step": 400, "stopped": "early_stopping"}, f)
  assert study._finished(p2, 1000)
  p5 = study.run_directory(work, "stage2", "reenactment", 2, 1000, 5)
  assert p5 != p2 and not study._finished(p5, 1000)
  assert study.run_directory(work, "stage2", "reenactment", 2, 1000, 2) == p2
  keys = [("stage2", "reenactment", 0, 1000, 2), ("stage2", "reenactment", 1, 1000, 2),
          ("stage2", "reenactment", 0, 2000, 2), ("stage2", "graphics_swap", 0, 1000, 2),
          ("baseline", "reenactment", 0, 1000, 2)]
  assert len({study.run_directory(work, *k) for k in keys}) == len(keys)
  # The reals-only PCL run never sees a forgery and takes no patience: one run for every family.
  assert (study.run_directory(work, "pcl_reals", "reenactment", 0, 1000, 2)
          == study.run_directory(work, "pcl_reals", "graphics_swap", 0, 1000, 5))
