"""Workloads shipped with keel, each a ``keel.workload.Workload``; none is imported by the platform."""
