import subprocess
import sys

SCRIPT = """
import warnings
import mmadapter
import torch_geometric
warnings.warn("ours", FutureWarning)
"""


def test_importing_torch_geometric_through_mmadapter_prints_only_other_warnings() -> None:
    done = subprocess.run([sys.executable, "-W", "default", "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert "torch.jit.script" not in done.stderr
    assert "FutureWarning: ours" in done.stderr  # other FutureWarnings still show
