"""MLflow models-from-code entry point for a compressed variant (keel compress): the
net as an ONNX graph run by onnxruntime. Not imported by keel itself."""

import mlflow

from keel.model.runtime.pyfunc import OnnxModel

mlflow.models.set_model(OnnxModel())
