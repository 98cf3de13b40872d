"""Stored results as a backend reads them: the meta decodes or raises DecodeError, and a
stored exception always comes back as an exception."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from celeriac.exceptions import DecodeError
from celeriac.protocol import serializers
from celeriac.protocol.results import exception_from_dict, loads_result
from tests.fuzz.support import json_values, settle, spoiled

stored_exceptions = (
    st.fixed_dictionaries(
        {"exc_type": json_values | st.text()},
        optional={"exc_module": json_values | st.sampled_from(["builtins", "celery.exceptions"])},
    )
    | st.fixed_dictionaries({"exc_type": st.text(), "exc_message": json_values})
    | json_values
)


@given(stored_exceptions)
def test_stored_exceptions(data: Any) -> None:
    outcome = settle(lambda: exception_from_dict(data), allowed=())
    assert isinstance(outcome, BaseException)


metas = st.fixed_dictionaries({"status": st.text(), "result": json_values})


@given(metas.map(serializers.json_dumps).flatmap(spoiled) | st.binary(max_size=300))
def test_stored_metas(data: bytes) -> None:
    settle(lambda: loads_result(data, "application/json"), (DecodeError,))
