"""The registry side: the MLflow edge (``tracking``), promotion, rollback and the ledger
(``promotion``), who acts (``identity``), the gate, the guardrail, the servability check and
lineage. Never: trains a model or writes data."""
