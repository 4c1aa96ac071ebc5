"""Public media (layout, checksums, download failures) and read sentences with alignments."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.data import media, sentences
from avatar.data.align import (
    AlignedPhone,
    AlignmentResult,
    align_recording,
    load_mono,
    recognise_recording,
    transcribe_recording,
)
from avatar.data.align import phones_from_alignment as to_phones
from avatar.data.alignment_report import loud_silence_s, tiles_audio
from avatar.data.human import MAX_LOUD_SILENCE_S
from avatar.data.media import MediaFile, cached_path, media_by_name, media_path
from avatar.data.sentences import SENTENCE_TEXT, spell_number, spell_year, transcript_words
from avatar.data.types import AlignedUtterance
from avatar.errors import HumanSpeechError, MediaError
from avatar.motion.phonemes import SILENCE, arpabet_to_ipa

LJ0002 = Path(__file__).parent / "data" / "LJ001-0002.flac"
LJ0002_TEXT = "in being comparatively modern."
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _item(data: bytes, member: str | None = None, path: str = "dir/clip.wav") -> MediaFile:
    sha = hashlib.sha256(data).hexdigest()
    return MediaFile("test/clip", "someone/repo", COMMIT, path, sha, "test", member)


class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(monkeypatch: pytest.MonkeyPatch, body: bytes, urls: list[str]) -> None:
    def urlopen(url: str, timeout: float) -> _Response:
        urls.append(url)
        return _Response(body)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


# ---- media ------------------------------------------------------------------------------------


def test_media_layout() -> None:
    plain = _item(b"x")
    assert cached_path(plain, Path("m")) == Path("m/someone+repo/dir/clip.wav")
    zipped = _item(b"x", member="A/b.mp4", path="misc/A.zip")
    assert cached_path(zipped, Path("m")) == Path("m/someone+repo/misc/A.zip.d/A/b.mp4")
    assert plain.url == f"https://raw.githubusercontent.com/someone/repo/{COMMIT}/dir/clip.wav"


def test_cached_file_with_wrong_checksum_names_the_url(tmp_path: Path) -> None:
    item = _item(b"the right bytes")
    path = cached_path(item, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"other bytes")
    with pytest.raises(MediaError, match=re.escape(item.url)) as err:
        media_path(item, tmp_path)
    assert "--media-dir" in str(err.value) and "\n" not in str(err.value)


def test_failed_download_names_the_url_and_media_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> Any:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    item = _item(b"x")
    with pytest.raises(MediaError, match=re.escape(item.url)) as err:
        media_path(item, tmp_path)
    assert "--media-dir" in str(err.value)
    assert not cached_path(item, tmp_path).exists()


def test_download_is_checked_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    urls: list[str] = []
    item = _item(b"audio bytes")
    _serve(monkeypatch, b"audio bytes", urls)
    path = media_path(item, tmp_path)
    assert path == cached_path(item, tmp_path) and path.read_bytes() == b"audio bytes"
    assert media_path(item, tmp_path) == path and urls == [item.url]  # no second download
    assert [p.name for p in path.parent.iterdir()] == ["clip.wav"]  # no temporary left over


def test_corrupt_download_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, b"truncated", [])
    item = _item(b"audio bytes")
    with pytest.raises(MediaError, match=re.escape(item.url)):
        media_path(item, tmp_path)
    assert not cached_path(item, tmp_path).parent.exists()


def test_zip_member_is_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("A/b.mp4", b"video")
        zf.writestr("A/c.mp4", b"other")
    _serve(monkeypatch, buf.getvalue(), [])
    item = _item(b"video", member="A/b.mp4", path="misc/A.zip")
    assert media_path(item, tmp_path).read_bytes() == b"video"
    missing = _item(b"video", member="A/none.mp4", path="misc/A.zip")
    with pytest.raises(MediaError, match=re.escape("A/none.mp4")):
        media_path(missing, tmp_path)


def test_manifests_are_complete_and_split_as_planned() -> None:
    items = (*media.SENTENCE_AUDIO, *media.TALKER_CLIPS)
    assert len({m.name for m in items}) == len(items) == 45 + 20
    assert all(re.fullmatch(r"[0-9a-f]{40}", m.commit) for m in items)
    assert all(re.fullmatch(r"[0-9a-f]{64}", m.sha256) for m in items)
    test = {m.name for m in items if m.split == "test"}
    assert {m.split for m in items} == {"dev", "test"}
    assert "ljspeech/LJ001-0017" in test and "ljspeech/LJ001-0016" not in test
    assert "talker/may" in test and "talker/retalk-4" in test and "talker/retalk-3" not in test
    assert {"speechbrain/spk2_snt1", "talker/pcavs-00473"} <= test
    assert "jfk/jfk" not in test and "talker/pcavs-00015" not in test
    assert set(SENTENCE_TEXT) == {m.name for m in media.SENTENCE_AUDIO}
    assert media_by_name("talker/pcavs-00010").member == "Input/00010.mp4"
    with pytest.raises(MediaError, match="nope"):
        media_by_name("nope")


# ---- transcripts ------------------------------------------------------------------------------


def test_numbers_are_spelled() -> None:
    assert spell_number(0) == "zero" and spell_number(40) == "forty"
    assert spell_number(342) == "three hundred forty two"
    assert spell_number(1_000_001) == "one million one"
    assert spell_year(1465) == "fourteen sixty five" and spell_year(1905) == "nineteen oh five"
    assert spell_year(1900) == "nineteen hundred" and spell_year(2005) == "two thousand five"
    assert transcript_words("In 1465, 42 men paid 1,500 and 3.25.") == (
        "in", "fourteen", "sixty", "five", "forty", "two", "men", "paid",
        "one", "thousand", "five", "hundred", "and", "three", "point", "two", "five",
    )  # fmt: skip


def test_punctuation_and_hyphens_are_dropped() -> None:
    text = 'The "forty-two line Bible" (ne-plus-ultra; i.e. etc.) -- missals, psalters!'
    assert transcript_words(text) == (
        "the", "forty", "two", "line", "bible", "ne", "plus", "ultra", "i", "e", "et",
        "cetera", "missals", "psalters",
    )  # fmt: skip


def test_apostrophes_follow_the_dictionary() -> None:
    known = {"don't", "americans", "o'clock", "its"}.__contains__
    words = transcript_words("Don\u2019t, 'Americans' at o'clock; it's its'", known)
    assert words == ("don't", "americans", "at", "o'clock", "its", "its")
    assert transcript_words("rock'n'roll", known) == ("rock'n'roll",)  # unknown: kept, reported


# ---- alignment (pocketsphinx) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def aligner() -> sentences.SentenceAligner:
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    return sentences.SentenceAligner()


def test_every_transcript_word_has_a_pronunciation(aligner: sentences.SentenceAligner) -> None:
    assert sentences.unknown_words(aligner) == {}


def test_unknown_words_are_reported(
    aligner: sentences.SentenceAligner, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = _item(b"x")
    monkeypatch.setitem(SENTENCE_TEXT, item.name, "the zorblaxian spoke")
    assert sentences.unknown_words(aligner, (item,)) == {item.name: ["zorblaxian"]}


def test_lj_sentence_aligns_with_silence_around_it(aligner: sentences.SentenceAligner) -> None:
    audio, rate = load_mono(LJ0002)
    # LJSpeech clips start within ~10 ms of the speech; 0.3 s of quiet on each side gives the
    # aligner silence to find, so its edges can be checked.
    quiet = np.random.default_rng(0).normal(0.0, 1e-4, int(0.3 * rate)).astype(np.float32)
    audio = np.concatenate([quiet, audio, quiet])
    words = transcript_words(LJ0002_TEXT, aligner.knows)
    assert words == ("in", "being", "comparatively", "modern")
    result = align_recording(aligner, words, audio, rate)
    expected = " ".join(aligner.pronunciations(w)[0] for w in words).split()
    speech = [p for p in result.phones if p.arpabet != "SIL"]
    assert [p.arpabet for p in speech] == expected
    assert list(dict.fromkeys(p.word for p in speech)) == list(words)
    utt = AlignedUtterance(audio, rate, to_phones(result, len(audio) / rate), LJ0002_TEXT, "t", "t")
    assert tiles_audio(utt)
    assert [p.ipa for p in utt.phones if p.ipa] == [arpabet_to_ipa(a) for a in expected]
    first, last = utt.phones[0], utt.phones[-1]
    assert first.ipa == SILENCE and 0.2 < first.end < 0.4
    assert last.ipa == SILENCE and last.end - last.start > 0.25
    assert loud_silence_s(utt) <= MAX_LOUD_SILENCE_S


def test_lj_sentence_without_its_transcript(aligner: sentences.SentenceAligner) -> None:
    # No transcript (a real talker's clip): the words pocketsphinx hears, or its phones alone.
    audio, rate = load_mono(LJ0002)
    duration = len(audio) / rate
    words = transcribe_recording(aligner, audio, rate)
    assert words[:3] == ["in", "being", "comparatively"]
    heard = to_phones(align_recording(aligner, words, audio, rate), duration)
    assert [p.ipa for p in heard[:4]] == ["ɪ", "n", "b", "i"]
    loop = to_phones(recognise_recording(aligner, audio, rate), duration)
    assert tiles_audio(AlignedUtterance(audio, rate, loop, "", "t", "t"))
    assert loop[0].start == 0.0 and loop[-1].end == duration
    assert 10 <= sum(1 for p in loop if p.ipa) <= 30  # 22 phones said


def test_three_frame_phone_survives_phones_from_alignment() -> None:
    # Frames 47-50 end up 0.02999... s long after the boundary shift and are merged away.
    raw = [("SIL", -25, 67), ("K", 42, 5), ("AH", 47, 3), ("M", 50, 6), ("SIL", 56, 30)]
    result = AlignmentResult([AlignedPhone(a, "w", s, n) for a, s, n in raw], -5.0, 0.5)
    assert [p.ipa for p in to_phones(result, 0.86)] == ["", "k", "ʌ", "m", ""]


def test_sentence_set_aligns_and_caches(
    aligner: sentences.SentenceAligner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = media_by_name("ljspeech/LJ001-0002")
    cached = cached_path(item, tmp_path / "media")
    cached.parent.mkdir(parents=True)
    shutil.copy(LJ0002, cached)
    monkeypatch.setattr(sentences, "SENTENCE_AUDIO", (item,))
    (utt,) = sentences.sentence_set("dev", tmp_path / "media", tmp_path / "cache")
    assert (utt.source, utt.family, utt.meta["split"]) == ("ljspeech:LJ001-0002", "ljspeech", "dev")
    assert utt.text == LJ0002_TEXT and tiles_audio(utt)
    assert float(utt.meta["loud_silence_s"]) <= MAX_LOUD_SILENCE_S
    assert 0.3 < float(utt.meta["loop_agreement"]) <= 1.0
    assert sentences.sentence_set("test", tmp_path / "media", tmp_path / "cache") == []
    with pytest.raises(ValueError, match="train"):
        sentences.sentence_set("train", tmp_path / "media", tmp_path / "cache")

    def no_aligner() -> None:
        raise HumanSpeechError("the cache should have been used")

    monkeypatch.setattr(sentences, "SentenceAligner", no_aligner)
    (again,) = sentences.sentence_set(None, tmp_path / "media", tmp_path / "cache")
    assert again.phones == utt.phones
