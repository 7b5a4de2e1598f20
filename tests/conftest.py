"""Shared fixtures: a real checkpoint on disk (seeded random weights) and real engines.

Helpers that tests import by name (SMALL, make_engine, ServerThread, ...) are in tests/support.py."""

from __future__ import annotations

import pytest

from engine.models.speech_lm.toy import make_toy_model
from tests.support import SMALL, ServerThread, make_engine, speech_like


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy"), seed=0, **SMALL)


@pytest.fixture
def engine(model_dir):
    eng = make_engine(model_dir)
    yield eng
    eng.close()


@pytest.fixture
def voice(engine):
    return engine.make_voice(speech_like(2.0), 24000, "Well met, traveler. The road north is closed.", "guard")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path_factory.mktemp("voices"))
    yield srv
    srv.stop()
    eng.close()
