"""Training the ResUNet: precision policy, on-the-fly dihedral augmentation, early stopping on
validation hard Dice, repeats over seeds, and writing the result as a model bundle
(:mod:`temtool.model.bundle`).

Only Keras APIs and ``keras.ops`` are used, so training runs on TensorFlow, JAX or PyTorch.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from temtool.data.dataset import Dataset, dataset_name, load_dataset
from temtool.data.io import check_writable
from temtool.errors import ArchitectureError, ParameterError, TemtoolError
from temtool.image.dihedral import dihedral, dihedral_ops
from temtool.inference.segmenter import Segmenter
from temtool.model.architecture import Architecture, build_resunet, copy_weights
from temtool.model.bundle import load_bundle, write_bundle
from temtool.model.registry import remember_last_model
from temtool.study import protocol
from temtool.study.metrics import LOSSES, DiceScore, make_loss

__all__ = [
    "TrainConfig",
    "TrainResult",
    "DihedralFeeder",
    "dihedral",
    "gpu_info",
    "resolve_precision",
    "fit",
    "targets_for",
    "train",
    "metrics_from_runs",
    "save_training",
    "train_and_save",
    "PRECISIONS",
    "AUGMENT_ON",
    "DeviceDihedral",
    "augment_on_device",
]

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
AUGMENT_ON = ("auto", "host", "device")


@dataclass
class TrainConfig:
    """Everything ``temtool train`` needs besides the data and the architecture."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    loss: str = "ce"
    precision: str = "auto"
    seed: int = 0
    patience: int = 20  # epochs without val hard Dice improvement before stopping
    augment: bool = True
    augment_on: str = "auto"  # "host" (the feeder), "device" (inside the compiled step), "auto"
    steps_per_execution: int = 1  # >1 runs several steps per compiled call (faster on GPUs)
    workers: int = 0  # threads preparing batches (0: in the training loop)

    def validate(self) -> None:
        """:class:`~temtool.errors.ParameterError` naming the first bad field."""
        for name in ("epochs", "batch_size", "steps_per_execution"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ParameterError(name, f"must be an integer >= 1, got {v}")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ParameterError("patience", f"must be an integer >= 1, got {self.patience}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ParameterError("lr", f"must be a finite number > 0, got {self.lr}")
        if self.loss not in LOSSES:
            raise ParameterError("loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.augment_on not in AUGMENT_ON:
            raise ParameterError(
                "augment_on", f"must be one of {', '.join(AUGMENT_ON)}, got {self.augment_on!r}"
            )
        if self.precision not in PRECISIONS:
            raise ParameterError(
                "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def with_seed(self, seed: int) -> TrainConfig:
        return dataclasses.replace(self, seed=seed)


@dataclass
class TrainResult:
    model: keras.Model
    arch: Architecture
    history: dict[str, list[float]]
    best_epoch: int
    best_val_hard_dice: float
    epochs_run: int
    train_time_s: float
    images_per_s: float
    precision: str
    seed: int
    test: dict | None = None  # protocol.model_scores on the test split (None without one)


# ---------------------------------------------------------------------------- devices
def gpu_info() -> dict | None:
    """The first GPU of the current Keras backend: ``{"name", "compute_capability"}`` or None."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            jax = importlib.import_module("jax")
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            if not gpus:
                return None
            cc = getattr(gpus[0], "compute_capability", None)
            return {"name": gpus[0].device_kind, "compute_capability": str(cc) if cc else None}
        if backend == "tensorflow":
            tf = importlib.import_module("tensorflow")
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            det = tf.config.experimental.get_device_details(gpus[0])
            cc = det.get("compute_capability")
            return {
                "name": det.get("device_name", "GPU"),
                "compute_capability": ".".join(map(str, cc)) if cc else None,
            }
        if backend == "torch":
            torch = importlib.import_module("torch")
            if not torch.cuda.is_available():
                return None
            cc = torch.cuda.get_device_capability(0)
            return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{cc[0]}.{cc[1]}"}
    except Exception:  # a broken driver means no usable GPU
        return None
    return None


def resolve_precision(precision: str = "auto") -> str:
    """``auto``: float32 on a CPU; on a GPU mixed_bfloat16 where supported (compute
    capability 8.0 or newer), else mixed_float16 (Keras then scales the loss)."""
    if precision != "auto":
        return precision
    gpu = gpu_info()
    if gpu is None:
        return "float32"
    cc = gpu.get("compute_capability")
    try:
        major = int(str(cc).split(".")[0])
    except (TypeError, ValueError):
        major = 8
    return "mixed_bfloat16" if major >= 8 else "mixed_float16"


def augment_on_device(augment_on: str = "auto") -> bool:
    """``auto``: augment inside the compiled step on a GPU (the host copy of every batch was
    what kept training end to end below the model alone), with the feeder on a CPU."""
    return augment_on == "device" or (augment_on == "auto" and gpu_info() is not None)


# ------------------------------------------------------------------------ augmentation
class DihedralFeeder(keras.utils.PyDataset):
    """Batches from in-memory arrays, shuffled each epoch, with a random dihedral transform
    per image (square patches) or a random flip (non-square), drawn from a seeded generator."""

    def __init__(
        self, x, y, batch_size: int, augment: bool = True, seed: int = 0, shuffle: bool = True, **kw
    ):
        super().__init__(**kw)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.augment, self.shuffle = augment, shuffle
        self.seed, self.epoch = seed, 0
        self.order = self._order()
        self.square = x.shape[1] == x.shape[2]

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        xb, yb = self.x[idx], self.y[idx]
        if not self.augment:
            return np.asarray(xb, np.float32), np.asarray(yb)
        # one generator per (seed, epoch, batch): deterministic even with worker threads
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.square:
            ks = rng.integers(8, size=len(idx))
        else:  # identity, vertical flip, 180-degree turn, horizontal flip keep the shape
            ks = rng.choice([0, 2, 4, 6], size=len(idx))
        xo = np.empty_like(xb)
        yo = np.empty_like(yb)  # labels stay uint8 on the host: 4x less to copy and transfer
        for k in np.unique(ks):
            sel = ks == k
            xo[sel] = dihedral(xb[sel], int(k))
            yo[sel] = dihedral(yb[sel], int(k), axes=(-2, -1))
        return xo, yo

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()


class DeviceDihedral(keras.Model):
    """Dihedral augmentation inside the compiled training step, so the host only feeds
    batches. Each image of a training batch gets a random one of the 8 dihedral transforms
    (of the 4 that keep the shape, for non-square images); the network sees the transformed
    image and its logits are transformed back, so the loss compares them with the untouched
    mask: the same augmentation as transforming image and mask together (the per-pixel loss
    does not depend on the pixel order), with no change to the labels' path. Outside training
    it is the network itself. Only ``keras.ops`` and ``keras.random``: every backend."""

    def __init__(self, net: keras.Model, square: bool = True, seed: int = 0, **kw):
        super().__init__(**kw)
        self.net = net
        self.members = tuple(range(8)) if square else (0, 2, 4, 6)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _select(self, x, k, inverse: bool):
        """Image ``i`` of ``x`` under member ``k[i]`` (indices into :attr:`members`), or
        under its inverse (for the logits)."""
        from keras import ops

        onehot = ops.one_hot(k, len(self.members), dtype=x.dtype)
        out = 0
        for j, member in enumerate(self.members):  # exact: each pixel is 1*value + 0*others
            out = out + onehot[:, j, None, None, None] * dihedral_ops(x, member, inverse)
        return out

    def call(self, x, training=False):
        if not training:
            return self.net(x, training=False)
        from keras import ops

        k = keras.random.randint((ops.shape(x)[0],), 0, len(self.members), seed=self.seed_generator)
        logits = self.net(self._select(x, k, inverse=False), training=True)
        return self._select(logits, k, inverse=True)


# --------------------------------------------------------------------------- callbacks
class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best validation hard Dice; restore them at the
    end; stop after ``patience`` epochs without improvement."""

    def __init__(self, monitor: str = "val_hard_dice", patience: int = 20):
        super().__init__()
        self.monitor, self.patience = monitor, patience
        self.best, self.best_epoch, self.weights, self.wait = -np.inf, -1, None, 0

    def start_with(self, value: float, weights: list) -> None:
        """Count the starting weights (fine-tuning) as epoch 0, scoring ``value``: they are kept
        unless an epoch beats them."""
        self.best, self.best_epoch, self.weights = float(value), -1, weights

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        if value > self.best:
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            self.weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.weights is not None:
            self.model.set_weights(self.weights)


class EpochReporter(keras.callbacks.Callback):
    """Calls ``report(epoch, logs, images_per_s)`` after each epoch."""

    def __init__(self, n_images: int, report: Callable):
        super().__init__()
        self.n_images, self.report = n_images, report

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        dt = time.perf_counter() - self.t0
        self.report(epoch, dict(logs or {}), self.n_images / dt if dt > 0 else float("nan"))


class StopOnInterrupt(keras.callbacks.Callback):
    """Ctrl-C during ``fit``, made safe: the SIGINT handler only sets a flag, and the next batch
    boundary raises ``KeyboardInterrupt`` from Python. Raised by the default handler, the
    interrupt can land inside a compiled training step and surface as a ``SystemError`` from
    the backend (which KerasTuner then records as a failed trial). A second Ctrl-C interrupts
    at once. Outside the main thread the callback does nothing."""

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:  # second Ctrl-C: do not wait for the batch to end
            raise KeyboardInterrupt
        self.requested = True

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def _check(self, *args, **kwargs):
        if self.requested:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = _check

    def restore(self) -> None:
        """Put back the SIGINT handler that was there before training (idempotent)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, logs=None):
        self.restore()
        self._check()


# ------------------------------------------------------------------------------ fitting
def compile_model(model: keras.Model, cfg: TrainConfig) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.lr),
        loss=make_loss(cfg.loss),
        metrics=[DiceScore(hard=False), DiceScore(hard=True)],
        steps_per_execution=cfg.steps_per_execution,
    )


def targets_for(arch: Architecture) -> str:
    """What a network of ``arch`` trains on (:func:`temtool.data.dataset.load_dataset`'s
    ``targets``): binary masks, or the 3-class targets of an instance-aware network."""
    return "boundary" if arch.instance_aware else "mask"


def fit(
    arch: Architecture,
    data: Dataset,
    cfg: TrainConfig,
    on_epoch: Callable | None = None,
    extra_callbacks: list | None = None,
    start_from: keras.Model | None = None,
) -> TrainResult:
    """Train one network on a dataset's train split, selecting the epoch by val hard Dice.
    ``start_from``: a model of the same architecture whose weights to fine-tune; its own val
    hard Dice counts as epoch 0 (``best_epoch`` 0: no epoch beat the starting weights)."""
    cfg.validate()
    if data.targets != targets_for(arch):
        raise TemtoolError(
            f"{data.path}: read with {data.targets!r} targets, but {arch.label()} trains on "
            f"{targets_for(arch)!r} targets (load_dataset(..., targets={targets_for(arch)!r}))"
        )
    x_tr, y_tr = data.arrays("train")
    has_val = bool(data.splits.get("val"))
    x_va, y_va = data.arrays("val") if has_val else (None, None)
    h, w = x_tr.shape[1:3]

    try:
        arch.check_input_size(h, w)
    except ArchitectureError as e:
        raise TemtoolError(f"{data.path}: {e}") from None
    precision = resolve_precision(cfg.precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(cfg.seed)
        model = build_resunet(arch)
        if start_from is not None:
            copy_weights(start_from, model)
        on_device = cfg.augment and augment_on_device(cfg.augment_on)
        trainee = DeviceDihedral(model, square=h == w, seed=cfg.seed) if on_device else model
        compile_model(trainee, cfg)
        feeder = DihedralFeeder(
            x_tr,
            y_tr,
            cfg.batch_size,
            augment=cfg.augment and not on_device,
            seed=cfg.seed,
            workers=max(1, cfg.workers),
            use_multiprocessing=False,
        )
        best = BestWeights("val_hard_dice" if has_val else "hard_dice", cfg.patience)
        callbacks = [best, *(extra_callbacks or [])]
        if on_epoch:
            callbacks.append(EpochReporter(len(x_tr), on_epoch))
        t0 = time.perf_counter()
        val = None
        if has_val:  # fixed order, no augmentation; read per batch when streaming
            val = DihedralFeeder(x_va, y_va, cfg.batch_size, augment=False, shuffle=False)
        if start_from is not None and val is not None:
            start = trainee.evaluate(val, verbose=0, return_dict=True)
            best.start_with(start["hard_dice"], trainee.get_weights())
        interrupt = StopOnInterrupt()
        try:
            hist = trainee.fit(
                feeder,
                epochs=cfg.epochs,
                validation_data=val,
                callbacks=[interrupt, *callbacks],
                verbose=0,
            )
        finally:  # an exception skips on_train_end: restore the handler here too
            interrupt.restore()
        dt = time.perf_counter() - t0
    finally:
        keras.config.set_dtype_policy(previous)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(next(iter(history.values()))) if history else 0
    return TrainResult(
        model=model,
        arch=arch,
        history=history,
        best_epoch=best.best_epoch + 1,
        best_val_hard_dice=best.best,
        epochs_run=epochs_run,
        train_time_s=dt,
        images_per_s=epochs_run * len(x_tr) / dt if dt > 0 else float("nan"),
        precision=precision,
        seed=cfg.seed,
    )


def train(
    arch: Architecture,
    data: str | Dataset,
    cfg: TrainConfig,
    repeats: int = 1,
    pixel_size_nm: float | None = None,
    on_epoch: Callable | None = None,
    on_repeat: Callable | None = None,
    start_from: keras.Model | None = None,
    test_data: Dataset | None = None,
    segmenter: Callable[[keras.Model], Segmenter] | None = None,
) -> tuple[TrainResult, list[TrainResult], Dataset]:
    """Train ``repeats`` seeds (``cfg.seed``, ``cfg.seed + 1``, ...). Returns the best run (by
    validation hard Dice), all runs, and the dataset. Fine-tuning (:mod:`temtool.study.finetune`)
    passes the weights to ``start_from``, the dataset to score the test split on
    (``test_data``, default ``data``) and how a trained model segments (``segmenter``)."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ParameterError("repeats", f"must be an integer >= 1, got {repeats}")
    cfg.validate()
    ds = (
        data
        if isinstance(data, Dataset)
        else load_dataset(data, pixel_size_nm=pixel_size_nm, targets=targets_for(arch))
    )
    test_ds = test_data or ds
    if segmenter is None:

        def segmenter(model):
            return Segmenter.for_model(
                model, arch, ds.pixel_size_nm, batch_size=cfg.batch_size, runtime="keras"
            )

    runs = []
    for r in range(repeats):
        c = cfg.with_seed(cfg.seed + r)
        if on_repeat:
            on_repeat(r, c.seed)
        run = fit(arch, ds, c, on_epoch=on_epoch, start_from=start_from)
        if test_ds.splits.get("test"):  # reported, never used to choose anything
            run.test = protocol.model_scores(segmenter(run.model), test_ds, "test")
        runs.append(run)
    best = max(runs, key=lambda t: t.best_val_hard_dice)
    return best, runs, ds


def _test_metrics(best: TrainResult, runs: list[TrainResult]) -> dict:
    """Test-split hard Dice over seeds (mean, sd, 95% interval), of the kept seed, per class."""
    if any(r.test is None for r in runs):
        return {}
    stems = best.test.get("per_image", {})
    out = {
        "test_hard_dice": protocol.seed_summary([r.test["dice"] for r in runs]),
        "test_hard_dice_kept": best.test["dice"],
        # each test image's Dice, the mean over seeds: what the paired intervals compare
        "test_dice_per_image": {s: float(np.mean([r.test["per_image"][s] for r in runs])) for s in stems},
    }
    if all("objects" in r.test for r in runs):  # instance truth: object F1 over seeds, and the kept seed's
        out["test_object_f1"] = protocol.seed_summary([r.test["objects"]["f1"] for r in runs])
        out["test_objects_kept"] = best.test["objects"]
    classes = sorted({c for r in runs for c in r.test.get("dice_by_class", {})})
    if classes:
        out["test_dice_by_class"] = {
            c: protocol.seed_summary([r.test.get("dice_by_class", {}).get(c) for r in runs]) for c in classes
        }
    return out


def metrics_from_runs(best: TrainResult, runs: list[TrainResult]) -> dict:
    """The metrics a bundle records (see :mod:`temtool.study.protocol`): test-split hard Dice over
    seeds with its 95% interval and per class, the kept seed (chosen on validation), every
    seed, and the validation scores that chose epochs and seeds."""
    vals = np.array([r.best_val_hard_dice for r in runs])
    return {
        **_test_metrics(best, runs),
        "val_hard_dice": best.best_val_hard_dice,
        "best_epoch": best.best_epoch,
        "epochs_run": best.epochs_run,
        "train_time_s": sum(r.train_time_s for r in runs),
        "images_per_s": float(np.mean([r.images_per_s for r in runs])),
        "repeats": [
            {
                "seed": r.seed,
                "val_hard_dice": r.best_val_hard_dice,
                "val_soft_dice": max(r.history.get("val_soft_dice", [float("nan")])),
                "test_hard_dice": r.test["dice"] if r.test else None,
                "best_epoch": r.best_epoch,
                "epochs_run": r.epochs_run,
                "images_per_s": r.images_per_s,
            }
            for r in runs
        ],
        "val_hard_dice_mean": float(vals.mean()),
        "val_hard_dice_std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
    }


def save_training(
    out: str | os.PathLike,
    best: TrainResult,
    runs: list[TrainResult],
    ds: Dataset,
    cfg: TrainConfig,
    extra: dict | None = None,
    baselines: dict | None = None,
) -> Path:
    """Write the bundle of a training (the best seed's model, every seed's metrics, and the
    classical baselines on the same test split: given, or computed here)."""

    if baselines is None and ds.splits.get("test"):
        baselines = baseline_summary(protocol.baselines(ds, "test"))

    return write_bundle(
        out,
        best.model,
        best.arch,
        pixel_size_nm=ds.pixel_size_nm,
        regime=ds.regime,
        data=ds.summary(),
        training={**dataclasses.asdict(cfg), "precision_used": best.precision, "seed_kept": best.seed},
        metrics={**metrics_from_runs(best, runs), **({"baselines": baselines} if baselines else {})},
        history=best.history,
        extra=extra,
    )


def baseline_summary(baselines: dict) -> dict:
    """:func:`temtool.study.protocol.baselines` with each image's Dice (for the paired
    intervals) but without the other per-image scores (for bundles, tables)."""
    return {name: {k: v for k, v in b.items() if k != "per_image_scores"} for name, b in baselines.items()}


def default_bundle_path(data: str | os.PathLike, arch: Architecture) -> Path:
    """``models/DATA-dDEPTH-pPOOLS-fFILTERS``."""

    return (
        Path("models")
        / f"{dataset_name(data)}-d{arch.depth}-p{'x'.join(map(str, arch.pools))}-f{arch.filters[0]}"
    )


def train_and_save(
    arch: Architecture, data: str | Dataset, cfg: TrainConfig, out: str | os.PathLike | None = None, **kw
) -> tuple[dict, list[TrainResult]]:
    """``temtool train``: :func:`train` (``kw``: repeats, pixel_size_nm, on_epoch, on_repeat),
    write the bundle (default :func:`default_bundle_path`), remember it as the latest model.
    Returns the saved bundle's metadata and the runs."""

    out = Path(out) if out else default_bundle_path(data if isinstance(data, str) else data.path, arch)
    check_writable(out)  # before hours of training, not after
    best, runs, ds = train(arch, data, cfg, **kw)
    path = save_training(out, best, runs, ds, cfg)
    remember_last_model(path)
    return {**load_bundle(path).metadata, "path": str(path)}, runs
