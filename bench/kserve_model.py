"""KServe's Python model server serving a SavedModel through a small custom model
class (run by bench/serving.py from the .cache/bench/kserve venv).

    python kserve_model.py SAVED_MODEL_DIR GRPC_PORT HTTP_PORT
"""

import sys

import numpy as np
import tensorflow as tf
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class SavedModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.signature = tf.saved_model.load(self.path).signatures["serving_default"]
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        features = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        scores = self.signature(features=tf.constant(features))["scores"].numpy()
        output = InferOutput(name="scores", shape=list(scores.shape), datatype="FP32")
        output.set_data_from_numpy(scores, binary_data=True)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id)


if __name__ == "__main__":
    path, grpc_port, http_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ModelServer(grpc_port=grpc_port, http_port=http_port).start([SavedModel("iris", path)])
