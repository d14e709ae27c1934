"""Detection metrics against hand-computed values and scikit-learn as an independent reference."""
import numpy as np
import pytest
from scipy import optimize
from sklearn import metrics as skm

from fakedet.evaluation import metrics


def _random_case(seed, n=300, decimals=None):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  scores = np.clip(rng.normal(0.5 + 0.15 * (2 * labels - 1), 0.2), 0, 1)
  if decimals is not None:  # Heavy ties: a saturated detector outputs few distinct values.
    scores = np.round(scores, decimals)
  return labels, scores


def test_hand_computed_example():
  labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
  assert metrics.roc_auc(labels, scores) == pytest.approx(0.75)  # 3 of 4 (fake, real) pairs.
  # Thresholds 0.8, 0.4, 0.35, 0.1: precision 1, ½, ⅔, ½ at recall ½, ½, 1, 1.
  assert metrics.average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
  assert metrics.equal_error_rate(labels, scores) == pytest.approx(0.5)
  assert metrics.accuracy(labels, scores) == pytest.approx(0.75)  # Only the fake at 0.35 is wrong.
  assert metrics.accuracy(labels, scores, threshold=0.38) == pytest.approx(0.5)  # + real at 0.4.


def test_ties_count_half():
  # One fake and one real with the same score: AUC ½, not 0 or 1 depending on sort order.
  assert metrics.roc_auc([0, 1], [0.3, 0.3]) == 0.5
  assert metrics.roc_auc([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)


@pytest.mark.parametrize("seed, decimals", [(0, None), (1, 1), (2, 2), (3, 0)])
def test_matches_sklearn_on_random_scores(seed, decimals):
  labels, scores = _random_case(seed, decimals=decimals)
  assert metrics.roc_auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores))
  assert metrics.average_precision(labels, scores) == pytest.approx(
      skm.average_precision_score(labels, scores))
  fpr, tpr, thr = metrics.roc_curve(labels, scores)
  ref_fpr, ref_tpr, ref_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, ref_fpr)
  np.testing.assert_allclose(tpr, ref_tpr)
  np.testing.assert_allclose(thr[1:], ref_thr[1:])
  assert metrics.accuracy(labels, scores) == pytest.approx(
      skm.accuracy_score(labels, (scores > 0.5).astype(int)))


@pytest.mark.parametrize("seed, decimals", [(4, None), (5, 1)])
def test_eer_is_where_fpr_meets_fnr(seed, decimals):
  labels, scores = _random_case(seed, decimals=decimals)
  fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
  # Independent: root of FPR − FNR along the piecewise-linear ROC, found by bisection.
  along = np.arange(len(fpr))
  gap = lambda s: np.interp(s, along, fpr) - (1 - np.interp(s, along, tpr))
  root = optimize.brentq(gap, 0, len(fpr) - 1)
  assert metrics.equal_error_rate(labels, scores) == pytest.approx(np.interp(root, along, fpr))


def test_perfect_and_inverted_detectors():
  labels = np.array([0, 0, 0, 1, 1])
  good = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
  assert metrics.binary_metrics(labels, good) == {"auc": 1.0, "accuracy": 1.0, "ap": 1.0,
                                                  "eer": 0.0}
  assert metrics.roc_auc(labels, 1 - good) == 0.0
  assert metrics.equal_error_rate(labels, 1 - good) == 1.0


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="need both classes; got 3 real and 0 fake"):
    metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="labels must be 0"):
    metrics.roc_auc([0, 2], [0.1, 0.2])
  with pytest.raises(ValueError, match="NaN"):
    metrics.roc_auc([0, 1], [0.1, np.nan])
  with pytest.raises(ValueError, match="equal-length"):
    metrics.roc_auc([0, 1, 1], [0.1, 0.2])


def test_per_manipulation_scores_each_family_against_all_reals():
  labels = np.array([0, 0, 1, 1, 1, 1])
  scores = np.array([0.1, 0.6, 0.9, 0.8, 0.2, 0.3])
  manips = ["", "", "swap", "swap", "reenact", "reenact"]
  report = metrics.detection_report(labels, scores, manips)
  assert sorted(report) == ["overall", "reenact", "swap"]
  assert report["swap"]["auc"] == 1.0  # 0.9, 0.8 beat both reals.
  assert report["reenact"]["auc"] == pytest.approx(0.5)  # 0.2, 0.3 beat 0.1, lose to 0.6.
  assert report["overall"]["auc"] == pytest.approx(skm.roc_auc_score(labels, scores))


