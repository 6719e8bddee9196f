"""Result files: the server's never share a path with what a client on the same machine saves."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from serverkit import ROOT

APP_DIR = ROOT / "apps" / "brats_medsam"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from lib.infers.base import result_path  # noqa: E402


def test_a_result_sent_and_cleaned_up_leaves_a_same_machine_clients_copy_alone():
    """MONAI Label's client saves a response's file as ``<its temp dir>/<the server's file name>`` (the system temp
    dir by default), and the server deletes its own file once sent. Both were ``/tmp/<name>``: the client's copy
    went with the clean-up (seen with the demo: the `pipeline` answer 'does not exist' on reading)."""
    from monailabel.client.client import MONAILabelUtils
    from monailabel.utils.others.generic import remove_file

    served = result_path(".nrrd")
    Path(served).write_bytes(b"label")
    tmp = Path(tempfile.gettempdir())
    assert Path(served).parent != tmp and Path(served).parent.parent == tmp  # a folder of its own
    saved = MONAILabelUtils.save_result({os.path.basename(served): b"label"}, tempfile.gettempdir())
    try:
        remove_file(served)  # the server's background clean-up after sending
        assert not Path(served).exists() and Path(saved).read_bytes() == b"label"
    finally:
        Path(saved).unlink(missing_ok=True)
    other = result_path(".json")
    assert Path(other).parent == Path(served).parent and other != served
    Path(other).unlink()
