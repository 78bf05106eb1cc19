"""Structured output on the real Gemma 3 270M (the [demo] extra): every bounded JSON schema of
tests/schemas.py (nested objects, arrays, enums, numbers with bounds, required and optional
properties, strings with patterns) gives JSON that validates (`jsonschema` the judge) and ends
with finish_reason "stop" — greedy and at temperature 1 with 5 seeds — and regexes match with
re.fullmatch. A short prompt, bounded schemas and one Model for the session (conftest's
demo_model) keep it short: measured 180 s wall, 59 s of CPU, on a 2-core machine that other jobs
kept at load average 13."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.realmodel
pytest.importorskip("llguidance", reason="structured output needs the [structured] extra")
jsonschema = pytest.importorskip("jsonschema")
from schemas import SCHEMAS, SEEDS  # noqa: E402

BOUNDED = [(name, schema) for name, schema, bounded in SCHEMAS if bounded]
RUNS = [(0.0, None)] + [(1.0, s) for s in SEEDS]  # greedy, then 5 seeds at temperature 1
MAX_TOKENS = 48  # the longest bounded output seen is ~25 tokens
REGEXES = [r" [0-9]{1,3} degrees (Celsius|Fahrenheit)\.", r" (yes|no|maybe)", r" [A-Z][a-z]{1,9}, [A-Z][a-z]{1,9}\."]


def test_the_set_is_large_enough():
    assert len(BOUNDED) >= 20


@pytest.mark.parametrize("name,schema", BOUNDED, ids=[b[0] for b in BOUNDED])
def test_schema(demo_model, name, schema):
    for temperature, seed in RUNS:
        gen = demo_model.generate("A record as JSON:", json_schema=schema, temperature=temperature, seed=seed,
                                  max_new_tokens=MAX_TOKENS, stream=True)
        text = gen.run()
        assert gen.finish_reason == "stop", (temperature, seed, gen.stop_reason, text)
        jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("rx", REGEXES)
def test_regex(demo_model, rx):
    for temperature, seed in RUNS:
        gen = demo_model.generate("Water boils at a temperature of", regex=rx, temperature=temperature, seed=seed,
                                  max_new_tokens=16, stream=True)
        text = gen.run()
        assert gen.finish_reason == "stop" and re.fullmatch(rx, text), (temperature, seed, text)


def test_greedy_answers(demo_model):
    """Constrained greedy output is the model's own best answer where it knows one."""
    assert demo_model.generate("Water boils at a temperature of", regex=REGEXES[0], max_new_tokens=16) == \
        " 100 degrees Celsius."
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"], "additionalProperties": False}
    out = json.loads(demo_model.generate("The Eiffel Tower, as JSON:", json_schema=schema, max_new_tokens=40))
    assert out["country"] == "France", out
