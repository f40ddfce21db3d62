"""`mwa line publish` and `mwa line rollback`: the only writers of a line's versions and pointer, one at a time
(the line's lock). A version is written whole into a temporary folder and renamed into place, its version.json
last; the pointer moves after it, so a reader sees the old version or the new one, never half of one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from mwa_cli import __version__, integrity
from mwa_cli.errors import CheckpointError, ConfigError
from mwa_cli.fileio import atomic_dir, atomic_write_json, synced_file
from mwa_cli.lines import heldout
from mwa_cli.lines.runinfo import RUN_FILES, RunForLine, backbone_mismatch, inspect_run
from mwa_cli.lines.store import VERSION_FILE, Line, LineStore, held_out_record, now, who

Announce = Callable[[str], None]


def publish(store: str | Path, line_name: str, run_dir: str | Path, *, force_worse: bool = False,
            why: str | None = None, device: str = "auto", announce: Announce | None = None) -> dict[str, Any]:
    """Copy the run's adapter, evaluation and provenance into the line as its next version and make it current,
    after the gate (`mwa_cli.lines.heldout`): same backbone as the line, held-out recall not worse than the
    current version's by more than its interval (unless `force_worse`, which needs `why` and is recorded)."""
    if force_worse and not (why or "").strip():
        raise ConfigError("--force-worse needs --why TEXT: the reason is recorded with the version",
                          hint='e.g. --force-worse --why "new defect type; the old held-out set lacks it"')
    say = announce or (lambda _msg: None)
    st = LineStore.open(store)
    st.line(line_name)  # an unknown line is refused before the run is read
    run = inspect_run(run_dir)
    line = st.line(line_name)
    with line.lock():
        line = st.line(line_name)  # as it is now that this process writes it
        line.remove_leftovers()
        _refuse_republish(line, run)
        reason = backbone_mismatch(line.backbone, run.backbone)
        if reason:
            raise CheckpointError(f"cannot publish {run.folder} to line {line.name}: {reason}",
                                  hint="a line serves one backbone: train the adapter on the line's backbone and "
                                       "weights, or add another line for it")
        held = line.held_out or _held_out_from_run(run)
        say(f"evaluating {run.folder.name} on the held-out set ({held['split']} of {held['data_dir']})")
        candidate = heldout.evaluate(run.folder, held, weights=run.weights, tokenizer=run.tokenizer, device=device)
        check = _gate(line, held, candidate, device=device, force_worse=force_worse, why=why, say=say)
        n = line.next_version()
        record = _version_record(line, n, run, held, candidate, check, why)
        atomic_dir(line.version_path(n), lambda tmp: _fill(tmp, run, record, candidate))
        if line.held_out is None or line.backbone is None:
            line.write_record({**line.record, "held_out": held, "backbone": run.backbone})
        previous = line.current
        line.switch(n, {"action": "publish", "version": n, "from": previous, "at": record["published"],
                        "by": record["by"], "why": why, "forced": bool(check and check["forced"])})
    return {"line": line.name, "store": str(st.root), "version": n, "previous": previous,
            "path": str(line.version_path(n)), "run": str(run.folder), "held_out": record["held_out"],
            "check": check, "next": f"mwa index --line {line.name} --store {st.root}"}


def _refuse_republish(line: Line, run: RunForLine) -> None:
    for v in line.published():
        if line.version(v).get("identity") == run.identity:
            raise ConfigError(f"{run.folder} is already version {v} of line {line.name}",
                              hint=f"to serve it again: mwa line rollback {line.name} {v}")


def _held_out_from_run(run: RunForLine) -> dict[str, Any]:
    """A line's first publish without `line add --data`: the run's own data dir and final split."""
    data_dir = run.config.get("data_dir")
    if not data_dir:
        raise ConfigError(f"line has no held-out set and {run.folder} names no data dir",
                          hint="give the line one: mwa line add LINE --data DATA_DIR (on a new line)")
    return held_out_record(data_dir, str(run.config.get("final_split") or "test"), "first publish")


def _gate(line: Line, held: dict[str, Any], candidate: tuple[dict, Any], *, device: str, force_worse: bool,
          why: str | None, say: Announce) -> dict[str, Any] | None:
    """Evaluate the current version on the same held-out set and apply the rule; None for the first version."""
    if line.current is None:
        return None
    rec = line.verify_version(line.current)
    say(f"evaluating the current version v{line.current} on the same held-out set")
    current = heldout.evaluate(line.version_path(line.current), held, weights=rec.get("weights"),
                               tokenizer=rec.get("tokenizer"), device=device)
    check = heldout.compare(candidate, current, line.current)
    if check["worse"] and not force_worse:
        c, k = check["candidate"], check["current"]
        lo, hi = k["ci95"]["mean_recall"]
        raise ConfigError(
            f"not published: on the held-out set the candidate's mean recall is {c['mean_recall']:.2f}, below "
            f"the interval of the current version v{line.current} ({k['mean_recall']:.2f}, 95 % interval "
            f"{lo:.2f}–{hi:.2f}); the line keeps v{line.current}",
            hint='publish anyway with --force-worse --why "REASON" (recorded with the version)')
    if check["worse"]:
        check["forced"] = {"by": who(), "at": now(), "why": why}
    return check


