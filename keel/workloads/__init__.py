"""Workloads: what is learnt, as a team plugs it into keel (the seam, ``keel.workloads.base``),
and the workloads shipped with keel, one module each (``flights/`` with its data, ``tabular``,
``digits``, ``text``, ``entities``, ``synthetic``), listed by name in ``SHIPPED``.

Owns: the ``Workload`` interface, choosing one from ``[workload]``, its default GX suite.
Never: reads or writes a workspace, MLflow or Prefect; the platform's modules never name
a shipped workload (they are imported by their ``module:Class`` target only).
"""

from keel.workloads.base import (
    SHIPPED,
    Workload,
    WorkloadParams,
    build,
    checked_workload,
    init_workspace,
    load_suite_for,
    load_workload,
    resolve_class,
    shipped,
    unfailable,
    workload_class,
)

__all__ = [
    "SHIPPED",
    "Workload",
    "WorkloadParams",
    "build",
    "checked_workload",
    "init_workspace",
    "load_suite_for",
    "load_workload",
    "resolve_class",
    "shipped",
    "unfailable",
    "workload_class",
]
