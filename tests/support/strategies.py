"""Hypothesis strategies shared by the fuzz tests (tests/unit/test_fuzz.py, tests/e2e/test_fuzz_serve.py)."""

from hypothesis import strategies as st

from cookline.v1 import tensor_pb2

dims = st.lists(st.integers(min_value=-3, max_value=2**62), max_size=5)
tensor_structures = st.builds(
    tensor_pb2.Tensor,
    dtype=st.integers(min_value=0, max_value=12),
    shape=dims,
    content=st.binary(max_size=64),
    string_values=st.lists(st.binary(max_size=8), max_size=6),
)
