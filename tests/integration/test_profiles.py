"""The shipped profiles do what they say: `debug` is a real run, shrunk, that yields a
champion under the default gate on one month."""

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_debug_profile_yields_a_blessed_champion_on_one_month(tmp_path):
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from keel.config.settings import load_settings
    from keel.registry.promotion import Registry
    from keel.workloads import init_workspace

    settings = load_settings(init_workspace(tmp_path / "ws"), profile="debug", environ={})
    assert settings.data.demo_batches == ["2013-01"]
    ingest_flow(settings, settings.data.demo_batches)
    registered = train_flow(settings)

    reg = Registry(settings.mlflow_store, settings.promotion)
    tags = reg.client.get_model_version(settings.mlflow.model_name, registered.version).tags
    assert tags["gate.status"] == "blessed", tags["gate.summary"]
    assert reg.alias("champion") == registered.version
    floor = settings.gate.metrics["test/roc_auc"].min
    assert floor is not None and float(tags["test/roc_auc"]) >= floor
