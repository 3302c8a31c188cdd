"""Raw inputs end to end: a real serve process on a real S3 server (SeaweedFS) serving
SavedModels that take the raw-input contract's tensors (numbers, category strings,
text, encoded images; tests/support/raw_models.py builds and publishes them as train does).
Metadata (cookline and OIP), Predict / PredictStream / OIP ModelInfer with BYTES,
per-row errors that leave the stream going, tritonclient, and `cookline predict`."""

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
from rest_client import http_call

import raw_models as rm
from cookline import channels, tensors
from cookline.client import raw_array
from cookline.config import address
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from helpers import ROOT, free_ports, unique_bucket
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc
from services.common.store import store_from_env
from services.serve.models import load_predict

TRITON_PYTHON = os.path.join(ROOT, ".cache", "tritonclient", "bin", "python")
MAX_IMAGE_BYTES = 4096  # small, so an oversized image is cheap to make
SENTENCES = ["A great film, I loved every minute.", "Awful. I hate it, bad acting."]
ROWS = {
    "features": [[1.0, 2.0, 0.5], [0.0, -1.0, -3.0], [0.2, 0.1, 0.0]],
    "categorical": [["green", "large"], ["red", "small"], ["purple", "huge"]],  # last: both unseen
    "text": ["good good", "bad", "nothing to say"],
    "image": [rm.png(240), rm.jpeg(20), rm.png(128, channels=3)],
}


@pytest.fixture(scope="module")
def served(s3_server, tmp_path_factory):
    """serve alone (a real process) on S3, with these published models loaded:
    raw (all four inputs), texts (text only), pics (image only), tabular (numbers,
    categories and text), old (a pre-raw-inputs
    record: numeric "features" without kind) and filled (numeric with fill_missing)."""
    from cookline.stack import Stack

    port, http_port = free_ports(2, set(s3_server.ports.values()))
    env = dict(
        os.environ,
        COOKLINE_SERVE_ADDR=f"127.0.0.1:{port}",
        COOKLINE_SERVE_HTTP_ADDR=f"127.0.0.1:{http_port}",
        TF_CPP_MIN_LOG_LEVEL="2",
        COOKLINE_SERVE_MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES),
    )
    env.update(s3_server.env(unique_bucket("raw")))
    store = store_from_env(env)
    local = {}
    for name, kwargs in (
        ("raw", {}),
        ("texts", {"inputs": ("text",)}),
        ("pics", {"inputs": ("image",)}),
        ("tabular", {"inputs": ("features", "categorical", "text")}),
        ("old", {"inputs": ("features",), "old_record": True}),
        ("filled", {"inputs": ("features",), "fill_missing": True}),
    ):
        _version, local[name] = rm.publish_mixed(store, name, **kwargs)
    running = Stack(env, log_dir=str(tmp_path_factory.mktemp("logs")))
    with running:
        running.start("serve")
        running.wait_healthy(timeout=120)
        stub = serve_pb2_grpc.ServeServiceStub(channels.channel("serve", env))
        for name in local:
            stub.LoadModel(serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name=name)), timeout=180)
        yield env, stub, local


def request(name: str, inputs: dict) -> serve_pb2.PredictRequest:
    req = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=name))
    for key, values in inputs.items():
        tensors.from_numpy(raw_array(values), out=req.inputs[key])
    return req


