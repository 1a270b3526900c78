"""The data side: partitions and splits (``partitions``), GX validation (``validation``), the
git/DVC workspace edge (``workspace``), drift statistics (``drift``) and the domain types that
flow between the data tasks (``types``). Never: trains, loads or registers a model."""
