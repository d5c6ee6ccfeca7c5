"""Training throughput of the study's networks (images/s), model alone and end to end.

- model alone: ``model.fit`` on in-memory arrays (no augmentation), after a warm-up epoch;
- end to end: temtool's own path, the dihedral feeder with on-the-fly augmentation on the host;
- end to end, device: the same augmentation inside the compiled step (``DeviceDihedral``);
- epoch time of one end-to-end epoch over ``--n`` images.

    python benchmarks/train_throughput.py [--size 512] [--batch 32] [--n 256] [--out r.json]

Runs on whatever Keras backend and device it finds (KERAS_BACKEND selects the backend).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

from temtool.model.architecture import Architecture, build_resunet, count_params  # noqa: E402
from temtool.study.train import DeviceDihedral, DihedralFeeder, TrainConfig, compile_model, gpu_info  # noqa: E402

NETWORKS = [("2", "2,2"), ("2", "8,8"), ("4", "2,2,2,2")]


def run(arch, precision, x, y, batch, spe, epochs, workers):
    keras.config.set_dtype_policy(precision)
    try:
        model = build_resunet(arch, input_shape=x.shape[1:3])
        compile_model(model, TrainConfig(batch_size=batch, precision=precision, steps_per_execution=spe))
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile + warm-up
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
        alone = epochs * len(x) / (time.perf_counter() - t0)
        feeder = DihedralFeeder(x, y, batch, seed=0, workers=workers, use_multiprocessing=False)
        model.fit(feeder, epochs=1, verbose=0)
        t0 = time.perf_counter()
        model.fit(feeder, epochs=epochs, verbose=0)
        dt = time.perf_counter() - t0
        wrapped = DeviceDihedral(model, square=x.shape[1] == x.shape[2])
        compile_model(wrapped, TrainConfig(batch_size=batch, precision=precision, steps_per_execution=spe))
        plain = DihedralFeeder(x, y, batch, augment=False, seed=0, workers=workers, use_multiprocessing=False)
        wrapped.fit(plain, epochs=1, verbose=0)
        t0 = time.perf_counter()
        wrapped.fit(plain, epochs=epochs, verbose=0)
        device = epochs * len(x) / (time.perf_counter() - t0)
        return alone, epochs * len(x) / dt, dt / epochs, device
    finally:
        keras.config.set_dtype_policy("float32")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=256, help="images per epoch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--spe", type=int, nargs="+", default=[1], help="steps_per_execution values")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--networks", default="all", help="'all' or e.g. 2:2,2")
    ap.add_argument("--precisions", default="float32,mixed")
    ap.add_argument("--out")
    args = ap.parse_args()
    gpu = gpu_info()
    mixed = "mixed_bfloat16" if gpu else "mixed_bfloat16"
    precisions = [mixed if p == "mixed" else p for p in args.precisions.split(",")]
    nets = NETWORKS if args.networks == "all" else [tuple(n.split(":")) for n in args.networks.split(";")]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.size, args.size, 1)).astype("float32")
    y = (rng.random((args.n, args.size, args.size)) > 0.7).astype("uint8")
    info = {
        "machine": machine(),
        "backend": keras.backend.backend(),
        "gpu": gpu,
        "size": args.size,
        "batch": args.batch,
        "rows": [],
    }
    print(
        f"backend {info['backend']}, device {gpu['name'] if gpu else 'CPU'}, "
        f"{args.size}x{args.size}, batch {args.batch}"
    )
    for depth, pools in nets:
        arch = Architecture.create(depth=int(depth), pool=pools, filters=4)
        for precision in precisions:
            for spe in args.spe:
                alone, e2e, epoch_s, device = run(
                    arch, precision, x, y, args.batch, spe, args.epochs, args.workers
                )
                row = {
                    "network": arch.label(),
                    "params": count_params(arch),
                    "precision": precision,
                    "steps_per_execution": spe,
                    "model_img_s": alone,
                    "end_to_end_img_s": e2e,
                    "end_to_end_device_aug_img_s": device,
                    "epoch_s": epoch_s,
                }
                info["rows"].append(row)
                print(
                    f"{arch.label():24s} {precision:15s} spe={spe:<3d} model {alone:8.1f} img/s   "
                    f"end-to-end {e2e:8.1f} img/s (device aug {device:8.1f})   "
                    f"epoch({args.n} img) {epoch_s:6.2f} s",
                    flush=True,
                )
    print(json.dumps(info["machine"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
