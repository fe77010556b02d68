import numpy as np
import pytest

from fedlake.core.params import ParamSpec, TensorSpec, as_vector, frozen


def test_flatten_unflatten_round_trip_and_order():
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7.0, 8.0])}
    spec = ParamSpec.from_arrays(arrays)
    assert spec.size == 8
    assert spec.names == ("w", "b")
    v = spec.flatten(arrays)
    assert v.dtype == np.float32 and v.flags.c_contiguous
    np.testing.assert_array_equal(v, [0, 1, 2, 3, 4, 5, 7, 8])
    back = spec.unflatten(v)
    np.testing.assert_array_equal(back["w"], arrays["w"])
    assert back["b"].dtype == np.float64  # each tensor keeps its own dtype at the edges


def test_spec_json_round_trip():
    spec = ParamSpec((TensorSpec("a", (2, 2)), TensorSpec("b", (3,), "float64")))
    assert ParamSpec.from_json(spec.to_json()) == spec


def test_bad_shapes_and_names_are_clear():
    spec = ParamSpec((TensorSpec("a", (2,)),))
    with pytest.raises(ValueError, match="expected shape"):
        spec.flatten({"a": np.zeros(3)})
    with pytest.raises(KeyError, match="missing"):
        spec.flatten({})
    with pytest.raises(ValueError, match="length 2"):
        spec.unflatten(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="unique"):
        ParamSpec((TensorSpec("a", (1,)), TensorSpec("a", (1,))))


def test_as_vector_and_frozen():
    assert as_vector([1, 2]).dtype == np.float32
    with pytest.raises(ValueError, match="1-D"):
        as_vector(np.zeros((2, 2)))
    f = frozen(np.ones(3))
    with pytest.raises(ValueError):
        f[0] = 2
