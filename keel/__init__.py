"""keel: an MLOps platform on Prefect, Great Expectations, Lightning, MLflow and DVC."""

__version__ = "0.1.0"
