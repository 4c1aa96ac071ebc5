"""Augmentations keep the phone alignment exact, hit their targets and stay in range."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import signal

from avatar.data import augment as aug
from avatar.data.noise import _pseudo_talker
from avatar.data.types import AlignedUtterance, Phone


def _click_utterance(seed: int, sr: int = 22050, n_phones: int = 12) -> AlignedUtterance:
    """A quiet tone with a one-sample click at every phone boundary (phones 60-200 ms)."""
    rng = np.random.default_rng(seed)
    edges = np.concatenate([[0.0], np.cumsum(rng.uniform(0.06, 0.2, n_phones))])
    n = round(edges[-1] * sr)
    edges[-1] = n / sr
    x = (0.02 * np.sin(2 * np.pi * 220 * np.arange(n) / sr)).astype(np.float32)
    for e in edges[1:-1]:
        x[round(e * sr)] += 0.8
    phones = [Phone("a" if i % 3 else "", edges[i], edges[i + 1]) for i in range(n_phones)]
    return AlignedUtterance(x, sr, phones, "", "test:clicks", "test")


def _speechlike(seed: int, seconds: float = 1.5, sr: int = 16000) -> AlignedUtterance:
    """Pseudo speech with digital-zero pauses and an alignment of 100 ms phones."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    x = 0.1 * _pseudo_talker(rng, n, sr)
    x[np.abs(x) < 0.002] = 0.0
    edges = [*np.arange(0.0, seconds - 0.05, 0.1), n / sr]
    phones = [
        Phone("" if i % 4 == 0 else "a", a, b) for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]
    return AlignedUtterance(x.astype(np.float32), sr, phones, "", "test:babble", "test")


def _click_errors_ms(utt: AlignedUtterance, skip_s: float = 0.0) -> np.ndarray:
    """Offset of the loudest high-passed transient within 10 ms of each phone boundary."""
    sr = utt.sample_rate
    sos = signal.butter(4, 1000.0, "highpass", fs=sr, output="sos")
    env = np.abs(signal.hilbert(signal.sosfiltfilt(sos, utt.audio.astype(np.float64))))
    w = round(0.01 * sr)
    errors = []
    for p in utt.phones[1:]:
        i = round(p.start * sr)
        if p.start > skip_s and w <= i < len(env) - w:
            errors.append((int(np.argmax(env[i - w : i + w])) - w) / sr * 1000.0)
    return np.array(errors)


def _speech_mask(utt: AlignedUtterance) -> np.ndarray:
    mask = np.zeros(len(utt.audio), dtype=bool)
    for p in utt.phones:
        if p.ipa:
            mask[round(p.start * utt.sample_rate) : round(p.end * utt.sample_rate)] = True
    return mask


def test_conform_phones_fills_gaps_and_snaps_ends() -> None:
    phones = [Phone("a", 0.01, 0.2), Phone("b", 0.25, 0.5), Phone("c", 0.5, 0.9)]
    out = aug.conform_phones(phones, 0.8)
    assert [p.ipa for p in out] == ["", "a", "", "b", "c"]
    assert out[0].start == 0.0 and out[-1].end == 0.8
    aug.check_alignment(AlignedUtterance(np.zeros(800, np.float32), 1000, out, "", "t", "t"))


def test_resample_to_training_rate_keeps_phones() -> None:
    utt = _click_utterance(0)
    out = aug.resample(utt)
    assert out.sample_rate == aug.TRAIN_RATE and out.audio.dtype == np.float32
    aug.check_alignment(out)
    assert abs(out.duration - utt.duration) < 1.0 / aug.TRAIN_RATE
    assert [p.start for p in out.phones[1:]] == [p.start for p in utt.phones[1:]]
    assert np.all(np.abs(_click_errors_ms(out)) <= 0.1)


@pytest.mark.parametrize("factor", [0.93, 1.07])
def test_speed_change_scales_phone_times(factor: float) -> None:
    utt = aug.resample(_click_utterance(1))
    out = aug.change_speed(utt, factor)
    used = float(out.meta["aug_speed"])
    assert abs(used - factor) < 0.005
    aug.check_alignment(out)
    assert abs(out.duration - utt.duration / used) < 1.0 / utt.sample_rate
    for a, b in zip(utt.phones[1:], out.phones[1:], strict=True):
        assert b.start == pytest.approx(a.start / used, abs=1e-9)
    assert np.all(np.abs(_click_errors_ms(out)) <= 0.2)


@pytest.mark.parametrize("kbps", [12, 32])
def test_clicks_stay_on_boundaries_after_speed_padding_opus(kbps: int) -> None:
    out = aug.resample(_click_utterance(2))
    out = aug.change_speed(out, 1.06)
    out = aug.pad(out, 0.37, 0.21)
    out = aug.opus_round_trip(out, kbps * 1000)
    aug.check_alignment(out)
    errors = _click_errors_ms(out)
    assert len(errors) >= 11  # the 11 clicks, and the tone stopping where the padding starts
    assert np.max(np.abs(errors)) <= 2.0


