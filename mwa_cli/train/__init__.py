"""Training (`mwa train`). The package is also the API's ``mwa_cli.train(config, progress=None) -> RunResult``:
calling it runs `mwa_cli.train.loop.train` (docs/api.md)."""

from mwa_cli.callable_package import make_callable

make_callable(__name__, "mwa_cli.train.loop:train")
