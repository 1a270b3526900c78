"""Scaled backends for the integration tests (keel.ops.localstack): real servers, no Docker."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def scaled(tmp_path_factory, port_factory):
    from keel.ops.localstack import ScaledBackends, pg_bin

    if pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) are missing: .ci/run installs them")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)")
    backends = ScaledBackends(tmp_path_factory.mktemp("scaled"), port_factory)
    try:
        yield backends.start()
    finally:
        backends.stop()
