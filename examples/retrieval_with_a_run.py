"""Image retrieval with a trained run: embed a folder of images, query nearest neighbours, save a grid.

Give it the folder `kerasml run` printed and any folder of images (jpg, png, ...; in class
subfolders or not). It loads the run's model (``checkpoints/best.keras``), prepares each image
as the run's evaluation does (shorter side to ``data.image_size``, centre crop, the run's
normalisation), embeds them all, finds the nearest neighbours of a few query images
(L2-normalised embeddings, Euclidean distance: what the run's Recall@K measures), prints them
and draws them as a PNG grid. With class subfolders, a neighbour of the query's class is framed
green, another red.

    kerasml run specs/quickstart.toml                  # prints runs/quickstart-<timestamp>
    python examples/retrieval_with_a_run.py runs/quickstart-<timestamp> my_images/ --out retrieval.png
    python examples/retrieval_with_a_run.py RUN_DIR my_images/ --query my_images/cat/1.jpg --k 8

Runs on any backend (``KERAS_BACKEND``), the one the run was trained with or another.
"""

import argparse
from pathlib import Path

import keras
import numpy as np

import kerasml
from kerasml.data.ingestion import decode_image, fit_image
from kerasml.data.sources.folder import IMAGE_SUFFIXES
from kerasml.experiment import normalization_for
from kerasml.preprocessing import get_normalization
from kerasml.spec import load_spec


def load_run(run_dir, checkpoint="best"):
    """The run's resolved spec and its saved model."""
    run_dir = Path(run_dir)
    spec = load_spec(run_dir / "spec.toml", check_files=False)
    model = keras.saving.load_model(run_dir / "checkpoints" / f"{checkpoint}.keras")
    return spec, model


def read_images(folder, size):
    """Every image under ``folder``: ``(paths, uint8 [N, size, size, 3], class of each or None)``."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    kept, images = [], []
    for path in paths:
        image = decode_image(path.read_bytes())
        if image is None:
            print(f"skipped {path}: not a readable image")
            continue
        kept.append(path)
        images.append(fit_image(image, size, "crop"))
    if len(kept) < 2:
        raise SystemExit(f"{folder} holds {len(kept)} readable image(s): retrieval needs at least 2.")
    labels = [p.parent.relative_to(folder).as_posix() if p.parent != folder else None for p in kept]
    return kept, np.stack(images), labels


def embed(model, spec, images, batch_size=64):
    """L2-normalised embeddings of uint8 images, prepared with the run's normalisation."""
    x = get_normalization(normalization_for(spec))(images)
    z = np.asarray(keras.ops.convert_to_numpy(model.predict(x, batch_size=batch_size, verbose=0)))
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def draw(path, images, labels, queries, neighbours):
    """A PNG grid: one row per query (first column) and its neighbours, nearest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = neighbours.shape[1]
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.5 * (k + 1), 1.6 * len(queries)), squeeze=False)
    for row, query in enumerate(queries):
        for col, index in enumerate([query, *neighbours[row]]):
            ax = axes[row, col]
            ax.imshow(images[index])
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black"
            if col and labels[query] is not None:
                colour = "green" if labels[index] == labels[query] else "red"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            if row == 0:
                ax.set_title("query" if col == 0 else f"#{col}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the run folder that `kerasml run` printed")
    parser.add_argument("images", type=Path, help="a folder of images (class subfolders optional)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which saved model")
    parser.add_argument("--query", type=Path, action="append", help="a query image of the folder (repeatable)")
    parser.add_argument("--queries", type=int, default=4, help="random queries when no --query (default: 4)")
    parser.add_argument("--k", type=int, default=5, help="neighbours per query (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random queries (default: 0)")
    parser.add_argument("--out", type=Path, default=Path("retrieval.png"), help="the PNG to write")
    args = parser.parse_args(argv)

    spec, model = load_run(args.run_dir, args.checkpoint)
    paths, images, labels = read_images(args.images, spec.data.image_size)
    z = embed(model, spec, images)
    k = min(args.k, len(paths) - 1)
    if args.query:
        where = {p.resolve(): i for i, p in enumerate(paths)}
        missing = [str(q) for q in args.query if q.resolve() not in where]
        if missing:
            raise SystemExit(f"--query {', '.join(missing)}: not an image of {args.images}.")
        queries = [where[q.resolve()] for q in args.query]
    else:
        rng = np.random.default_rng(args.seed)
        queries = sorted(rng.choice(len(paths), size=min(args.queries, len(paths)), replace=False).tolist())
    neighbours = kerasml.evaluation.nearest_neighbors(z, k)[queries]
    print(f"{len(paths)} images embedded with {args.run_dir / 'checkpoints' / (args.checkpoint + '.keras')}")
    for query, found in zip(queries, neighbours, strict=True):
        print(f"query {paths[query]}:")
        for rank, index in enumerate(found, start=1):
            distance = float(np.linalg.norm(z[index] - z[query]))
            print(f"  #{rank} {paths[index]}  (distance {distance:.3f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(args.out, images, labels, queries, neighbours)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
