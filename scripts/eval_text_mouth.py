"""Text input: does a mouth driven by the synthesiser's phones beat the audio model? Measured.

Every clip is rendered once per mouth on each face by one renderer (``avatar.compose.text_mouth``):
(a) through the engine, buffered, as ``avatar render`` runs it; (b) the phone table of
``avatar.motion.targets`` on the clip's phones at the engine's lead, with the engine's own head
pose, blinks and talking envelope. (b') is (b) with its jawOpen mapped to the audio model's
distribution, fitted on the slt sentences (never on a judge's reference). Judges:

1. festival speech (voices slt, held out from the audio model's training, and kal, a training
   voice): a pocketsphinx forced alignment of the synthesised audio, as the sentence table of
   ``scripts/eval_mouth.py`` judges human speech. It shares the phone -> pose table with (b), so
   its correlation favours (b); its closures, pauses and openness percentiles are read from the
   pixels. Scoring (b) against festival's own phones would win by construction: not done.
2. real talkers (``avatar.data.talkers``) compared with their own mouths (``talker_eval``'s r at
   the best lag, r at lag 0, the opening's p90 over voiced frames). They have no transcripts:
   (b) and (b') run on pocketsphinx's *recognised words*, force-aligned (on the real read
   sentences, whose transcripts are known, that came within jaw r 0.96 of the true alignment),
   (b-loop) on its *phone recognition* (no words; jaw r 0.76 there).

Prints the tables, writes ``--output`` (docs/text_mouth.json) and a contact sheet (``--sheet``) of
the mouths side by side at open vowels, P/B/M and pauses of the slt sentences, and at the P/B/M the
audio model left open (picked by that outcome). Renders are kept in ``--work`` (``--report-only``
makes the tables again from them). Verdict: docs/text_mouth.md.
Usage: python scripts/eval_text_mouth.py [--faces default,hopper] [--voices slt,kal]
                                         [--splits dev,test] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import cv2
import numpy as np

from avatar.compose import contact
from avatar.compose.mouth_eval import (
    FACE_BY_NAME,
    AlignedResult,
    Face,
    aligned_result,
    avatar_spec,
    talker_clips,
    talker_result,
)
from avatar.compose.render_eval import CLOSED_GAP
from avatar.compose.renderers import load_renderer
from avatar.compose.talker_eval import TalkerResult
from avatar.compose.text_mouth import AUDIO, Driver, model_jaw, render_mouths
from avatar.config import Config, load_config
from avatar.data.align import (
    align_recording,
    phones_from_alignment,
    recognise_recording,
    transcribe_recording,
)
from avatar.data.media import DEFAULT_MEDIA_DIR
from avatar.data.sentences import SentenceAligner, sentence_set, transcript_words
from avatar.data.talkers import TalkerClip
from avatar.data.tts import speak
from avatar.data.types import AlignedUtterance, Phone
from avatar.errors import HumanSpeechError
from avatar.face.image import load_rgb, save_rgb
from avatar.face.store import load_avatar
from avatar.motion.phone_motion import JawCurve, fit_jaw_curve, phone_motion
from avatar.motion.runtime import load_motion_backend
from avatar.motion.targets import motion_targets, segments_of

log = logging.getLogger("eval_text_mouth")
PHONES = "phones"  # festival's phones; a talker's: pocketsphinx's words, force-aligned
MATCHED = "phones-matched"  # the same, its jawOpen given the audio model's distribution
LOOP = "phones-loop"  # a talker's: pocketsphinx's phone recognition (no words)
MOUTHS = (AUDIO, PHONES, MATCHED)  # on every clip
TALKER_MOUTHS = (*MOUTHS, LOOP)
LABEL = {AUDIO: "(a) audio model", PHONES: "(b) phones", MATCHED: "(b') phones, jaw matched",
         LOOP: "(b-loop) recognised phones"}  # fmt: skip
SHEET_EXAMPLES = 3
SHEET_SCALE = 0.6  # 36 close-ups a face: as a full-size PNG the sheet took 4 MB
SHEET_QUALITY = [cv2.IMWRITE_JPEG_QUALITY, 90]
MISSED = "P/B/M (a) left open"
SHORT = {"open vowel": "open vowel", "P/B/M closure": "P/B/M", "silence": "pause",
         MISSED: "P/B/M (a) open"}  # fmt: skip

SENTENCES = (  # varied: bilabials, open vowels, rounding, pauses, questions, numbers
    "Bob bought a map of the old park.",
    "My mother made apple pie, but nobody ate a bite.",
    "Please bring the big blue box upstairs.",
    "Father saw a large dark car parked by the harbour.",
    "Why not? I thought we agreed, at least on the main point.",
    "The committee will meet again on Monday morning.",
    "Peter Piper picked a peck of pickled peppers.",
    "Open the window, and let the warm air in.",
    "How about a walk along the beach before supper?",
    "We measured the temperature every hour for a whole week.",
    "The small boat moved slowly across the calm bay.",
    "I am not sure. Maybe tomorrow, maybe never.",
    "All of the tomatoes were ripe, but the plums were sour.",
    "Thank you very much for coming to the meeting today.",
    "A hot cup of coffee is all I want right now.",
    "Remember to switch off the lamp in the bedroom.",
    "The price of bread has doubled in only a few months.",
    "Stop! Wait for me by the bus stop.",
    "Our garden was full of palms, poppies and bamboo.",
    "She opened her mouth, paused, and then said nothing at all.",
    "It costs four hundred and fifty dollars, give or take.",
    "Good morning. Your appointment is at half past nine.",
)


@dataclass(slots=True)
class Clip:
    """A sound to render: its audio and the phones that drive the phone mouths (:data:`PHONES`
    always, :data:`LOOP` for real talkers)."""

    key: str
    audio: np.ndarray
    rate: int
    phones: dict[str, list[Phone]]
    words: tuple[str, ...] = ()  # a real talker's recognised words

    @property
    def driver(self) -> list[Phone]:
        return self.phones[PHONES]

    def drivers(self, curve: JawCurve) -> dict[str, Driver]:
        out: dict[str, Driver] = {name: (phones, None) for name, phones in self.phones.items()}
        out[MATCHED] = (self.driver, curve)
        return out


# ---- the sounds and their phones -------------------------------------------------------------


def festival_set(voice: str, aligner: SentenceAligner) -> tuple[list[Clip], list[AlignedUtterance]]:
    """Each sentence spoken by ``voice``: (b) gets festival's phones, the judge pocketsphinx's
    forced alignment of the synthesised audio."""
    clips, judged = [], []
    for k, text in enumerate(SENTENCES):
        speech = speak(text, voice)
        try:
            words = transcript_words(text, aligner.knows)
            result = align_recording(aligner, words, speech.audio, speech.rate)
        except HumanSpeechError as e:
            log.warning("%s %d left out: %s", voice, k, e)
            continue
        key = f"{voice}-{k:02d}"
        phones = phones_from_alignment(result, speech.duration_s)
        clips.append(Clip(key, speech.audio, speech.rate, {PHONES: list(speech.phones)}))
        judged.append(AlignedUtterance(speech.audio, speech.rate, phones, text, key, voice))
    return clips, judged


def recognised_phones(aligner: SentenceAligner, audio: np.ndarray, rate: int) -> list[Phone]:
    """Pocketsphinx's phone recognition (no words)."""
    return phones_from_alignment(recognise_recording(aligner, audio, rate), len(audio) / rate)


