"""Serving and the servability check load models with MLflow's pickle deserialization
off: a cloudpickled pyfunc is refused before any of its code runs, so it can never
become champion; keel's own models (models-from-code) load under it (every promotion
test passes through the same check)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


class Pickled:  # a pyfunc logged the old way: cloudpickled, code inside the pickle
    def predict(self, context, model_input, params=None):
        return model_input


def test_a_pickled_model_fails_the_servability_check_and_is_never_promoted(synthetic):
    import mlflow
    import pandas as pd
    from mlflow.pyfunc import PythonModel

    from keel.errors import PromotionError
    from keel.registry import tracking
    from keel.registry.promotion import Registry, promote, servability

    class Model(Pickled, PythonModel):
        pass

    tracking.use_tracking(synthetic.mlflow_store)
    experiment = tracking.ensure_experiment(synthetic.mlflow_store)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Model(), input_example=pd.DataFrame({"x": [1.0]}), pip_requirements=[]
        )
    reg = Registry(synthetic.mlflow_store, synthetic.promotion)
    reg.client.create_registered_model(reg.name)
    reg.client.create_model_version(reg.name, source=info.model_uri, model_id=info.model_id)

    result = servability(synthetic.mlflow_store, synthetic.promotion, "1")
    assert not result["ok"] and "pickle" in result["error"].lower(), result
    with pytest.raises(PromotionError, match="failed the servability check"):
        promote(
            synthetic.mlflow_store,
            synthetic.promotion,
            "1",
            reviewer="tests",
            reason="a pickled model",
            force=True,
        )
    assert reg.alias("champion") is None and reg.ledger() == []
