"""Training and validation data as megatron-core ``GPTDataset``s, from the data manifest.

The manifest (``results/data/manifest.json``, format in docs/pipeline.md) lists the train and
held-out Megatron indexed datasets with their blend weights. :func:`build_datasets` hands them
to megatron-core's ``BlendedMegatronDatasetBuilder`` (one blend per split), which shuffles
documents and cuts fixed-length samples deterministically from the seed: sample ``i`` is the
same on every run, so the training position is simply a sample index (see
:class:`SampleSchedule`), and a resumed run skips straight to it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json


class ManifestTokenizer:
    """The few tokenizer facts megatron-core's GPT datasets use (vocabulary size, EOD, no pad).

    The data stage has already tokenized everything; the datasets only need the EOD id (for
    masks and position ids) and to know that no pad token exists.
    """

    def __init__(self, vocab_size: int, eod_id: int):
        self.vocab_size = int(vocab_size)
        self.eod = int(eod_id)
        self.eos = int(eod_id)
        self.pad = -1

    @property
    def unique_identifiers(self) -> OrderedDict:
        return OrderedDict(
            {"class": "archscale.ManifestTokenizer", "vocab_size": self.vocab_size, "eod": self.eod}
        )


@dataclass(frozen=True)
class Manifest:
    path: Path
    vocab_size: int
    eod_id: int
    dtype: str
    train: tuple[list[str], list[float]]
    valid: tuple[list[str], list[float]]
    seed: int

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        data = read_json(path)
        try:
            out = cls(
                path=path,
                vocab_size=int(data["vocab_size"]),
                eod_id=int(data["eod_id"]),
                dtype=str(data.get("dtype", "uint16")),
                train=(list(data["train"]["prefixes"]), [float(w) for w in data["train"]["weights"]]),
                valid=(list(data["valid"]["prefixes"]), [float(w) for w in data["valid"]["weights"]]),
                seed=int(data.get("seed", 0)),
            )
        except KeyError as exc:
            raise ValueError(f"{path}: manifest lacks key {exc}; see docs/pipeline.md for the format") from None
        for split, (prefixes, weights) in (("train", out.train), ("valid", out.valid)):
            if not prefixes:
                raise ValueError(f"{path}: '{split}.prefixes' is empty; the data stage wrote no {split} data")
            if len(prefixes) != len(weights):
                raise ValueError(f"{path}: '{split}' has {len(prefixes)} prefixes but {len(weights)} weights")
            for p in prefixes:
                for ext in (".bin", ".idx"):
                    if not Path(p + ext).exists():
                        raise FileNotFoundError(f"{path}: {split} dataset {p}{ext} does not exist")
        return out

    @property
    def train_tokens(self) -> int:
        """Tokens of the training split (the .bin files hold them back to back)."""
        import numpy as np

        size = np.dtype(self.dtype).itemsize
        return sum(Path(p + ".bin").stat().st_size for p in self.train[0]) // size


def _blend(prefixes: list[str], weights: list[float]):
    # A single dataset needs no BlendedDataset; megatron wants weights None then.
    return (prefixes, None) if len(prefixes) == 1 else (prefixes, weights)


def dataset_config(manifest: Manifest, seq_length: int, seed: int, cache_dir: str | Path | None):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend_per_split=[_blend(*manifest.train), _blend(*manifest.valid), None],
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        # The loop passes one shared causal mask; per-sample [S, S] masks would cost S^2 bytes each.
        create_attention_mask=False,
        tokenizer=ManifestTokenizer(manifest.vocab_size, manifest.eod_id),
        path_to_cache=None if cache_dir is None else str(cache_dir),
        mid_level_dataset_surplus=0.005,
    )


def build_datasets(
    manifest: Manifest,
    seq_length: int,
    train_samples: int,
    valid_samples: int,
    seed: int,
    cache_dir: str | Path | None = None,
):
    """Build (train, valid) megatron-core GPT datasets with at least the requested samples."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    cfg = dataset_config(manifest, seq_length, seed, cache_dir)
    train, valid, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [int(train_samples), int(valid_samples), None], lambda: True, cfg
    ).build()
    if train is None or len(train) < train_samples:
        raise ValueError(f"{manifest.path}: could not draw {train_samples} training samples")
    if valid is None or len(valid) < valid_samples:
        raise ValueError(f"{manifest.path}: could not draw {valid_samples} validation samples")
    return train, valid


class EpochStream:
    """Training samples as a stream of epochs, each its own shuffle: sample ``i`` is sample
    ``i % n`` of epoch ``i // n`` (``n``: the samples of one pass over the training split).

    megatron-core draws all the samples a dataset is asked for at once (and a blend of shards
    sizes itself by the request), so its order of the first samples depends on how many were
    asked for. The branches of a multi-horizon run share their stable phase and must read the
    same samples there whatever their length: here every epoch is asked for exactly one pass,
    and the order is a function of (seed, sample index) alone. Epoch ``e`` uses ``seed + e``."""

    def __init__(self, epochs: list, epoch_samples: int):
        self.epochs = epochs
        self.epoch_samples = int(epoch_samples)

    def __len__(self) -> int:
        return self.epoch_samples * len(self.epochs)

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), self.epoch_samples)
        return self.epochs[epoch][i]


