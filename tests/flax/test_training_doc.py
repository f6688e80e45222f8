"""The optax example of docs/flax_training.md runs and two optimizer steps reduce the loss."""
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "flax_training.md"


def test_optax_example_reduces_loss():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert namespace["loss_after"] < namespace["loss_before"] - 0.05