def in_process(path: str, inputs: dict) -> np.ndarray:
    return load_predict(path)({k: raw_array(v) for k, v in inputs.items()})


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def test_metadata_lists_every_raw_input_with_dtype_shape_kind_and_image_settings(served):
    env, stub, _ = served
    meta = stub.GetModelMetadata(
        serve_pb2.GetModelMetadataRequest(model=model_pb2.ModelRef(name="raw")), timeout=30
    ).metadata
    i = meta.inputs
    assert set(i) == {"features", "categorical", "text", "image"}
    assert (i["features"].dtype, list(i["features"].shape), i["features"].kind) == (
        tensors.DataType.DATA_TYPE_FLOAT32,
        [-1, 3],
        serve_pb2.INPUT_KIND_NUMERIC,
    )
    assert list(i["features"].columns) == ["a", "b", "c"] == list(meta.feature_columns)
    assert (
        i["categorical"].dtype,
        list(i["categorical"].shape),
        i["categorical"].kind,
        list(i["categorical"].columns),
    ) == (tensors.DataType.DATA_TYPE_STRING, [-1, 2], serve_pb2.INPUT_KIND_CATEGORY, ["colour", "size"])
    assert (i["text"].dtype, list(i["text"].shape), i["text"].kind) == (
        tensors.DataType.DATA_TYPE_STRING,
        [-1],
        serve_pb2.INPUT_KIND_TEXT,
    )
    image = i["image"]
    assert image.kind == serve_pb2.INPUT_KIND_IMAGE and list(image.encodings) == ["png", "jpeg", "gif", "bmp"]
    assert (image.image.height, image.image.width, image.image.channels) == (16, 16, 1)
    assert image.max_bytes == MAX_IMAGE_BYTES
    assert list(meta.class_names) == ["neg", "pos"]

    old = stub.GetModelMetadata(
        serve_pb2.GetModelMetadataRequest(model=model_pb2.ModelRef(name="old")), timeout=30
    ).metadata
    assert old.inputs["features"].kind == serve_pb2.INPUT_KIND_NUMERIC and list(old.inputs["features"].columns) == [
        "a",
        "b",
        "c",
    ]

    oip_stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address("serve", env)))
    om = oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="raw"), timeout=30)
    by_name = {t.name: t for t in om.inputs}
    assert {n: (t.datatype, list(t.shape), t.parameters["kind"].string_param) for n, t in by_name.items()} == {
        "features": ("FP32", [-1, 3], "numeric"),
        "categorical": ("BYTES", [-1, 2], "category"),
        "text": ("BYTES", [-1], "text"),
        "image": ("BYTES", [-1], "image"),
    }
    assert by_name["image"].parameters["encodings"].string_param == "png,jpeg,gif,bmp"
    assert by_name["image"].parameters["image_height"].int64_param == 16
    assert by_name["categorical"].parameters["columns"].string_param == "colour,size"


def test_predict_with_raw_values_equals_the_savedmodel_in_process(served):
    _, stub, local = served
    response = stub.Predict(request("raw", ROWS), timeout=60)
    scores = tensors.to_numpy(response.outputs["scores"])
    np.testing.assert_allclose(scores, in_process(local["raw"], ROWS), atol=1e-6)
    labels = [v.decode() for v in tensors.to_numpy(response.outputs["label"])]
    assert labels[:2] == ["pos", "neg"]
    # an old record (numeric "features", no kind) serves as before
    old = stub.Predict(request("old", {"features": ROWS["features"]}), timeout=60)
    np.testing.assert_allclose(
        tensors.to_numpy(old.outputs["scores"]), in_process(local["old"], {"features": ROWS["features"]}), atol=1e-6
    )


def test_numbers_sent_as_strings_are_parsed(served):
    _, stub, _ = served
    as_numbers = tensors.to_numpy(
        stub.Predict(request("old", {"features": [[1.5, 2, 3]]}), timeout=30).outputs["scores"]
    )
    as_strings = tensors.to_numpy(
        stub.Predict(request("old", {"features": [["1.5", "2", " 3 "]]}), timeout=30).outputs["scores"]
    )
    assert np.array_equal(as_numbers, as_strings)


BAD = {  # what is wrong -> (inputs, text the message must contain)
    "undecodable image bytes": ({"image": [rm.png(9), b"hello, not an image"]}, "inputs['image'] row 1: not an image"),
    "image with a broken body": (
        {"image": [rm.png(9)[:40] + b"\x00" * 60]},
        "inputs['image'] row 0: the model could not",
    ),
    "image over the size limit": (
        {"image": [rm.png(9), rm.png(9), os.urandom(MAX_IMAGE_BYTES + 1)]},
        f"inputs['image'] row 2: image of {MAX_IMAGE_BYTES + 1} bytes is over the limit",
    ),
    "numbers for an image input": ({"image": [[1.0]]}, "inputs['image']: dtype float32"),
}


