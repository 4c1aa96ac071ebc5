"""Real human speech from Debian packages, force-aligned with pocketsphinx."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from avatar.data.align import AlignedPhone, AlignmentResult, non_rhotic, phones_from_alignment
from avatar.data.human import (
    HumanSpeechError,
    Recording,
    alignment_quality_report,
    alsa_recordings,
    human_speech_set,
    klettres_recordings,
    ktuberling_recordings,
)
from avatar.motion.phonemes import unmapped_symbols

ALSA = Path("/usr/share/sounds/alsa")
needs_alsa = pytest.mark.skipif(
    not (ALSA / "Front_Center.wav").exists(),
    reason="alsa-utils' recordings are not installed (apt-get install alsa-utils)",
)
FRONT_CENTER = ["f", "ɹ", "ʌ", "n", "t", "s", "ɛ", "n", "t", "ɝ"]


@pytest.fixture(scope="module")
def alsa_set(tmp_path_factory: pytest.TempPathFactory) -> list:
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    if not (ALSA / "Front_Center.wav").exists():
        pytest.skip("alsa-utils' recordings are not installed (apt-get install alsa-utils)")
    cache = tmp_path_factory.mktemp("human-cache")
    return human_speech_set(cache, recordings=alsa_recordings())


def test_non_rhotic_variants() -> None:
    assert non_rhotic("K AA R") == "K AA"
    assert non_rhotic("IH R") == "IH AH"
    assert non_rhotic("R EH D") == "R EH D"
    assert non_rhotic("S T AA R Z") == "S T AA Z"
    assert non_rhotic("K AE R IY") == "K AE R IY"  # R before a vowel stays


def test_phones_from_alignment_tiles_clip() -> None:
    # Aligned on a padded clip: frames before 0 belong to the padding.
    raw = [("SIL", -25, 30), ("B", 5, 4), ("IY", 9, 20), ("SIL", 29, 30)]
    result = AlignmentResult([AlignedPhone(a, "w", s, n) for a, s, n in raw], -5.0, 0.5)
    phones = phones_from_alignment(result, 0.5)
    assert [p.ipa for p in phones] == ["", "b", "i", ""]
    assert phones[0].start == 0.0 and phones[-1].end == 0.5
    assert all(a.end == b.start for a, b in pairwise(phones))
    assert all(p.end - p.start >= 0.03 for p in phones)


def test_no_recordings_names_the_packages() -> None:
    with pytest.raises(HumanSpeechError, match="apt-get install alsa-utils"):
        human_speech_set(recordings=[])


@needs_alsa
def test_alsa_catalogue_excludes_noise() -> None:
    recs = alsa_recordings()
    assert len(recs) >= 8
    assert all(r.path.stem != "Noise" for r in recs)
    assert Recording("alsa-utils", "Front_Center", ALSA / "Front_Center.wav",
                     ("front", "center"), "en-US") in recs  # fmt: skip


def test_game_catalogues_parse_text() -> None:
    kt = {r.name: r for r in ktuberling_recordings()}
    kl = {r.name: r for r in klettres_recordings()}
    if not kt and not kl:
        pytest.skip("klettres-data / ktuberling-data are not installed")
    if kt:
        assert kt["en/egypt_palmtree.ogg"].words == ("palm", "tree")
        assert kt["en/egypt_camel.ogg"].text == "camel"
    if kl:
        assert kl["en/alpha/B.ogg"].text == "B"
        assert not any(r.words == ("ch",) for r in kl.values())  # phonics sounds left out


def test_front_center_phones_in_order(alsa_set: list) -> None:
    (utt,) = [u for u in alsa_set if u.source == "human:alsa-utils:Front_Center"]
    assert utt.text == "front center" and utt.family == "human"
    speech = [p.ipa for p in utt.phones if p.ipa]
    assert speech in (FRONT_CENTER, [s for i, s in enumerate(FRONT_CENTER) if i != 8])
    gap = [p for p in utt.phones if p.ipa == "" and 0.3 < p.start < 0.6]
    assert gap and gap[0].end - gap[0].start > 0.2  # the pause between the words


def test_alsa_alignments_are_sane(alsa_set: list) -> None:
    assert len(alsa_set) == len(alsa_recordings())
    lines: list[str] = []
    summary = alignment_quality_report(alsa_set, emit=lines.append)
    assert len(lines) == len(alsa_set) + 2
    assert summary.n_zero_length == 0 and summary.n_not_tiling == 0
    assert summary.min_phone_s >= 0.03 - 1e-9
    assert summary.vowel_minus_stop_db > 10.0  # measured ~29 dB
    assert summary.frac_vowels_louder == 1.0
    assert summary.max_loud_silence_s <= 0.05
    assert 0.5 * summary.total_s < summary.speech_s < summary.total_s
    assert not "".join(unmapped_symbols(p.ipa) for u in alsa_set for p in u.phones)


def test_cache_round_trip(alsa_set: list, tmp_path: Path) -> None:
    recs = alsa_recordings()[:2]
    first = human_speech_set(tmp_path, recordings=recs)
    assert (tmp_path / "human_alignments.json").exists()
    again = human_speech_set(tmp_path, recordings=recs)
    assert [u.phones for u in again] == [u.phones for u in first]
    assert [u.source for u in again] == [u.source for u in first]