def build_stream(manifest: Manifest, seq_length: int, train_samples: int, valid_samples: int, seed: int,
                 cache_dir: str | Path | None = None):
    """(train :class:`EpochStream`, valid) with at least ``train_samples`` training samples, in
    an order that does not depend on ``train_samples``."""
    per_epoch = max(1, manifest.train_tokens // int(seq_length))
    first, valid = build_datasets(manifest, seq_length, per_epoch, valid_samples, seed, cache_dir)
    epochs = [first]
    while per_epoch * len(epochs) < train_samples:
        epochs.append(build_datasets(manifest, seq_length, per_epoch, 1, seed + len(epochs), cache_dir)[0])
    return EpochStream(epochs, per_epoch), valid


@dataclass(frozen=True)
class SampleSchedule:
    """Which dataset samples a rank reads at a step: a pure function of (step, micro-batch).

    Step ``s`` consumes samples ``[s*G, (s+1)*G)`` of the global order (G = global batch); the
    data-parallel rank ``r`` of ``R`` takes the ``r``-th contiguous slice of ``G/R``, cut into
    micro-batches. So the data position of a checkpoint is just its step.
    """

    global_batch: int
    micro_batch: int
    dp_size: int = 1
    dp_rank: int = 0

    def __post_init__(self) -> None:
        per_rank, rem = divmod(self.global_batch, self.dp_size)
        if rem or per_rank % self.micro_batch:
            raise ValueError(
                f"training.global_batch={self.global_batch} must be a multiple of micro_batch "
                f"({self.micro_batch}) x data-parallel size ({self.dp_size}); change training.micro_batch"
            )

    @property
    def microbatches(self) -> int:
        return self.global_batch // self.dp_size // self.micro_batch

    def indices(self, step: int, micro: int) -> range:
        start = step * self.global_batch + self.dp_rank * (self.global_batch // self.dp_size)
        start += micro * self.micro_batch
        return range(start, start + self.micro_batch)


def collate(dataset, indices) -> dict[str, Any]:
    import torch

    items = [dataset[int(i)] for i in indices]
    return {
        "tokens": torch.stack([it["tokens"] for it in items]),
        "labels": torch.stack([it["labels"] for it in items]),
        "loss_mask": torch.stack([it["loss_mask"] for it in items]),
        "position_ids": torch.stack([it["position_ids"] for it in items]),
    }


def unigram_entropy(manifest: Manifest, max_tokens_per_dataset: int = 50_000_000) -> float:
    """Entropy (nats) of the training tokens' unigram distribution under the blend weights.

    A model that ignores context cannot do better than this loss, so a trained model's
    validation loss should fall well below it. Very large datasets are estimated from their
    first ``max_tokens_per_dataset`` tokens.
    """
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefixes, weights = manifest.train
    total = np.sum(weights) if weights else 1.0
    dist = np.zeros(manifest.vocab_size, dtype=np.float64)
    for prefix, weight in zip(prefixes, weights):
        dtype = IndexedDataset(prefix, mmap=True).index.dtype
        arr = np.memmap(prefix + ".bin", dtype=dtype, mode="r")  # .bin = the concatenated tokens
        arr = arr[:max_tokens_per_dataset]
        counts = np.bincount(arr, minlength=manifest.vocab_size).astype(np.float64)
        if counts.sum() == 0:
            continue
        dist[: len(counts)] += (weight / total) * counts[: manifest.vocab_size] / counts.sum()
    p = dist[dist > 0] / dist.sum()
    return float(-(p * np.log(p)).sum())


def write_synthetic_manifest(
    directory: str | Path,
    vocab_size: int = 512,
    train_tokens: int = 200_000,
    valid_tokens: int = 20_000,
    successors: int = 4,
    seed: int = 0,
) -> Path:
    """Write a small Markov-chain corpus as Megatron indexed datasets plus a manifest.

    For tests and benchmarks that must not depend on the data stage: each token has
    ``successors`` likely next tokens, so a model can learn far below the unigram entropy.
    Token ``vocab_size - 1`` is the end-of-document token.
    """
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    eod = vocab_size - 1
    table = rng.integers(0, vocab_size - 1, size=(vocab_size, successors))
    probs = rng.dirichlet(np.ones(successors))

    def write(prefix: Path, n_tokens: int) -> int:
        builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.uint16)
        written = 0
        while written < n_tokens:
            length = int(rng.integers(32, 400))
            doc = np.empty(length, dtype=np.int64)
            doc[0] = rng.integers(0, vocab_size - 1)
            choices = rng.choice(successors, size=length, p=probs)
            for i in range(1, length):
                doc[i] = table[doc[i - 1], choices[i]]
            doc[-1] = eod
            builder.add_item(torch.from_numpy(doc))
            builder.end_document()
            written += length
        builder.finalize(str(prefix) + ".idx")
        return written

    n_train = write(directory / "synthetic.train", train_tokens)
    n_valid = write(directory / "synthetic.valid", valid_tokens)
    manifest = {
        "vocab_size": vocab_size, "eod_id": eod, "dtype": "uint16",
        "train": {"prefixes": [str(directory / "synthetic.train")], "weights": [1.0]},
        "valid": {"prefixes": [str(directory / "synthetic.valid")], "weights": [1.0]},
        "sources": {"synthetic": {"documents": -1, "tokens": n_train + n_valid, "weight": 1.0, "shards": 1}},
        "mixture": "proportional", "seed": seed,
    }
    from ..io import write_json

    path = directory / "manifest.json"
    write_json(path, manifest)
    return path
