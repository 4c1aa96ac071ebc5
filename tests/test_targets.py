"""Phone tables and coarticulated targets."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.data.types import Phone
from avatar.motion.channels import BLENDSHAPE_INDEX, VISEME_INDEX
from avatar.motion.phonemes import arpabet_to_ipa, split_segments, unmapped_symbols, viseme_of
from avatar.motion.targets import motion_targets

JAW = BLENDSHAPE_INDEX["jawOpen"]
PUCKER = BLENDSHAPE_INDEX["mouthPucker"]


def _seq(*items: tuple[str, float]) -> list[Phone]:
    out, t = [], 0.0
    for ipa, dur in items:
        out.append(Phone(ipa, t, t + dur))
        t += dur
    return out


def _at(phones: list[Phone], t: float) -> np.ndarray:
    bs, _ = motion_targets(phones, np.array([t]))
    return bs[0]


@pytest.mark.parametrize(
    ("ipa", "viseme"),
    [
        ("p", "PP"),
        ("b", "PP"),
        ("m", "PP"),
        ("f", "FF"),
        ("θ", "TH"),
        ("t", "DD"),
        ("k", "kk"),
        ("ʃ", "CH"),
        ("s", "SS"),
        ("n", "nn"),
        ("ɹ", "RR"),
        ("ɑː", "aa"),
        ("ɛ", "E"),
        ("iː", "ih"),
        ("ɔ", "oh"),
        ("uː", "ou"),
        ("tʃ", "CH"),
    ],
)
def test_viseme_table(ipa: str, viseme: str) -> None:
    segs = split_segments(ipa)
    assert len(segs) == 1 and viseme_of(segs[0].symbol) == viseme


def test_diphthongs_split_and_nothing_unmapped() -> None:
    assert [s.symbol for s in split_segments("aɪ")] == ["a", "ɪ"]
    for p in ("ˈaʊ", "əʊ", "ɜː", "n̩", "ɚ", "ᵻ", "a#", "eə", "ɔø", "yː", "?", "(en)", "ʃ(en)"):
        assert unmapped_symbols(p) == "", p


def test_arpabet() -> None:
    assert arpabet_to_ipa("AY1") == "aɪ"
    assert arpabet_to_ipa("pau") == ""
    with pytest.raises(KeyError):
        arpabet_to_ipa("qq")


def test_bilabials_close_and_vowels_open_by_height() -> None:
    phones = _seq(
        ("", 0.3), ("ɑ", 0.15), ("b", 0.08), ("ɑ", 0.15), ("m", 0.08), ("i", 0.15), ("", 0.3)
    )
    assert _at(phones, 0.3 + 0.15 + 0.04)[JAW] < 0.05  # middle of b
    assert _at(phones, 0.3 + 0.15 + 0.08 + 0.15 + 0.04)[JAW] < 0.05  # middle of m
    open_a = _at(phones, 0.3 + 0.075)[JAW]
    close_i = _at(phones, 0.3 + 0.15 + 0.08 + 0.15 + 0.08 + 0.075)[JAW]
    assert open_a > 0.5 and close_i < 0.25
    assert _at(phones, 0.05)[JAW] == pytest.approx(0.0, abs=0.01)  # rest in silence


def test_lip_rounding_anticipates_through_a_velar() -> None:
    # "key" vs "coo": the k takes the rounding of the following vowel.
    k_mid = 0.2 + 0.04
    key = _seq(("", 0.2), ("k", 0.08), ("i", 0.2), ("", 0.2))
    coo = _seq(("", 0.2), ("k", 0.08), ("u", 0.2), ("", 0.2))
    assert _at(coo, k_mid)[PUCKER] > _at(key, k_mid)[PUCKER] + 0.2


def test_viseme_labels_follow_the_alignment() -> None:
    phones = _seq(("", 0.1), ("m", 0.1), ("ɑ", 0.1))
    _, labels = motion_targets(phones, np.array([0.05, 0.15, 0.25, 0.5]))
    assert labels.tolist() == [VISEME_INDEX[v] for v in ("sil", "PP", "aa", "sil")]
