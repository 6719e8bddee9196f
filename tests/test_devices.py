"""Device strings: the torch code takes one device; ultralytics takes a GPU list for its own multi-GPU DDP."""

from __future__ import annotations

import pytest

from bratsmedsam.devices import pick_device, ultralytics_device
from bratsmedsam.errors import UserError


def test_a_gpu_list_goes_to_ultralytics_as_given_and_torch_code_takes_its_first_gpu():
    assert ultralytics_device("0,1") == "0,1"
    assert ultralytics_device(" 2, 3 ") == "2,3"
    assert str(pick_device("0,1")) == "cuda:0"
    assert ultralytics_device("cpu") == "cpu" and ultralytics_device("cuda:1") == "1"


def test_a_gpu_list_with_something_else_than_indices_is_a_user_error():
    with pytest.raises(UserError, match="CUDA indices separated by commas"):
        ultralytics_device("0,cpu")
