"""MLflow's pyfunc model of a trained SimpleNet: class probabilities ``softmax(x @ W)``.

Not imported by numgrad. It is a "model from code" file: :mod:`numgrad.tracking.pyfunc_folder`
passes its path to ``mlflow.pyfunc.save_model``, which copies it into the model, and
MLflow runs it whenever the model is loaded. So a logged model needs only mlflow and
numpy, not numgrad. ``W`` is the model's artifact ``W`` (a ``.npy`` file); its dtype
is the model's (float64, or float32 for a ``gradient.dtype=float32`` run).
"""

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class SimpleNetModel(PythonModel):
    """``softmax(x @ W)`` for ``x`` of shape (n, n_inputs): rows of probabilities (n, n_classes)."""

    def load_context(self, context):
        self.W = np.load(context.artifacts["W"])

    # The np.ndarray hint silences MLflow's "Add type hints to the `predict` method"
    # warning; ndarray gives no schema of its own, so the logged signature stays in charge.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        z = np.asarray(model_input, dtype=self.W.dtype) @ self.W
        # numgrad.functions.softmax, operation for operation: the same probabilities, bit
        # for bit. The row max is subtracted so that exp cannot overflow.
        shifted = z - np.max(z, axis=-1, keepdims=True)
        with np.errstate(under="ignore"):  # exp(-huge) -> 0 is the right answer
            e = np.exp(shifted)
            return e / np.sum(e, axis=-1, keepdims=True)


set_model(SimpleNetModel())
