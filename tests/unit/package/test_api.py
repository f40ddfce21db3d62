"""The top-level API: `import mwa_cli` stays cheap, and the notebook example of docs/api.md runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers.paths import REPO


def test_import_mwa_cli_loads_no_torch():
    code = "import sys, mwa_cli; print('torch' in sys.modules, sorted(mwa_cli.__all__)[:3])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("False")


def test_every_name_resolves_and_train_stays_callable_once_its_modules_load():
    import mwa_cli
    import mwa_cli.search.store  # noqa: F401 - importing a module of the package must not hide the function
    import mwa_cli.train.loop  # noqa: F401

    for name in mwa_cli.__all__:
        assert getattr(mwa_cli, name) is not None
    assert callable(mwa_cli.train) and callable(mwa_cli.search)
    assert mwa_cli.train.loop.train.__name__ == "train"  # still the package too
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mwa_cli.nope  # noqa: B018


def _example() -> str:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert m, "docs/api.md lost its example"
    return m.group(1)


@pytest.mark.slow
def test_the_notebook_example_runs_as_written(tmp_path):
    """In a fresh process (a notebook's kernel), in a folder holding 40 of the sample photos as `photos/`."""
    sample = REPO / "mwa_cli" / "sample_data"
    table = pd.read_csv(sample / "captions.csv")
    keep = table[table["image"].isin(table["image"].drop_duplicates()[:40])]
    (tmp_path / "photos" / "images").mkdir(parents=True)
    for name in keep["image"].unique():
        (tmp_path / "photos" / name).write_bytes((sample / name).read_bytes())
    keep.to_csv(tmp_path / "photos" / "captions.csv", index=False)
    code = _example() + ("\nassert run.status == 'completed' and scores['rsum'] == run.eval['rsum']\n"
                         "assert len(hits['images']) == 3 and report['runs'][0]['name'] == 'mwa-notebook'\n"
                         "print('example ok', index['counts']['images'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "example ok 40" in out.stdout