def transcribed_phones(
    aligner: SentenceAligner, audio: np.ndarray, rate: int
) -> tuple[list[str], list[Phone]]:
    """Pocketsphinx's recognised words and their forced alignment (the phone recognition where
    it hears no word or cannot align them)."""
    words = transcribe_recording(aligner, audio, rate)
    try:
        result = align_recording(aligner, words, audio, rate)
    except HumanSpeechError as e:
        log.warning("the recognised words %s do not align (%s): phone recognition", words, e)
        return words, recognised_phones(aligner, audio, rate)
    return words, phones_from_alignment(result, len(audio) / rate)


def talker_clip(aligner: SentenceAligner, t: TalkerClip) -> Clip:
    words, phones = transcribed_phones(aligner, t.audio, t.sample_rate)
    loop = recognised_phones(aligner, t.audio, t.sample_rate)
    key = f"talker-{t.name.split('/')[-1]}"
    return Clip(key, t.audio, t.sample_rate, {PHONES: phones, LOOP: loop}, tuple(words))


def talker_set(
    splits: Sequence[str], media_dir: Path, aligner: SentenceAligner
) -> dict[str, tuple[list[TalkerClip], list[Clip]]]:
    """Per split, the real talkers and their clips with recognised phones."""
    out = {}
    for split in splits:
        talkers = talker_clips(split, media_dir)
        out[split] = (talkers, [talker_clip(aligner, t) for t in talkers])
    return out


