"""Where each dataset's files are: the official URLs (:data:`REMOTES`) and known copies (:data:`MIRRORS`).

Hosts move. Every official URL says when it was last known to work (``Remote.last_worked``,
shown by ``kerasml download``), and one known to be dead says so (``Remote.offline``):
``kerasml download`` then prints :func:`offline_notice` (the copies and the layout of each)
instead of trying it. ``docs/datasets.md`` explains the same for people.
"""

from dataclasses import dataclass

__all__ = ["MIRRORS", "REMOTES", "Mirror", "Remote", "offline_notice"]


@dataclass(frozen=True)
class Remote:
    """One file of a dataset: its name, URL, published checksum (if any) and when the URL last worked.

    Attributes:
        filename: the file name written under the target folder.
        url: the official URL (override with ``--url``).
        md5: the published MD5 hex digest, or ``None`` if unknown.
        sha256: the published SHA-256 hex digest, or ``None`` if unknown.
        checksum_source: where the checksum is published (for the record).
        last_worked: when the URL was last known to serve the file, and who said so
            (``"2026-02 (lenscloth/RKD#24)"``); shown by ``kerasml download``.
        offline: why the URL is known not to work (``""`` while it does): ``kerasml download``
            then says where the files are now instead of trying it (``--url`` still tries any URL).
    """

    filename: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    checksum_source: str = ""
    last_worked: str = "unknown"
    offline: str = ""


@dataclass(frozen=True)
class Mirror:
    """A copy of a dataset somewhere other than its official host.

    Attributes:
        name: who hosts it.
        where: its URL or page.
        layout: what it holds (the release and its file layout).
        get: how to get it (a ``kerasml download ... --url`` command when kerasml can fetch it).
        reported: when and where it was reported to work (kerasml cannot check mirrors itself).
    """

    name: str
    where: str
    layout: str
    get: str
    reported: str


_CARS_OFFLINE = (
    "its official host, ai.stanford.edu/~jkrause/, has returned HTTP 404 since 2023 (pytorch/vision#7545, "
    "tensorflow/datasets#4932 and #5053)"
)

#: The official files of each dataset. Hosts move: override a URL with ``--url``.
REMOTES = {
    "cub": (
        Remote(
            "CUB_200_2011.tgz",
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
            md5="97eceeb196236b17998738112f37df78",
            checksum_source="tgz_md5 of the CUB loaders TDeVries/cub2011_dataset and pytorch-metric-learning",
            last_worked="2026-02 (the Caltech record reported available in lenscloth/RKD#24)",
        ),
    ),
    "cars196": (
        Remote(
            "car_ims.tgz",
            "http://ai.stanford.edu/~jkrause/car196/car_ims.tgz",
            last_worked="2023-04 (before pytorch/vision#7545)",
            offline=_CARS_OFFLINE,
        ),
        Remote(
            "cars_annos.mat",
            "http://ai.stanford.edu/~jkrause/car196/cars_annos.mat",
            last_worked="2023-04 (before pytorch/vision#7545)",
            offline=_CARS_OFFLINE,
        ),
    ),
    "sop": (
        Remote(
            "Stanford_Online_Products.zip",
            "http://ftp.cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
            md5="7f73d41a2f44250d4779881525aea32e",
            checksum_source="zip_md5 of the SOP loaders of pytorch-metric-learning and others",
            last_worked="2018-06 (this HTTP address confirmed in chainer/chainercv#643; no later report)",
        ),
    ),
}

#: Where a dataset whose official files are offline can be found now (see docs/datasets.md).
MIRRORS = {
    "cars196": (
        Mirror(
            "Stanford CVGL FTP server (the host of Stanford Online Products)",
            "http://ftp.cs.stanford.edu/cs/cvgl/CARS196.zip",
            "one zip, the original release: cars_annos.mat and car_ims/ (16,185 images)",
            "kerasml download cars196 --url http://ftp.cs.stanford.edu/cs/cvgl/CARS196.zip",
            "named by public dataset-preparation code (date unknown); not checked by kerasml",
        ),
        Mirror(
            "Kaggle, dataset jessicali9530/stanford-cars-dataset",
            "https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset",
            "the train/test release: cars_train/cars_train/ and cars_test/cars_test/ (some versions also the "
            "devkit: cars_meta.mat, cars_train_annos.mat); add what is missing from the next entry, at least "
            "cars_test_annos_withlabels.mat",
            "a browser or the kaggle CLI (a Kaggle account); put the zip, or what it holds, under data/raw",
            "2024-01 (tensorflow/datasets#4932), 2023-06 (pytorch/vision#7545)",
        ),
        Mirror(
            "GitHub attachments of pytorch/vision#7545",
            "https://github.com/pytorch/vision/issues/7545",
            "car_devkit.tgz (devkit/cars_meta.mat, cars_train_annos.mat, ...) and the test labels "
            "cars_test_annos_withlabels.mat, for the train/test release",
            "download them from the issue's comments into the same folder",
            "2025-04 (Visual-AI/PromptCCD#11 points there)",
        ),
    ),
}


def offline_notice(name):
    """What ``kerasml download NAME`` says when the official files of ``name`` are offline.

    Args:
        name: a dataset of :data:`REMOTES`.

    Returns:
        The notice (several lines), or ``""`` when its official files are not known to be offline.
    """
    dead = [remote for remote in REMOTES.get(name, ()) if remote.offline]
    if not dead:
        return ""
    files = ", ".join(remote.filename for remote in dead)
    lines = [
        f"Cannot download {name}: {dead[0].offline}. Its files ({files}) last worked {dead[0].last_worked}; "
        f"kerasml does not try them. Get the files from a copy (`kerasml ingest {name}` reads each layout below):"
    ]
    for number, mirror in enumerate(MIRRORS.get(name, ()), start=1):
        lines.append(f"  {number}. {mirror.name}: {mirror.where}")
        lines.append(f"     holds: {mirror.layout}")
        lines.append(f"     get it: {mirror.get}")
        lines.append(f"     reported working: {mirror.reported}")
    lines.append(
        f"Then: `kerasml ingest {name} --from data/raw --classes N` (--from: the folder or archive holding the "
        "files; docs/datasets.md has the details)."
    )
    return "\n".join(lines)
