"""The workload seam's former address: code written against ``keel.workload`` (README before
the layout of keel/ by concern) keeps importing ``Workload`` and ``WorkloadParams`` from here.
New code imports them from ``keel.workloads``."""

from keel.workloads import Workload, WorkloadParams, build, load_workload, shipped, unfailable

__all__ = ["Workload", "WorkloadParams", "build", "load_workload", "shipped", "unfailable"]
