"""MLServer custom runtime serving a SavedModel (copied into the model folder that
bench/serving.py hands to `mlserver start`; the SavedModel path is the model's uri)."""

import numpy as np
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        self.signature = tf.saved_model.load(self.settings.parameters.uri).signatures["serving_default"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        features = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        scores = self.signature(features=tf.constant(features))["scores"].numpy()
        return InferenceResponse(
            model_name=self.name, id=payload.id, outputs=[NumpyCodec.encode_output("scores", scores)]
        )
