"""Conversion and verification of one recording file.

Everything here is synchronous and blocking: it runs in a worker process of
:class:`recordings.pool.ConverterPool` (or in a thread), never on the event loop.

pydub holds the audio (PCM WAV read natively, mono mix-down, duration, the normalised WAV that
goes to the encoder); ffmpeg decodes what is not PCM (WAV49/GSM) and encodes mp3/ogg(opus).
ffmpeg is run here rather than through ``AudioSegment.export`` so that its path is a parameter
(not pydub's class-wide guess from PATH), every run has a timeout, and a failed run leaves no
temporary files behind. The source file is only ever read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import struct
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recordings.errors import (
    ConversionFailed,
    ConverterUnavailable,
    CorruptAudio,
    EmptyAudio,
    RecordingMissing,
    StorageUnavailable,
)

with warnings.catch_warnings():
    # pydub 0.25.1 warns at import, none of it ours to fix: it imports the stdlib audioop
    # (DeprecationWarning in 3.11; audioop-lts replaces it on 3.13); pydub/utils.py has invalid
    # escape sequences (DeprecationWarning, SyntaxWarning from 3.12, when no .pyc exists yet);
    # and it looks for ffmpeg on PATH (RuntimeWarning if absent; we pass ffmpeg's path).
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
    warnings.filterwarnings("ignore", "invalid escape sequence", SyntaxWarning)
    warnings.filterwarnings("ignore", "Couldn't find ff", RuntimeWarning)
    from pydub import AudioSegment

Format = Literal["mp3", "ogg", "wav"]
FORMATS: tuple[Format, ...] = ("mp3", "ogg", "wav")

# container, encoder, file extension
_ENCODERS: dict[str, tuple[str, str, str]] = {
    "mp3": ("mp3", "libmp3lame", "mp3"),
    "ogg": ("ogg", "libopus", "ogg"),
}
# libopus accepts only these input rates; anything else is resampled to 48 kHz.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_BITRATE = re.compile(r"^\d{1,4}k$")
_WAVE_FORMAT_PCM = 1
# A data chunk size Asterisk has not rewritten yet (the header is finalised on close).
_UNFINALISED_SIZES = (0, 0xFFFFFFFF)
_STDERR_TAIL = 600
# ffmpeg's words (strerror) for an output it could not write: the disk, not the audio.
_SCRATCH_ERRORS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """How to convert. ``ffmpeg`` is the path of the executable, ``None`` when there is none."""

    format: Format = "mp3"
    bitrate: str = "32k"
    ffmpeg: str | None = None
    tolerance_s: float = 1.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if not _BITRATE.match(self.bitrate):
            raise ValueError(f"bitrate must look like '32k', got {self.bitrate!r}")


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """A verified file ready to be stored.

    ``path`` is the converted file in the output directory, or the source itself when nothing
    had to be converted (``converted`` is false: the target format is WAV and the source already
    is a clean mono PCM WAV, or there is no ffmpeg and the WAV is kept). ``duration_s`` is
    measured by decoding ``path``; ``source_duration_s`` by reading the source.
    """

    path: Path
    format: Format
    duration_s: float
    size: int
    sha256: str
    source_duration_s: float
    converted: bool


@dataclass(frozen=True, slots=True)
class WavHeader:
    """The parts of a RIFF/WAVE header that matter here."""

    format_tag: int
    channels: int
    frame_rate: int
    bits_per_sample: int
    data_offset: int
    declared_data_size: int
    file_size: int

    @property
    def available_data_size(self) -> int:
        """Bytes after the start of the data chunk."""
        return max(0, self.file_size - self.data_offset)

    @property
    def finalised(self) -> bool:
        """Whether the writer filled in the data size (Asterisk does so when it closes)."""
        return self.declared_data_size not in _UNFINALISED_SIZES

    @property
    def truncated(self) -> bool:
        """The header promises more audio than the file holds."""
        return self.finalised and self.declared_data_size > self.available_data_size

    @property
    def natively_readable(self) -> bool:
        """16-bit PCM, which pydub reads without ffmpeg."""
        return (
            self.format_tag == _WAVE_FORMAT_PCM
            and self.bits_per_sample == 16
            and self.channels > 0
            and self.frame_rate > 0
        )


def find_ffmpeg(configured: str | None = None) -> str | None:
    """The ffmpeg executable to use: ``configured`` (a path or a name on PATH) or ``ffmpeg``
    from PATH; ``None`` when there is none."""
    return shutil.which(configured or "ffmpeg")


def read_wav_header(data: bytes, file_size: int | None = None) -> WavHeader | None:
    """Parse the RIFF/WAVE header at the start of ``data``.

    Returns ``None`` when ``data`` is not a RIFF/WAVE file at all. Raises :class:`CorruptAudio`
    when it claims to be one but the chunks are malformed. ``file_size`` defaults to
    ``len(data)`` (pass the real size when ``data`` is only the head of the file).
    """
    size = len(data) if file_size is None else file_size
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (chunk_size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body + 16 > len(data):
                raise CorruptAudio(f"WAV fmt chunk of {chunk_size} bytes is too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise CorruptAudio("WAV data chunk comes before the fmt chunk")
            tag, channels, rate, bits = fmt
            return WavHeader(tag, channels, rate, bits, body, chunk_size, size)
        pos = body + chunk_size + (chunk_size & 1)
    raise CorruptAudio("WAV file has no data chunk")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def convert_recording(src: Path, out_dir: Path, options: ConvertOptions) -> ConversionResult:
    """Convert ``src`` to ``options.format`` in ``out_dir`` and verify the result.

    The output is written under a temporary name and renamed only once it decodes and its
    duration is within ``options.tolerance_s`` of the source's. ``src`` is never modified or
    deleted.

    Raises :class:`RecordingMissing` (no ``src``), :class:`CorruptAudio` / :class:`EmptyAudio`
    (``src`` does not decode or holds no audio), :class:`ConverterUnavailable` (ffmpeg needed but
    absent or not executable), :class:`ConversionFailed` (encoder error, unreadable output,
    duration mismatch, timeout), :class:`StorageUnavailable` (``out_dir`` cannot be written:
    disk full, I/O error).
    """
    src = Path(src)
    out_dir = Path(out_dir)
    if options.format != "wav" and options.ffmpeg is None:
        raise ConverterUnavailable(
            f"cannot convert {src.name} to {options.format}: ffmpeg is not installed",
            details={"file": src.name, "format": options.format},
        )
    segment, header = _load(src, options, out_dir)
    source_duration = round(segment.duration_seconds, 3)
    if options.format == "wav":
        if (
            header is not None
            and header.natively_readable
            and header.channels == 1
            and header.finalised
        ):
            return _unconverted(src, source_duration)
        return _write_wav(src, segment, out_dir, source_duration, options.tolerance_s)
    assert options.ffmpeg is not None
    # A clean mono PCM WAV goes to the encoder as it is; anything else (stereo, GSM, a header
    # never finalised) as the normalised WAV pydub writes.
    direct = (
        header is not None
        and header.natively_readable
        and header.channels == 1
        and header.finalised
    )
    return _encode_and_verify(
        src, segment, out_dir, source_duration, options, options.ffmpeg, direct=direct
    )


def inspect_recording(src: Path) -> ConversionResult:
    """Verify a PCM WAV without ffmpeg and describe it as the file to store (``converted`` is
    false, ``path`` is ``src``). Used when there is no ffmpeg: the WAV is kept as it is.

    Raises :class:`RecordingMissing`, :class:`CorruptAudio`, :class:`EmptyAudio`, or
    :class:`ConverterUnavailable` when the file is not PCM (WAV49/GSM needs ffmpeg).
    """
    src = Path(src)
    segment, _ = _load(src, ConvertOptions(format="wav"), src.parent)
    return _unconverted(src, round(segment.duration_seconds, 3))


# ------------------------------------------------------------------ decoding


def _load(
    src: Path, options: ConvertOptions, scratch: Path
) -> tuple[AudioSegment, WavHeader | None]:
    try:
        data = src.read_bytes()
    except FileNotFoundError:
        raise RecordingMissing(
            f"recording {src.name} does not exist", details={"file": src.name}
        ) from None
    except IsADirectoryError:
        raise CorruptAudio(
            f"recording {src.name} is a directory", details={"file": src.name}
        ) from None
    except OSError as exc:
        raise StorageUnavailable(
            f"cannot read recording {src.name}: {exc.strerror}",
            details={"file": src.name, "errno": exc.errno},
        ) from exc
    if not data:
        raise EmptyAudio(f"recording {src.name} is an empty file", details={"file": src.name})
    try:
        header = read_wav_header(data)
    except CorruptAudio as exc:
        raise CorruptAudio(f"{src.name}: {exc.message}", details={"file": src.name}) from None
    if header is not None and header.natively_readable:
        return _segment_from_pcm(src.name, data, header), header
    if options.ffmpeg is None:
        what = f"WAV format 0x{header.format_tag:X}" if header else "not a PCM WAV"
        raise ConverterUnavailable(
            f"cannot decode {src.name} ({what}): ffmpeg is not installed",
            details={"file": src.name},
        )
    return _decode_with_ffmpeg(src, options, scratch), header


def _segment_from_pcm(name: str, data: bytes, header: WavHeader) -> AudioSegment:
    if header.truncated:
        raise CorruptAudio(
            f"{name} is truncated: its header declares {header.declared_data_size} bytes of audio,"
            f" the file holds {header.available_data_size}",
            details={
                "file": name,
                "declared_bytes": header.declared_data_size,
                "available_bytes": header.available_data_size,
            },
        )
    # An unfinalised header means the writer never closed the file (Asterisk crashed): the
    # audio written so far is all there is, so take it rather than lose the call.
    size = header.declared_data_size if header.finalised else header.available_data_size
    frame_width = header.channels * header.bits_per_sample // 8
    size -= size % frame_width
    if size == 0:
        raise EmptyAudio(f"{name} holds no audio", details={"file": name})
    pcm = data[header.data_offset : header.data_offset + size]
    return AudioSegment(
        data=pcm,
        sample_width=header.bits_per_sample // 8,
        frame_rate=header.frame_rate,
        channels=header.channels,
    )


def _decode_with_ffmpeg(src: Path, options: ConvertOptions, scratch: Path) -> AudioSegment:
    assert options.ffmpeg is not None
    tmp = _scratch_path(scratch, src, "decoded.wav")
    try:
        proc = _run(
            [
                *_ffmpeg_base(options.ffmpeg),
                "-i", str(src),
                "-vn", "-ac", "1", "-c:a", "pcm_s16le", "-f", "wav", str(tmp),
            ],
            options,
        )  # fmt: skip
        if proc.returncode != 0:
            raise CorruptAudio(
                f"ffmpeg cannot decode {src.name}: {_tail(proc.stderr)}",
                details={"file": src.name, "ffmpeg_exit": proc.returncode},
            )
        data = _read_scratch(tmp)
    finally:
        _discard(tmp)
    header = read_wav_header(data)
    if header is None or not header.natively_readable:
        raise CorruptAudio(f"ffmpeg decoded {src.name} to something that is not PCM")
    return _segment_from_pcm(src.name, data, header)


# ------------------------------------------------------------------ encoding and verifying


def _encode_and_verify(
    src: Path,
    segment: AudioSegment,
    out_dir: Path,
    source_duration: float,
    options: ConvertOptions,
    ffmpeg: str,
    *,
    direct: bool,
) -> ConversionResult:
    container, codec, ext = _ENCODERS[options.format]
    mono = segment.set_channels(1) if segment.channels != 1 else segment
    wav_in = src if direct else _scratch_path(out_dir, src, "in.wav")
    part = _scratch_path(out_dir, src, f"part.{ext}")
    try:
        if direct:
            _claim(part)
        else:
            _write_segment(mono, wav_in)
        extra: list[str] = []
        if options.format == "ogg":
            # Speech, not music; and libopus refuses rates outside its list.
            extra += ["-application", "voip"]
            if mono.frame_rate not in _OPUS_RATES:
                extra += ["-ar", "48000"]
        proc = _run(
            [
                *_ffmpeg_base(ffmpeg),
                "-f", "wav", "-i", str(wav_in),
                "-vn", "-ac", "1", "-c:a", codec, "-b:a", options.bitrate, *extra,
                "-threads", "1", "-f", container, str(part),
            ],
            options,
        )  # fmt: skip
        if proc.returncode != 0:
            stderr = _tail(proc.stderr)
            if any(reason in stderr for reason in _SCRATCH_ERRORS):
                raise StorageUnavailable(
                    f"ffmpeg could not write {part}: {stderr}",
                    details={"path": str(part), "ffmpeg_exit": proc.returncode},
                )
            raise ConversionFailed(
                f"ffmpeg could not encode {src.name} to {options.format}: {stderr}",
                details={
                    "file": src.name,
                    "format": options.format,
                    "ffmpeg_exit": proc.returncode,
                },
            )
        duration = _measure(part, mono.frame_rate, ffmpeg, options, src.name)
        _check_duration(src.name, duration, source_duration, options.tolerance_s)
        final = out_dir / f"{src.stem}-{secrets.token_hex(4)}.{ext}"
        _replace(part, final)
    finally:
        if not direct:
            _discard(wav_in)
        _discard(part)
    return ConversionResult(
        path=final,
        format=options.format,
        duration_s=duration,
        size=final.stat().st_size,
        sha256=sha256_file(final),
        source_duration_s=source_duration,
        converted=True,
    )


def _write_wav(
    src: Path, segment: AudioSegment, out_dir: Path, source_duration: float, tolerance_s: float
) -> ConversionResult:
    mono = segment.set_channels(1) if segment.channels != 1 else segment
    part = _scratch_path(out_dir, src, "part.wav")
    try:
        _write_segment(mono, part)
        data = _read_scratch(part)
        header = read_wav_header(data)
        if header is None or not header.natively_readable:
            raise ConversionFailed(f"the WAV written for {src.name} does not read back")
        duration = round(_segment_from_pcm(part.name, data, header).duration_seconds, 3)
        _check_duration(src.name, duration, source_duration, tolerance_s)
        final = out_dir / f"{src.stem}-{secrets.token_hex(4)}.wav"
        _replace(part, final)
    finally:
        _discard(part)
    return ConversionResult(
        path=final,
        format="wav",
        duration_s=duration,
        size=final.stat().st_size,
        sha256=sha256_file(final),
        source_duration_s=source_duration,
        converted=True,
    )


def _measure(path: Path, rate: int, ffmpeg: str, options: ConvertOptions, name: str) -> float:
    """Decode ``path`` completely and return its duration from the number of samples."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [
                    *_ffmpeg_base(ffmpeg),
                    "-i", str(path),
                    "-vn", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )  # fmt: skip
        except OSError as exc:
            raise _ffmpeg_unusable(ffmpeg, exc) from exc
        assert proc.stdout is not None
        decoded = 0
        with proc:
            while chunk := proc.stdout.read(1 << 16):
                decoded += len(chunk)
            try:
                code = proc.wait(timeout=options.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise ConversionFailed(f"verifying {name} timed out") from None
        err.seek(0)
        stderr = err.read()
    if code != 0 or decoded == 0:
        raise ConversionFailed(
            f"the {options.format} written for {name} does not decode: {_tail(stderr)}",
            details={"file": name, "format": options.format, "ffmpeg_exit": code},
        )
    return round(decoded / 2 / rate, 3)


def _check_duration(name: str, duration: float, source: float, tolerance_s: float) -> None:
    if abs(duration - source) > tolerance_s:
        raise ConversionFailed(
            f"the converted {name} lasts {duration:.3f} s, the source {source:.3f} s",
            details={"file": name, "duration_s": duration, "source_duration_s": source},
        )


def _unconverted(src: Path, duration: float) -> ConversionResult:
    return ConversionResult(
        path=src,
        format="wav",
        duration_s=duration,
        size=src.stat().st_size,
        sha256=sha256_file(src),
        source_duration_s=duration,
        converted=False,
    )


# ------------------------------------------------------------------ helpers


def _ffmpeg_base(ffmpeg: str) -> list[str]:
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def _run(cmd: list[str], options: ConvertOptions) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=options.timeout_s
        )
    except subprocess.TimeoutExpired:
        raise ConversionFailed(f"ffmpeg ran longer than {options.timeout_s} s") from None
    except OSError as exc:
        raise _ffmpeg_unusable(cmd[0], exc) from exc


