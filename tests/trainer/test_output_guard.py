"""SurvivingStream: output whose reader died does not kill the writer."""

from __future__ import annotations

import os

from trainer.output_guard import SurvivingStream


def test_a_pipe_without_reader_is_diverted_once():
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    calls = []
    guarded = SurvivingStream(stream, lambda: calls.append(1))
    guarded.write("read\n")
    assert os.read(read_end, 100) == b"read\n"
    os.close(read_end)  # the launcher that read the pipe is gone
    try:
        for i in range(3):
            assert guarded.write(f"step {i}\n") == len(f"step {i}\n")
            guarded.flush()
        assert calls == [1]
        os.write(stream.fileno(), b"library output")  # the descriptor itself now leads to /dev/null
    finally:
        stream.close()


def test_a_live_stream_is_left_alone(tmp_path):
    with open(tmp_path / "log.txt", "w") as f:
        guarded = SurvivingStream(f, lambda: (_ for _ in ()).throw(AssertionError("not broken")))
        guarded.write("kept\n")
        guarded.flush()
        assert guarded.fileno() == f.fileno()
    assert (tmp_path / "log.txt").read_text() == "kept\n"
