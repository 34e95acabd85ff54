"""Each training process draws its own dropout and drop-path masks; a single process draws what it always drew."""

from __future__ import annotations

import torch
from accelerate.utils import set_seed

from trainer.rng import seed_process


def test_rank_0_keeps_its_stream_and_other_ranks_get_their_own():
    set_seed(7)
    torch.rand(3)  # the model's initialisation draws first
    reference = torch.get_rng_state()
    seed_process(7, 0)
    assert torch.equal(torch.get_rng_state(), reference)  # one process: bit-identical to before
    streams = []
    for rank in (1, 2):
        set_seed(7)
        torch.rand(3)
        seed_process(7, rank)
        streams.append(torch.rand(4))
        torch.manual_seed(7 + rank)
        assert torch.equal(streams[-1], torch.rand(4))
    torch.set_rng_state(reference)
    assert not torch.equal(streams[0], torch.rand(4)) and not torch.equal(streams[0], streams[1])
