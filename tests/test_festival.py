"""Festival synthesis: real voices, phone timings that tile the audio and match its energy."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from avatar.data.alignment_report import phone_levels_db, tiles_audio
from avatar.data.festival import (
    FestivalError,
    FestivalSynth,
    available_voices,
    festival_binary,
    scheme_string,
    segments_to_phones,
)
from avatar.data.types import AlignedUtterance
from avatar.motion.phonemes import VOWELS, split_segments, unmapped_symbols

needs_festival = pytest.mark.skipif(
    shutil.which("festival") is None, reason="festival is not installed (apt-get install festival)"
)
SENTENCE = "Bob bought a big map."
CLOSURES = frozenset({"b", "p"})


def _voice(name: str) -> FestivalSynth:
    if name not in available_voices():
        pytest.skip(f"festival voice {name} is not installed")
    return FestivalSynth(name)


@pytest.fixture(scope="module")
def kal() -> FestivalSynth:
    return _voice("kal_diphone")


@pytest.fixture(scope="module")
def bob(kal: FestivalSynth) -> AlignedUtterance:
    return kal.synthesize([SENTENCE])[0]


def _is_vowel(ipa: str) -> bool:
    segs = split_segments(ipa)
    return bool(segs) and segs[0].symbol in VOWELS


def _f0(u: AlignedUtterance) -> float:
    """Median autocorrelation pitch over the vowels."""
    out = []
    for p in u.phones:
        if _is_vowel(p.ipa) and p.end - p.start > 0.06:
            x = u.audio[int(p.start * u.sample_rate) : int(p.end * u.sample_rate)].astype(float)
            x -= x.mean()
            ac = np.correlate(x, x, "full")[len(x) - 1 :]
            lo, hi = u.sample_rate // 400, u.sample_rate // 60
            out.append(u.sample_rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(out))


def test_segments_to_phones_tiles_and_drops_empty() -> None:
    phones = segments_to_phones([("pau", 0.2), ("b", 0.3), ("b", 0.3), ("aa", 0.5)], 0.55)
    assert [p.ipa for p in phones] == ["", "b", "ɑ", ""]
    assert phones[0].start == 0.0 and phones[-1].end == 0.55


def test_scheme_string_escapes() -> None:
    assert scheme_string('say "hi"\\\n now') == '"say \\"hi\\"\\\\ now"'


def test_missing_festival_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FestivalError, match="apt-get install festival"):
        festival_binary()


@needs_festival
def test_voices_and_phone_set(kal: FestivalSynth) -> None:
    assert "kal_diphone" in available_voices()
    assert kal.info.phoneset == "radio"
    assert kal.info.family == "festival-diphone"
    with pytest.raises(FestivalError, match="not installed"):
        FestivalSynth("no_such_voice")


@needs_festival
def test_timings_tile_the_audio(bob: AlignedUtterance) -> None:
    assert bob.sample_rate == 16000 and bob.audio.dtype == np.float32
    assert bob.source == "festival:kal_diphone" and bob.text == SENTENCE
    assert tiles_audio(bob)
    assert all(p.end > p.start for p in bob.phones)
    assert bob.phones[0].ipa == "" and bob.phones[-1].ipa == ""
    assert not "".join(unmapped_symbols(p.ipa) for p in bob.phones)
    speech = [p.ipa for p in bob.phones if p.ipa]
    assert speech == ["b", "ɑ", "b", "b", "ɔ", "t", "ə", "b", "ɪ", "ɡ", "m", "æ", "p"]


@needs_festival
def test_bilabial_closures_quieter_than_neighbouring_vowels(bob: AlignedUtterance) -> None:
    levels = phone_levels_db(bob)
    gaps = []
    for i, p in enumerate(bob.phones):
        if p.ipa in CLOSURES:
            vowels = [levels[j] for j in (i - 1, i + 1) if _is_vowel(bob.phones[j].ipa)]
            if vowels:
                gaps.append(np.mean(vowels) - levels[i])
    assert len(gaps) >= 4
    assert np.mean(gaps) > 10.0  # dB; measured ~25 on kal_diphone


@needs_festival
def test_batch_keeps_order_and_rate_stretch(kal: FestivalSynth) -> None:
    texts = ["One.", 'A "quoted" word.', "Three (in brackets)."]
    batched = FestivalSynth("kal_diphone", batch_size=2).synthesize(texts)
    assert [u.text for u in batched] == texts
    slow = kal.synthesize(texts, rate_stretch=1.5)
    ratio = sum(u.duration for u in slow) / sum(u.duration for u in batched)
    assert 1.35 < ratio < 1.65
    assert [len(u.phones) for u in slow] == [len(u.phones) for u in batched]


@needs_festival
def test_pitch_scale_moves_f0(kal: FestivalSynth, bob: AlignedUtterance) -> None:
    high = kal.synthesize([SENTENCE], pitch_scale=1.3)[0]
    assert 1.15 < _f0(high) / _f0(bob) < 1.45


@needs_festival
def test_hts_voice_rate_but_no_pitch() -> None:
    hts = _voice("cmu_us_slt_arctic_hts")
    assert hts.info.family == "festival-hts"
    normal, fast = (hts.synthesize([SENTENCE], rate_stretch=s)[0] for s in (1.0, 0.8))
    assert normal.sample_rate == 32000 and tiles_audio(normal)
    assert 0.7 < fast.duration / normal.duration < 0.9
    with pytest.raises(FestivalError, match="cannot change pitch"):
        hts.synthesize([SENTENCE], pitch_scale=1.2)
