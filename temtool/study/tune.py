"""KerasTuner search over pooling sizes, filters and depth: the study's sweep as a tool.

A :class:`ResUNetHyperModel` translates hyperparameters into the shared
:class:`~temtool.model.architecture.Architecture`; only valid combinations are offered (the pool product
divides the patch and leaves a bottleneck of at least ``min_bottleneck_px``; the parameter
count stays under ``max_params``). Trials train with :func:`temtool.study.train.train` (``repeats``
seeds each) and record parameters, receptive field in px and nm, validation soft/hard Dice,
epochs, time and speed. Results go to ``tuner_logs/<project>/``: KerasTuner's own state (so a
re-run resumes and keeps finished trials), ``results.csv``/``results.json`` and the best
model as a bundle.

Distributed search uses KerasTuner's own mode (a chief oracle over gRPC, workers configured by
``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras_tuner as kt
import numpy as np

from temtool.data.dataset import Dataset, dataset_name, load_dataset
from temtool.data.io import atomic_dir, atomic_write, check_writable, pid_alive
from temtool.errors import ArchitectureError, ParameterError, TemtoolError
from temtool.model.architecture import Architecture, build_resunet, count_params, parse_int_list
from temtool.model.receptive_field import theoretical_rf_px
from temtool.model.registry import remember_last_model
from temtool.study import protocol
from temtool.study.metrics import LOSSES
from temtool.study.train import TrainConfig, baseline_summary, metrics_from_runs, save_training, train

TUNERS = ("grid", "random", "bayesian", "hyperband")
OBJECTIVE = "val_hard_dice"


@dataclass
class SearchSpace:
    """Choices the search draws from."""

    depths: tuple[int, ...] = (2, 3, 4)
    pools: tuple[int, ...] = (2, 4, 8)
    base_filters: tuple[int, ...] = (4, 8, 16, 32)
    kernel_size: int = 3
    lrs: tuple[float, ...] = ()  # empty: fixed learning rate from the train config
    losses: tuple[str, ...] = ()  # empty: fixed loss from the train config
    max_params: int | None = None
    min_bottleneck_px: int = 4
    sequences: tuple[tuple[int, ...], ...] = ()  # explicit pool sequences instead of all products

    def __post_init__(self):

        for name in ("depths", "pools", "base_filters"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ParameterError(name, f"must be positive integers, got {list(values)}")
        if any(not (math.isfinite(v) and v > 0) for v in self.lrs):
            raise ParameterError("lrs", f"must be finite numbers > 0, got {list(self.lrs)}")
        bad = [v for v in self.losses if v not in LOSSES]
        if bad:
            raise ParameterError("losses", f"unknown loss {bad[0]!r}; choose from {', '.join(LOSSES)}")
        if any(not q or any(not isinstance(v, int) or v < 1 for v in q) for q in self.sequences):
            raise ParameterError(
                "sequences", f"pool sequences must be positive integers, got {self.sequences}"
            )
        if self.max_params is not None and self.max_params < 1:
            raise ParameterError("max_params", f"must be >= 1, got {self.max_params}")

    @classmethod
    def parse(
        cls,
        depths: str = "2,3,4",
        pools: str = "2,4,8",
        base_filters: str = "4,8,16,32",
        lrs: str | None = None,
        losses: str | None = None,
        max_params: int | None = None,
    ) -> SearchSpace:
        """A search space from comma-separated text, as typed on the command line."""

        def ints(text, name):
            try:
                return parse_int_list(text, name)
            except ArchitectureError as e:
                raise ParameterError(name, str(e).split(": ", 1)[-1]) from None

        try:
            lr_values = tuple(float(v) for v in lrs.split(",")) if lrs else ()
        except ValueError:
            raise ParameterError("lrs", f"expected numbers such as 1e-3,1e-4, got {lrs!r}") from None
        return cls(
            depths=ints(depths, "depths"),
            pools=ints(pools, "pools"),
            base_filters=ints(base_filters, "base_filters"),
            lrs=lr_values,
            losses=tuple(v.strip() for v in losses.split(",")) if losses else (),
            max_params=max_params,
        )

    def pool_sequences(self, depth: int, patch_px: int) -> list[tuple[int, ...]]:
        """Pool sequences of a depth that fit the patches: every product of ``pools`` (the
        study's grid), or the explicit ``sequences`` of that length when given."""
        out = []
        candidates = (
            [tuple(q) for q in self.sequences if len(q) == depth]
            if self.sequences
            else itertools.product(self.pools, repeat=depth)
        )
        for seq in candidates:
            prod = math.prod(seq)
            if patch_px % prod == 0 and patch_px // prod >= self.min_bottleneck_px:
                out.append(tuple(seq))
        return out

    def filter_choices(self, depth: int) -> list[int]:
        out = []
        for f in self.base_filters:
            arch = Architecture.create(depth=depth, pool=1, filters=f, kernel_size=self.kernel_size)
            if self.max_params is None or count_params(arch) <= self.max_params:
                out.append(f)
        return out

    def valid_depths(self, patch_px: int) -> list[int]:
        return [d for d in self.depths if self.pool_sequences(d, patch_px) and self.filter_choices(d)]


def _seq_str(seq) -> str:
    return ",".join(map(str, seq))


def grid_architectures(space: SearchSpace, patch_px: int) -> list[str]:
    """Every architecture a space offers for patches of ``patch_px``, as the value of the one
    categorical hyperparameter ``architecture``.

    One categorical choice rather than depth with pools and filters in conditional scopes:
    KerasTuner 1.4's grid search does not fill conditional hyperparameters (a grid over
    depths 2 and 3 failed with a missing ``pools_d3``)."""
    return [
        _arch_key(d, seq, f)
        for d in space.valid_depths(patch_px)
        for seq in space.pool_sequences(d, patch_px)
        for f in space.filter_choices(d)
    ]


def patch_px_of(data: Dataset) -> int:
    """The side that every training patch of a dataset is a multiple of (what pools must divide)."""
    x_tr, _ = data.arrays("train")
    return math.gcd(*x_tr.shape[1:3])


class ResUNetHyperModel(kt.HyperModel):
    """Translates hyperparameters into the shared :class:`~temtool.model.architecture.Architecture` and
    trains a trial with :func:`temtool.study.train.train` (``repeats`` seeds). Its state (search
    space, data, training settings, callbacks) comes in through the constructor, as in
    KerasTuner's custom-tuner guide."""

    def __init__(
        self,
        space: SearchSpace,
        data: Dataset,
        train_cfg: TrainConfig,
        repeats: int = 1,
        on_trial: Callable | None = None,
        on_epoch: Callable | None = None,
        on_trial_start: Callable | None = None,
        baselines: dict | None = None,
        exclude: frozenset[str] = frozenset(),
        id_prefix: str = "",
    ):
        super().__init__(name="resunet")
        # a grid's additions (see tune): the architectures searched before, and the new trials' id prefix
        self.exclude, self.id_prefix = exclude, id_prefix
        self.space, self.data, self.train_cfg, self.repeats = space, data, train_cfg, repeats
        self.baselines = baselines  # computed once per search, recorded in every trial's bundle
        self.on_trial, self.on_epoch, self.on_trial_start = on_trial, on_epoch, on_trial_start
        self.patch_px = patch_px_of(data)
        self.depths = space.valid_depths(self.patch_px)
        if not self.depths:
            raise TemtoolError(
                f"no architecture in the search space fits {self.patch_px}x{self.patch_px} patches: "
                f"every pool product must divide {self.patch_px} and leave at least "
                f"{space.min_bottleneck_px} px (use smaller --pools or --depths, or a larger --max-params)"
            )

    def architectures(self) -> list[str]:
        """Every offered architecture (:func:`grid_architectures`) not already searched."""
        return [k for k in grid_architectures(self.space, self.patch_px) if k not in self.exclude]

    def declare(self, hp) -> Architecture:
        choices = self.architectures()
        key = hp.Choice("architecture", choices) if len(choices) > 1 else hp.Fixed("architecture", choices[0])
        if self.space.lrs:
            hp.Choice("lr", list(self.space.lrs))
        if self.space.losses:
            hp.Choice("loss", list(self.space.losses))
        return arch_from_values({"architecture": key}, self.space.kernel_size)

    def build(self, hp):
        return build_resunet(self.declare(hp))

    def n_combinations(self) -> int:
        """Size of the grid (every architecture, lr and loss)."""
        return len(self.architectures()) * max(1, len(self.space.lrs)) * max(1, len(self.space.losses))

    def run(self, hp, trial_id: str, trial_dir: Path) -> dict:
        """Train one configuration (``repeats`` seeds), write its bundle and record."""
        arch = arch_from_values(hp.values, self.space.kernel_size)
        cfg = dataclasses.replace(
            self.train_cfg,
            epochs=int(hp.values.get("tuner/epochs", self.train_cfg.epochs)),
            lr=float(hp.values.get("lr", self.train_cfg.lr)),
            loss=hp.values.get("loss", self.train_cfg.loss),
        )
        if self.on_trial_start:
            self.on_trial_start(f"{self.id_prefix}{trial_id}", arch, cfg.epochs * self.repeats)
        t0 = time.perf_counter()
        best, runs, ds = train(arch, self.data, cfg, self.repeats, on_epoch=self.on_epoch)
        metrics = metrics_from_runs(best, runs)
        px, rf = ds.pixel_size_nm, theoretical_rf_px(arch)
        record = {
            "trial_id": f"{self.id_prefix}{trial_id}",
            "depth": arch.depth,
            "pools": list(arch.pools),
            "filters": list(arch.filters),
            "params": count_params(best.model),
            "rf_px": rf,
            "rf_nm": rf * px if px else None,
            "lr": cfg.lr,
            "loss": cfg.loss,
            "val_hard_dice_mean": metrics["val_hard_dice_mean"],
            "val_hard_dice_std": metrics["val_hard_dice_std"],
            **_test_columns(metrics),
            **self._against_baselines(metrics),
            "val_soft_dice_mean": float(np.mean([r["val_soft_dice"] for r in metrics["repeats"]])),
            "epochs_run": int(np.mean([r.epochs_run for r in runs])),
            "time_s": time.perf_counter() - t0,
            "images_per_s": metrics["images_per_s"],
            "repeats": metrics["repeats"],
            "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "local"),
        }
        trial_dir.mkdir(parents=True, exist_ok=True)
        save_training(
            trial_dir / "bundle", best, runs, ds, cfg, extra={"trial": record}, baselines=self.baselines
        )
        atomic_write(trial_dir / "temtool_trial.json", lambda p: p.write_text(json.dumps(record, indent=1)))
        if self.on_trial:
            self.on_trial(record)
        return record

    def _against_baselines(self, metrics: dict) -> dict:
        """The trial's test Dice minus each tuned baseline's, per image, with the paired
        bootstrap interval (:func:`temtool.study.protocol.paired_difference`)."""
        out = {}
        for name, b in (self.baselines or {}).items():
            diff = protocol.paired_difference(
                metrics.get("test_dice_per_image") or {}, b.get("per_image") or {}
            )
            if diff:
                out[f"test_minus_{name}"] = diff["mean"]
                out[f"test_minus_{name}_ci95"] = diff["ci95"]
                out[f"test_vs_{name}"] = diff["verdict"]
        return out


def _test_columns(metrics: dict) -> dict:
    """A trial's test-split hard Dice over seeds (mean, sd, 95% interval) and per class."""
    test = metrics.get("test_hard_dice")
    if not test:
        return {}
    out = {
        "test_hard_dice_mean": test["mean"],
        "test_hard_dice_sd": test["sd"],
        "test_hard_dice_ci95": test["ci95"],
    }
    for c, v in metrics.get("test_dice_by_class", {}).items():
        out[f"test_dice_{c}"] = v["mean"]
    if metrics.get("test_object_f1"):  # the data have instance maps
        out["test_object_f1_mean"] = metrics["test_object_f1"]["mean"]
    return out


def _arch_key(depth: int, pools: tuple[int, ...], filters: int) -> str:
    return f"depth={depth};pools={_seq_str(pools)};filters={filters}"


def arch_from_values(values: dict, kernel_size: int = 3) -> Architecture:
    """The architecture of a trial's hyperparameter values."""
    if "architecture" in values:
        parts = dict(item.split("=") for item in str(values["architecture"]).split(";"))
        return Architecture.create(
            depth=int(parts["depth"]),
            pool=parts["pools"],
            filters=int(parts["filters"]),
            kernel_size=kernel_size,
        )
    d = int(values["depth"])  # projects written before temtool 0.2
    return Architecture.create(
        depth=d, pool=values[f"pools_d{d}"], filters=values[f"filters_d{d}"], kernel_size=kernel_size
    )


def _tuner_class(kind: str):
    base = {
        "grid": kt.GridSearch,
        "random": kt.RandomSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }[kind]

    class TemtoolTuner(base):
        """Runs a trial through the hypermodel (temtool's training), objective = mean val
        hard Dice over the seeds."""

        def run_trial(self, trial, *args, **kwargs):
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            record = self.hypermodel.run(trial.hyperparameters, trial.trial_id, trial_dir)
            return {OBJECTIVE: record["val_hard_dice_mean"]}

    return TemtoolTuner


def _repair_grid_order(oracle) -> None:
    """KerasTuner 1.4's GridSearchOracle keeps its walk through the grid (a linked list of
    trial ids and a queue of trials to extend) only in memory. After a reload both are empty,
    so a resumed grid search stops early or fails on a retried trial. Rebuild them from the
    trials on record: ordered by the oracle's own comparison, each one queued for extension
    (combinations already tried are skipped by the oracle itself)."""
    import functools

    import keras_tuner as kt

    if not isinstance(oracle, kt.oracles.GridSearchOracle) or not oracle.trials:
        return
    ids = sorted(
        oracle.trials,
        key=functools.cmp_to_key(
            lambda a, b: oracle._compare(
                oracle.trials[a].hyperparameters.values, oracle.trials[b].hyperparameters.values
            )
        ),
    )
    linked = type(oracle._ordered_ids)()
    for trial_id in ids:
        linked.insert(trial_id)
    oracle._ordered_ids = linked
    oracle._populate_next = list(ids)


@dataclass
class TuneConfig:
    """A search: the data, the tuner, the space, the training of each trial."""

    data: str = "sim:randomised"
    tuner: str = "grid"
    max_trials: int | None = None
    repeats: int = 1
    project: str | None = None
    directory: str = "tuner_logs"
    overwrite: bool = False
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=8, lr=1e-3, batch_size=8, patience=10)
    )
    space: SearchSpace = field(default_factory=SearchSpace)
    pixel_size_nm: float | None = None

    def validate(self) -> None:
        if self.tuner not in TUNERS:
            raise ParameterError("tuner", f"must be one of {', '.join(TUNERS)}, got {self.tuner!r}")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ParameterError("repeats", f"must be >= 1, got {self.repeats}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ParameterError("max_trials", f"must be >= 1, got {self.max_trials}")
        self.train.validate()

    def tuner_kwargs(self, hypermodel, project: str) -> dict:
        """Arguments of the KerasTuner tuner (never overwriting: temtool resumes)."""
        kw = dict(
            hypermodel=hypermodel,
            objective=kt.Objective(OBJECTIVE, direction="max"),
            directory=self.directory,
            project_name=project,
            overwrite=False,
            seed=self.seed,
            max_consecutive_failed_trials=1,
        )
        if self.tuner == "hyperband":
            kw["max_epochs"] = self.train.epochs
        elif self.max_trials or self.tuner != "grid":
            kw["max_trials"] = self.max_trials or 10
        return kw


def default_project(data: str) -> str:
    return f"{dataset_name(data)}-search"


PROJECT_FILE = "temtool_project.json"  # what defines a search: a resumed one must match it
_DEFINING = ("data", "data_splits", "tuner", "space", "train", "repeats", "pixel_size_nm")


def _project_record(cfg: TuneConfig, ds: Dataset) -> dict:
    """What defines a search project: its data (folder and split), search space and training."""
    splits = json.dumps({k: sorted(v) for k, v in ds.splits.items()}, sort_keys=True)
    return {
        "data": str(Path(ds.path).resolve()),
        "data_splits": hashlib.sha256(splits.encode()).hexdigest()[:16],
        "tuner": cfg.tuner,
        "space": json.loads(json.dumps(dataclasses.asdict(cfg.space), default=list)),
        "train": json.loads(json.dumps(dataclasses.asdict(cfg.train), default=list)),
        "repeats": cfg.repeats,
        "pixel_size_nm": ds.pixel_size_nm,
    }


ADDITIONS = "additions-"  # folders of a grid's additions inside its project
_ARCHITECTURE_KEYS = ("depths", "pools", "base_filters", "max_params", "sequences")


def _grid_addition(before: dict, record: dict, patch_px: int) -> tuple[str, frozenset[str]] | None:
    """Where a widened grid resumes: ``(folder, architectures already searched)`` when
    ``record`` differs from the project's only in the architectures its grid offers, and offers
    every one searched so far (a new folder when it offers more, the folder of an earlier
    addition when it is that addition's space); None otherwise."""
    if before.get("tuner") != "grid" or any(before.get(k) != record[k] for k in _DEFINING if k != "space"):
        return None
    old, new = before.get("space") or {}, record["space"]
    if any(old.get(k) != v for k, v in new.items() if k not in _ARCHITECTURE_KEYS):
        return None  # learning rates, losses or kernel: another search
    additions = before.setdefault("additions", [])
    searched: list[str] = []
    for i, space in enumerate([old] + [a["space"] for a in additions]):
        if i and space == new:
            return additions[i - 1]["folder"], frozenset(searched)
        searched += grid_architectures(_space(space), patch_px)
    offered = set(grid_architectures(_space(new), patch_px))
    if not set(searched) < offered:
        return None  # narrower or other: not an addition
    folder = f"{ADDITIONS}{len(additions) + 1}"
    additions.append({"folder": folder, "space": new})
    return folder, frozenset(searched)


def _space(d: dict) -> SearchSpace:
    """A :class:`SearchSpace` from its record (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(SearchSpace)}

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return SearchSpace(**{k: tup(v) for k, v in d.items() if k in fields})


def _check_project(root: Path, record: dict, patch_px: int) -> tuple[str, frozenset[str]] | None:
    """Record what defines a new project; refuse to resume one that other settings made. A
    grid widened to offer more architectures is an addition (:func:`_grid_addition`): its
    folder in the project and the architectures not to run again; None for the project itself."""
    f = root / PROJECT_FILE
    if f.is_file():
        try:
            before = json.loads(f.read_text())
        except (OSError, ValueError):
            before = {}
        differ = [k for k in _DEFINING if before.get(k) != record[k]]
        if not differ:
            return None
        n_additions = len(before.get("additions", []))
        addition = _grid_addition(before, record, patch_px) if differ == ["space"] else None
        if addition is None:
            raise TemtoolError(
                f"{root}: this search was made with other settings ({', '.join(differ)} differ), "
                "so its trials are not this search's; use --overwrite to start it over, or another --project"
                + (
                    " (a grid may only be widened: every architecture searched so far must stay in it)"
                    if differ == ["space"]
                    else ""
                )
            )
        if len(before.get("additions", [])) != n_additions:  # a new addition: recorded before it runs
            atomic_write(f, lambda t: t.write_text(json.dumps(before, indent=1)))
        return addition
    if any(root.glob("trial_*")):
        raise TemtoolError(
            f"{root}: holds trials whose settings were not recorded; use --overwrite or another --project"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(f, lambda t: t.write_text(json.dumps(record, indent=1)))
    return None


@contextlib.contextmanager
def _project_lock(root: Path):
    """One process at a time in a (non-distributed) project: a second one is refused."""
    root.mkdir(parents=True, exist_ok=True)
    lock = root / ".temtool-tune.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and pid_alive(pid):
                raise TemtoolError(
                    f"{root}: another temtool tune (process {pid}) is running this project; "
                    "wait for it, or use another --project"
                ) from None
            lock.unlink(missing_ok=True)  # left by a run that is gone
    else:  # pragma: no cover - another process took it between our two tries
        raise TemtoolError(f"{root}: another temtool tune is starting on this project; use another --project")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def distributed_env(chief: str | None = None, worker: str | None = None, worker_id: int = 0) -> dict:
    """KerasTuner's environment for a chief oracle at ``chief`` or a worker of the chief at
    ``worker`` (both ``HOST:PORT``)."""
    if chief and worker:
        raise ParameterError("chief", "and worker exclude each other: run one process of each")
    value = chief or worker
    if not value:
        return {}
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError(
            "chief" if chief else "worker", f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:8000"
        )
    if worker_id < 0:
        raise ParameterError("worker_id", f"must be >= 0, got {worker_id}")
    return {
        "KERASTUNER_ORACLE_IP": host,
        "KERASTUNER_ORACLE_PORT": port,
        "KERASTUNER_TUNER_ID": "chief" if chief else f"tuner{worker_id}",
    }


def _search_baselines(ds: Dataset, root: Path) -> dict | None:
    """The tuned classical baselines on the search's test split, computed once per project
    (kept in baselines.json, so a resumed search does not recompute them)."""
    if not ds.splits.get("test"):
        return None
    path = root / "baselines.json"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
    b = baseline_summary(protocol.baselines(ds, "test"))
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text(json.dumps(b, indent=1)))
    return b


def tune(
    cfg: TuneConfig,
    on_trial: Callable | None = None,
    on_epoch: Callable | None = None,
    on_trial_start: Callable | None = None,
    on_start: Callable | None = None,
) -> dict:
    """Run (or resume) a search; returns the results summary written to the project folder.

    Callbacks: ``on_start(n_planned, n_done)``, ``on_trial_start(trial_id, arch, n_epochs)``,
    ``on_epoch(epoch, logs, images_per_s)``, ``on_trial(record)``.
    """
    cfg.validate()
    ds = load_dataset(cfg.data, pixel_size_nm=cfg.pixel_size_nm)
    project = cfg.project or default_project(cfg.data)
    root = Path(cfg.directory) / project
    check_writable(root, "directory")
    is_chief = os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief"
    distributed = "KERASTUNER_ORACLE_IP" in os.environ
    lock = contextlib.nullcontext() if distributed else _project_lock(root)
    with lock:
        if cfg.overwrite and root.exists() and is_chief:
            for p in root.iterdir():
                if p.name != ".temtool-tune.lock":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        addition = _check_project(root, _project_record(cfg, ds), patch_px_of(ds)) if is_chief else None
        return _search(
            cfg, ds, root, project, is_chief, on_trial, on_epoch, on_trial_start, on_start, addition
        )


def _search(
    cfg, ds, root, project, is_chief, on_trial, on_epoch, on_trial_start, on_start, addition=None
) -> dict:
    """:func:`tune` once the project is checked (and locked)."""
    real_stdout = sys.stdout

    def to_stdout(fn):  # KerasTuner's stdout is captured below; temtool's callbacks are not
        if fn is None:
            return None

        def call(*a):
            with contextlib.redirect_stdout(real_stdout):
                fn(*a)

        return call

    hypermodel = ResUNetHyperModel(
        cfg.space,
        ds,
        cfg.train,
        cfg.repeats,
        to_stdout(on_trial),
        to_stdout(on_epoch),
        to_stdout(on_trial_start),
        baselines=_search_baselines(ds, root),
        exclude=addition[1] if addition else frozenset(),
        id_prefix=f"{addition[0]}/" if addition else "",
    )
    # a grid's addition is a KerasTuner project of its own inside this one
    kw = cfg.tuner_kwargs(hypermodel, f"{project}/{addition[0]}" if addition else project)
    # KerasTuner prints to stdout (e.g. "Reloading Tuner from ..."); keep stdout for temtool's
    # own output (trial lines, tables, --json); TEMTOOL_TUNER_VERBOSE=1 shows its lines on stderr.
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        tuner = _tuner_class(cfg.tuner)(**kw)
        _repair_grid_order(tuner.oracle)
        if on_start:
            planned = hypermodel.n_combinations() if cfg.tuner == "grid" else kw.get("max_trials")
            if cfg.max_trials and planned:
                planned = min(planned, cfg.max_trials)
            trials = getattr(tuner.oracle, "trials", None) or {}  # a worker's oracle is a client
            done = sum(1 for t in trials.values() if t.status == "COMPLETED")
            to_stdout(on_start)(planned, done)
        tuner.search(verbose=0)
    if os.environ.get("TEMTOOL_TUNER_VERBOSE"):
        sys.stderr.write(chatter.getvalue())
    if not is_chief:
        return {"project": str(root), "worker": os.environ.get("KERASTUNER_TUNER_ID")}
    return write_results(
        root,
        meta={
            "data": str(ds.path),
            "tuner": cfg.tuner,
            "pixel_size_nm": ds.pixel_size_nm,
            "regime": ds.regime,
            "repeats": cfg.repeats,
            "train": dataclasses.asdict(cfg.train),
        },
    )


RESULT_COLUMNS = (
    "trial_id",
    "depth",
    "pools",
    "filters",
    "params",
    "rf_px",
    "rf_nm",
    "val_hard_dice_mean",
    "val_hard_dice_std",
    "test_hard_dice_mean",
    "test_hard_dice_sd",
    "test_hard_dice_ci95",
    "test_minus_otsu",
    "test_minus_otsu_ci95",
    "test_vs_otsu",
    "test_dice_fringed",
    "test_dice_weak_fringe",
    "test_dice_off_zone",
    "val_soft_dice_mean",
    "epochs_run",
    "time_s",
    "images_per_s",
    "lr",
    "loss",
    "tuner_id",
)


def collect_trials(root: Path) -> list[dict]:
    """temtool's record of every finished trial of a project (its grid's additions too), best
    first; each with ``trial_dir``, its folder within the project."""
    root = Path(root)
    rows = []
    for f in sorted(
        [*root.glob("trial_*/temtool_trial.json"), *root.glob(f"{ADDITIONS}*/trial_*/temtool_trial.json")]
    ):
        try:
            row = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rows.append({**row, "trial_dir": f.parent.relative_to(root).as_posix()})
    rows.sort(key=lambda r: -r["val_hard_dice_mean"])
    return rows


def write_results(root: Path, meta: dict | None = None) -> dict:
    """Write results.json, results.csv and best_model/ for a project; returns the summary."""
    root = Path(root)
    rows = collect_trials(root)
    if not rows:
        raise TemtoolError(f"{root}: no finished trials yet")
    summary = {"project": str(root), "n_trials": len(rows), **(meta or {})}
    if (root / "baselines.json").is_file() and "baselines" not in summary:
        with contextlib.suppress(OSError, ValueError):
            summary["baselines"] = json.loads((root / "baselines.json").read_text())
    summary["trials"] = rows
    atomic_write(root / "results.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(RESULT_COLUMNS)
    for r in rows:
        w.writerow(
            [",".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c) for c in RESULT_COLUMNS]
        )
    atomic_write(root / "results.csv", lambda p: p.write_text(buf.getvalue()))
    best = root / rows[0]["trial_dir"] / "bundle"
    if best.is_dir():
        with atomic_dir(root / "best_model") as tmp:
            shutil.copytree(best, tmp, dirs_exist_ok=True)
        summary["best_model"] = str(root / "best_model")
        remember_last_model(root / "best_model")
    return summary


def load_results(project: str | os.PathLike, directory: str = "tuner_logs") -> dict:
    """Results of a finished or interrupted project (by name under ``directory`` or by path)."""
    p = Path(project)
    if not p.is_dir():
        p = Path(directory) / str(project)
    if not p.is_dir():
        raise ParameterError("report", f"{project}: no such project folder (looked in {directory}/)")
    if (p / "results.json").is_file():
        res = json.loads((p / "results.json").read_text())
        if len(collect_trials(p)) == res.get("n_trials"):
            return res
    return write_results(p)


def plot_dice_vs_rf(results: dict, png: str | os.PathLike) -> Path:
    """Dice against receptive field (nm if known, else px), one series per complexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["trials"]
    use_nm = all(r.get("rf_nm") for r in rows)
    on_test = all(r.get("test_hard_dice_mean") is not None for r in rows)
    key, err = (
        ("test_hard_dice_mean", "test_hard_dice_sd")
        if on_test
        else ("val_hard_dice_mean", "val_hard_dice_std")
    )
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for params in sorted({r["params"] for r in rows}):
        sel = sorted((r for r in rows if r["params"] == params), key=lambda r: r["rf_px"])
        d = sel[0]
        label = f"depth {d['depth']}, filters {d['filters'][0]} ({params:,} params)"
        xs = [r["rf_nm"] if use_nm else r["rf_px"] for r in sel]
        ax.errorbar(
            xs,
            [r[key] for r in sel],
            yerr=[r[err] for r in sel],
            marker="o",
            capsize=3,
            label=label,
        )
    styles = {"otsu": ("k", "--"), "fourier": ("0.45", ":")}
    for name, b in (results.get("baselines") or {}).items():
        colour, ls = styles.get(name, ("0.6", "-."))
        label = "Gaussian + Otsu (tuned on val)" if name == "otsu" else f"{name} filter (tuned on val)"
        ax.axhline(b["dice"], color=colour, ls=ls, lw=1.2, label=f"{label}: {b['dice']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("receptive field (nm)" if use_nm else "receptive field (px)")
    ax.set_ylabel("test hard Dice (mean +- sd over seeds)" if on_test else "validation hard Dice")
    ax.set_title(Path(results["project"]).name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = Path(png)
    try:
        atomic_write(png, lambda p: fig.savefig(p, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return png
