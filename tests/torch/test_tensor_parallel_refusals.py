"""apply_tensor_parallel refuses what it does not translate, naming the module, before any
collective runs (so no process group is needed here)."""
import pytest

pytest.importorskip("torch.distributed.tensor.parallel")

from encdec_torch import EncoderDecoderModel  # noqa: E402
from encdec_torch.distributed import apply_tensor_parallel  # noqa: E402
from tests.torch.helpers import make_config  # noqa: E402


class TwoRanks:
    """Stands in for a 1-D DeviceMesh of 2 ranks (only its size is read before refusing)."""

    def size(self):
        return 2


def test_gpt2_conv1d_refused_by_name():
    model = EncoderDecoderModel(make_config("bert2gpt2"), seed=0)
    with pytest.raises(NotImplementedError, match=r"decoder\.transformer\.h\.0\.attn\.c_attn is a Conv1D"):
        apply_tensor_parallel(model, TwoRanks())


def test_vocab_parallel_embeddings_refused():
    model = EncoderDecoderModel(make_config("bert2bert"), seed=0)
    with pytest.raises(NotImplementedError, match="embeddings must be None"):
        apply_tensor_parallel(model, TwoRanks(), embeddings="vocab")
