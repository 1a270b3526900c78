"""The code inside every registered model: the MLflow pyfunc (``pyfunc``), its models-from-code
entry files, the ONNX runner of a compressed variant. Imports only keel.model's core."""
