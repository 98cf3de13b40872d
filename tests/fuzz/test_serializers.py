"""Every serializer's loads, and decompression, raise only DecodeError (or
ContentDisallowed), within the limits, whatever the bytes."""

from __future__ import annotations

import pickle
import pickletools
import zlib
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from celeriac.exceptions import ContentDisallowed, DecodeError
from celeriac.protocol import compression, serializers
from celeriac.protocol.limits import Limits
from tests.fuzz.support import depths, json_values, nested_json, settle, spoiled

SAFE = ("json", "msgpack", "yaml")
DECODE_ERRORS = (DecodeError,)


def check_loads(name: str, data: bytes) -> Any:
    serializer = serializers.get(name)
    settle(lambda: serializer.loads(data), DECODE_ERRORS)
    return settle(lambda: serializers.loads(data, serializer.content_type), DECODE_ERRORS)


def _dumps(value: Any, name: str) -> bytes | None:
    try:
        return serializers.dumps(value, name)[2]
    except OverflowError:  # msgpack holds integers in 64 bits
        return None


def encoded(name: str) -> st.SearchStrategy[bytes]:
    """Documents the serializer wrote (valid ones)."""
    return json_values.map(lambda value: _dumps(value, name)).filter(lambda data: data is not None)


@given(st.sampled_from(SAFE), st.binary(max_size=1000))
def test_random_bytes(name: str, data: bytes) -> None:
    check_loads(name, data)


@given(st.sampled_from(SAFE).flatmap(lambda name: st.tuples(st.just(name), encoded(name))))
def test_valid_documents_round_trip(case: tuple[str, bytes]) -> None:
    name, data = case
    assert not isinstance(check_loads(name, data), BaseException)


@given(
    st.sampled_from(SAFE).flatmap(
        lambda name: st.tuples(st.just(name), encoded(name).flatmap(spoiled))
    )
)
def test_spoiled_documents(case: tuple[str, bytes]) -> None:
    check_loads(*case)


@given(depths, st.sampled_from(["[", "{"]), st.sampled_from(["1", "NaN", "123456789012345678901"]))
def test_deep_json(depth: int, opener: str, leaf: str) -> None:
    # NaN and a long integer send the text to Python's json, which recurses
    text = nested_json(depth, opener, leaf)
    for data in (text.encode(), text):
        outcome = settle(lambda data=data: serializers.json_loads(data), DECODE_ERRORS)
        if depth > 1024 or (depth > 200 and leaf != "1"):
            assert isinstance(outcome, DecodeError)


@given(depths, st.booleans())
def test_deep_msgpack(depth: int, maps: bool) -> None:
    head = b"\x81\xa1k" if maps else b"\x91"  # a map of one "k", or an array of one
    outcome = settle(lambda: check_loads("msgpack", head * depth + b"\xc0"), DECODE_ERRORS)
    assert isinstance(outcome, DecodeError) == (depth > 200)


# PyYAML's scanner looks up to 1024 characters ahead at every bracket: a flow nested far
# past the limit costs about a second to refuse (a regression test has one), so here the
# depths stay near the limit. Indented nesting grows with the square of the depth.
@given(st.integers(0, 240), st.sampled_from(["flow", "block"]))
def test_deep_yaml(depth: int, style: str) -> None:
    if style == "flow":
        text = "[" * depth + "1" + "]" * depth
    else:
        text = "".join(f"{'  ' * level}- \n" for level in range(depth)) + "  " * depth + "- 1\n"
    outcome = check_loads("yaml", text.encode())
    assert isinstance(outcome, DecodeError) == (depth > 200 if style == "flow" else depth >= 200)


@given(st.integers(1, 60), st.integers(1, 20))
def test_yaml_alias_chains(links: int, depth: int) -> None:
    # each anchor nests the previous one ``depth`` levels deeper: short text, deep value
    lines = ["a0: &a0 1"]
    for link in range(1, links):
        lines.append(f"a{link}: &a{link} " + "[" * depth + f"*a{link - 1}" + "]" * depth)
    outcome = check_loads("yaml", "\n".join(lines).encode())
    assert isinstance(outcome, DecodeError) == (1 + (links - 1) * depth > 200)


def test_yaml_alias_to_itself_is_refused() -> None:
    assert isinstance(check_loads("yaml", b"&a [*a]"), DecodeError)


_RUNS_CODE = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}
    | {"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}
)
_MEMO = frozenset({"BINPUT", "LONG_BINPUT", "PUT", "BINGET", "LONG_BINGET", "GET"})


def plain_pickle(data: bytes) -> bool:
    """Whether unpickling ``data`` stays within plain data. Excluded, as unpickling is
    bounded by nothing but trust (that is why pickle is refused unless accepted): naming a
    callable, which runs it, and a memo index far beyond the size of the pickle, for which
    the unpickler allocates a memo that large (26 bytes can ask for gigabytes)."""
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in _RUNS_CODE:
                return False
            if opcode.name in _MEMO and isinstance(arg, int) and arg > 4 * len(data):
                return False
    except Exception:
        pass  # the unpickler stops at the same bad opcode
    return True


plain_pickles = json_values.map(lambda value: pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


@given(st.binary(max_size=300) | plain_pickles.flatmap(spoiled))
def test_pickle(data: bytes) -> None:
    assume(plain_pickle(data))
    check_loads("pickle", data)


@given(st.binary(max_size=200), st.text(max_size=40), st.none() | st.frozensets(st.text()))
def test_unknown_content_types(data: bytes, content_type: str, accept: Any) -> None:
    settle(lambda: serializers.loads(data, content_type, accept), (DecodeError, ContentDisallowed))


# -- decompression ------------------------------------------------------------------------

COMPRESSIONS = ("application/x-gzip", "application/x-bz2", "application/x-lzma")
SMALL = Limits(max_decompressed_bytes=4096)


def check_decompress(data: bytes, header: Any, limits: Limits = SMALL) -> None:
    outcome = settle(lambda: compression.decompress(data, header, limits=limits), DECODE_ERRORS)
    if not isinstance(outcome, BaseException):
        assert len(outcome) <= limits.max_decompressed_bytes


@given(st.binary(max_size=500), st.sampled_from(COMPRESSIONS) | st.text(max_size=20))
def test_decompress_random_bytes(data: bytes, header: str) -> None:
    check_decompress(data, header)


@given(st.sampled_from(COMPRESSIONS), st.binary(max_size=6000), st.data())
def test_decompress_spoiled(header: str, plain: bytes, draw: st.DataObject) -> None:
    _, data = compression.compress(plain, header)
    check_decompress(draw.draw(spoiled(data)), header)
    outcome = settle(lambda: compression.decompress(data, header, limits=SMALL), DECODE_ERRORS)
    assert isinstance(outcome, DecodeError) == (len(plain) > SMALL.max_decompressed_bytes)


@given(json_values)
def test_decompress_header_of_any_type(header: Any) -> None:
    check_decompress(zlib.compress(b"x"), header)
