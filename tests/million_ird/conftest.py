"""Fixtures for curation tests: a real HTTP server on 127.0.0.1 with good images and faults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from curation_helpers import GOOD, encode, fault_routes

from million_ird.httpserver import LocalServer, Response


@pytest.fixture()
def image_server() -> Iterator[LocalServer]:
    """A fresh server per test so hit counts belong to that test."""
    routes = {p: Response(encode(f, w, h, seed=i), content_type=f"image/{f.lower()}") for i, (p, (f, w, h)) in
              enumerate(GOOD.items())}
    routes.update(fault_routes())
    with LocalServer(routes) as server:
        yield server


