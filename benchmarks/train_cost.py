"""What one training step of the study's networks computes and moves, per image: the
floating-point operations and memory traffic of Keras's own compiled train step as XLA
counts them, the activations one forward pass writes, and the ceilings these put on
images/s for a GPU's memory bandwidth, beside a measured rate (issue 13, item 5: where
does the step's time go, and how far is 3,000 images/s).

    KERAS_BACKEND=jax python benchmarks/train_cost.py [--size 512] [--batch 32] [--networks 2:2,2]
        [--bandwidth-tb-s 3.35 4.8] [--measured 1177] [--without-batchnorm] [--json out.json]

``--without-batchnorm`` also reads the step of the same network with its batch normalisations
replaced by the identity: what batch norm costs, for the profile (not a network to train).

Needs the JAX backend (XLA's cost analysis of ``jax.jit(model.train_step)``). The step is
compiled for the device at hand and its cost read; nothing runs at full batch size (one step
on two images of zeros builds the optimizer's and metrics' state). On a CPU the figures
come from XLA's CPU compiler, whose fusions differ from the GPU's, so the traffic is an
estimate; the activation sizes do not depend on the device. The default bandwidths are one
H100 SXM's and one H200's (3.35 and 4.8 TB/s HBM).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _machine import report  # noqa: E402

from temtool.model.architecture import Architecture, build_resunet, count_params  # noqa: E402
from temtool.study.train import TrainConfig, compile_model, gpu_info  # noqa: E402


class _Identity(keras.layers.Layer):
    """What stands in for a batch normalisation in :func:`without_batchnorm`: writes nothing."""

    def call(self, x, mask=None):
        return x


def without_batchnorm(model: keras.Model) -> keras.Model:
    """The same network with every batch normalisation replaced by the identity: not a
    network to train, only the step's cost without batch norm, for the profile."""

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return _Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def activation_bytes(model: keras.Model, itemsize: int) -> tuple[int, int]:
    """Bytes of the outputs one forward pass of ``model`` (built for a fixed image size)
    writes for one image (every layer's output, input and identities excluded), and the
    number of layers that write one."""
    total, n = 0, 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, _Identity)):
            continue
        for out in keras.tree.flatten(layer.output):
            total += int(np.prod(out.shape[1:])) * itemsize
            n += 1
    return total, n


def step_cost(arch: Architecture, precision: str, size: int, batch: int, batchnorm: bool = True) -> dict:
    """XLA's cost analysis of Keras's train step (forward, loss, gradients, Adam update,
    metrics) for one batch, per image; ``batchnorm=False``: of the network without its batch
    normalisations (:func:`without_batchnorm`)."""
    import jax

    keras.config.set_dtype_policy(precision)
    try:
        model = build_resunet(arch, input_shape=(size, size))
        if not batchnorm:
            model = without_batchnorm(model)
        compile_model(model, TrainConfig(batch_size=batch, precision=precision))
        x = np.zeros((2, size, size, 1), np.float32)
        model.fit(
            x, np.zeros((2, size, size), np.uint8), batch_size=2, epochs=1, verbose=0
        )  # builds all state
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )
        data = (
            jax.ShapeDtypeStruct((batch, size, size, 1), np.float32),
            jax.ShapeDtypeStruct((batch, size, size), np.uint8),
        )
        compiled = jax.jit(model.train_step).lower(state, data).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        hlo = compiled.as_text()
        itemsize = 2 if precision.startswith("mixed") else 4
        act, layers = activation_bytes(model, itemsize)
        return {
            "network": arch.label(),
            "params": count_params(arch),
            "precision": precision,
            "batchnorm": batchnorm,
            "gflop_per_image": float(cost.get("flops", 0.0)) / batch / 1e9,
            "mb_accessed_per_image": float(cost.get("bytes accessed", 0.0)) / batch / 1e6,
            "forward_activations_mb_per_image": act / 1e6,
            "layers_writing_activations": layers,
            # XLA's own convolutions (CPU), or the cuDNN calls they become on a GPU
            "convolutions_in_step": hlo.count(" convolution(")
            + hlo.count('custom_call_target="__cudnn$conv'),
            "fusions_in_step": hlo.count(" fusion("),
        }
    finally:
        keras.config.set_dtype_policy("float32")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--networks", default="2:2,2", help="e.g. '2:2,2;4:2,2,2,2'")
    ap.add_argument("--precisions", default="float32,mixed_bfloat16")
    ap.add_argument("--bandwidth-tb-s", type=float, nargs="+", default=[3.35, 4.8])
    ap.add_argument("--measured", type=float, default=None, help="a measured images/s to set beside")
    ap.add_argument(
        "--without-batchnorm", action="store_true", help="also the step without batch norm (for the profile)"
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if keras.backend.backend() != "jax":
        sys.exit("train_cost.py reads XLA's cost analysis: run it with KERAS_BACKEND=jax")
    gpu = gpu_info()
    print(f"{args.size}x{args.size}, batch {args.batch}; compiled for {gpu['name'] if gpu else 'CPU'}")
    rows = []
    for spec in args.networks.split(";"):
        depth, pools = spec.split(":")
        arch = Architecture.create(depth=int(depth), pool=pools, filters=4)
        for precision, batchnorm in [
            (p, bn) for p in args.precisions.split(",") for bn in (True, False)[: 1 + args.without_batchnorm]
        ]:
            r = step_cost(arch, precision, args.size, args.batch, batchnorm)
            r["ceiling_img_s_at_bandwidth"] = {
                f"{bw:g} TB/s": bw * 1e12 / (r["mb_accessed_per_image"] * 1e6) for bw in args.bandwidth_tb_s
            }
            rows.append(r)
            ceilings = ", ".join(f"{v:,.0f} img/s at {k}" for k, v in r["ceiling_img_s_at_bandwidth"].items())
            print(
                f"{r['network'] + ('' if batchnorm else ' no BN'):30s} {precision:15s} "
                f"{r['gflop_per_image']:.2f} GFLOP/image, "
                f"{r['mb_accessed_per_image']:.0f} MB accessed/image (forward activations "
                f"{r['forward_activations_mb_per_image']:.1f} MB, "
                f"{r['layers_writing_activations']} layers); "
                f"{r['convolutions_in_step']} convolutions, {r['fusions_in_step']} fusions; "
                f"memory-bound ceiling {ceilings}",
                flush=True,
            )
            if args.measured and batchnorm:  # the measured rate is the network's as built
                mb = r["mb_accessed_per_image"]
                print(
                    f"  at the measured {args.measured:,.0f} img/s: "
                    f"{args.measured * mb / 1e6:.2f} TB/s moved, "
                    f"{args.measured * r['gflop_per_image'] / 1e3:.2f} TFLOP/s computed"
                )
    report(args.json, rows=rows, gpu=gpu, size=args.size, batch=args.batch, measured_img_s=args.measured)


if __name__ == "__main__":
    main()
