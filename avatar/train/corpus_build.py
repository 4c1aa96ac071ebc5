"""Plan and build the synthetic corpus and the held-out evaluation sets.

Training voices: espeak-ng English dialects (7) and German/Spanish/Italian, each utterance with a
random one of espeak's ~100 voice variants and random rate/pitch; festival's two diphone voices
with random duration stretch and pitch. Held out: festival's HTS voice and espeak's Scottish
English dialect (with sentences no training job uses). Every training utterance is augmented
(noise, reverb, band limits, EQ, gain, speed, Opus round trip; see :mod:`avatar.data.augment`).
"""

from __future__ import annotations

import functools
import json
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avatar.config import FeatureConfig
from avatar.data import augment as aug
from avatar.data.corpus import (
    ESPEAK_HELDOUT_DIALECT,
    ESPEAK_TRAIN_DIALECTS,
    ESPEAK_TRAIN_LANGS,
    FESTIVAL_HELDOUT_VOICE,
    FESTIVAL_TRAIN_VOICES,
    Job,
    run_job,
    run_jobs_parallel,
    write_manifest,
)
from avatar.data.text import BUILTIN_SENTENCES, fortune_sentences
from avatar.data.types import AlignedUtterance, Phone

SENTENCES_PER_JOB = 40
SECONDS_PER_SENTENCE = 3.5  # rough, for planning only
HELDOUT_FAMILIES = ("festival-hts", "espeak-heldout")


def is_eval_sentence(text: str) -> bool:
    """A fixed 5% of sentences is reserved for the held-out voices."""
    return zlib.crc32(text.encode()) % 20 == 0


def sentence_pools(quick: bool) -> dict[str, tuple[list[str], list[str]]]:
    """Per language: (training sentences, evaluation sentences)."""
    pools = {}
    for lang in ("en", "de", "es", "it"):
        found = [] if quick else fortune_sentences(lang)
        if lang == "en" and not found:
            found = list(BUILTIN_SENTENCES)
        if not found:
            continue
        train = [s for s in found if not is_eval_sentence(s)]
        test = [s for s in found if is_eval_sentence(s)]
        pools[lang] = (train or found, test or found)
    return pools


def _texts(pool: list[str], n: int, rng: np.random.Generator) -> tuple[str, ...]:
    """``n`` utterance texts of 1-3 sentences each."""
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        out.append(" ".join(pool[int(i)] for i in rng.integers(0, len(pool), size=k)))
    return tuple(out)


def _voice_choices(langs: set[str]) -> list[tuple[str, str, str, str, float]]:
    """(synth, voice, lang, family, weight) of every training voice."""
    choices = [
        ("espeak", d, "en", "espeak-en", 0.55 / len(ESPEAK_TRAIN_DIALECTS))
        for d in ESPEAK_TRAIN_DIALECTS
    ]
    other = [lang for lang in ESPEAK_TRAIN_LANGS if lang in langs]
    choices += [
        ("espeak", ESPEAK_TRAIN_LANGS[lang], lang, f"espeak-{lang}", 0.2 / len(other))
        for lang in other
    ]
    choices += [
        ("festival", v, "en", "festival-diphone", 0.25 / len(FESTIVAL_TRAIN_VOICES))
        for v in FESTIVAL_TRAIN_VOICES
    ]
    return choices


def plan_training(hours: float, seed: int, quick: bool) -> list[Job]:
    """Jobs whose raw speech adds up to about ``hours``."""
    rng = np.random.default_rng(seed)
    pools = sentence_pools(quick)
    choices = _voice_choices(set(pools))
    if quick:
        choices = [c for c in choices if c[0] == "espeak" and c[2] == "en"]
    weights = np.array([c[4] for c in choices])
    per_job = 8 if quick else SENTENCES_PER_JOB
    n_jobs = max(2, round(hours * 3600 / (per_job * SECONDS_PER_SENTENCE * 2)))
    jobs = []
    for i in range(n_jobs):
        synth, voice, lang, family, _ = choices[
            int(rng.choice(len(choices), p=weights / weights.sum()))
        ]
        texts = _texts(pools[lang][0], per_job, rng)
        jobs.append(Job(synth, voice, lang, family, texts, seed * 100_003 + i))
    return jobs


def plan_heldout(n_utts: int, seed: int, quick: bool) -> list[Job]:
    """The held-out voice families, on evaluation sentences."""
    rng = np.random.default_rng(seed + 1)
    pool = sentence_pools(quick)["en"][1]
    jobs = [
        Job(
            "espeak",
            ESPEAK_HELDOUT_DIALECT,
            "en",
            "espeak-heldout",
            _texts(pool, n_utts, rng),
            seed + 7,
        )
    ]
    if not quick:
        jobs.append(
            Job(
                "festival",
                FESTIVAL_HELDOUT_VOICE,
                "en",
                "festival-hts",
                _texts(pool, n_utts, rng),
                seed + 8,
            )
        )
    return jobs


# --- synthesis -----------------------------------------------------------------------------


@functools.cache
def _espeak() -> tuple[object, list[str]]:
    from avatar.data.espeak import EspeakSynth, list_variants

    return EspeakSynth(), list_variants()


def synthesize_job(job: Job) -> Iterator[AlignedUtterance]:
    """Synthesize every text of ``job`` with randomised voice variant and prosody."""
    rng = np.random.default_rng(job.seed)
    if job.synth == "espeak":
        yield from _espeak_job(job, rng)
    elif job.synth == "festival":
        yield from _festival_job(job, rng)
    else:
        raise ValueError(f"unknown synthesizer {job.synth!r}")


