"""Predictions flattened into the rows of predict's table and CSV."""
from anyformer.infer.prediction_rows import prediction_rows


def test_classification_rows_have_a_column_per_class_or_the_runners_up():
    preds = [{"input": "a", "label": "x", "probability": 0.7, "probabilities": {"x": 0.7, "y": 0.2, "z": 0.1}}]
    assert prediction_rows(preds) == (["input", "label", "probability", "p(x)", "p(y)", "p(z)"], [["a", "x", 0.7, 0.7, 0.2, 0.1]])
    assert prediction_rows(preds, 2) == (["input", "label", "probability", "runners-up"], [["a", "x", 0.7, "y (0.2000), z (0.1000)"]])


def test_labels_are_joined_and_forecasts_take_a_row_per_step():
    preds = [{"input": "a", "labels": ["x", "z"], "probabilities": {"x": 0.9, "z": 0.6}},
             {"input": "b", "forecast": {"OT": [1.0, 2.0], "b": [3.0, 4.0]}}]
    columns, rows = prediction_rows(preds)
    assert columns == ["input", "labels", "p(x)", "p(z)", "step", "OT", "b"]
    assert rows == [["a", "x|z", 0.9, 0.6, "", "", ""], ["b", "", "", "", 1, 1.0, 3.0], ["b", "", "", "", 2, 2.0, 4.0]]