@pytest.mark.parametrize("rate", [0.93, 1.07])
def test_time_stretch_keeps_pitch_and_alignment(rate: float) -> None:
    sr = 16000
    t = np.arange(2 * sr) / sr
    k = np.arange(1, 6)[:, None]
    tone = np.sum(np.sin(2 * np.pi * 150 * k * t) / k, axis=0).astype(np.float32)
    utt = AlignedUtterance(0.2 * tone, sr, [Phone("a", 0.0, 2.0)], "", "t", "t")
    out = aug.time_stretch(utt, rate)
    assert out.duration == pytest.approx(2.0 / rate, abs=1e-3)
    freqs, power = signal.welch(out.audio, sr, nperseg=8192)
    assert abs(freqs[np.argmax(power)] - 150.0) < 3.0
    clicks = aug.time_stretch(aug.resample(_click_utterance(3)), rate)
    aug.check_alignment(clicks)
    assert np.max(np.abs(_click_errors_ms(clicks))) <= 4.0  # transients are WSOLA's worst case


def test_pad_labels_silence_and_room_tone_fills_zeros() -> None:
    utt = _speechlike(4)
    assert np.mean(utt.audio == 0.0) > 0.05
    out = aug.pad(utt, 0.5, 0.25)
    aug.check_alignment(out)
    assert out.phones[0] == Phone("", 0.0, 0.5 + utt.phones[0].end)  # merged with a silence
    assert out.phones[-1].ipa == "" and out.phones[-1].end == pytest.approx(out.duration)
    assert out.phones[1].start == pytest.approx(utt.phones[1].start + 0.5)
    toned = aug.add_room_tone(out, np.random.default_rng(0), 50.0)
    assert np.mean(toned.audio == 0.0) < 1e-3
    lead = toned.audio[: round(0.4 * out.sample_rate)].astype(np.float64)
    speech = toned.audio[_speech_mask(toned)].astype(np.float64)
    level_db = 10 * np.log10(np.mean(speech**2) / np.mean(lead**2))
    assert 47.0 < level_db < 53.0


