"""The fake Kubernetes API server (``test_kubernetes_actuator.FakeApi``) as a fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.autoscale.test_kubernetes_actuator import FakeApi


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    api = FakeApi()
    api.thread.start()
    try:
        yield api
    finally:
        api.stop()
