"""MLflow models-from-code entry point for keel's registered model.

MLflow copies this file into the model and runs it at load time; the model object is
built here, so loading never unpickles a Python object. Not imported by keel itself.
"""

import mlflow

from keel.model.runtime.pyfunc import TabularModel

mlflow.models.set_model(TabularModel())