def test_bad_raw_rows_get_invalid_argument_naming_input_and_row_and_the_stream_goes_on(served):
    _, stub, local = served
    good = {"image": [rm.png(250)]}
    messages = []
    for what, (inputs, _) in BAD.items():
        messages += [("good", good), (what, inputs)]
    messages.append(("good", good))
    responses = list(
        stub.PredictStream(
            iter(
                [
                    serve_pb2.PredictStreamRequest(correlation_id=cid, request=request("pics", inputs))
                    for cid, inputs in messages
                ]
            ),
            timeout=120,
        )
    )
    assert [r.correlation_id for r in responses] == [cid for cid, _ in messages]
    expected = in_process(local["pics"], good)
    for (cid, _), response in zip(messages, responses, strict=True):
        if cid == "good":
            assert response.HasField("result"), response.error.message
            np.testing.assert_allclose(tensors.to_numpy(response.result.outputs["scores"]), expected, atol=1e-6)
        else:
            assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (cid, response)
            assert BAD[cid][1] in response.error.message, (cid, response.error.message)


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"features": [[1, 2, 3], [1, float("nan"), 3]]}, "inputs['features'] row 1, column 'b': NaN is not accepted"),
        ({"features": [[float("inf"), 2, 3]]}, "inputs['features'] row 0, column 'a': infinity is not accepted"),
        (
            {"features": [["1", "2", "3"], ["4", "five", "6"]]},
            "inputs['features'] row 1, column 'b': 'five' is not a number",
        ),
    ],
)
def test_bad_numbers_name_row_and_column(served, inputs, message):
    _, stub, _ = served
    error = rpc_error(stub.Predict, request("old", inputs), timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details(), error.details()


def test_nan_is_a_missing_value_when_the_model_fills_it(served):
    _, stub, local = served
    for rows in (
        {"features": [[1, float("nan"), 3], [0, 2, 1]]},
        {"features": [["1", "", "3"], ["", "2", "1"]]},
    ):  # an empty string is a missing value too
        scores = tensors.to_numpy(stub.Predict(request("filled", rows), timeout=30).outputs["scores"])
        expected = in_process(local["filled"], {"features": [[1, 0, 3], [0, 2, 1]]})
        np.testing.assert_allclose(scores[0], expected[0], atol=1e-6)
    error = rpc_error(stub.Predict, request("filled", {"features": [[1, float("-inf"), 3]]}), timeout=30)
    assert "row 0, column 'b': infinity is not accepted" in error.details()


def metadata(stub, name: str) -> serve_pb2.ModelMetadata:
    return stub.GetModelMetadata(
        serve_pb2.GetModelMetadataRequest(model=model_pb2.ModelRef(name=name)), timeout=30
    ).metadata


def test_numeric_models_run_xla_compiled_and_answer_as_the_signature(served):
    """A numbers-only model runs as XLA functions per batch-size bucket: every row count
    (padded to its bucket, or cut into chunks of the largest) answers as the signature."""
    _, stub, local = served
    meta = metadata(stub, "filled")
    assert meta.execution == serve_pb2.EXECUTION_PATH_XLA and meta.execution_detail == ""
    assert list(meta.batching.allowed_batch_sizes) == [1, 8, 32, 128, 256]  # the defaults up to max_batch_size
    rng = np.random.default_rng(3)
    for rows in (1, 2, 8, 9, 200, 256, 600):  # 600: more than the largest bucket (256)
        features = rng.normal(size=(rows, 3)).astype(np.float32)
        features[rows // 2, 1] = np.nan  # a missing value the model fills
        scores = tensors.to_numpy(stub.Predict(request("filled", {"features": features}), timeout=60).outputs["scores"])
        assert scores.shape == (rows, 2)
        np.testing.assert_allclose(scores, in_process(local["filled"], {"features": features}), atol=1e-5)


def test_allowed_batch_sizes_per_model_and_their_checks(served):
    _, stub, local = served

    def load(batching):
        return stub.LoadModel(
            serve_pb2.LoadModelRequest(model=model_pb2.ModelRef(name="old"), batching=batching), timeout=180
        ).metadata

    try:
        meta = load(serve_pb2.BatchingConfig(allowed_batch_sizes=[2, 16]))  # max_batch_size: the largest
        assert (meta.batching.max_batch_size, list(meta.batching.allowed_batch_sizes)) == (16, [2, 16])
        assert meta.execution == serve_pb2.EXECUTION_PATH_XLA
        features = np.random.default_rng(4).normal(size=(37, 3)).astype(np.float32)
        for rows in (1, 3, 16, 37):
            got = stub.Predict(request("old", {"features": features[:rows]}), timeout=60).outputs["scores"]
            want = in_process(local["old"], {"features": features[:rows]})
            np.testing.assert_allclose(tensors.to_numpy(got), want, atol=1e-5)
        for batching, message in (
            (serve_pb2.BatchingConfig(allowed_batch_sizes=[8, 4]), "allowed_batch_sizes[1]: 4 after 8"),
            (serve_pb2.BatchingConfig(allowed_batch_sizes=[0, 4]), "allowed_batch_sizes[0]: 0 is not in [1, 65536]"),
            (
                serve_pb2.BatchingConfig(max_batch_size=8, allowed_batch_sizes=[4, 16]),
                "allowed_batch_sizes[1]: 16 is larger than max_batch_size 8",
            ),
        ):
            error = rpc_error(load, batching)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details(), error.details()
        assert list(metadata(stub, "old").batching.allowed_batch_sizes) == [2, 16]  # a refused load changes nothing
    finally:
        load(serve_pb2.BatchingConfig())


def test_models_with_string_inputs_run_on_their_signature_and_say_why(served):
    _, stub, _ = served
    for name, detail in (
        ("raw", "inputs['categorical'] is a string input (category)"),
        ("texts", "inputs['text'] is a string input (text)"),
        ("pics", "inputs['image'] is a string input (image)"),
    ):
        meta = metadata(stub, name)
        assert meta.execution == serve_pb2.EXECUTION_PATH_SIGNATURE, name
        assert meta.execution_detail.startswith(detail), meta.execution_detail


def test_missing_unknown_and_mismatched_inputs(served):
    _, stub, _ = served
    partial = {k: v for k, v in ROWS.items() if k != "text"}
    error = rpc_error(stub.Predict, request("raw", partial), timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs['text']: required (string [rows], kind text)" in error.details()
    error = rpc_error(stub.Predict, request("raw", dict(ROWS, text=ROWS["text"][:2])), timeout=30)
    assert "inputs['text']: 2 rows, but inputs['features'] has 3" in error.details()
    error = rpc_error(stub.Predict, request("texts", {"text": ["x"], "pixels": ["y"]}), timeout=30)
    assert "inputs['pixels']: unknown input" in error.details()


def _oip_request(model: str, raw: bool) -> oip.ModelInferRequest:
    req = oip.ModelInferRequest(model_name=model, id="r")
    for name, values in ROWS.items():
        array = raw_array(values)
        tensor = req.inputs.add(name=name, datatype="BYTES" if array.dtype == object else "FP32", shape=array.shape)
        if raw:
            req.raw_input_contents.append(
                array.astype("<f4").tobytes()
                if array.dtype != object
                else b"".join(len(v).to_bytes(4, "little") + v for v in array.reshape(-1))
            )
        elif array.dtype == object:
            tensor.contents.bytes_contents.extend(array.reshape(-1))
        else:
            tensor.contents.fp32_contents.extend(array.reshape(-1))
    return req


def test_oip_model_infer_takes_bytes_contents_and_length_prefixed_raw_bytes(served):
    env, stub, local = served
    oip_stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address("serve", env)))
    expected = in_process(local["raw"], ROWS)
    for raw in (False, True):
        response = oip_stub.ModelInfer(_oip_request("raw", raw), timeout=60)
        scores = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 2)
        np.testing.assert_allclose(scores, expected, atol=1e-6)
    bad = _oip_request("raw", True)
    bad.raw_input_contents[2] = bad.raw_input_contents[2][:-3]  # "text": the last element cut short
    error = rpc_error(oip_stub.ModelInfer, bad, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs['text']: raw BYTES element 2" in error.details()


def test_oip_rest_takes_raw_inputs_as_json_strings_and_as_binary_data(served):
    """OIP REST with every raw input: numbers and strings as JSON `data` (the images, not UTF-8
    text, as binary data), then every tensor as binary data; both answer as OIP gRPC does, and a
    bad image is a 400 naming the input and the row."""
    env, _, _ = served
    oip_stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address("serve", env)))
    grpc_request = _oip_request("raw", True)
    expected = np.frombuffer(oip_stub.ModelInfer(grpc_request, timeout=60).raw_output_contents[0], "<f4")

    def rest(binary_names, image_bytes=None):
        inputs, tail = [], b""
        for tensor, raw in zip(grpc_request.inputs, grpc_request.raw_input_contents, strict=True):
            if tensor.name == "image" and image_bytes is not None:
                raw = b"".join(len(v).to_bytes(4, "little") + v for v in image_bytes)
            spec = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
            if tensor.name in binary_names:
                inputs.append(spec | {"parameters": {"binary_data_size": len(raw)}})
                tail += raw
            else:
                data = raw_array(ROWS[tensor.name])
                inputs.append(
                    spec
                    | {
                        "data": [v.decode() for v in data.reshape(-1)]
                        if data.dtype == object
                        else data.reshape(-1).tolist()
                    }
                )
        header = json.dumps({"inputs": inputs, "outputs": [{"name": "scores"}]}).encode()
        status, _, body = http_call(
            env,
            "serve",
            "POST",
            "/v2/models/raw/infer",
            header + tail,
            {"Inference-Header-Content-Length": str(len(header))},
        )
        return status, json.loads(body)

    for binary in (("image",), ("features", "categorical", "text", "image")):
        status, doc = rest(binary)
        assert status == 200, doc
        np.testing.assert_allclose(doc["outputs"][0]["data"], expected, atol=1e-6)
    status, doc = rest(("image",), image_bytes=[ROWS["image"][0], b"not an image", ROWS["image"][2]])
    assert status == 400 and "inputs['image'] row 1: not an image" in doc["error"]