@pytest.mark.parametrize("kind", sorted(aug.NOISE_WEIGHTS))
def test_noise_snr_as_requested(kind: str) -> None:
    utt = _speechlike(5)
    out = aug.add_noise(utt, np.random.default_rng(1), kind, 12.0)
    noise = out.audio.astype(np.float64) - utt.audio
    mask = _speech_mask(utt)
    snr = 10 * np.log10(np.mean(utt.audio[mask].astype(np.float64) ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(12.0, abs=0.3)
    assert out.phones == utt.phones


@pytest.mark.parametrize("kbps", [12, 24, 48])
def test_opus_round_trip_is_not_shifted(kbps: int) -> None:
    utt = _speechlike(6, seconds=2.0)
    out = aug.opus_round_trip(utt, kbps * 1000)
    assert len(out.audio) == len(utt.audio) and out.phones == utt.phones
    x, y = utt.audio.astype(np.float64), out.audio.astype(np.float64)
    corr = signal.correlate(y, x, mode="full", method="fft")
    lag = int(np.argmax(corr)) - (len(x) - 1)
    assert abs(lag) <= utt.sample_rate // 1000  # 1 ms
    assert corr.max() / np.sqrt(np.sum(x**2) * np.sum(y**2)) > 0.5


def test_opus_delay_is_measured_and_small() -> None:
    assert abs(aug.opus_delay()) < aug.OPUS_FRAME


def test_opus_packet_loss_leaves_gaps_but_keeps_alignment() -> None:
    utt = aug.pad(_speechlike(7), 0.0, 0.0)
    out = aug.opus_round_trip(utt, 24000, loss_rate=0.2, rng=np.random.default_rng(0))
    assert float(out.meta["aug_opus_lost"]) > 0
    aug.check_alignment(out)
    assert len(out.audio) == len(utt.audio)
    with pytest.raises(ValueError):
        aug.opus_round_trip(utt, 24000, loss_rate=0.1)


def test_reverb_direct_path_at_lag_zero_and_drr() -> None:
    rir = aug.synthetic_rir(np.random.default_rng(0), 16000, 0.5, 6.0)
    assert rir[0] == 1.0 and int(np.argmax(np.abs(rir))) == 0
    assert 10 * np.log10(1.0 / np.sum(rir[1:] ** 2)) == pytest.approx(6.0, abs=1e-6)
    tail = np.abs(rir[8000 - 800 : 8000])
    assert np.sqrt(np.mean(tail**2)) < 0.01 * np.sqrt(np.mean(rir[1:800] ** 2))
    utt = aug.resample(_click_utterance(8))
    out = aug.reverberate(utt, rir)
    assert len(out.audio) == len(utt.audio)
    assert np.max(np.abs(_click_errors_ms(out))) <= 0.5


def test_gain_limits_peaks_and_overdrive_clips_lightly() -> None:
    utt = _speechlike(9)
    loud = aug.apply_gain(utt, 40.0)
    assert np.max(np.abs(loud.audio)) <= aug.PEAK_CEILING + 1e-6
    assert np.mean(np.abs(loud.audio) >= aug.PEAK_CEILING - 1e-6) < 0.001
    driven = aug.apply_gain(utt, 40.0, overdrive_db=2.0)
    clipped = np.mean(np.abs(driven.audio) >= aug.PEAK_CEILING - 1e-6)
    assert 0.0 < clipped < 0.05
    quiet = aug.set_level(utt, -40.0)
    speech = quiet.audio[_speech_mask(quiet)].astype(np.float64)
    assert 10 * np.log10(np.mean(speech**2)) == pytest.approx(-40.0, abs=0.1)


def test_filters_keep_length_and_phones() -> None:
    utt = _speechlike(10)
    rng = np.random.default_rng(0)
    for out in (aug.random_eq(utt, rng), aug.random_band_limit(utt, rng)):
        assert len(out.audio) == len(utt.audio) and out.phones == utt.phones
        assert np.all(np.isfinite(out.audio))
    tel = aug.band_limit(utt, 300.0, 3400.0)
    freqs, power = signal.welch(tel.audio, 16000, nperseg=1024)
    assert power[freqs > 5000].mean() < 1e-3 * power[(freqs > 500) & (freqs < 3000)].mean()


def test_augment_outputs_are_valid() -> None:
    utt = _speechlike(11, seconds=1.0, sr=22050)
    for seed in range(12):
        out = aug.augment(utt, np.random.default_rng(seed))
        assert out.sample_rate == 16000 and out.audio.dtype == np.float32
        assert np.all(np.isfinite(out.audio)) and np.max(np.abs(out.audio)) <= 1.0
        aug.check_alignment(out, tol_s=1e-6)
        assert [p.ipa for p in out.phones if p.ipa] == [p.ipa for p in utt.phones if p.ipa]


def test_augment_chain_keeps_clicks_on_boundaries() -> None:
    probs = aug.AugmentProbabilities(
        speed=1.0, stretch=0.0, pad=1.0, reverb=0.0, noise=0.0, eq=0.0, band=0.0, opus=1.0
    )
    out = aug.augment(_click_utterance(12), np.random.default_rng(3), probs=probs)
    assert "aug_speed" in out.meta and "aug_opus_kbps" in out.meta
    errors = _click_errors_ms(out, skip_s=float(out.meta["aug_pad_lead"]) + 0.03)
    assert len(errors) >= 10 and np.max(np.abs(errors)) <= 2.0


def test_augment_is_deterministic_for_a_seed() -> None:
    utt = _speechlike(13, seconds=1.0)
    a = aug.augment(utt, np.random.default_rng(42))
    b = aug.augment(utt, np.random.default_rng(42))
    c = aug.augment(utt, np.random.default_rng(43))
    assert np.array_equal(a.audio, b.audio) and a.phones == b.phones and a.meta == b.meta
    assert not (len(a.audio) == len(c.audio) and np.array_equal(a.audio, c.audio))


def test_strength_zero_leaves_only_rate_tone_level_and_codec() -> None:
    utt = _speechlike(14, seconds=1.0, sr=22050)
    for seed in range(4):
        out = aug.augment(utt, np.random.default_rng(seed), strength=0.0)
        assert out.duration == pytest.approx(utt.duration, abs=1e-4)
        assert not any(k in out.meta for k in ("aug_speed", "aug_noise", "aug_rt60_s"))
        assert float(out.meta["aug_gain_db"]) != 0.0


def test_clean_pads_a_little_and_removes_digital_zeros() -> None:
    utt = _speechlike(15, seconds=1.0, sr=22050)
    out = aug.clean(utt)
    assert out.sample_rate == 16000
    aug.check_alignment(out)
    lead, trail = float(out.meta["aug_pad_lead"]), float(out.meta["aug_pad_trail"])
    assert 0.05 <= lead <= 0.3 and 0.05 <= trail <= 0.3
    assert np.mean(out.audio == 0.0) < 1e-3
    assert np.array_equal(out.audio, aug.clean(utt).audio)


def test_check_alignment_rejects_bad_phones() -> None:
    audio = np.zeros(1000, np.float32)
    with pytest.raises(ValueError):
        aug.check_alignment(AlignedUtterance(audio, 1000, [Phone("a", 0.0, 0.5)], "", "t", "t"))
    gap = [Phone("a", 0.0, 0.4), Phone("b", 0.5, 1.0)]
    with pytest.raises(ValueError):
        aug.check_alignment(AlignedUtterance(audio, 1000, gap, "", "t", "t"))
