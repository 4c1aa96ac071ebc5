"""Public real media, pinned by repository, commit and sha256, fetched when first needed.

Evaluation needs real people: read sentences (LJSpeech, JFK, two speechbrain test speakers)
and talking-face clips with their own sound (VoxCeleb2 clips shipped by PC-AVS, the examples of
video-retalking and Real3DPortrait). Several are YouTube content or of unclear licence, so none
is committed: each is named here by where it lives on GitHub and its checksum, and
:func:`media_path` downloads it into a cache (``media_dir/<owner>+<name>/<path>``) on first use.
Machines that cannot reach GitHub fill that layout another way (``scripts/media_from_mirror.py``)
and pass ``--media-dir``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from avatar.errors import MediaError

DEFAULT_MEDIA_DIR = Path("data/media")
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class MediaFile:
    """One public file (or one member of a public zip) at a fixed commit."""

    name: str  # short unique key, e.g. "ljspeech/LJ001-0001", "talker/may"
    repo: str  # "owner/name" on GitHub
    commit: str  # full 40-hex commit
    path: str  # path in the repo (for a zip member: the zip's path)
    sha256: str  # of the file itself (of the member when ``member`` is set)
    licence: str
    member: str | None = None  # a file inside the zip at ``path``
    split: str = "dev"  # "dev" (tuned on) or "test" (reported, never tuned on)

    @property
    def url(self) -> str:
        return RAW_URL.format(repo=self.repo, commit=self.commit, path=self.path)


def cached_path(item: MediaFile, media_dir: Path = DEFAULT_MEDIA_DIR) -> Path:
    """Where ``item`` lives in a media folder (whether or not it is there yet)."""
    base = media_dir / item.repo.replace("/", "+") / item.path
    return base if item.member is None else base.with_name(base.name + ".d") / item.member


def _hint(item: MediaFile) -> str:
    return f"({item.url}); --media-dir can point at a folder holding the files (same layout)"


def _verify(item: MediaFile, data: bytes, where: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != item.sha256:
        raise MediaError(f"{where}: sha256 {got[:12]}… is not {item.sha256[:12]}… {_hint(item)}")


def _member_bytes(item: MediaFile, data: bytes) -> bytes:
    if item.member is None:
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.read(item.member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise MediaError(f"cannot read {item.member} from the zip: {e} {_hint(item)}") from e


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def store(item: MediaFile, data: bytes, media_dir: Path = DEFAULT_MEDIA_DIR) -> Path:
    """Check ``data`` (the file at ``item.path``; a whole zip for a member) and cache it."""
    content = _member_bytes(item, data)
    _verify(item, content, f"{item.name} as fetched")
    path = cached_path(item, media_dir)
    _write_atomic(path, content)
    return path


def download(url: str, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The bytes at ``url``; raises :class:`MediaError` (with the URL) on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data: bytes = response.read()
            return data
    except (OSError, HTTPException, ValueError) as e:
        raise MediaError(f"download of {url} failed: {e}; --media-dir can point at a folder "
                         "holding the files (same layout)") from e  # fmt: skip


def media_path(item: MediaFile, media_dir: Path = DEFAULT_MEDIA_DIR) -> Path:
    """The cached file of ``item``, downloaded and checked first when missing.

    A cached file is checked too: a bad checksum raises :class:`MediaError` rather than feeding
    an evaluation the wrong clip.
    """
    path = cached_path(item, media_dir)
    if not path.exists():
        return store(item, download(item.url), media_dir)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e} {_hint(item)}") from e
    _verify(item, data, str(path))
    return path


def media_by_name(name: str) -> MediaFile:
    """The manifest entry called ``name``; raises :class:`MediaError` listing none."""
    for item in (*SENTENCE_AUDIO, *TALKER_CLIPS):
        if item.name == name:
            return item
    raise MediaError(f"no media file called {name!r}; see avatar/data/media.py")


# ---- manifests --------------------------------------------------------------------------------

_LJ_COMMIT = "dbf1a08a0d4e47fdad6172e433eeb34bc6b13b4e"  # coqui-ai/TTS
_LJ_LICENCE = "public domain (LJSpeech)"
_LJ_SHA256 = (
    "f8bd48d73b4b68fbed7876b99ea82b49970ed725792646fb59589d1425fcb166",
    "eb2f0800477f0909a6da78a4672bbeb840b34738da598f1d48b3782d821ba901",
    "354eb33d3fea455e66d37d0613caecd10aaad5998d04f2ef4fdda6da5f458d61",
    "05cb9b214056b7728f98c64819ac3675e1af205c11a5f45c0ef5e20972c10ac0",
    "eb3266697907e5f48e68ecbd942d7adebffa4a59e8eacc13e6f25035209cf8ee",
    "61552ea5c9a700b7510a2f7824a67ca07b94faf002dea619f86bcd39e57e87d7",
    "5db49d5feda102476df7f809492394c3b043d91b13dee4430cd2967ebab0b40d",
    "c08f886352396c02b8b081ba3230f71972025674f8bcda34d34bab26842aeb84",
    "e863e5cf12322b97f640484ba81ece7cfaefe863093dbec8b4b728d66a4ce8a3",
    "c5dd319ffb1252514b5cda0212c499b2ff4a727b04b8f29fc7c2f8501234acd1",
    "2869d7e82e84e5a295fc85479a700a655f1b5ec2b0563fd460e2de210226e994",
    "be56e3e18180d781a30581602bad2d6a43dad64f893c7326f5f53c35d825f057",
    "4ca88937219ad10c5b2be809d57fe33a9113edf06d544e22c93fd55efed3df6e",
    "86bbee6170d22e086c73b6db3d9a8aff76a5c16bdd767d8a903a3f187112f0f6",
    "e492bceef6988565c14ffaa1a489566b1fcd0c2c2d69a9741b498bfbf99504d1",
    "aec4fa912b769405b53bad625326b69d42527a4edae1057c10d42bc8b8ec393d",
    "fa36f70cfd207763221e7099e0d14b1a05210dd70db7b4fdf1286538d917e6ae",
    "ec4005a36806d622b8863ebe5fbff887f20fd725950a782e7f4ee06be3d053d1",
    "3d75067e8ec74010b936215be1f00510ff91ad5810e343664837f054376c4b0c",
    "5eeb59bf6dd71812468360779676aecc72c2329cc8970d654ad919948153c0a6",
    "6bf5ad2be591e9192cb67761aefc76ff8095790431d205fd9dc30c48ccf4ecc2",
    "fad6fa2cac572da6d960722a2f09226cbd9472aa42437e7e290b0b37c67971f6",
    "7314c8253fb30c6ea1cad7020adbd225abf697863d3087a72157d8dedd11dbcd",
    "0b73396076d41352c3461eeddcd790dea4c41b6b9dba555f3c59686bf794be7f",
    "13edd541f0744a6781d90a1f13f1c8f3de2f51cb0ebaea8a1a3e00b124a49d47",
    "c0c13dffa4cbf8ede5da61220da66716479498893d3d458cae447c4f5bbca8b2",
    "ffcaa2ff109a80c1f549dc83be8cb2b9f9905f5156564496bd44b42269263baf",
    "762fda20ec3d260c35def662cd273a38ad798386fb3cf106daf980341d64c74f",
    "37933375471a076dc93b59fd95427ae3dd09cd215bf60bd042015684c395ba58",
    "1569694e3210d33dd20a4f8e3141f969f38755de76088f72a22d9bc84d38ba0e",
    "ac4f84e48f352ce580186e8948c2678a145c3e9fdcd18db9c97aba0afb443f03",
    "08f17c357b9fe7524051e10587e556eff8a5ff569a134cd52c3c80210519ec14",
)  # LJ001-0001 .. LJ001-0032
_SB_COMMIT = "9c826ef3937bac885c8a6ca86c6889a30f256fb5"  # speechbrain/speechbrain
_SB_SHA256 = {
    "spk1_snt1": "2f7315ccf543b6368528b098cd895098c154f222cd55ff7b5f66b50feb383c56",
    "spk1_snt2": "e1f125a318f4026991bf78f5c41481be0fbcf9b3b2fd72284f9824cb851c3034",
    "spk1_snt3": "dc85f251ecb6f89652e8e3add9f35a39e86cb64a48384c89255437fd0f1bbc69",
    "spk1_snt4": "719e441a93a3ec220dfc4337c30944aa1774847739ae9d461c3280b612cf869d",
    "spk1_snt5": "6972d80554dfb14e5ad23c7b355a870e9beb18ab2331fbd4b12ff1777e6ed277",
    "spk1_snt6": "8811bcbdb867c887cdb036aadd97fa2a8023e90610b314c9913f79f712eb7b6c",
    "spk2_snt1": "5f3f534ba99f159358c6ee2e4fb5e42b3b9399f37f4e290651405c76095f26f0",
    "spk2_snt2": "589bcda06796c124544138d7ff40562c146be5e06c1765f2fb4d27c22d19ea8a",
    "spk2_snt3": "3831efa2081105f8c820312e83f605a320581761c75c52e06f908a12a5da8472",
    "spk2_snt4": "6dfc7295435a97f2b50c5e95e895fe223b56c61d64a4e0bcb3a663e45f893f4f",
    "spk2_snt5": "cf312453d454a3e006ac84ef84bd5880452b57e1a8d717f7e37dae65ceec8044",
    "spk2_snt6": "cdec920cdcbbb0b38110b958f6e90a4726c87be8d9d3f9d3a0834a1cc950cf6d",
}
_SB_LICENCE = "Apache-2.0 repo; test recordings of unclear origin: evaluation only, not committed"


def _lj(i: int, sha: str) -> MediaFile:
    name, split = f"LJ001-{i:04d}", "dev" if i <= 16 else "test"
    path = f"tests/data/ljspeech/wavs/{name}.flac"
    return MediaFile(
        f"ljspeech/{name}", "coqui-ai/TTS", _LJ_COMMIT, path, sha, _LJ_LICENCE, None, split
    )


def _speechbrain(stem: str, sha: str) -> MediaFile:
    split = "dev" if stem.startswith("spk1") else "test"
    path = f"tests/samples/ASR/{stem}.wav"
    return MediaFile(f"speechbrain/{stem}", "speechbrain/speechbrain", _SB_COMMIT, path, sha,
                     _SB_LICENCE, None, split)  # fmt: skip


SENTENCE_AUDIO: tuple[MediaFile, ...] = (
    *(_lj(i, sha) for i, sha in enumerate(_LJ_SHA256, start=1)),
    MediaFile("jfk/jfk", "openai/whisper", "c0d2f624c09dc18e709e37c2ad90c039a4eb72a2",
              "tests/jfk.flac", "63a4b1e4c1dc655ac70961ffbf518acd249df237e5a0152faae9a4a836949715",
              "public domain (J. F. Kennedy, inaugural address, 1961)", None, "dev"),
    *(_speechbrain(stem, sha) for stem, sha in _SB_SHA256.items()),
)  # fmt: skip

_PCAVS_COMMIT = "201d2b946caa93a2ce7c798dd080be65959d2592"  # Hangz-nju-cuhk/Talking-Face_PC-AVS
_PCAVS_SHA256 = {  # zip member (no .mp4) -> sha256; the folder names the split
    "Audio_Source/00015": "4759caf337eb8fb469d31847cec22240c8410a021c7e3aff835db3b19a562cd6",
    "Audio_Source/00086": "04db65a1ddee7e6d756885c4d37b46e431b88986bd26fa0daef6543025ab0543",
    "Audio_Source/00373": "1aefb001d28fcda4bbe7ce379d7ad2f65677940eaa3a3511d3e35b455a5281f2",
    "Audio_Source/681100216": "d5e54f0a14931b82c5f5a140dd1ec86314d20d82a7acc04a0afcac3f1d00279a",
    "Audio_Source/741400104": "5d20e5ecc5fbb0b9499bbe448ba1e79c5e5caeaad1277ca2d7f538d44d7e1bd7",
    "Input/00002": "278777bf8502239e9168c8bf4c225764c447c83c6dc7550bf5ec678a3835d294",
    "Input/00010": "8fdd6e3e657cd11617e2354ebbd00ec5e8592f407f114fb6a95a3c03898929d2",
    "Input/00098": "d4a21368be781e275dd02e8f3b7ad9605063b1bc09ed8e4f71c41d16904a7291",
    "Pose_Source/00473": "721d5efe2b68504e98e251c27c93735b9e02402e546b4ba6edf6e0634d694a8b",
    "Pose_Source/517600055": "72dab7f5ec26e1aae9021207502583d19333f4802ceea05644969e76af70b7ee",
    "Pose_Source/620900105": "922872bef7c567e162d2c1b92e78ec5a782c0198a2ee8dc40a89dcdc7a2ef4ab",
    "Pose_Source/731200067": "c8823334dca7d6d74521cfc42c3d57cc34fef371bba185304a2da2af602afedf",
    "Pose_Source/741400163": "9820bd934aff275ea2ad09439be1768a8cb6b8cc0f752b19b3b9e3184238970d",
    "Pose_Source/796100172": "3cba1ebee40c50ac2729b7ef60402c812d2b7184f1aa0c5cbb8cb436d2a75660",
}
_RETALK_COMMIT = "d32e8e58248255e2d243eeaf3cba545dbe505ca8"  # OpenTalker/video-retalking
_RETALK_SHA256 = (
    "60fb69b90af2edbcec762530bfab8be5be2753bca9f3f897005772b544313f94",
    "f7d30499bc380f4d18c18b1837fc1f6eb280fa21d79a9f7c6dd66db94296c43c",
    "707d58aa3511138bd69e51944a732e010cc6d9063d3d79c178b50fc33cdc0ecf",
    "414be3ad61f09432adfbc4933e0163539e94f74fc445c2b9114f8c64e38a480e",
    "f664ca850492bbe151898174f83e054ca90f7390696232a9935e10f88a31dfd4",
)  # examples/face/1.mp4 .. 5.mp4

_PCAVS_LICENCE = "CC BY 4.0 repo; YouTube clip (VoxCeleb2): evaluation only, not committed"
_RETALK_LICENCE = "Apache-2.0 repo; real person, source not stated: evaluation only, not committed"
_MAY_LICENCE = "MIT repo; real person, source not stated: evaluation only, not committed"


def _pcavs(stem: str, sha: str) -> MediaFile:
    folder, clip = stem.split("/")
    split = "test" if folder == "Pose_Source" else "dev"
    return MediaFile(f"talker/pcavs-{clip}", "Hangz-nju-cuhk/Talking-Face_PC-AVS", _PCAVS_COMMIT,
                     f"misc/{folder}.zip", sha, _PCAVS_LICENCE, f"{stem}.mp4", split)  # fmt: skip


def _retalk(i: int, sha: str) -> MediaFile:
    split = "dev" if i <= 3 else "test"
    return MediaFile(f"talker/retalk-{i}", "OpenTalker/video-retalking", _RETALK_COMMIT,
                     f"examples/face/{i}.mp4", sha, _RETALK_LICENCE, None, split)  # fmt: skip


TALKER_CLIPS: tuple[MediaFile, ...] = (
    *(_pcavs(stem, sha) for stem, sha in _PCAVS_SHA256.items()),
    *(_retalk(i, sha) for i, sha in enumerate(_RETALK_SHA256, start=1)),
    MediaFile("talker/may", "yerfor/Real3DPortrait", "a9d70c7ee81bc9349f0f5e558f406f75194bd776",
              "data/raw/examples/May_5s.mp4",
              "947610a55bf6c6802bb158027b2b5b83df1084a4c5eb5419068844ed05177026",
              _MAY_LICENCE, None, "test"),
)  # fmt: skip