def test_video_level_is_max_over_tracks_of_mean_over_clips():
  scores = [0.2, 0.4, 0.9, 0.7, 0.1, 0.5]
  videos = ["a", "a", "a", "a", "b", "b"]
  tracks = [0, 0, 1, 1, 0, 0]
  out = metrics.video_level(scores, videos, tracks)
  assert out == pytest.approx({"a": 0.8, "b": 0.3})  # a: max(mean(.2,.4), mean(.9,.7)).
  with pytest.raises(ValueError, match="one entry per clip"):
    metrics.video_level(scores, videos[:-1], tracks)


def test_per_video_labels_refuses_inconsistent_clips():
  assert metrics.per_video_labels([1, 1, 0], ["a", "a", "b"], "labels") == {"a": 1, "b": 0}
  with pytest.raises(ValueError, match="video 'a' has clips with different labels"):
    metrics.per_video_labels([1, 0], ["a", "a"], "labels")


def test_video_scores_average_logits_so_saturated_clips_do_not_tie():
  """With a cosine head's scale 64, clip logits 40 and 50 both give probability 1.0 in float64:
  a video's score averages logits (the RealForensics evaluation code), and the ranking metrics
  run on logits, so saturated clips never tie."""
  from fakedet.evaluation import report  # pylint: disable=import-outside-toplevel  # matplotlib
  logits = np.array([40.0, 50.0, 60.0, 60.0, -3.0, 1.0])
  scores = report.ClipScores(
      index=np.arange(6), logits=logits, video_ids=["a", "a", "b", "b", "c", "c"],
      track_ids=np.zeros(6, np.int64), manipulations=["swap", "swap", "swap", "swap", "real",
                                                      "real"],
      labels=np.array([1, 1, 1, 1, 0, 0]), clip_starts=np.zeros(6, np.int64))
  assert scores.probs[0] == scores.probs[1] == 1.0  # The saturation itself.
  video = report.video_scores(scores)
  assert video["video_ids"] == ["a", "b", "c"]
  np.testing.assert_allclose(video["scores"], 1 / (1 + np.exp(-np.array([45.0, 60.0, -1.0]))))
  np.testing.assert_allclose(video["logits"], [45.0, 60.0, -1.0])
  # Ranking metrics run on logits: the two fakes stay distinct (as probabilities they tie at 1).
  arrays = report.level_arrays(scores)
  assert len(set(arrays["video"]["scores"][:2])) == 2 and len(set(arrays["clip"]["scores"])) == 5
  result = report.build_report(scores)
  assert result["video"]["overall"]["accuracy"] == 1.0 and result["video"]["overall"]["auc"] == 1.0


def test_mean_prob_video_score_averages_probabilities_and_thresholds_them():
  """PCL's rule (``input.eval.video_score="mean_prob"``): a track scores the mean of its clips'
  probabilities, a video the max over tracks; accuracy thresholds that probability."""
  from fakedet.evaluation import report  # pylint: disable=import-outside-toplevel  # matplotlib
  logits = np.array([4.0, -3.0, 0.5, 0.5, -3.0, 1.0, -2.0, -2.0])
  scores = report.ClipScores(
      index=np.arange(8), logits=logits, video_ids=["a", "a", "b", "b", "c", "c", "c", "c"],
      track_ids=np.array([0, 0, 0, 0, 0, 0, 1, 1]), manipulations=["swap"] * 4 + ["real"] * 4,
      labels=np.array([1, 1, 1, 1, 0, 0, 0, 0]), clip_starts=np.zeros(8, np.int64),
      video_score="mean_prob")
  p = 1 / (1 + np.exp(-logits))
  video = report.video_scores(scores)
  expected = [(p[0] + p[1]) / 2, p[2], max((p[4] + p[5]) / 2, p[6])]
  np.testing.assert_allclose(video["scores"], expected)
  assert report.track_mean(logits, scores.video_ids, scores.track_ids,
                           "mean_prob") == pytest.approx(dict(zip("abc", expected)))
  # a: mean probability 0.515 (fake, right); σ of the mean logit would say σ(0.5) = 0.62. c:
  # 0.389 (real, right) where σ(mean logit) = σ(-1) = 0.269.
  by_logit = report.video_scores(report.ClipScores(**{**scores.__dict__,
                                                      "video_score": "mean_logit"}))
  np.testing.assert_allclose(by_logit["scores"], 1 / (1 + np.exp(-np.array([0.5, 0.5, -1.0]))))
  result = report.build_report(scores)
  assert result["video"]["overall"]["accuracy"] == 1.0
  with pytest.raises(ValueError, match="video_score"):
    report.video_scores(report.ClipScores(**{**scores.__dict__, "video_score": "median"}))
