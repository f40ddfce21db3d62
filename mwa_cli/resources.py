"""The files mwa reads at run time, all shipped inside the package and found one way: ``importlib.resources``.

| name | what |
|---|---|
| ``templates/`` | the HTML templates of the report, `mwa search --html` and `mwa serve`; the caption templates of class folders |
| ``sample_data/`` | the sample photos `mwa demo` prepares (captions.csv + images/) |
| ``models/mini/`` | the built-in beit3-mini backbone (config, weights, tokenizer) |

The same path is found in a checkout, an editable install and an installed wheel (docs/decisions.md says why the
folders live inside ``mwa_cli/``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mwa_cli.errors import EXIT_INTERNAL, MwaError

TEMPLATES = "templates"
SAMPLE_DATA = "sample_data"
MINI_MODEL = "models/mini"


def package_path(*parts: str) -> Path:
    """The file or folder ``parts`` inside the installed mwa_cli package, as a file-system path (it may not
    exist: `package_file` checks)."""
    root = resources.files("mwa_cli")
    if not isinstance(root, Path):  # a zip import: the templates and photos must be real files
        raise MwaError("mwa_cli is imported from an archive, not from files on disk",
                       hint="install mwa with pip (a wheel or `pip install .`)", exit_code=EXIT_INTERNAL)
    return root.joinpath(*parts)


def package_file(*parts: str) -> Path:
    """Like `package_path`, but the file or folder must be there (a clear error names what is missing)."""
    path = package_path(*parts)
    if not path.exists():
        raise MwaError(f"mwa's packaged file {'/'.join(parts)} is missing (looked in {path.parent})",
                       hint="reinstall mwa (`pip install --force-reinstall mwa-cli`, or `pip install .` from a "
                            "checkout)", exit_code=EXIT_INTERNAL)
    return path
