"""`keel history --verify` on a long ledger: the time to check N entries (hash chain,
anchored copies, aliases) against the time to read the ledger alone (the baseline
`keel history` pays), in one run on an embedded sqlite registry.

    python bench/ledger_verify.py [--entries 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ledger_verify.json")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from keel.config.settings import load_settings
    from keel.registry.promotion import Registry, verify_ledger
    from keel.workloads import init_workspace

    ws = init_workspace(
        Path(tempfile.mkdtemp(prefix="bench-ledger-")) / "ws", '[workload]\nname = "synthetic"\n'
    )
    settings = load_settings(ws, environ={})
    reg = Registry(settings.mlflow_store, settings.promotion)
    reg.client.create_registered_model(reg.name)
    for _ in range(2):
        reg.client.create_model_version(reg.name, source=str(ws / "no-model"))
    start = time.perf_counter()
    for i in range(args.entries):
        reg.move_champion(str(1 + i % 2), actor="bench", action="promote", reason=f"move {i}", evidence={})
    append_s = time.perf_counter() - start
    start = time.perf_counter()
    entries = reg.ledger()
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    checked = verify_ledger(reg)
    verify_s = time.perf_counter() - start
    assert checked.ok and len(entries) == args.entries, checked.problems[:3]
    result = {
        "bench": "ledger_verify",
        "entries": args.entries,
        "append_ms_per_entry": round(append_s / args.entries * 1000, 1),
        "read_s": round(read_s, 3),
        "verify_s": round(verify_s, 3),
        "verify_over_read": round(verify_s / read_s, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