def agreement(reference: list[Phone], other: list[Phone], duration: float) -> dict[str, float]:
    """How far ``other`` phones are from ``reference`` for a mouth (every 10 ms): the share of
    the same viseme and the correlation of the phone table's jawOpen."""
    t = np.arange(0.0, duration, 0.01)
    ref_bs, ref_vis = motion_targets(reference, t)
    bs, vis = motion_targets(other, t)
    return {"viseme_agreement": float(np.mean(ref_vis == vis)),
            "jaw_r": float(np.corrcoef(ref_bs[:, 0], bs[:, 0])[0, 1])}  # fmt: skip


def pooled_agreement(pairs: list[tuple[list[Phone], list[Phone], float]]) -> dict[str, float]:
    rows = [agreement(a, b, d) for a, b, d in pairs]
    w = np.array([d for _, _, d in pairs])
    return {k: round(float(np.average([r[k] for r in rows], weights=w)), 3) for k in rows[0]}


def jaw_curve(clips: list[Clip], cfg: Config, backend: object) -> JawCurve:
    """(b')'s jaw map: the phone table's jawOpen on the clips' speech frames given the audio
    model's distribution on the same frames."""
    fps, lead_s = cfg.motion.fps, cfg.engine.lead_ms / 1000
    phone_jaw, audio_jaw = [], []
    for c in clips:
        jaw = model_jaw(backend, c.audio, c.rate, fps, lead_s)  # type: ignore[arg-type]
        driven = phone_motion(c.driver, fps, lead_s, len(jaw))
        speech = driven.visemes[:, 0] < 0.5  # not the silence viseme
        phone_jaw.append(driven.blendshapes[speech, 0])
        audio_jaw.append(jaw[speech])
    return fit_jaw_curve(np.concatenate(phone_jaw), np.concatenate(audio_jaw))


# ---- rendering -------------------------------------------------------------------------------


def face_config(face: Face, spec: str) -> Config:
    return load_config(None, [f"render.avatar={spec}", f"render.renderer={face.renderer}",
                              f"render.size={face.size}"])  # fmt: skip


def render_face(
    face: Face,
    spec: str,
    clips: list[Clip],
    curve: JawCurve,
    keep: Mapping[str, list[int]],
    work: Path,
    readings: bool = True,
) -> None:
    """Every clip's mouths on ``face``: readings as ``<work>/<face>/<mouth>/<clip>.npz`` (unless
    not ``readings``), the frames ``keep`` names as PNGs beside them."""
    cfg = face_config(face, spec)
    backend = load_motion_backend(cfg.motion.for_input(False))  # buffered input
    renderer = load_renderer(cfg.render)
    start = time.monotonic()
    for clip in clips:
        mouths = render_mouths(cfg, backend, renderer, clip.audio, clip.rate, clip.drivers(curve),
                               keep.get(clip.key, []))  # fmt: skip
        for mouth, trace in mouths.traces.items():
            folder = work / face.name / mouth
            folder.mkdir(parents=True, exist_ok=True)
            if readings:
                np.savez(folder / f"{clip.key}.npz", **trace)  # type: ignore[arg-type]
            for i, img in mouths.stills[mouth].items():
                save_rgb(folder / f"{clip.key}@{i}.png", img)
    print(f"{face.name}: {len(clips)} clips in {time.monotonic() - start:.0f} s", flush=True)


def load_traces(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.stem: dict(np.load(p)) for p in folder.glob("*.npz")}


# ---- the contact sheet -----------------------------------------------------------------------


def sheet_examples(clips: list[Clip], fps: float,
                   lead_s: float) -> list[tuple[str, str, float, int]]:  # fmt: skip
    """(kind, clip key, sound time, frame that shows it) at open vowels, P/B/M and pauses of
    the clips' own phones (festival's: where the synthesiser put them)."""
    utts = [AlignedUtterance(c.audio, c.rate, c.driver, "", c.key, "") for c in clips]
    out = []
    for kind, visemes in contact.KINDS:
        for utt, t in contact.pick_examples(utts, visemes, SHEET_EXAMPLES):
            out.append((kind, utt.source, t, round((t - lead_s) * fps)))
    return out


