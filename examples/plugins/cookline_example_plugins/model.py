"""The residual_mlp model family: the network's body; train adds the output layer and the loss."""

from __future__ import annotations


class ResidualMlp:
    def __init__(self, params: dict):
        self.width, self.blocks, self.dropout = int(params["width"]), int(params["blocks"]), float(params["dropout"])

    def body(self, inputs, input_dtype: str):
        """Keras layers from the model's input (its "features") to the tensor the head sits on."""
        import keras

        x = keras.layers.Dense(self.width, activation="relu")(inputs)
        for _ in range(self.blocks):
            x = keras.layers.Add()([x, keras.layers.Dense(self.width, activation="relu")(x)])
        return keras.layers.Dropout(self.dropout)(x) if self.dropout else x
