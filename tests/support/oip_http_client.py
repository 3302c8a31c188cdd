"""An independent OIP v2 REST client: Triton's `tritonclient.http`, run from its own venv
(.cache/tritonclient) by tests/e2e/test_serving_rest.py. Calls serve's /v2 endpoints and
prints what it got as one JSON object.

    python oip_http_client.py HOST:PORT MODEL VERSION ROWS_JSON [TOKEN]
"""

import json
import sys

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


def infer_input(rows: np.ndarray, binary: bool, datatype: str = "FP32", name: str = "features") -> triton.InferInput:
    tensor = triton.InferInput(name, list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary)  # binary: Triton's binary tensor data extension
    return tensor


def outputs(result) -> dict:
    return {
        "scores": result.as_numpy("scores").tolist(),
        "label": [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").reshape(-1)],
    }


def error(call) -> dict:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}
    return {}


def main(url: str, model: str, version: str, rows: np.ndarray, token: str) -> dict:
    def auth():  # a fresh dict per call: tritonclient adds Inference-Header-Content-Length to the one it gets
        return {"Authorization": f"Bearer {token}"} if token else None

    client = triton.InferenceServerClient(url)
    out = {
        "live": client.is_server_live(headers=auth()),
        "ready": client.is_server_ready(headers=auth()),
        "model_ready": client.is_model_ready(model, headers=auth()),
        "version_ready": client.is_model_ready(model, version, headers=auth()),
        "server": client.get_server_metadata(headers=auth()),
        "metadata": client.get_model_metadata(model, headers=auth()),
        "version_metadata": client.get_model_metadata(model, version, headers=auth()),
    }
    for binary in (True, False):  # inputs and outputs as binary data, then as JSON
        requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("scores", "label")]
        result = client.infer(model, [infer_input(rows, binary)], outputs=requested, request_id="r1", headers=auth())
        response = result.get_response()
        out["binary" if binary else "json"] = outputs(result) | {
            "version": response["model_version"],
            "id": response.get("id"),
        }
    result = client.infer(model, [infer_input(rows, True)], model_version=version, headers=auth())  # all outputs
    out["version_infer"] = outputs(result) | {"version": result.get_response()["model_version"]}
    # numbers as BYTES (decimal strings): whatever serve's gRPC answers, REST answers the same
    strings = np.array([[str(v) for v in row] for row in rows], dtype=object)
    out["bytes_json"] = error(
        lambda: out.__setitem__(
            "bytes_json_result", outputs(client.infer(model, [infer_input(strings, False, "BYTES")], headers=auth()))
        )
    )
    out["bytes_binary"] = error(
        lambda: out.__setitem__(
            "bytes_binary_result", outputs(client.infer(model, [infer_input(strings, True, "BYTES")], headers=auth()))
        )
    )
    out["bad_dtype"] = error(
        lambda: client.infer(model, [infer_input(rows.astype(np.int64), True, "INT64")], headers=auth())
    )
    out["unknown_model"] = error(lambda: client.infer("nosuch", [infer_input(rows, True)], headers=auth()))
    out["unknown_version"] = error(lambda: client.get_model_metadata(model, "999", headers=auth()))
    out["no_token"] = error(lambda: client.get_model_metadata(model))
    client.close()
    return out


if __name__ == "__main__":
    token = sys.argv[5] if len(sys.argv) > 5 else ""
    print(
        json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3], np.asarray(json.loads(sys.argv[4]), np.float32), token))
    )