def missed_closures(utts: list[AlignedUtterance], traces: dict[str, dict[str, np.ndarray]],
                    fps: float, lead_s: float) -> list[tuple[str, str, float, int]]:  # fmt: skip
    """P/B/M segments of the judge's alignment on which the audio model's lips never closed
    (its smallest gap on the frames that show the segment, as the closure column counts it, is
    above ``CLOSED_GAP``), widest first: picked *by the outcome*, to show what that column
    counts. The frame shown is where (a) came closest to closing."""
    found = []
    for u in utts:
        gap = traces[u.source]["gap"]
        shown = np.arange(len(gap)) / fps + lead_s
        for seg in segments_of(u.phones):
            idx = np.flatnonzero((shown >= seg.start) & (shown <= seg.end))
            if seg.viseme != "PP" or not len(idx):
                continue
            g = np.where(np.isnan(gap[idx]), np.inf, gap[idx])
            if g.min() > CLOSED_GAP:
                found.append(
                    (float(g.min()), u.source, (seg.start + seg.end) / 2, int(idx[g.argmin()]))
                )
    found.sort(reverse=True)
    return [(MISSED, key, t, i) for _, key, t, i in found[:SHEET_EXAMPLES]]


def contact_sheet(faces: list[Face], specs: dict[str, str], examples: list[tuple[str, str, float,
                  int]], work: Path, title: str) -> np.ndarray:  # fmt: skip
    """Per face, a row per kind: each example as mouth close-ups (a) | (b) | (b')."""
    blocks = []
    width = SHEET_EXAMPLES * len(MOUTHS) * contact.TILE
    for face in faces:
        assets = load_avatar(specs[face.name])
        rows: dict[str, list[np.ndarray]] = {}
        for kind, key, t, i in examples:
            for mouth in MOUTHS:
                img = load_rgb(work / face.name / mouth / f"{key}@{i}.png")
                tile = contact.mouth_closeup(img, assets)
                text = f"{LABEL[mouth][:4].strip()} {SHORT[kind]} {key} {t:.2f}s"
                rows.setdefault(kind, []).append(contact.label(tile, text))
        blocks.append(contact.title_strip(f"{face.name}: {title}", width))
        blank = np.zeros((contact.TILE, contact.TILE, 3), np.uint8)
        blocks += [np.hstack(r + [blank] * (width // contact.TILE - len(r))) for r in rows.values()]
    sheet = np.vstack(blocks)
    size = (round(SHEET_SCALE * sheet.shape[1]), round(SHEET_SCALE * sheet.shape[0]))
    return cv2.resize(sheet, size, interpolation=cv2.INTER_AREA)


# ---- tables ----------------------------------------------------------------------------------


def festival_table(rows: dict[tuple[str, str, str], AlignedResult]) -> str:
    out = ["| voice | face | mouth | r vs alignment (talker lead) | r (acoustic) | P/B/M closed "
           "| P/B/M gap | vowel gap | silence gap | speech opening p50 / p90 |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (voice, face, mouth), res in rows.items():
        a, t, b = res.own, res.talker, res.acoustic
        out.append(
            f"| {voice} | {face} | {LABEL[mouth]} | {t.gap_r:.3f} | {b.gap_r:.3f} "
            f"| **{a.pbm_closed:.2f}** | {a.pbm_gap:.3f} | {a.vowel_gap:.3f} "
            f"| {a.silence_gap:.3f} | {a.speech_open_p50:.3f} / {a.speech_open_p90:.3f} |"
        )
    return "\n".join(out)


def against_audio(rows: dict[tuple[str, str, str], TalkerResult],
                  key: tuple[str, str, str]) -> tuple[float, int]:  # fmt: skip
    """A mouth's clips against the audio model's on the same clips and face: the mean of the
    differences of their r at the best lag, and how many clips it follows better."""
    a = np.array(rows[(key[0], key[1], AUDIO)].clip_r)
    b = np.array(rows[key].clip_r)
    return float(np.mean(b - a)), int(np.sum(b > a))


def talker_table(rows: dict[tuple[str, str, str], TalkerResult]) -> str:
    out = ["| split | face | mouth | clips | r at best lag (mean of clips) | vs (a): mean diff, "
           "clips better | pooled r | r at 0 lag | lag ms | opening p90 avatar / real | ratio |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (split, face, mouth), r in rows.items():
        diff, better = against_audio(rows, (split, face, mouth))
        out.append(
            f"| {split} | {face} | {LABEL[mouth]} | {r.clips} | **{np.mean(r.clip_r):.3f}** "
            f"| {diff:+.3f}, {better}/{r.clips} | {r.r:.3f} | {r.r0:.3f} | {1000 * r.lag_s:+.0f} "
            f"| {r.avatar_p90:.3f} / {r.real_p90:.3f} | **{r.p90_ratio:.2f}** |"
        )
    return "\n".join(out)


def _clean(d: Mapping[str, object]) -> dict[str, object]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


# ---- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--faces", default="default,hopper")
    p.add_argument("--voices", default="slt,kal")
    p.add_argument("--splits", default="dev,test", help="real talker splits ('' = none)")
    p.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    p.add_argument("--faces-dir", type=Path, default=Path("data/faces"))
    p.add_argument("--work", type=Path, default=Path("data/text_mouth"))
    p.add_argument("--report-only", action="store_true", help="tables from the renders in --work")
    p.add_argument("-o", "--output", type=Path, default=Path("docs/text_mouth.json"))
    p.add_argument("--sheet", type=Path, default=Path("docs/img/text_mouth.jpg"))
    return p.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args()
    faces = [FACE_BY_NAME[n] for n in args.faces.split(",") if n]
    voices = [v for v in args.voices.split(",") if v]
    cfg = load_config(None, [])
    fps, lead_s = cfg.motion.fps, cfg.engine.lead_ms / 1000
    aligner = SentenceAligner()
    festival = {v: festival_set(v, aligner) for v in voices}
    talkers = talker_set([s for s in args.splits.split(",") if s], args.media_dir, aligner)
    backend = load_motion_backend(cfg.motion.for_input(False))
    curve_clips = festival["slt"][0] if "slt" in festival else next(iter(festival.values()))[0]
    curve = jaw_curve(curve_clips, cfg, backend)
    examples = sheet_examples(curve_clips, fps, lead_s)
    keep: dict[str, list[int]] = {}
    for _, key, _, i in examples:
        keep.setdefault(key, []).append(i)
    specs = {f.name: avatar_spec(f, args.faces_dir, args.media_dir) for f in faces}
    clips = [c for cs, _ in festival.values() for c in cs] + [
        c for _, cs in talkers.values() for c in cs
    ]
    if not args.report_only:
        for face in faces:
            render_face(face, specs[face.name], clips, curve, keep, args.work)
    report(args, faces, festival, talkers, curve, fps, lead_s)
    slt_utts = festival["slt"][1] if "slt" in festival else next(iter(festival.values()))[1]
    first = load_traces(args.work / faces[0].name / AUDIO)
    missed = missed_closures(slt_utts, first, fps, lead_s)
    again = {key: [i] for _, key, _, i in missed}
    for face in faces:  # the frames picked by what (a) did: rendered again for their stills
        again_clips = [c for c in curve_clips if c.key in again]
        render_face(face, specs[face.name], again_clips, curve, again, args.work, False)
    examples = (
        [e for e in examples if e[0] != "silence"]
        + missed
        + [e for e in examples if e[0] == "silence"]
    )
    title = (
        f"mouth close-ups, slt sentences: (a) audio model | (b) phones | (b') phones, jaw "
        f"matched; lead {round(1000 * lead_s)} ms; '(a) open' picked on {faces[0].name}"
    )
    args.sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(faces, specs, examples, args.work, title)
    cv2.imwrite(str(args.sheet), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), SHEET_QUALITY)
    print(f"wrote {args.sheet}")


def report(args: argparse.Namespace, faces: list[Face],
           festival: dict[str, tuple[list[Clip], list[AlignedUtterance]]],
           talkers: dict[str, tuple[list[TalkerClip], list[Clip]]], curve: JawCurve, fps: float,
           lead_s: float) -> None:  # fmt: skip
    fest_rows: dict[tuple[str, str, str], AlignedResult] = {}
    talk_rows: dict[tuple[str, str, str], TalkerResult] = {}
    for face in faces:
        traces = {m: load_traces(args.work / face.name / m) for m in TALKER_MOUTHS}
        for (voice, (_, utts)), mouth in product(festival.items(), MOUTHS):
            res = aligned_result(face.name, utts, traces[mouth], fps, lead_s)
            fest_rows[(voice, face.name, mouth)] = res
        for (split, (people, clips)), mouth in product(talkers.items(), TALKER_MOUTHS):
            by_name = {t.name: traces[mouth][c.key] for t, c in zip(people, clips, strict=True)}
            talk_rows[(split, face.name, mouth)] = talker_result(face.name, people, by_name, fps)
    phones = phone_quality(festival, talkers, args.media_dir)
    print(
        f"### Festival speech ({', '.join(f'{v}: {len(u)}' for v, (_, u) in festival.items())} "
        "sentences), judged against pocketsphinx's forced alignment of the synthesised audio"
    )
    print(festival_table(fest_rows))
    print("\n### Real talkers ((b), (b'): recognised words, force-aligned; (b-loop): recognised "
          f"phones)\n{talker_table(talk_rows)}")  # fmt: skip
    print(f"\n### Phones\n{json.dumps(phones, indent=1)}")
    save(args, fest_rows, talk_rows, phones, curve, festival, lead_s)


def phone_quality(
    festival: dict[str, tuple[list[Clip], list[AlignedUtterance]]],
    talkers: dict[str, tuple[list[TalkerClip], list[Clip]]],
    media_dir: Path,
) -> dict[str, object]:
    """How independent the festival judge is of (b)'s phones, and how noisy recognised phones
    are where the truth is known (festival's audio; real read sentences, force-aligned to their
    transcripts): the caveat of the real-talker judge."""
    aligner = SentenceAligner()
    out: dict[str, object] = {}
    for voice, (clips, utts) in festival.items():
        pairs = [(c.driver, u.phones, u.duration) for c, u in zip(clips, utts, strict=True)]
        loop = [(c.driver, recognised_phones(aligner, c.audio, c.rate), len(c.audio) / c.rate)
                for c in clips]  # fmt: skip
        out[voice] = {"judge_alignment_vs_festival": pooled_agreement(pairs),
                      "recognised_vs_festival": pooled_agreement(loop)}  # fmt: skip
    real = sentence_set("dev", media_dir)
    loop = [(u.phones, recognised_phones(aligner, u.audio, u.sample_rate), u.duration)
            for u in real]  # fmt: skip
    heard = [(u.phones, transcribed_phones(aligner, u.audio, u.sample_rate)[1], u.duration)
             for u in real]  # fmt: skip
    out["real_sentences_dev"] = {
        "utterances": len(real),
        "recognised_vs_transcript_alignment": pooled_agreement(loop),
        "recognised_words_aligned_vs_transcript_alignment": pooled_agreement(heard),
    }
    out["talker_words"] = {c.key: " ".join(c.words) for _, cs in talkers.values() for c in cs}
    out["talker_clips_seconds"] = {s: round(sum(t.duration for t in people), 1)
                                   for s, (people, _) in talkers.items()}  # fmt: skip
    return out


def save(args: argparse.Namespace, fest_rows: dict[tuple[str, str, str], AlignedResult],
         talk_rows: dict[tuple[str, str, str], TalkerResult], phones: dict[str, object],
         curve: JawCurve, festival: dict[str, tuple[list[Clip], list[AlignedUtterance]]],
         lead_s: float) -> None:  # fmt: skip
    data: dict[str, object] = {
        "lead_ms": round(1000 * lead_s),
        "mouths": LABEL,
        "sentences": {v: [u.text for u in utts] for v, (_, utts) in festival.items()},
        "seconds": {v: round(sum(u.duration for u in us), 1) for v, (_, us) in festival.items()},
        "jaw_curve": {"phone_jaw": [round(float(x), 4) for x in curve[0]],
                      "audio_jaw": [round(float(x), 4) for x in curve[1]]},
        "phones": phones,
    }  # fmt: skip
    fest: dict[str, dict[str, dict[str, object]]] = {}
    for (voice, face, mouth), res in fest_rows.items():
        fest.setdefault(voice, {}).setdefault(face, {})[mouth] = {
            "own": _clean(res.own.as_dict()), "talker": _clean(res.talker.as_dict()),
            "acoustic": _clean(res.acoustic.as_dict())}  # fmt: skip
    talk: dict[str, dict[str, dict[str, object]]] = {}
    for (split, face, mouth), r in talk_rows.items():
        diff, better = against_audio(talk_rows, (split, face, mouth))
        row = {**_clean(r.as_dict()), "mean_clip_r": round(float(np.mean(r.clip_r)), 4),
               "vs_audio_mean_diff": round(diff, 4), "vs_audio_clips_better": better}  # fmt: skip
        talk.setdefault(split, {}).setdefault(face, {})[mouth] = row
    data["festival"], data["talkers"] = fest, talk
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
