"""How a phantom data root is recognised (``phantom.json``)."""

from __future__ import annotations

from handseg.data.phantom_record import is_phantom_data, read_params


def test_phantom_detection(tmp_path, phantom_root):
    assert is_phantom_data(phantom_root) is True
    assert read_params(phantom_root)["generator"] == "handseg.phantom"
    assert is_phantom_data(tmp_path) is False and read_params(tmp_path) is None
    assert is_phantom_data(tmp_path / "missing") is None and is_phantom_data(None) is None
    (tmp_path / "phantom.json").write_text("{not json")
    assert read_params(tmp_path) is None and is_phantom_data(tmp_path) is False
