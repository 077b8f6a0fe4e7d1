"""Input pipeline throughput next to a CNN training step, measured side by side in one run.

What is measured
----------------
1. A store of procedural images at 256 px (``kerasml ingest procedural``, written to a
   temporary folder).
2. **Stream**: batches/s of ``kerasml.data.TrainStream`` (N-pair sampler, HDF5 read,
   random resized crop to 224 px, flip) as ``model.fit`` consumes them, for each of
   ``--dtypes``: ``float32`` (ImageNet normalisation in the workers) and ``uint8`` (the pixels;
   4x fewer bytes to pickle between processes and to copy to a device; the model normalises,
   `kerasml.layers.InputNormalization`), with 0 workers (built in the training process), 1
   and 2 worker *processes* (``use_multiprocessing=True``, started with ``--start-method``,
   ``spawn`` by default as on Windows). The consumer is a trivial model (its input
   normalisation for uint8, global average pool, a dense unit), so its steps/s is the stream's
   rate. Worker start-up is excluded (the first ``--warmup`` batches).
3. **Model step**: steps/s of a training step (forward, N-pair loss, backward, Adam) of a
   CNN backbone + 128-d embedding at 224 px batch 32, fed (a) from in-memory NumPy arrays
   and (b) from the stream with 2 worker processes.

Targets: the 2-worker stream delivers >= 3x the model's steps/s, and a stream-fed step
takes <= 1.05x an in-memory one.

Usage: ``KERAS_BACKEND=jax python benchmarks/input_pipeline.py [--backbone googlenet]``;
``--no-model`` measures the streams only.
"""

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import _harness as harness

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Timer:
    """A Keras callback that records the time of every training batch end."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter())

        return Timer()


def _rate(times, warmup):
    """Batches/s and median ms/batch after ``warmup`` batches."""
    gaps = [b - a for a, b in zip(times[warmup:], times[warmup + 1 :], strict=False)]
    if not gaps:
        return float("nan"), float("nan")
    return len(gaps) / sum(gaps), 1000 * statistics.median(gaps)


def _consumer(image_size, dtype="float32"):
    import keras

    from kerasml.layers import InputNormalization

    normalise = [InputNormalization("imagenet")] if dtype == "uint8" else []
    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3), dtype=dtype),
            *normalise,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mae")
    return model


def _backbone(name, image_size):
    import keras

    try:
        from kerasml.models import backbones

        features = backbones.get(name, input_shape=(image_size, image_size, 3))
        label = f"kerasml.models.backbones.get({name!r})"
    except (ImportError, AttributeError) as error:  # the backbone module is not there yet
        features = keras.applications.MobileNetV2(
            weights=None, include_top=False, pooling="avg", input_shape=(image_size, image_size, 3)
        )
        label = f"keras.applications.MobileNetV2(weights=None) (no kerasml backbone: {error})"
    inputs = keras.Input((image_size, image_size, 3))
    model = keras.Model(inputs, keras.layers.Dense(128)(features(inputs)))
    from kerasml.losses import NPairLoss

    model.compile(optimizer="adam", loss=NPairLoss(l2_reg=0.002))
    return model, label


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="googlenet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--store-size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=64)
    parser.add_argument("--images-per-class", type=int, default=8)
    parser.add_argument("--stream-batches", type=int, default=60, help="batches timed per stream configuration")
    parser.add_argument("--model-steps", type=int, default=8, help="training steps timed per feeding")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--start-method", default="spawn", choices=("spawn", "fork", "forkserver"))
    parser.add_argument("--dtypes", type=harness.csv_list(), default=["float32", "uint8"], help="stream dtypes")
    parser.add_argument("--no-model", action="store_true", help="measure the streams only")
    args = parser.parse_args()
    multiprocessing.set_start_method(args.start_method, force=True)

    import keras
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from kerasml import data

    console = Console()
    machine = harness.machine_facts(("keras", "tensorflow", "torch", "jax", "numpy", "h5py", "opencv-python-headless"))
    console.print(
        f"kerasml input pipeline benchmark: backend {keras.backend.backend()}, {os.cpu_count()} CPUs, "
        f"batch {args.batch_size}, {args.image_size} px from a {args.store_size} px store, "
        f"start method {args.start_method}",
        highlight=False,
    )
    folder = Path(tempfile.mkdtemp(prefix="kerasml-bench-"))
    store_path = folder / "procedural.h5"
    started = time.perf_counter()
    data.ingest(
        "procedural",
        store_path,
        classes=args.classes,
        image_size=args.store_size,
        quiet=True,
        source_options={"images_per_class": args.images_per_class},
    )
    console.print(f"store: {store_path} ({time.perf_counter() - started:.1f} s to ingest)", highlight=False)

    def stream(workers, batches, seed=0, dtype="float32"):
        return data.TrainStream(
            store_path,
            "npair",
            batch_size=args.batch_size,
            image_size=args.image_size,
            seed=seed,
            dtype=dtype,
            sampler_options={"batches_per_epoch": batches},
            workers=max(workers, 1),
            use_multiprocessing=workers > 0,
        )

    rows = []
    stream_rates = {}
    for workers in (0, 1, 2):
        for dtype in args.dtypes:  # interleaved: the machine's load hits both alike
            timer = _Timer()
            model = _consumer(args.image_size, dtype)
            source = stream(workers, args.stream_batches + args.warmup, dtype=dtype)
            megabytes = source[0][0].nbytes / 2**20
            model.fit(source, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
            rate, ms = _rate(timer.times, args.warmup)
            stream_rates[workers, dtype] = rate
            label = "in the training process" if workers == 0 else f"{workers} worker process(es)"
            rows.append((f"stream {dtype} ({megabytes:.1f} MiB/batch), {label}", rate, ms))
            console.print(f"  {dtype} stream with {workers} worker(s): {rate:.1f} batches/s", highlight=False)
    if args.no_model:
        table = Table(title=f"input pipeline ({keras.backend.backend()}, {os.cpu_count()} CPUs)")
        for column in ("measurement", "batches/s", "median ms"):
            table.add_column(column, justify="right" if column != "measurement" else "left")
        for name, rate, ms in rows:
            table.add_row(name, f"{rate:.2f}", f"{ms:.1f}")
        console.print(table)
        load = harness.loadavg()
        console.print("Load average at the end: " + (", ".join(f"{x:.2f}" for x in load) if load else "n/a"))
        return

    # the training step: in-memory arrays, then the 2-worker stream
    model, label = _backbone(args.backbone, args.image_size)
    steps = args.model_steps + args.warmup
    source = stream(0, steps, seed=1)
    batches = [source[i] for i in range(steps)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    timer = _Timer()
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    memory_rate, memory_ms = _rate(timer.times, args.warmup)
    rows.append((f"train step, in-memory arrays ({label})", memory_rate, memory_ms))
    console.print(f"  train step from memory: {memory_rate:.2f} steps/s", highlight=False)
    timer = _Timer()
    model.fit(stream(2, steps, seed=2), epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    fed_rate, fed_ms = _rate(timer.times, args.warmup)
    rows.append(("train step, fed by the 2-worker stream", fed_rate, fed_ms))

    table = Table(title=f"input pipeline vs training step ({keras.backend.backend()}, {os.cpu_count()} CPUs)")
    for column in ("measurement", "per second", "median ms", "ratio"):
        table.add_column(column, justify="right" if column != "measurement" else "left")
    for name, rate, ms in rows:
        table.add_row(name, f"{rate:.2f}", f"{ms:.1f}", "")
    ahead = stream_rates[2, args.dtypes[0]] / memory_rate
    slower = fed_ms / memory_ms
    table.add_row("stream (2 workers) / model steps per second", "", "", f"{ahead:.1f}x (target >= 3x)")
    table.add_row("stream-fed step / in-memory step (median time)", "", "", f"{slower:.3f}x (target <= 1.05x)")
    console.print(table)
    verdict = "met" if ahead >= 3 and slower <= 1.05 else "NOT met"
    console.print(f"targets {verdict}; model: {label}", highlight=False)
    load = harness.loadavg()
    harness.print_lines(console, ["[bold]Machine[/bold]"], indent="")
    harness.print_lines(console, [harness.escape(line) for line in harness.machine_lines(machine)])
    harness.print_lines(
        console, ["Load average at the end (1/5/15 min): " + (", ".join(f"{x:.2f}" for x in load) if load else "n/a")]
    )


if __name__ == "__main__":
    main()