def _ffmpeg_unusable(ffmpeg: str, exc: OSError) -> ConverterUnavailable:
    return ConverterUnavailable(
        f"cannot run ffmpeg {ffmpeg!r}: {exc.strerror}", details={"ffmpeg": ffmpeg}
    )


def _scratch_path(directory: Path, src: Path, suffix: str) -> Path:
    return directory / f".{src.stem}.{secrets.token_hex(6)}.{suffix}"


def _claim(path: Path) -> None:
    """Create ``path`` empty, so an unwritable output directory shows as what it is."""
    try:
        path.open("xb").close()
    except OSError as exc:
        raise _scratch_unavailable(path, exc) from exc


def _write_segment(segment: AudioSegment, path: Path) -> None:
    try:
        with path.open("wb") as f:
            # format="wav" is written by pydub itself; no ffmpeg involved.
            segment.export(f, format="wav")
    except OSError as exc:
        raise _scratch_unavailable(path, exc) from exc


def _read_scratch(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _scratch_unavailable(path, exc) from exc


def _replace(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise _scratch_unavailable(dst, exc) from exc


def _scratch_unavailable(path: Path, exc: OSError) -> StorageUnavailable:
    return StorageUnavailable(
        f"cannot write {path.name}: {exc.strerror}",
        details={"file": path.name, "errno": exc.errno},
    )


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return text[-_STDERR_TAIL:] or "no error output"
