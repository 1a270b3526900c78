"""keel-predict: score a file with the champion, in chunks."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from keel.config.settings import Settings
from tasks.predict import load_champion, score_file


@flow(name="keel-predict", validate_parameters=False)
def predict_flow(settings: Settings, source: Path, target: Path) -> dict:
    return score_file(settings.serve, load_champion(settings.mlflow_store), source, target)
