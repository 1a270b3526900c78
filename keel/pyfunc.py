"""The registered model's former address. Every model keel registered before the layout of
keel/ by concern names ``keel.pyfunc`` in its entry file (``from keel.pyfunc import
TabularModel``, or ``OnnxModel`` for a compressed variant); loaded in a process that has
imported this keel, it resolves here. New models name ``keel.model.runtime.pyfunc``."""

from keel.model.runtime.pyfunc import FlightDelayModel, OnnxModel, TabularModel

__all__ = ["FlightDelayModel", "OnnxModel", "TabularModel"]
