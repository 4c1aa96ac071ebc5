"""Build the synthetic training corpus: synthesize, augment, featurize, write shards.

A *plan* lists (voice, sentences) jobs; each job is synthesized (espeak-ng or festival), every
utterance is augmented (:mod:`avatar.data.augment`) and turned into 10 ms log-mel frames with the
motion targets at each frame's end time. Shards are ``.npz`` files of concatenated frames; the
manifest (``manifest.json``) records hours per voice family and the phone symbols that no table
could map (counted, never silently defaulted).

Held out for evaluation (never in a training shard): festival's HTS voice family
(``cmu_us_slt_arctic_hts``, a different synthesis technique and a female voice) and the espeak-ng
dialect ``en-gb-scotland``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar.audio.features import log_mel
from avatar.config import FeatureConfig
from avatar.data.types import AlignedUtterance
from avatar.motion.phonemes import SymbolStats
from avatar.motion.targets import motion_targets

ESPEAK_TRAIN_DIALECTS = (  # espeak-ng voice file names (gmw/en is British English)
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
ESPEAK_TRAIN_LANGS = {"de": "de", "es": "es", "it": "it"}
ESPEAK_HELDOUT_DIALECT = "en-gb-scotland"
FESTIVAL_TRAIN_VOICES = ("kal_diphone", "ked_diphone")
FESTIVAL_HELDOUT_VOICE = "cmu_us_slt_arctic_hts"


@dataclass(frozen=True, slots=True)
class Job:
    """Synthesize ``texts`` with one synthesizer and voice; ``seed`` drives all randomness."""

    synth: str  # "espeak" | "festival"
    voice: str
    lang: str
    family: str
    texts: tuple[str, ...]
    seed: int


@dataclass(slots=True)
class Featurized:
    """Frames of one utterance: mel (T, n_mels), blendshape targets (T, nb), viseme labels (T,)."""

    mel: np.ndarray
    blendshapes: np.ndarray
    visemes: np.ndarray


def featurize(utt: AlignedUtterance, cfg: FeatureConfig) -> Featurized:
    """Log-mel frames and the targets at each frame's end time (utterance must be at cfg rate)."""
    if utt.sample_rate != cfg.sample_rate:
        raise ValueError(f"featurize needs {cfg.sample_rate} Hz audio, got {utt.sample_rate}")
    mel = log_mel(utt.audio, cfg)
    times = (np.arange(len(mel)) + 1) * cfg.hop / cfg.sample_rate
    bs, vis = motion_targets(utt.phones, times)
    return Featurized(mel.astype(np.float16), bs.astype(np.float16), vis.astype(np.int8))


@dataclass(slots=True)
class ShardWriter:
    """Accumulates featurized utterances and writes one ``.npz`` shard."""

    mel: list[np.ndarray] = field(default_factory=list)
    bs: list[np.ndarray] = field(default_factory=list)
    vis: list[np.ndarray] = field(default_factory=list)
    families: dict[str, float] = field(default_factory=dict)  # seconds per family
    stats: SymbolStats = field(default_factory=SymbolStats)

    def add(self, utt: AlignedUtterance, feats: Featurized) -> None:
        self.mel.append(feats.mel)
        self.bs.append(feats.blendshapes)
        self.vis.append(feats.visemes)
        self.families[utt.family] = self.families.get(utt.family, 0.0) + utt.duration
        for p in utt.phones:
            if p.ipa:
                self.stats.add(p.ipa)

    def write(self, path: Path) -> dict[str, object]:
        lengths = np.array([len(m) for m in self.mel], np.int64)
        np.savez(
            path,
            mel=np.concatenate(self.mel),
            blendshapes=np.concatenate(self.bs),
            visemes=np.concatenate(self.vis),
            lengths=lengths,
        )
        return {
            "file": path.name,
            "frames": int(lengths.sum()),
            "seconds": dict(self.families),
            "unmapped": dict(self.stats.unmapped),
            "phones": int(sum(self.stats.seen.values())),
        }


Synthesize = Callable[[Job], Iterator[AlignedUtterance]]
Augment = Callable[[AlignedUtterance, np.random.Generator], AlignedUtterance]


def run_job(
    job: Job, synthesize: Synthesize, augment: Augment, copies: int, cfg: FeatureConfig
) -> ShardWriter:
    """Synthesize a job and add ``copies`` augmented versions of each utterance to a shard."""
    rng = np.random.default_rng(job.seed)
    shard = ShardWriter()
    for utt in synthesize(job):
        if len(utt.audio) == 0:
            continue
        for _ in range(copies):
            aug = augment(utt, rng)
            shard.add(aug, featurize(aug, cfg))
    return shard


def write_manifest(out_dir: Path, shards: list[dict[str, object]], meta: dict[str, object]) -> None:
    seconds: dict[str, float] = {}
    unmapped: Counter[str] = Counter()
    for s in shards:
        for family, sec in dict(s["seconds"]).items():  # type: ignore[call-overload]
            seconds[family] = seconds.get(family, 0.0) + sec
        unmapped.update(dict(s["unmapped"]))  # type: ignore[call-overload]
    manifest = {
        **meta,
        "shards": shards,
        "hours_per_family": {k: round(v / 3600, 3) for k, v in sorted(seconds.items())},
        "hours_total": round(sum(seconds.values()) / 3600, 3),
        "unmapped_symbols": dict(unmapped.most_common()),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))


def run_jobs_parallel(
    jobs: list[Job], worker: Callable[[tuple[int, Job]], dict[str, object]], processes: int
) -> Iterator[dict[str, object]]:
    """Run ``worker`` over jobs in a process pool (spawned: espeak keeps global state)."""
    if processes <= 1:
        yield from map(worker, enumerate(jobs))
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        yield from pool.imap_unordered(worker, list(enumerate(jobs)))
