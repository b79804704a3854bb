"""Training data: a corpus split held in memory, length-bucketed batches and their padding.

:class:`CorpusData` loads one split of a corpus made by :mod:`engine.training.corpus` (mels
kept in fp16); :meth:`CorpusData.batches` draws an epoch of index batches from length-sorted
groups of batches (little padding, still shuffled); :meth:`CorpusData.collate` pads them into
a :class:`Batch`; :meth:`CorpusData.endless` chains epochs of padded batches on a device.
"""

from __future__ import annotations

import dataclasses
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from ..audio import LOG_MEL_FLOOR
from ..errors import InputError
from .corpus import load_manifest, load_utterance


@dataclass
class Batch:
    """A padded batch (on one device)."""

    ids: Tensor  # (B, T_text) int64, 0-padded
    text_lens: Tensor  # (B,)
    mel: Tensor  # (B, 80, T_mel) log mel, padded with the log floor
    mel_lens: Tensor  # (B,)
    pitch: Tensor  # (B, T_mel) Hz, 0 = unvoiced/pad
    energy: Tensor  # (B, T_mel) frame energy (L2 norm of the linear mel frame)
    uids: list[str]

    def to(self, device: torch.device) -> "Batch":
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Batch(**{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                        for k, v in kw.items()})


class CorpusData:
    """A corpus split held in memory (mels in fp16), with length-bucketed batching."""

    def __init__(self, corpus_dir: str | os.PathLike, split: str, limit: int | None = None,
                 threads: int = 8):
        self.dir = Path(corpus_dir)
        self.manifest = load_manifest(self.dir)
        uids = list(self.manifest["splits"].get(split, []))[:limit]
        with ThreadPoolExecutor(max(1, threads)) as ex:
            items = list(ex.map(lambda u: load_utterance(self.dir, u), uids))
        self.items = [{"id": it["id"], "ids": it["ids"].long(), "mel": it["mel"],
                       "pitch": it["pitch"].float(), "energy": it["energy"].float()}
                      for it in items]
        self.lengths = [int(it["mel"].size(1)) for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def collate(self, idx: Sequence[int]) -> Batch:
        """Pad utterances ``idx`` into a :class:`Batch` (on the CPU)."""
        its = [self.items[i] for i in idx]
        B = len(its)
        T = max(it["ids"].numel() for it in its)
        M = max(it["mel"].size(1) for it in its)
        ids = torch.zeros(B, T, dtype=torch.long)
        mel = torch.full((B, its[0]["mel"].size(0), M), LOG_MEL_FLOOR)
        pitch = torch.zeros(B, M)
        energy = torch.zeros(B, M)
        for b, it in enumerate(its):
            n, m = it["ids"].numel(), it["mel"].size(1)
            ids[b, :n] = it["ids"]
            mel[b, :, :m] = it["mel"].float()
            pitch[b, :m] = it["pitch"]
            energy[b, :m] = it["energy"]
        return Batch(ids, torch.tensor([it["ids"].numel() for it in its]), mel,
                     torch.tensor([it["mel"].size(1) for it in its]), pitch, energy,
                     [it["id"] for it in its])

    def batches(self, batch_size: int, rng: random.Random, bucket: int = 32
                ) -> Iterator[list[int]]:
        """One epoch of index batches: shuffled, then sorted by length within groups of
        ``bucket`` batches (less padding), the batches themselves shuffled."""
        order = list(range(len(self.items)))
        rng.shuffle(order)
        out = []
        group = batch_size * bucket
        for g in range(0, len(order), group):
            chunk = sorted(order[g:g + group], key=lambda i: self.lengths[i])
            out += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
        rng.shuffle(out)
        yield from out

    def endless(self, batch_size: int, rng: random.Random, device: torch.device
                ) -> Iterator[Batch]:
        """Padded batches on ``device``, epoch after epoch (each drawn as :meth:`batches`
        draws it, when its first batch is asked for)."""
        if not self.items:
            raise InputError(f"{self.dir}: no utterances to draw batches from")
        while True:
            for idx in self.batches(batch_size, rng):
                yield self.collate(idx).to(device)
