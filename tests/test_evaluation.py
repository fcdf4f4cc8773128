"""Metric values checked against numbers worked out by hand on small arrays."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core import evaluation as ev

CLASSES = ["a", "b", "c"]
# true a a b b c c ; predicted a b b b c a
#   confusion rows true: a: [1 1 0], b: [0 2 0], c: [1 0 1]
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def test_classification_report_by_hand():
    r = ev.classification_report(Y_TRUE, Y_PRED, CLASSES, files=[f"f{i}.jpg" for i in range(6)])
    assert r["n"] == 6 and r["classes"] == CLASSES
    assert r["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert "top5_accuracy" not in r  # only with more than 5 classes and probabilities
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    rows = {row["class"]: row for row in r["per_class"]}
    # precision = diagonal / column sum, recall = diagonal / row sum
    assert rows["a"]["precision"] == pytest.approx(1 / 2, abs=1e-6)
    assert rows["b"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert rows["c"]["precision"] == pytest.approx(1.0)
    assert [rows[c]["recall"] for c in CLASSES] == pytest.approx([0.5, 1.0, 0.5], abs=1e-6)
    assert [rows[c]["accuracy"] for c in CLASSES] == pytest.approx([0.5, 1.0, 0.5], abs=1e-6)
    f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5]  # 0.5, 0.8, 0.667
    assert [rows[c]["f1"] for c in CLASSES] == pytest.approx(f1, abs=1e-6)
    assert r["macro_f1"] == pytest.approx(sum(f1) / 3, abs=1e-6)
    assert r["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3, abs=1e-6)
    assert [row["support"] for row in r["per_class"]] == [2, 2, 2]
    # ties on count are ordered by true class, then predicted class
    assert r["confused_pairs"] == [{"true": "a", "predicted": "b", "count": 1},
                                   {"true": "c", "predicted": "a", "count": 1}]
    assert [(m["file"], m["true"], m["predicted"]) for m in r["misclassified"]] == [
        ("f1.jpg", "a", "b"), ("f5.jpg", "c", "a")]
    assert r["misclassified"][0]["confidence"] is None  # labels only: no confidence
    assert [p["correct"] for p in r["predictions"]] == [True, False, True, True, True, False]
    json.dumps(r, allow_nan=False)  # plain, valid JSON
    # error review helpers: the faces of one confused pair, and good examples of a class
    assert [m["file"] for m in ev.pair_errors(r, "c", "a")] == ["f5.jpg"]
    assert [p["file"] for p in ev.class_examples(r, "b")] == ["f2.jpg", "f3.jpg"]


def test_classification_report_with_probabilities_and_top5():
    classes = list("abcdefg")  # 7 classes: top-5 is reported
    probs = np.full((4, 7), 0.01)
    # sample 0 (true a): a is top-1               -> top1 right, top5 right
    probs[0, 0] = 0.9
    # sample 1 (true b): c 0.5 > b 0.3             -> top1 wrong (conf 0.5), b ranked 2nd
    probs[1, 2], probs[1, 1] = 0.5, 0.3
    # sample 2 (true g): a..e above g              -> g ranked 6th: top5 wrong
    probs[2, :5] = [0.3, 0.25, 0.2, 0.1, 0.08]
    probs[2, 6] = 0.02
    # sample 3 (true d): f 0.8 > d 0.1             -> wrong with confidence 0.8
    probs[3, 5], probs[3, 3] = 0.8, 0.1
    r = ev.classification_report(["a", "b", "g", "d"], probs, classes)
    assert r["accuracy"] == pytest.approx(0.25)
    assert r["top5_accuracy"] == pytest.approx(0.75)
    # most confident mistakes first
    assert [(m["index"], m["predicted"], m["confidence"]) for m in r["misclassified"]] == [
        (3, "f", 0.8), (1, "c", 0.5), (2, "a", 0.3)]
    assert r["misclassified"][0]["true_prob"] == pytest.approx(0.1)
    assert "predictions" not in r  # only with file names
    # a class that never occurs has no per-class accuracy, and does not drag the macro F1 down
    e = next(row for row in r["per_class"] if row["class"] == "e")
    assert e["support"] == 0 and e["accuracy"] is None
    present = [row["f1"] for row in r["per_class"] if row["class"] in "abcdfg"]
    assert r["macro_f1"] == pytest.approx(np.mean(present), abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (([0, 1], [0], ["a", "b"]), "2 labels"),
    (([0, 5], [0, 1], ["a", "b"]), "out of range"),
    ((["a", "z"], [0, 1], ["a", "b"]), "not among the classes"),
    (([0, 1], np.ones((2, 3)), ["a", "b"]), "shape"),
    (([0], [0], ["a"]), "at least 2 classes"),
    (([], [], ["a", "b"]), "no samples"),
])
def test_classification_report_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        ev.classification_report(*args)


def test_confusion_order_puts_confused_pairs_first_and_together():
    # 5 classes; errors: d<->b (3 + 1 = 4), e->a (2); c has none
    m = np.diag([5, 5, 5, 5, 5])
    m[3, 1], m[1, 3], m[4, 0] = 3, 1, 2
    assert ev.confusion_order(m) == [1, 3, 0, 4, 2]
    assert ev.confusion_order(m, top=2) == [1, 3]
    sub = ev.reorder_confusion(m, list("abcde"), top=2)
    assert sub["classes"] == ["b", "d"] and sub["matrix"] == [[5, 1], [3, 5]]
    norm = ev.reorder_confusion(m, list("abcde"), top=2, normalise=True)
    # row-normalised over the full row (b: 5 + 1 = 6 samples; d: 3 + 5 = 8)
    assert np.allclose(norm["matrix"], [[5 / 6, 1 / 6], [3 / 8, 5 / 8]], atol=1e-6)
    assert ev.normalise_rows([[0, 0], [1, 3]]).tolist() == [[0, 0], [0.25, 0.75]]


def test_open_set_all_names_right():
    # thresholds (accept when score >= t), falling:  .9   .8   .75  .7   .4   .3   .2   .1
    # FAR (impostors >= t)                          0    0    .25  .25  .25  .5   .75  1
    # TAR (genuine >= t, right name)                .25  .5   .5   .75  1    1    1    1
    # FRR = 1 - TAR meets FAR at t = .7: EER = .25
    r = ev.open_set_report([0.9, 0.8, 0.7, 0.4], [True] * 4, [0.75, 0.3, 0.2, 0.1])
    assert r["eer"] == pytest.approx(0.25) and r["eer_threshold"] == pytest.approx(0.7)
    # area under (0,0)-(0,.5)-(.25,.5)-(.25,1)-(1,1) = .25*.5 + .75*1
    assert r["auc"] == pytest.approx(0.875)
    assert r["tar_at_far_1e-2"] == pytest.approx(0.5)
    assert r["threshold_at_far_1e-2"] == pytest.approx(0.8)
    assert r["tar_at_far_1e-3"] == pytest.approx(0.5)
    assert r["rank1_accuracy"] == 1.0 and r["far_resolution"] == 0.25
    assert r["roc"]["far"][0] == 0 and r["roc"]["tar"][0] == 0  # "accept nothing"
    assert r["roc"]["thresholds"][0] > 0.9
    assert r["at_threshold"]["threshold"] == pytest.approx(0.8)
    json.dumps(r, allow_nan=False)


def test_open_set_wrong_name_above_threshold_is_not_accepted():
    # genuine .9 (right), .85 (WRONG name), .6 (right); impostors .7, .5
    # t:    .9    .85   .7    .6    .5
    # FAR:  0     0     .5    .5    1
    # TAR:  1/3   1/3   1/3   2/3   2/3      (the .85 probe never counts)
    # FRR - FAR: 2/3, 2/3, 1/6, -1/6 -> crossing halfway between t=.7 and t=.6: EER .5 at t .65
    r = ev.open_set_report([0.9, 0.85, 0.6], [True, False, True], [0.7, 0.5])
    assert r["rank1_accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert r["eer"] == pytest.approx(0.5) and r["eer_threshold"] == pytest.approx(0.65)
    assert r["auc"] == pytest.approx(0.5 * (1 / 3) + 0.5 * (2 / 3), abs=1e-6)
    assert r["tar_at_far_1e-2"] == pytest.approx(1 / 3, abs=1e-6)
    assert r["threshold_at_far_1e-2"] == pytest.approx(0.85)
    at = ev.open_set_at_threshold([0.9, 0.85, 0.6], [True, False, True], [0.7, 0.5], 0.55)
    # accepted right: .9, .6 ; misidentified: .85 ; impostor .7 accepted, .5 rejected
    assert at["tar"] == pytest.approx(2 / 3, abs=1e-6) and at["far"] == 0.5
    assert at["misidentified"] == 1 and at["accuracy"] == pytest.approx(3 / 5)
    s = ev.open_set_report([0.9], [True], [0.1], include_scores=True)["scores"]
    assert s == {"genuine": [0.9], "genuine_correct": [True], "impostor": [0.1]}


def test_open_set_roc_is_downsampled_but_keeps_the_operating_points():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.8, 0.1, 2000), rng.normal(0.4, 0.1, 3000)
    r = ev.open_set_report(genuine, np.ones(2000, bool), impostor, max_points=50)
    assert len(r["roc"]["far"]) <= 53
    assert r["threshold_at_far_1e-2"] in r["roc"]["thresholds"]
    assert np.all(np.diff(r["roc"]["far"]) >= 0) and np.all(np.diff(r["roc"]["tar"]) >= 0)
    # two Gaussians 4 sigma apart (d' = 4 / sqrt(2) per axis): AUC = Phi(2.83) ~ 0.9977
    assert r["auc"] == pytest.approx(0.9977, abs=0.003)


@pytest.mark.parametrize("args, message", [
    (([], [], [0.1]), "genuine probes"),
    (([0.5], [True], []), "impostor probes"),
    (([0.5, 0.2], [True], [0.1]), "same length"),
    (([np.nan], [True], [0.1]), "finite"),
])
def test_open_set_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        ev.open_set_report(*args)


def test_binary_report_by_hand():
    # y 0 0 1 1, p(positive) .1 .4 .35 .8: of the 4 (pos, neg) pairs, 3 are ranked right -> AUC .75
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    groups = {"race": ["White", "White", "Black", "Black"], "age": ["0-17", None, "0-17", "60+"]}
    r = ev.binary_report(y, p, classes=("female", "male"), groups=groups)
    assert r["roc_auc"] == pytest.approx(0.75) and r["positive"] == "male"
    assert r["accuracy"] == pytest.approx(0.75)        # predicted 0 0 0 1 at 0.5
    assert r["confusion"] == [[2, 0], [1, 1]]
    assert r["tpr"] == pytest.approx(0.5) and r["fpr"] == 0
    race = {g["group"]: g for g in r["subgroups"]["race"]}
    assert race["White"]["accuracy"] == 1.0 and race["White"]["roc_auc"] is None  # one class only
    assert race["Black"]["accuracy"] == 0.5 and race["Black"]["n"] == 2
    age = {g["group"]: g["n"] for g in r["subgroups"]["age"]}
    assert age == {"0-17": 2, "60+": 1}  # None is left out
    # a threshold slider re-runs the report from the stored scores
    s = ev.binary_report(y, p, classes=("female", "male"), groups=groups, include_scores=True)["scores"]
    again = ev.binary_report(s["y_true"], s["prob_positive"], threshold=0.3, groups=s["groups"])
    assert again["accuracy"] == pytest.approx(0.75) and again["confusion"] == [[1, 1], [0, 2]]
    # ROC accuracy column agrees with thresholding by hand: at t=.35, predicted 0 1 1 1 -> .75
    roc = r["roc"]
    i = roc["thresholds"].index(0.35)
    assert roc["accuracy"][i] == pytest.approx(0.75)
    assert all(t is not None for t in roc["thresholds"])  # no inf in JSON
    json.dumps(r, allow_nan=False)
    by_name = ev.binary_report(["female", "female", "male", "male"], p, threshold=0.3)
    assert by_name["accuracy"] == pytest.approx(0.75) and by_name["roc_auc"] == pytest.approx(0.75)


def test_utkface_names_give_subgroups():
    assert ev.utkface_attributes("25_0_2_20170116174525125.jpg.chip.jpg") == {
        "age": 25, "gender": "male", "race": "Asian"}
    # a few UTKFace files have no race field
    assert ev.utkface_attributes("data/39_1_20170116174525125.jpg.chip.jpg") == {
        "age": 39, "gender": "female", "race": None}
    assert ev.utkface_attributes("ben_afflek_1.jpg") is None
    groups = ev.subgroups_from_files(["70_1_1_20170110.jpg.chip.jpg", "x.jpg"])
    assert groups == {"race": ["Black", None], "age": ["60+", None]}
    assert ev.subgroups_from_files(["a.jpg", "b.jpg"]) == {}
    assert [ev.age_band(a) for a in (0, 17, 18, 44, 59, 60, 101)] == [
        "0-17", "0-17", "18-29", "30-44", "45-59", "60+", "60+"]


def test_utkface_real_names(face_data):
    files = sorted(p.name for p in (face_data / "utkface_gender" / "female").iterdir())
    groups = ev.subgroups_from_files(files)
    assert set(groups["race"]) == set(ev.UTK_RACES)
    assert all(ev.utkface_attributes(f)["gender"] == "female" for f in files)


def test_embedding_map_separates_two_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (20, 8)) + np.eye(8)[0]
    b = rng.normal(0, 0.05, (20, 8)) + np.eye(8)[1]
    true = ["a"] * 20 + ["b"] * 20
    pred = list(true)
    pred[0] = "b"
    points = ev.embedding_map(np.vstack([a, b]), true, pred, [f"{i}.jpg" for i in range(40)])
    assert len(points) == 40 and points[0]["correct"] is False and points[1]["correct"] is True
    xy = np.array([[p["x"], p["y"]] for p in points])
    # the clusters do not mix: every point is nearer its own cluster's centre
    ca, cb = xy[:20].mean(0), xy[20:].mean(0)
    near_a = np.linalg.norm(xy - ca, axis=1) < np.linalg.norm(xy - cb, axis=1)
    assert near_a[:20].all() and not near_a[20:].any()
