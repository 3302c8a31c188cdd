"""A thin Python client of a cookline stack. Needs grpcio and numpy, never TensorFlow.

from cookline.client import Client
client = Client()                           # COOKLINE_GATEWAY_ADDR / COOKLINE_SERVE_ADDR
run = client.submit(open("iris.yaml").read(), base_dir=".")
for event in client.watch(run.run_id): ...
client.predict("iris", [[5.1, 3.5, 1.4, 0.2]])   # -> [{"label": "setosa", "scores": {...}}]
client.predict("reviews", {"text": ["a great film"]})           # raw inputs by name
client.predict("digits", {"image": [open("7.png", "rb").read()]})
client.upload("iris.csv", "iris", CollectSpec(label="species"))   # -> DatasetInfo (iris@<version>)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import grpc
import numpy as np

from cookline import channels, tensors
from cookline.spec.sources import walk_files
from cookline.v1 import (
    collect_pb2,
    collect_pb2_grpc,
    data_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    model_pb2,
    pipeline_pb2,
    registry_pb2_grpc,
    serve_pb2,
    serve_pb2_grpc,
)

# Bytes of a file per UploadDataset message (well under the default 64 MiB message limit).
UPLOAD_CHUNK = 1 << 20
TERMINAL = (gateway_pb2.RUN_STATE_SUCCEEDED, gateway_pb2.RUN_STATE_FAILED, gateway_pb2.RUN_STATE_CANCELLED)


def rows_from_response(response: serve_pb2.PredictResponse) -> list[dict]:
    """A PredictResponse as one {"label", "scores": {class: probability}} dict per row
    (a regressor's: one {"value": number} dict per row; a detector's: one {"detections": [{"label",
    "score", "box": [ymin, xmin, ymax, xmax]}, ...]} dict per image, best first)."""
    if "boxes" in response.outputs:
        boxes, labels, scores = (tensors.to_numpy(response.outputs[n]) for n in ("boxes", "labels", "scores"))
        return [
            {
                "detections": [
                    {"label": label.decode(), "score": float(score), "box": [float(v) for v in box]}
                    for box, label, score in zip(row_boxes, row_labels, row_scores, strict=True)
                    if label  # unused slots have label ""
                ]
            }
            for row_boxes, row_labels, row_scores in zip(boxes, labels, scores, strict=True)
        ]
    scores = tensors.to_numpy(response.outputs["scores"])
    if "label" not in response.outputs:
        return [{"value": float(row[0])} for row in scores]
    labels = tensors.to_numpy(response.outputs["label"])
    names = list(response.class_names)
    return [
        {"label": label.decode(), "scores": {n: float(p) for n, p in zip(names, row, strict=True)}}
        for label, row in zip(labels, scores, strict=True)
    ]


def raw_array(values) -> np.ndarray:
    """Values of one input as the array cookline sends: str/bytes (text, categories,
    encoded images) as an object array of bytes, numbers as float32.

    Bytes go in an object array, never numpy's fixed-width "S" dtype, which drops
    trailing NUL bytes (an image file may end in them)."""
    if isinstance(values, np.ndarray) and values.dtype.kind not in "OSU":
        return values.astype(np.float32, copy=False)
    array = np.asarray(values, dtype=object)
    flat = array.reshape(-1)
    if flat.size and not isinstance(flat[0], (str, bytes, bytearray)):
        return np.asarray(values, dtype=np.float32)
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = [bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode() for v in flat]
    return out


def _inputs(inputs) -> dict[str, np.ndarray]:
    """{name: array}: a mapping of raw values by input name, or bare rows of numbers ("features")."""
    if isinstance(inputs, Mapping):
        return {name: raw_array(values) for name, values in inputs.items()}
    return {"features": raw_array(inputs)}


class Client:
    def __init__(self, gateway: str | None = None, serve: str | None = None, env: Mapping[str, str] | None = None):
        self._gateway_channel = channels.channel("gateway", env, target=gateway)
        self._serve_channel = channels.channel("serve", env, target=serve)
        self.pipelines = gateway_pb2_grpc.PipelineServiceStub(self._gateway_channel)
        self.registry = registry_pb2_grpc.RegistryServiceStub(self._gateway_channel)
        # uploads and the dataset catalog go through the gateway (it forwards them to collect)
        self.datasets = collect_pb2_grpc.CollectServiceStub(self._gateway_channel)
        self.serve = serve_pb2_grpc.ServeServiceStub(self._serve_channel)

    def close(self) -> None:
        self._gateway_channel.close()
        self._serve_channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- runs ----------------------------------------------------------------

    def submit(self, pipeline: str, base_dir: str = "") -> gateway_pb2.Run:
        """Starts a run of a pipeline file's text; relative paths resolve against base_dir."""
        return self.pipelines.SubmitRun(
            gateway_pb2.SubmitRunRequest(pipeline=pipeline, base_dir=os.path.abspath(base_dir) if base_dir else ""),
            timeout=60,
        ).run

    def submit_spec(self, spec: pipeline_pb2.PipelineSpec, base_dir: str = "") -> gateway_pb2.Run:
        """Starts a run of a pipeline built as a PipelineSpec message (validated like a file)."""
        return self.pipelines.SubmitRun(
            gateway_pb2.SubmitRunRequest(spec=spec, base_dir=os.path.abspath(base_dir) if base_dir else ""), timeout=60
        ).run

    def submit_file(self, path: str) -> gateway_pb2.Run:
        with open(path, encoding="utf-8") as f:
            return self.submit(f.read(), base_dir=os.path.dirname(os.path.abspath(path)))

    def watch(
        self, run_id: str, from_sequence: int = 0, retries: int = 5, reconnect_timeout: float = 60.0
    ) -> Iterator[gateway_pb2.RunEvent]:
        """A run's events until it ends; reconnects (resuming after the last event seen) if the stream breaks.

        After a break (UNAVAILABLE: the gateway restarting) it waits up to `reconnect_timeout` s
        for the gateway to answer again, `retries` times in a row at most."""
        next_sequence, failures = from_sequence, 0
        while True:
            try:
                for response in self.pipelines.WatchRun(
                    gateway_pb2.WatchRunRequest(run_id=run_id, from_sequence=next_sequence)
                ):
                    failures = 0
                    next_sequence = response.event.sequence + 1
                    yield response.event
                return
            except grpc.RpcError as exc:
                failures += 1
                if exc.code() != grpc.StatusCode.UNAVAILABLE or failures > retries:
                    raise
                try:  # the gateway is back when the channel connects again
                    grpc.channel_ready_future(self._gateway_channel).result(timeout=reconnect_timeout)
                except grpc.FutureTimeoutError:
                    raise exc from None

    def wait(self, run_id: str) -> tuple[gateway_pb2.Run, list[gateway_pb2.RunEvent]]:
        """Watches a run to its end: (its final record, every event from the first)."""
        events = list(self.watch(run_id))
        return self.get_run(run_id), events

    def run_and_wait(self, pipeline: str, base_dir: str = "") -> tuple[gateway_pb2.Run, list[gateway_pb2.RunEvent]]:
        """submit, then wait: (the run's final record, every event)."""
        return self.wait(self.submit(pipeline, base_dir).run_id)

    def run_file_and_wait(self, path: str) -> tuple[gateway_pb2.Run, list[gateway_pb2.RunEvent]]:
        """submit_file, then wait: (the run's final record, every event)."""
        return self.wait(self.submit_file(path).run_id)

    # --- datasets --------------------------------------------------------------

    @staticmethod
    def upload_files(path: str) -> list[tuple[str, str]]:
        """What `upload` sends for `path`: (name in the upload, local path) of a file, or of every
        file under a folder (hidden ones skipped), sorted."""
        if os.path.isfile(path):
            return [(os.path.basename(path), path)]
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no such file or folder")
        return walk_files(path)

    def upload(
        self, path: str, name: str, source: pipeline_pb2.CollectSpec | None = None, progress=None
    ) -> data_pb2.DatasetInfo:
        """Uploads a local file or folder as dataset `name`, read as `source` says (format and its
        options; csv by default) exactly as collect would read it on its own disk. Streams the
        files in pieces of UPLOAD_CHUNK bytes; `progress(sent, total)` sees the bytes sent.
        Returns the published version (the same files and options always give the same one)."""
        files = self.upload_files(path)
        total = sum(os.path.getsize(full) for _, full in files)
        spec = pipeline_pb2.CollectSpec()
        if source is not None:
            spec.CopyFrom(source)
        spec.source = ""

        def messages():
            yield collect_pb2.UploadDatasetRequest(dataset=name, source=spec)
            sent = 0
            for rel, full in files:
                with open(full, "rb") as f:
                    first = True
                    while True:
                        data = f.read(UPLOAD_CHUNK)
                        if not data and not first:
                            break
                        first = False
                        yield collect_pb2.UploadDatasetRequest(file=collect_pb2.UploadFileChunk(path=rel, data=data))
                        sent += len(data)
                        if progress is not None:
                            progress(sent, total)
                        if not data:
                            break

        return self.datasets.UploadDataset(messages(), timeout=3600).dataset

    def get_dataset(self, name: str, version: str = "") -> data_pb2.DatasetInfo:
        return self.datasets.GetDataset(
            collect_pb2.GetDatasetRequest(dataset=data_pb2.DatasetRef(name=name, version=version)), timeout=30
        ).dataset

    def get_run(self, run_id: str) -> gateway_pb2.Run:
        return self.pipelines.GetRun(gateway_pb2.GetRunRequest(run_id=run_id), timeout=30).run

    def cancel(self, run_id: str) -> gateway_pb2.Run:
        """Asks the gateway to cancel a run. The record returned is the one at the time of asking
        (usually still RUNNING); watch() then ends with the CANCELLED record."""
        return self.pipelines.CancelRun(gateway_pb2.CancelRunRequest(run_id=run_id), timeout=30).run

    def list_runs(self, limit: int = 100) -> list[gateway_pb2.Run]:
        return list(self.pipelines.ListRuns(gateway_pb2.ListRunsRequest(limit=limit), timeout=30).runs)

    # --- predictions ---------------------------------------------------------

    def model_metadata(self, model: str, version: int = 0) -> serve_pb2.ModelMetadata:
        return self.serve.GetModelMetadata(
            serve_pb2.GetModelMetadataRequest(model=model_pb2.ModelRef(name=model, version=version)), timeout=120
        ).metadata

    @staticmethod
    def _request(model: str, arrays: dict[str, np.ndarray], version: int) -> serve_pb2.PredictRequest:
        request = serve_pb2.PredictRequest(model=model_pb2.ModelRef(name=model, version=version))
        for name, array in arrays.items():
            tensors.from_numpy(array, out=request.inputs[name])
        return request

    def predict(self, model: str, inputs, version: int = 0) -> list[dict]:
        """Predicts rows with one unary call. `inputs` is a mapping of the model's raw inputs
        by name, e.g. {"text": ["a sentence", ...]}, {"image": [png_bytes, ...]},
        {"features": [[5.1, 3.5], ...], "categorical": [["red", "small"], ...]} (see
        model_metadata(model).inputs), or bare rows of numbers for "features"."""
        return rows_from_response(self.serve.Predict(self._request(model, _inputs(inputs), version), timeout=120))

    def predict_stream(
        self, model: str, rows, version: int = 0
    ) -> Iterator[tuple[str, dict | None, serve_pb2.PredictError | None]]:
        """Streams one PredictStream message per row; yields (correlation_id, row result, None)
        or (correlation_id, None, error) per row, in order. A bad row does not end the stream.
        `rows`: rows of numbers ("features"), or a mapping of inputs as predict() takes."""

        def requests():
            if isinstance(rows, Mapping):
                arrays = _inputs(rows)
                for i in range(len(next(iter(arrays.values())))):
                    yield serve_pb2.PredictStreamRequest(
                        correlation_id=str(i),
                        request=self._request(
                            model, {name: array[i : i + 1] for name, array in arrays.items()}, version
                        ),
                    )
                return
            for i, row in enumerate(rows):
                yield serve_pb2.PredictStreamRequest(
                    correlation_id=str(i), request=self._request(model, _inputs([row]), version)
                )

        for response in self.serve.PredictStream(requests()):
            if response.HasField("error"):
                yield response.correlation_id, None, response.error
            else:
                yield response.correlation_id, rows_from_response(response.result)[0], None
