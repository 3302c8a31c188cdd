"""End to end: examples/digits.yaml (image folder) and examples/text.yaml's data (text-csv) through the five
real services on S3, plus schema warnings in the run events and strict: true failing a run."""
import os

import numpy as np
from PIL import Image

from cookline.v1 import gateway_pb2
from helpers import EXAMPLES


def test_digits_example_trains_on_8x8_pngs_and_serves_raw_pixels(client):
    run, events = client.run_file_and_wait(os.path.join(EXAMPLES, "digits.yaml"))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.metrics["val_accuracy"] >= 0.85
    ingest = [e.ingest for e in events if e.WhichOneof("event") == "ingest"][-1]
    assert ingest.dataset.num_rows == 1797
    assert dict(ingest.dataset.statistics.image_shapes) == {"8x8x1": 1797}
    assert len(ingest.dataset.statistics.label_counts) == 10
    zero = np.asarray(Image.open(os.path.join(EXAMPLES, "data", "digits", "0", "0000.png")), np.float32)
    result = client.predict("digits", [zero.reshape(-1).tolist()])
    assert result[0]["label"] == "0"


TF_IDF_MLP = """
name: text-tfidf
collect: {{source: {source}, format: text-csv}}
process: [{{vectorize_text: {{mode: tf_idf, max_tokens: 2000}}}}, {{shuffle: {{buffer: 1000, seed: 7}}}}]
split: {{validation: 0.2, seed: 7}}
train: {{model: mlp, hidden_units: [32], epochs: 30, batch_size: 16, learning_rate: 0.005}}
"""


def test_text_example_data_trains_an_mlp_on_tf_idf(client):
    # examples/text.yaml trains the text model (tests/e2e/test_zoo.py); this is its data as a bag of words
    run, events = client.run_and_wait(TF_IDF_MLP.format(source=os.path.join(EXAMPLES, "data", "text.csv")))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    assert run.metrics["val_accuracy"] >= 0.9
    dataset = [e.ingest for e in events if e.WhichOneof("event") == "ingest"][-1].dataset
    assert dataset.num_rows == 360 and dataset.statistics.text.vocabulary_size > 50
    meta = client.model_metadata("text-tfidf")
    assert meta.feature_columns[0] == "[UNK]" and len(meta.feature_columns) > 50


PIPELINE = """
name: drifting
strict: {strict}
collect: {{source: {source}, format: csv, label: label}}
train: {{model: mlp, epochs: 1}}
"""


def test_schema_anomalies_are_run_event_warnings_and_strict_fails_the_run(client, tmp_path):
    first = tmp_path / "v1.csv"
    first.write_text("a,b,label\n" + "".join(f"{i},{i % 7},c{i % 2}\n" for i in range(40)))
    run, _ = client.run_and_wait(PIPELINE.format(strict="false", source=first))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    second = tmp_path / "v2.csv"
    second.write_text("a,b,label\n" + "".join(f"{i * 10},{i % 7},c{i % 2}\n" for i in range(40)))
    run, events = client.run_and_wait(PIPELINE.format(strict="false", source=second))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    warnings = [a for e in events if e.WhichOneof("event") == "ingest" for a in e.ingest.anomalies]
    assert [(a.kind, a.field) for a in warnings] == [("out_of_range", "features.a")]
    assert any("1 schema warnings" in e.stage.message for e in events if e.WhichOneof("event") == "stage")
    third = tmp_path / "v3.csv"
    third.write_text("a,label\n" + "".join(f"{i * 100},c{i % 2}\n" for i in range(40)))
    run, _ = client.run_and_wait(PIPELINE.format(strict="true", source=third))
    assert run.state == gateway_pb2.RUN_STATE_FAILED
    assert "collect failed: FAILED_PRECONDITION" in run.reason and "features.b" in run.reason