def _espeak_job(job: Job, rng: np.random.Generator) -> Iterator[AlignedUtterance]:
    from avatar.data.espeak import EspeakSynth, Prosody

    synth, variants = _espeak()
    assert isinstance(synth, EspeakSynth)
    for text in job.texts:
        variant = variants[int(rng.integers(len(variants)))]
        voice = f"{job.voice}+{variant}"
        prosody = Prosody(
            int(rng.integers(120, 231)), int(rng.integers(20, 81)), int(rng.integers(20, 91))
        )
        synth.set_voice(voice, prosody)
        yield synth.synthesize(text, f"espeak:{voice}", job.family)


def _festival_job(job: Job, rng: np.random.Generator) -> Iterator[AlignedUtterance]:
    from avatar.data.festival import FestivalSynth

    synth = FestivalSynth(job.voice)
    stretch = float(rng.uniform(0.8, 1.3))
    pitch = 1.0 if synth.info.is_hts else float(rng.uniform(0.8, 1.25))
    for utt in synth.synthesize(list(job.texts), rate_stretch=stretch, pitch_scale=pitch):
        utt.family = job.family
        yield utt


# --- building ------------------------------------------------------------------------------


def _augment(utt: AlignedUtterance, rng: np.random.Generator) -> AlignedUtterance:
    return aug.augment(utt, rng, strength=float(rng.uniform(0.4, 1.0)))


def _shard_worker(
    item: tuple[int, Job], out_dir: Path, copies: int, cfg: FeatureConfig, split: str
) -> dict[str, object]:
    i, job = item
    path = out_dir / f"{split}-{i:04d}.npz"
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():  # resume: jobs are deterministic
        info: dict[str, object] = json.loads(info_path.read_text())
        return info
    info = run_job(job, synthesize_job, _augment, copies, cfg).write(path)
    info_path.write_text(json.dumps(info, ensure_ascii=False))
    return info


def _reset_if_changed(out_dir: Path, meta: dict[str, object]) -> None:
    plan = out_dir / "plan.json"
    if plan.exists() and json.loads(plan.read_text()) != meta:
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps(meta))


def check_voices(jobs: list[Job]) -> None:
    """Fail before hours of work if a planned voice does not exist here."""
    for synth, voice in sorted({(j.synth, j.voice) for j in jobs}):
        if synth == "espeak":
            espeak, variants = _espeak()
            espeak.set_voice(f"{voice}+{variants[0]}")  # type: ignore[attr-defined]
        else:
            from avatar.data.festival import FestivalSynth

            FestivalSynth(voice)


def build_corpus(
    out_dir: Path,
    hours: float,
    copies: int,
    seed: int,
    cfg: FeatureConfig,
    processes: int = 2,
    quick: bool = False,
) -> dict[str, object]:
    """Synthesize, augment and featurize the training and held-out shards into ``out_dir``.

    Finished shards of an interrupted build with the same settings are kept (jobs are
    deterministic); different settings start from an empty folder.
    """
    meta = {
        "hours_requested": hours,
        "copies": copies,
        "seed": seed,
        "quick": quick,
        "features": cfg.model_dump(),
    }
    _reset_if_changed(out_dir, meta)
    plans = (
        ("train", plan_training(hours, seed, quick)),
        ("heldout", plan_heldout(4 if quick else 60, seed, quick)),
    )
    check_voices([job for _, jobs in plans for job in jobs])
    shards: list[dict[str, object]] = []
    for split, jobs in plans:
        worker = functools.partial(
            _shard_worker, out_dir=out_dir, copies=copies, cfg=cfg, split=split
        )
        bar = tqdm(
            run_jobs_parallel(jobs, worker, processes),
            total=len(jobs),
            desc=f"corpus {split}",
            unit="job",
        )
        shards.extend(bar)
    write_manifest(out_dir, shards, meta)
    return json.loads((out_dir / "manifest.json").read_text())


# --- evaluation sets -----------------------------------------------------------------------


def save_utterances(path: Path, utts: list[AlignedUtterance]) -> None:
    """Store utterances (16-bit audio + alignments) in one ``.npz``."""
    audio = np.concatenate([np.round(u.audio * 32767).astype(np.int16) for u in utts])
    meta = [
        {
            "rate": u.sample_rate,
            "n": len(u.audio),
            "text": u.text,
            "source": u.source,
            "family": u.family,
            "phones": [[p.ipa, p.start, p.end] for p in u.phones],
        }
        for u in utts
    ]
    np.savez_compressed(path, audio=audio, meta=np.array(json.dumps(meta, ensure_ascii=False)))


def load_utterances(path: Path) -> list[AlignedUtterance]:
    data = np.load(path)
    audio = data["audio"].astype(np.float32) / 32767
    out, k = [], 0
    for m in json.loads(str(data["meta"])):
        phones = [Phone(p[0], p[1], p[2]) for p in m["phones"]]
        out.append(
            AlignedUtterance(
                audio[k : k + m["n"]], m["rate"], phones, m["text"], m["source"], m["family"]
            )
        )
        k += m["n"]
    return out


def build_eval_sets(out_dir: Path, n_utts: int, seed: int, quick: bool = False) -> list[Path]:
    """Held-out voices, clean and after a WebRTC-like Opus round trip, as 16 kHz utterances."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for job in plan_heldout(n_utts, seed + 1000, quick):
        clean = [aug.clean(u) for u in synthesize_job(job)]
        opus = [aug.opus_round_trip(u, 24000) for u in clean]
        for name, utts in ((job.family, clean), (f"{job.family}-opus", opus)):
            path = out_dir / f"eval-{name}.npz"
            save_utterances(path, utts)
            paths.append(path)
    return paths
