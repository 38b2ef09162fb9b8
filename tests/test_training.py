import pytest
from accelerate import Accelerator

from rlsyn_trl.training import fresh_accelerator_state


def test_stages_with_different_mixed_precision_chain_in_one_process():
    """The cold start (bf16) and DDPO / the Trainer (fp32) run one after the other in the main job's process."""
    fresh_accelerator_state()
    assert Accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"
    with pytest.raises(ValueError, match="already been initialized"):
        Accelerator(cpu=True, mixed_precision="no")
    fresh_accelerator_state()
    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    fresh_accelerator_state()
