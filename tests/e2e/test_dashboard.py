"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the live stack.

Submits iris from the submit page, sees it reach SUCCEEDED with its loss curve drawn, opens
the model and predicts a row in the playground. Every page is saved as a screenshot in
.cache/test-artifacts/dashboard/ (copies of them are committed as docs/img/dashboard-*.png).
"""

import json
import os
import re

import pytest
from browser import dashboard_page, shot
from playwright.sync_api import expect
from rest_client import http_call

from cookline.v1 import gateway_pb2
from helpers import IRIS_CSV, IRIS_YAML, ROOT

RUN_S = 600  # longest wait for iris to finish training on a busy machine (a bound, not a speed check)


@pytest.fixture(scope="module")
def page(env):
    with dashboard_page(env) as page:
        yield page


def iris_pipeline() -> str:
    with open(IRIS_YAML) as f:
        text = f.read()
    return text.replace("source: examples/data/iris.csv", f"source: {ROOT}/examples/data/iris.csv")


def test_submit_iris_watch_it_train_and_predict(page):
    page.goto(page.base + "/#/submit")
    page.fill("#pipeline-text", iris_pipeline())
    page.eval_on_selector("#pipeline-text", "el => { el.scrollTop = 0; el.blur(); }")
    shot(page, "submit")
    page.click("#submit-pipeline")

    # the run's page: live progress, then SUCCEEDED with the curves and the evaluation
    expect(page.locator("main[data-page=run]")).to_be_visible()
    state = page.locator("h1 [data-state]")
    expect(state).to_have_attribute("data-state", re.compile("SUCCEEDED|FAILED|CANCELLED"), timeout=RUN_S * 1000)
    assert state.get_attribute("data-state") == "SUCCEEDED", page.locator("main").inner_text()
    loss = page.locator("#loss-chart path[data-series=loss]")
    expect(loss).to_have_count(1)
    assert loss.get_attribute("d").count("L") >= 59  # one point per epoch (iris trains 60)
    expect(page.locator("#metric-chart path[data-series=val_accuracy]")).to_have_count(1)
    expect(page.locator("#confusion tbody tr")).to_have_count(3)
    shot(page, "run")

    page.goto(page.base + "/#/runs")
    expect(page.locator("#runs tbody tr").first.locator(".badge")).to_have_text("SUCCEEDED")
    shot(page, "runs")

    page.goto(page.base + "/#/datasets")
    expect(page.locator("[data-dataset=iris]")).to_contain_text("sepal_length")
    shot(page, "datasets")

    # the model, from the run's page
    page.go_back()
    page.go_back()
    page.click("#run-model")
    expect(page.locator("#versions tbody tr")).to_have_count(1)
    expect(page.locator("#versions")).to_contain_text("deployed")
    page.fill("input[name=alias]", "prod")
    page.click("text=Set alias")
    expect(page.locator("#versions tbody tr .badge.alias")).to_have_text("prod")
    shot(page, "model")

    page.click("#open-playground")
    for column, value in {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}.items():
        page.fill(f"#predict-form [name={column}]", str(value))
    page.click("#predict")
    expect(page.locator("#label")).to_have_text("virginica")
    expect(page.locator("#prediction .bar")).to_have_count(3)
    shot(page, "predict")


def test_deploy_then_predict_numbers_categories_a_sentence_and_an_image(page, env, store, tmp_path):
    """A model of every raw input kind (tests/support/raw_models.py: its answers can be reasoned
    about), deployed from its model page; the playground's form has number and text fields, a text
    box and an image drop zone, and answers as the JSON API does."""
    import raw_models

    raw_models.publish_mixed(store, "mixed")
    page.goto(page.base + "/#/models/mixed")
    page.locator("#versions tbody tr[data-version='1'] button", has_text="Deploy").click()
    expect(page.locator("h1")).to_contain_text("deployed: version 1", timeout=RUN_S * 1000)
    page.click("#open-playground")
    row = {"a": "0.5", "b": "1", "c": "2", "colour": "green", "size": "large"}
    for column, value in row.items():
        page.fill(f"#predict-form input[name={column}]", value)
    sentence = "I love it, a great day"
    text_box = page.locator("#predict-form textarea")
    text_box.fill(sentence)
    picture = tmp_path / "bright.png"
    picture.write_bytes(raw_models.png(230))
    zone = page.locator("#predict-form .drop")
    zone.locator("input[type=file]").set_input_files(str(picture))
    expect(zone.locator("img")).to_be_visible()
    page.click("#predict")
    expect(page.locator("#label")).to_have_text("pos")
    shot(page, "predict-raw")
    parts = [(k, v.encode(), None) for k, v in row.items()] + [
        (text_box.get_attribute("name"), sentence.encode(), None),
        (zone.get_attribute("data-column"), picture.read_bytes(), "bright.png"),
    ]
    body = (
        b"".join(
            b'--b\r\nContent-Disposition: form-data; name="'
            + k.encode()
            + b'"'
            + (b'; filename="' + f.encode() + b'"\r\nContent-Type: image/png' if f else b"")
            + b"\r\n\r\n"
            + v
            + b"\r\n"
            for k, v, f in parts
        )
        + b"--b--\r\n"
    )
    status, _, answer = http_call(
        env, "gateway", "POST", "/api/models/mixed/predict", body, {"content-type": "multipart/form-data; boundary=b"}
    )
    assert status == 200, answer
    answer = json.loads(answer)
    assert answer["label"] == "pos" and answer["scores"]["pos"] > 0.5


@pytest.mark.parametrize(
    "example, column, value",
    [
        ("digits", "image", os.path.join(ROOT, "examples", "data", "digits", "3", "0003.png")),
        ("text", "text", "The striker scored twice in the final last night."),
    ],
)
def test_the_playground_predicts_the_examples_digit_images_and_sentences(page, client, env, example, column, value):
    """examples/digits.yaml and examples/text.yaml trained as shipped: their models take a PNG file
    and a sentence as the user has them, dropped or typed in the playground."""
    run = client.submit_file(os.path.join(ROOT, "examples", f"{example}.yaml"))
    assert list(client.watch(run.run_id))[-1].finished.state == gateway_pb2.RUN_STATE_SUCCEEDED
    page.goto(page.base + f"/#/predict/{example}")
    expect(page.locator("h1")).to_contain_text(f"Predict · {example}")  # not the previous playground still
    if column == "image":
        page.set_input_files(f".drop[data-column={column}] input[type=file]", value)
        expect(page.locator(f".drop[data-column={column}] img")).to_be_visible()
        with open(value, "rb") as f:
            body, kind = f.read(), "image/png"
        boundary = "b0undary"
        payload = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{column}"; filename="x.png"\r\n'
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    else:
        page.fill(f"#predict-form [name={column}]", value)
        payload, headers = json.dumps({"row": {column: value}}).encode(), {"content-type": "application/json"}
    page.click("#predict")
    status, _, answer = http_call(env, "gateway", "POST", f"/api/models/{example}/predict", payload, headers)
    assert status == 200, answer
    expect(page.locator("#label")).to_have_text(json.loads(answer)["label"])
    shot(page, f"predict-{column}")


def test_a_running_run_moves_live_and_cancels_from_the_runs_list(page):
    page.goto(page.base + "/#/submit")
    long = iris_pipeline().replace("name: iris", "name: iris-long").replace("epochs: 60", "epochs: 5000")
    page.fill("#pipeline-text", long)
    page.click("#submit-pipeline")
    expect(page.locator("main[data-page=run]")).to_be_visible()
    page.goto(page.base + "/#/runs")
    row = page.locator("#runs tbody tr").first
    expect(row).to_contain_text("iris-long")
    # live, from WatchRun: "epoch 3/5000 · loss 0.42"
    expect(row.locator(".progress-cell")).to_contain_text(re.compile(r"epoch \d+/5000"), timeout=RUN_S * 1000)
    shot(page, "runs-live")
    row.locator("button", has_text="Cancel").click()
    expect(row.locator(".badge")).to_have_text("CANCELLED", timeout=RUN_S * 1000)


def test_upload_a_data_file_and_pick_a_model(page):
    page.goto(page.base + "/#/submit")
    page.set_input_files("#upload-form input[name=file]", IRIS_CSV)
    page.fill("#upload-form input[name=name]", "uploaded")
    page.fill("#upload-form input[name=label]", "species")
    page.select_option("#upload-form select[name=model]", "linear")
    page.fill("#upload-form input[name=epochs]", "3")
    page.click("#upload-form button")
    state = page.locator("h1 [data-state]")
    expect(state).to_have_attribute("data-state", re.compile("SUCCEEDED|FAILED|CANCELLED"), timeout=RUN_S * 1000)
    assert state.get_attribute("data-state") == "SUCCEEDED", page.locator("main").inner_text()
    expect(page.locator("main")).to_contain_text("uploaded@")  # the file became a dataset through collect
    expect(page.locator("#run-model")).to_have_text("uploaded version 1")


def test_the_datasets_page_shows_a_new_versions_schema_anomalies(page, env, iris, tmp_path):
    """A second iris version with a wider petal_width range and a new class: its anomalies against
    the first version are listed on the datasets page (and by /api/datasets)."""
    from cookline import channels
    from cookline.v1 import collect_pb2, collect_pb2_grpc, pipeline_pb2

    with open(IRIS_CSV) as f:
        lines = f.read().splitlines()
    path = tmp_path / "iris-v2.csv"
    path.write_text("\n".join(lines + ["5.0,3.0,1.5,9.5,sibirica"]) + "\n")
    collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect", env))
    list(
        collect.Ingest(
            collect_pb2.IngestRequest(
                dataset="iris", source=pipeline_pb2.CollectSpec(source=str(path), label="species")
            ),
            timeout=120,
        )
    )
    page.goto(page.base + "/#/datasets/iris")
    newest = page.locator("[data-dataset=iris] details").first
    expect(newest.locator(".badge.warn")).to_have_text("2 schema anomalies")
    expect(newest.locator("ul.anomalies")).to_contain_text("'petal_width' ranges over [0.1, 9.5]")
    expect(newest.locator("ul.anomalies")).to_contain_text("class 'sibirica' is new")
    shot(page, "datasets")


@pytest.fixture(scope="module")
def iris(client):
    """iris trained and deployed (by the browser test above when it ran first)."""
    from cookline.v1 import registry_pb2

    if not any(
        m.name == "iris" and m.deployed_version
        for m in client.registry.ListModels(registry_pb2.ListModelsRequest(), timeout=30).models
    ):
        run = client.submit(iris_pipeline())
        list(client.watch(run.run_id))
    return next(r for r in client.list_runs() if r.pipeline.name == "iris" and r.deployed)


ROW = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}


def test_json_and_multipart_rows_answer_as_grpc_predict(env, client, iris):
    expected = client.predict("iris", [list(ROW.values())])[0]
    status, _, body = http_call(
        env,
        "gateway",
        "POST",
        "/api/models/iris/predict",
        json.dumps({"row": ROW}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 200
    answer = json.loads(body)
    assert answer["label"] == expected["label"] and answer["model"] == {"name": "iris", "version": 1}
    assert answer["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    parts = "".join(f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in ROW.items())
    status, _, body = http_call(
        env,
        "gateway",
        "POST",
        "/api/models/iris/versions/1/predict",
        (parts + "--b--\r\n").encode(),
        {"content-type": "multipart/form-data; boundary=b"},
    )
    assert status == 200 and json.loads(body)["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    status, _, body = http_call(
        env,
        "gateway",
        "POST",
        "/api/models/iris/predict",
        json.dumps({"row": list(ROW.values())}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 200 and json.loads(body)["label"] == expected["label"]


def test_run_events_stream_as_server_sent_events(env, iris):
    status, headers, body = http_call(env, "gateway", "GET", f"/api/runs/{iris.run_id}/events")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: ") :]) for line in body.decode().splitlines() if line.startswith("data: ")]
    assert [int(e.get("sequence", 0)) for e in events] == list(range(len(events)))  # every event, in order
    assert sum(1 for e in events if e.get("train", {}).get("epoch_finished")) == 60
    assert events[-1]["finished"]["state"] == "RUN_STATE_SUCCEEDED"
    status, _, body = http_call(env, "gateway", "GET", f"/api/runs/{iris.run_id}/events?from={len(events) - 1}")
    assert body.decode().count("data: ") == 1  # resumes from a sequence number


def test_cross_origin_calls_are_off_by_default(env):
    status, headers, _ = http_call(env, "gateway", "GET", "/api/runs", headers={"origin": "https://app.example.com"})
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = http_call(
        env,
        "gateway",
        "OPTIONS",
        "/api/runs",
        headers={"origin": "https://app.example.com", "access-control-request-method": "GET"},
    )
    assert status == 405 and "access-control-allow-origin" not in headers