def _version_record(line: Line, n: int, run: RunForLine, held: dict[str, Any], candidate: tuple[dict, Any],
                    check: dict[str, Any] | None, why: str | None) -> dict[str, Any]:
    from mwa_cli.adapters.io import WEIGHTS_FILE
    from mwa_cli.eval.bootstrap import load_ranks
    from mwa_cli.lines.store import SCHEMA_VERSION, read_json

    run_eval = read_json(run.folder / "eval.json", "the run's evaluation", hint=f"run `mwa eval {run.folder}`")
    run_ranks = load_ranks(run.folder)
    held_summary = dict(heldout.recall_summary(*candidate), data_dir=held["data_dir"],
                        overlap_with_training=heldout.training_overlap(run.config, held))
    return {"schema_version": SCHEMA_VERSION, "line": line.name, "version": n, "published": now(), "by": who(),
            "why": why, "run": {"path": str(run.folder), "name": run.folder.name,
                                "command": run.config.get("command")},
            "method": run.method, "backbone": run.backbone, "weights": run.weights, "tokenizer": run.tokenizer,
            "identity": run.identity, "dataset_hash": run.config.get("dataset_hash"),
            "data_dir": run.config.get("data_dir"), "config": {k: run.config.get(k) for k in
                                                                ("method_options", "seed", "lr", "steps", "budget")},
            "trainable_params": run.adapter_config.get("trainable_params"),
            "adapter_bytes": (run.folder / WEIGHTS_FILE).stat().st_size,
            "run_eval": heldout.recall_summary(run_eval, run_ranks[1] if run_ranks and
                                               run_ranks[0] == run_eval.get("split") else None),
            "held_out": held_summary, "check": check, "mwa_version": __version__}


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as r, synced_file(dst) as w:
        shutil.copyfileobj(r, w, 1 << 20)


def _fill(tmp: Path, run: RunForLine, record: dict[str, Any], candidate: tuple[dict, Any]) -> None:
    """The version folder: the adapter (checked again after the copy), the run's files, the held-out evaluation,
    then version.json with the sha256 of each."""
    from mwa_cli.adapters.io import CONFIG_FILE, WEIGHTS_FILE, verify_adapter_weights
    from mwa_cli.eval.bootstrap import RANKS_FILE, save_ranks

    names = [WEIGHTS_FILE, CONFIG_FILE] + [f for f in RUN_FILES if (run.folder / f).is_file()]
    for name in names:
        _copy(run.folder / name, tmp / name)
    verify_adapter_weights(tmp, run.adapter_config)  # the copy is the file that was checked
    result, ranks = candidate
    (tmp / heldout.HELD_OUT_DIR).mkdir()
    atomic_write_json(tmp / heldout.HELD_OUT_DIR / "eval.json", result)
    save_ranks(tmp / heldout.HELD_OUT_DIR, result["split"], ranks)
    names += [f"{heldout.HELD_OUT_DIR}/eval.json", f"{heldout.HELD_OUT_DIR}/{RANKS_FILE}"]
    atomic_write_json(tmp / VERSION_FILE, {**record, integrity.FILES_KEY: integrity.record(tmp, names)})


def rollback(store: str | Path, line_name: str, version: int | None = None, *, why: str | None = None
             ) -> dict[str, Any]:
    """Make an earlier (or any other published) version current again: by default the highest one below the
    current. Its files are checked first; nothing is evaluated (it served before)."""
    st = LineStore.open(store)
    line = st.line(line_name)
    with line.lock():
        line = st.line(line_name)
        current = line.current
        if current is None:
            raise ConfigError(f"nothing is published to line {line.name} yet",
                              hint=f"publish a run first: mwa line publish {line.name} RUN")
        if version is None:
            earlier = [v for v in line.published() if v < current]
            if not earlier:
                raise ConfigError(f"v{current} is the first version of line {line.name}: there is none before it",
                                  hint=f"its versions: {', '.join(f'v{v}' for v in line.published())}")
            version = earlier[-1]
        if version == current:
            raise ConfigError(f"v{version} is already the current version of line {line.name}")
        line.verify_version(version)
        line.switch(version, {"action": "rollback", "version": version, "from": current, "at": now(),
                              "by": who(), "why": why, "forced": False})
    indexed = (line.index_path(version) / "index.json").is_file()
    return {"line": line.name, "store": str(st.root), "version": version, "previous": current, "indexed": indexed,
            "next": None if indexed else f"mwa index --line {line.name} --store {st.root}"}
