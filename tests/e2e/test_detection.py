"""Object detection end to end: examples/shapes-detect.yaml on the generated shapes VOC data (300
noisy 64x64 scenes) through the five real services on S3. Held-out mAP@0.5 (pycocotools) passes the
deploy gate (evaluate.metric: map50); the deployed model answers PNG bytes with boxes, labels and
scores on cookline Predict and PredictStream, OIP ModelInfer and REST, equal to the SavedModel loaded
alone; the CLI prints one line per box; `cookline report` draws predicted and true boxes; the
dashboard's predict page draws them over the image dropped in it (Debian's chromium)."""

import base64
import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from browser import dashboard_page, shot
from PIL import Image
from playwright.sync_api import expect
from rest_client import http_call

from cookline import channels
from cookline.v1 import gateway_pb2, model_pb2, serve_pb2
from helpers import EXAMPLES, report_page
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc
from tools import published_model

sys.path.insert(0, os.path.join(EXAMPLES, "tools"))
import make_shapes_voc  # noqa: E402 - the example's own generator

NAME = "shapes-detect"


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory):
    """The shapes-detect run (the example file, its source pointed at freshly generated data)."""
    folder = tmp_path_factory.mktemp("shapes")
    data = make_shapes_voc.write(str(folder / "shapes"))
    with open(os.path.join(EXAMPLES, "shapes-detect.yaml")) as f:
        text = f.read().replace("source: data/shapes", f"source: {data}")
    path = folder / "shapes-detect.yaml"
    path.write_text(text)
    run, events = client.run_file_and_wait(str(path))
    assert run.state == gateway_pb2.RUN_STATE_SUCCEEDED, run.reason
    return run, events, data


@pytest.fixture(scope="module")
def scenes(trained):
    """Three scenes of the data set as PNG bytes."""
    data = trained[2]
    out = []
    for i in (0, 1, 2):
        with open(os.path.join(data, "images", f"{i:04d}.png"), "rb") as f:
            out.append(f.read())
    return out


def test_held_out_map_passes_the_gate_and_is_recorded(trained, store, tmp_path):
    run = trained[0]
    metrics = dict(run.evaluation.metrics)
    print(f"shapes-detect held-out mAP@0.5 {metrics['map50']:.3f}, mAP@[.5:.95] {metrics['map']:.3f}")
    assert metrics["map50"] >= 0.7 and 0 < metrics["map"] <= metrics["map50"]
    assert run.evaluation.subset == 3 and run.evaluation.rows == 60  # split.test 0.2 of 300 (SUBSET_TEST)
    assert run.reason == "" and run.model.version >= 1
    assert run.deployed and run.deploy_decision.startswith("deployed: test map50"), run.deploy_decision
    _answer, meta = published_model(store, NAME, run.model.version, str(tmp_path))
    assert meta["task"] == "detection" and meta["class_names"] == ["circle", "square", "triangle"]
    assert meta["metrics"]["map50"] == pytest.approx(metrics["map50"])
    assert meta["outputs"] == {
        "boxes": {"dtype": "float32", "shape": [-1, 10, 4]},
        "labels": {"dtype": "string", "shape": [-1, 10]},
        "scores": {"dtype": "float32", "shape": [-1, 10]},
    }
    assert list(meta["inputs"]) == ["image"] and meta["inputs"]["image"]["shape"] == [-1]


