"""An independent OIP v2 client: Triton's `tritonclient` package, run from its own
venv (.cache/tritonclient) by tests/e2e/test_serving_oip.py. Calls serve's
inference.GRPCInferenceService and prints what it got as one JSON object.

    python oip_client.py HOST:PORT MODEL ROWS_JSON
    python oip_client.py --raw HOST:PORT TEXT_MODEL SENTENCE IMAGE_MODEL PNG_FILE
"""

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def infer_input(rows: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput("features", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)  # sent as raw_input_contents
    return tensor


def outputs(result) -> dict:
    return {
        "scores": result.as_numpy("scores").tolist(),
        "label": [v.decode() for v in result.as_numpy("label").reshape(-1)],
    }


def drained(answers: queue.Queue) -> list[dict]:
    """The stream's answers in order: {"id", "scores", "label"} or {"error"}."""
    stream = []
    while not answers.empty():
        result, error = answers.get()
        if error is not None:
            stream.append({"error": str(error)})
        else:
            stream.append({"id": result.get_response().id} | outputs(result))
    return stream


def main(url: str, model: str, rows: np.ndarray) -> dict:
    client = triton.InferenceServerClient(url)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(model, as_json=True),
    }

    result = client.infer(
        model,
        [infer_input(rows)],
        outputs=[triton.InferRequestedOutput("scores"), triton.InferRequestedOutput("label")],
    )
    out["infer"] = outputs(result) | {"version": result.get_response().model_version}

    try:
        client.infer(model, [infer_input(rows.astype(np.int64), "INT64")])
    except InferenceServerException as exc:
        out["bad_dtype"] = {"status": exc.status(), "message": exc.message()}
    try:
        client.infer("nosuch", [infer_input(rows)])
    except InferenceServerException as exc:
        out["unknown_model"] = {"status": exc.status(), "message": exc.message()}

    # Triton's streaming extension: one message per row, plus one bad message in the middle.
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i, row in enumerate(rows):
        client.async_stream_infer(model, [infer_input(row[None, :])], request_id=str(i))
        if i == 0:
            client.async_stream_infer(model, [infer_input(row[None, :2])], request_id="bad")
    client.stop_stream()
    out["stream"] = drained(answers)
    client.close()
    return out


def bytes_input(name: str, values: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.asarray(values, dtype=object))  # raw, each value length-prefixed
    return tensor


def raw(url: str, text_model: str, sentence: str, image_model: str, png_path: str) -> dict:
    """A sentence to a text model and a PNG file to an image model, as BYTES inputs."""
    client = triton.InferenceServerClient(url)
    with open(png_path, "rb") as f:
        png = f.read()
    out = {
        "text_metadata": client.get_model_metadata(text_model, as_json=True),
        "image_metadata": client.get_model_metadata(image_model, as_json=True),
        "text": outputs(client.infer(text_model, [bytes_input("text", [sentence.encode()])])),
        "image": outputs(client.infer(image_model, [bytes_input("image", [png])])),
    }
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i, value in enumerate([png, b"not an image", png]):
        client.async_stream_infer(image_model, [bytes_input("image", [value])], request_id=str(i))
    client.stop_stream()
    out["stream"] = drained(answers)
    client.close()
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--raw":
        print(json.dumps(raw(*sys.argv[2:7])))
    else:
        print(json.dumps(main(sys.argv[1], sys.argv[2], np.asarray(json.loads(sys.argv[3]), np.float32))))
