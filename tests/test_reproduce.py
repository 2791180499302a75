"""`edgellm-gym reproduce --quick --only ...` writes the document and the plot."""

from training import cli
from training.reproduce import paired_reduction

import numpy as np


def test_paired_reduction_is_the_mean_share_saved():
    m, h = paired_reduction(np.array([6.0, 5.0]), np.array([10.0, 10.0]))
    assert m == 0.45 and h > 0


def test_reproduce_quick_only_adsa_writes_table_and_plot(tmp_path, capsys):
    assert cli.main(["reproduce", "--quick", "--only", "adsa", "--out", str(tmp_path)]) == 0
    doc = (tmp_path / "reproduction.md").read_text()
    assert "39% lower" in doc and "reproduction_adsa.png" in doc
    assert (tmp_path / "reproduction_adsa.png").stat().st_size > 1000
    assert "ADSA vs SRTF" in capsys.readouterr().out