def test_serve_answers_boxes_labels_scores_as_the_saved_model(trained, client, store, env, scenes, tmp_path):
    run = trained[0]
    answer, _ = published_model(store, NAME, run.model.version, str(tmp_path))
    alone = answer(image=np.array(scenes, dtype=object))
    assert alone["boxes"].shape == (3, 10, 4) and alone["labels"].shape == alone["scores"].shape == (3, 10)
    # the true objects of scene 0 are found: same classes, boxes overlapping well
    truth = make_shapes_voc.scene(np.random.default_rng(5), 64)[1]
    found = [label.decode() for label in alone["labels"][0] if label]
    assert sorted(found) == sorted(name for name, _ in truth)
    # cookline Predict (unary and stream) through the Python client
    rows = client.predict(NAME, {"image": scenes})
    for i, row in enumerate(rows):
        used = [label for label in alone["labels"][i] if label]
        assert [d["label"] for d in row["detections"]] == [label.decode() for label in used]
        np.testing.assert_allclose([d["box"] for d in row["detections"]], alone["boxes"][i, : len(used)], atol=1e-5)
        np.testing.assert_allclose([d["score"] for d in row["detections"]], alone["scores"][i, : len(used)], atol=1e-5)
    streamed = [result for _, result, _ in client.predict_stream(NAME, {"image": scenes})]
    assert streamed == rows
    # metadata lists the three outputs
    stub = client.serve
    meta = stub.GetModelMetadata(serve_pb2.GetModelMetadataRequest(model=model_pb2.ModelRef(name=NAME))).metadata
    assert meta.task == "detection" and sorted(meta.outputs) == ["boxes", "labels", "scores"]
    assert list(meta.outputs["boxes"].shape) == [-1, 10, 4]

    # OIP ModelInfer over gRPC: BYTES in, FP32 boxes and scores and BYTES labels out
    oip_stub = oip_grpc.GRPCInferenceServiceStub(channels.channel("serve", env))
    metadata = oip_stub.ModelMetadata(oip.ModelMetadataRequest(name=NAME), timeout=30)
    assert {(o.name, o.datatype, tuple(o.shape)) for o in metadata.outputs} == {
        ("boxes", "FP32", (-1, 10, 4)),
        ("labels", "BYTES", (-1, 10)),
        ("scores", "FP32", (-1, 10)),
    }
    request = oip.ModelInferRequest(model_name=NAME)
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[3])
    tensor.contents.bytes_contents.extend(scenes)
    response = oip_stub.ModelInfer(request, timeout=60)
    raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents, strict=True))
    np.testing.assert_allclose(np.frombuffer(raw["boxes"], "<f4").reshape(3, 10, 4), alone["boxes"], atol=1e-5)
    labels, pos = [], 0
    while pos < len(raw["labels"]):
        (n,) = struct.unpack_from("<I", raw["labels"], pos)
        labels.append(raw["labels"][pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert labels == alone["labels"].reshape(-1).tolist()

    # REST (OIP's binary extension for the PNG bytes), answered as JSON
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4 + len(scenes[0])},
                }
            ]
        }
    ).encode()
    status, _, body = http_call(
        env,
        "serve",
        "POST",
        f"/v2/models/{NAME}/infer",
        header + struct.pack("<I", len(scenes[0])) + scenes[0],
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200, body
    outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert outputs["boxes"]["shape"] == [1, 10, 4] and outputs["labels"]["shape"] == [1, 10]
    assert outputs["labels"]["data"] == [v.decode() for v in alone["labels"][0]]
    np.testing.assert_allclose(np.reshape(outputs["scores"]["data"], (1, 10)), alone["scores"][:1], atol=1e-5)


def test_cli_prints_one_line_per_box_and_report_draws_boxes(trained, env, scenes, tmp_path):
    run = trained[0]
    image = tmp_path / "scene.png"
    image.write_bytes(scenes[0])
    done = subprocess.run(
        [sys.executable, "-m", "cookline.cli", "predict", NAME, "--image", str(image)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    truth = make_shapes_voc.scene(np.random.default_rng(5), 64)[1]
    assert len(lines) == len(truth), done.stdout
    for line in lines:
        label, score, *box, path = line.split()
        assert label in ("circle", "square", "triangle") and 0.3 <= float(score) <= 1 and path == str(image)
        assert len(box) == 4 and all(0 <= float(v) <= 1 for v in box)
    page = report_page(run.run_id, env, tmp_path / "report.html")
    assert "map50" in page and 'alt="predicted and true boxes"' in page
    drawn = page.split('alt="predicted and true boxes" src="data:image/png;base64,')[1].split('"')[0]
    figure = Image.open(io.BytesIO(base64.b64decode(drawn)))
    assert figure.width > 300  # the held-out images side by side
    assert len(run.evaluation.examples) == 6 and run.evaluation.examples[0].truth


def drawn_boxes(page) -> tuple[list[dict], tuple[float, float]]:
    """The boxes drawn over the predict page's image, in order: label, score and the outline's
    position in displayed pixels from the image's top left corner; and the image's displayed size."""
    return page.eval_on_selector(
        "#detection-image",
        """img => {
          const at = img.getBoundingClientRect();
          const boxes = [...document.querySelectorAll("#detection-boxes [data-box]")].map(el => {
            const r = el.getBoundingClientRect();
            return {label: el.dataset.label, score: +el.dataset.score,
                    rect: [r.left - at.left, r.top - at.top, r.width, r.height]};
          });
          return [boxes, [at.width, at.height]];
        }""",
    )


def test_the_dashboard_draws_the_detectors_boxes_over_the_dropped_image(trained, client, env, scenes, tmp_path):
    """The predict page of the deployed detector: a scene chosen in its drop zone comes back drawn
    with one outline per detection where the gRPC Predict puts it (fractions of the image scaled to
    the image as shown, each axis on its own for a wide image), tagged and listed; a flat grey image
    answers no detections and the page says so."""
    truth = make_shapes_voc.scene(np.random.default_rng(5), 64)[1]
    wide = tmp_path / "wide.png"  # scene 1 stretched to 128x64: x and y scale differently
    Image.open(io.BytesIO(scenes[1])).resize((128, 64), Image.Resampling.NEAREST).save(wide)
    (tmp_path / "scene.png").write_bytes(scenes[0])
    grey = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey)
    with dashboard_page(env) as page:
        page.goto(page.base + f"/#/predict/{NAME}")
        expect(page.locator("h1")).to_contain_text(f"Predict · {NAME}")
        for picture, name in ((tmp_path / "scene.png", "predict-detection"), (wide, "predict-detection-wide")):
            expected = client.predict(NAME, {"image": [picture.read_bytes()]})[0]["detections"]
            assert expected, f"the detector finds nothing in {picture.name}"
            page.set_input_files(".drop[data-column=image] input[type=file]", str(picture))
            expect(page.locator(".drop[data-column=image]")).to_contain_text(picture.name)
            page.click("#predict")
            expect(page.locator(f"#detection-image[alt='{picture.name}']")).to_be_visible()  # this answer's
            expect(page.locator("#detection-boxes [data-box]")).to_have_count(len(expected))
            expect(page.locator("#detections tbody tr")).to_have_count(len(expected))
            boxes, (width, height) = drawn_boxes(page)
            natural = Image.open(picture).size
            assert width > 3 * natural[0] and height == pytest.approx(width * natural[1] / natural[0], abs=1)
            for drawn, want in zip(boxes, expected, strict=True):
                y0, x0, y1, x1 = want["box"]
                assert drawn["label"] == want["label"] and drawn["score"] == pytest.approx(want["score"], abs=1e-5)
                np.testing.assert_allclose(
                    drawn["rect"], [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height], atol=1.5
                )
            tags = page.locator("#detection-boxes text.tag").all_text_contents()
            assert tags == [f"{d['label']} {d['score']:.2f}" for d in expected]
            listed = page.locator("#detections tbody tr td:first-child").all_inner_texts()
            assert listed == [d["label"] for d in expected]
            if picture.name == "scene.png":  # the scene's true objects, each outlined
                assert sorted(listed) == sorted(name for name, _ in truth)
            shot(page, name)

        assert client.predict(NAME, {"image": [grey.read_bytes()]})[0]["detections"] == []
        page.set_input_files(".drop[data-column=image] input[type=file]", str(grey))
        expect(page.locator(".drop[data-column=image]")).to_contain_text("grey.png")
        page.click("#predict")
        expect(page.locator("#detection-image[alt='grey.png']")).to_be_visible()
        expect(page.locator("#no-detections")).to_be_visible()
        expect(page.locator("#detection-count")).to_have_text("No objects found")
        expect(page.locator("#detection-image")).to_be_visible()
        expect(page.locator("#detection-boxes [data-box]")).to_have_count(0)