def test_tritonclient_sends_a_sentence_and_a_png_and_gets_cookline_predicts_answer(served, tmp_path):
    env, _, _ = served
    assert os.path.exists(TRITON_PYTHON), "tritonclient venv missing: run `make install`"
    picture = tmp_path / "bright.png"
    picture.write_bytes(rm.png(230))
    done = subprocess.run(
        [
            TRITON_PYTHON,
            os.path.join(ROOT, "tests", "support", "oip_client.py"),
            "--raw",
            address("serve", env),
            "texts",
            SENTENCES[0],
            "pics",
            str(picture),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    triton = json.loads(done.stdout)
    assert triton["text_metadata"]["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    cli = [sys.executable, "-m", "cookline.cli", "predict"]
    text = subprocess.run(
        cli + ["texts", "--text", SENTENCES[0], "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    image = subprocess.run(
        cli + ["pics", "--image", str(picture), "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert text.returncode == 0 and image.returncode == 0, text.stderr + image.stderr
    for got, out in ((triton["text"], text.stdout), (triton["image"], image.stdout)):
        ours = json.loads(out)
        assert got["label"] == [ours["label"]] == ["pos"]
        np.testing.assert_allclose(got["scores"][0], [ours["scores"]["neg"], ours["scores"]["pos"]], atol=1e-6)
    # Triton's streaming extension with BYTES: a bad image in the middle, the stream goes on
    assert [s.get("label") for s in triton["stream"]] == [["pos"], None, ["pos"]]
    assert (
        "INVALID_ARGUMENT" in triton["stream"][1]["error"] and "inputs['image'] row 0" in triton["stream"][1]["error"]
    )


def test_cli_predicts_raw_csv_columns_images_and_text_streamed_and_as_json(served, tmp_path):
    env, _, local = served
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("id,a,b,c,colour,size,review\n1,1,2,0.5,green,large,good good\n2,0,-1,-3,red,small,bad\n")
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "bright.png").write_bytes(rm.png(240))
    (folder / "dark.jpg").write_bytes(rm.jpeg(15))
    (folder / "notes.txt").write_text("not a picture")
    cli = [sys.executable, "-m", "cookline.cli", "predict"]

    def run(*args):
        done = subprocess.run(cli + list(args), env=env, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout, done.stderr

    texts = local["texts"]
    for stream in ([], ["--stream"]):
        code, out, err = run("texts", "--text", *SENTENCES, "--output", "json", *stream)
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["label"] for r in rows] == ["pos", "neg"] and [r["input"] for r in rows] == SENTENCES
        expected = in_process(texts, {"text": SENTENCES})
        np.testing.assert_allclose([[r["scores"]["neg"], r["scores"]["pos"]] for r in rows], expected, atol=1e-6)

        code, out, err = run("pics", "--image", str(folder), *stream)
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 2 and lines[0].split()[0] == "pos" and lines[0].endswith("bright.png")
        assert lines[1].split()[0] == "neg" and lines[1].endswith("dark.jpg")

        code, out, err = run("tabular", "--input", str(csv_path), "--output", "json", *stream)
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        raw_rows = {
            "features": [[1, 2, 0.5], [0, -1, -3]],
            "categorical": [["green", "large"], ["red", "small"]],
            "text": ["good good", "bad"],
        }
        np.testing.assert_allclose(
            [[r["scores"]["neg"], r["scores"]["pos"]] for r in rows], in_process(local["tabular"], raw_rows), atol=1e-6
        )
        assert [r["label"] for r in rows] == ["pos", "neg"]
    code, out, err = run("raw", "--input", str(csv_path))
    assert code == 2 and "takes images" in err  # raw has an image input: a CSV cannot give it
    code, out, err = run("filled", "--input", str(csv_path), "--output", "json", "--stream")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    np.testing.assert_allclose(
        [[r["scores"]["neg"], r["scores"]["pos"]] for r in rows],
        in_process(local["filled"], {"features": [[1, 2, 0.5], [0, -1, -3]]}),
        atol=1e-6,
    )
    # a file that is not an image: the stream answers the good one and names the bad row
    code, out, err = run("pics", "--image", str(folder / "bright.png"), str(folder / "notes.txt"), "--stream")
    assert code == 1
    assert out.splitlines()[0].startswith("pos") and "row 1: error: inputs['image'] row 0: not an image" in out
