"""Write avatar/assets/sample.ogg: the bundled demo speech (espeak-ng, a held-out voice, Opus).

The voice (espeak-ng ``en-gb-scotland``) and the sentences are not in the training corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.audio.write import encode_audio
from avatar.data import augment as aug
from avatar.data.espeak import EspeakSynth, Prosody

TEXT = (
    "Hello! My name is Emma, and I am happy to meet you. "
    "Bob bought a big map, and we moved to the blue house by the sea."
)


def main() -> None:
    synth = EspeakSynth()
    synth.set_voice("en-gb-scotland+f2", Prosody(rate=150, pitch=55, pitch_range=60))
    utt = aug.clean(synth.synthesize(TEXT, "espeak:en-gb-scotland+f2", "sample"))
    up = aug.resample(utt, 48000).audio
    out = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "sample.ogg"
    encode_audio(out, "libopus", np.clip(up, -1, 1), 48000)
    print(f"{out}: {len(up) / 48000:.2f} s, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
