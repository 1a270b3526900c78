"""Models: what a network is (``net``, one file per family in ``families/``, the preprocessing
in ``features``, the objectives), the code every registered model runs (``runtime/``), and
what keel does with a model (``training``, ``evaluation``, ``explain``, ``compress``).
Never: reads settings files, opens MLflow or a workspace. Importing it loads nothing: a
registered model's code holds ``runtime/`` and only what it imports."""
