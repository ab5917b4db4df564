"""Conversion and verification of real audio files (generated here) with the real ffmpeg."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from recordings.convert import (
    ConvertOptions,
    Format,
    convert_recording,
    find_ffmpeg,
    inspect_recording,
    read_wav_header,
)
from recordings.errors import (
    ConversionFailed,
    ConverterUnavailable,
    CorruptAudio,
    EmptyAudio,
    RecordingMissing,
    StorageUnavailable,
)
from tests.recordings import (
    FIXTURE_WAV,
    AudioSegment,
    listing,
    script,
    wav_bytes,
    write_wav,
)

FFMPEG = find_ffmpeg()
pytestmark = pytest.mark.usefixtures("require_ffmpeg")
ROOT = Path(__file__).resolve().parents[2]


def probe(path: Path) -> dict[str, object]:
    """The first audio stream as ffprobe describes it (an independent reader)."""
    ffprobe = find_ffmpeg("ffprobe")
    assert ffprobe is not None
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    ).stdout
    info = json.loads(out)
    stream: dict[str, object] = info["streams"][0]
    stream["format_name"] = info["format"]["format_name"]
    return stream


def options(fmt: Format = "mp3", bitrate: str = "32k") -> ConvertOptions:
    return ConvertOptions(format=fmt, bitrate=bitrate, ffmpeg=FFMPEG)


def test_wav_to_mp3_is_mono_of_the_same_duration_and_described_truly(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "spool" / "call-1.wav", 3.5)
    before = src.read_bytes()
    out = tmp_path / "out"
    out.mkdir()

    result = convert_recording(src, out, options("mp3"))

    assert result.format == "mp3" and result.converted
    assert result.path.parent == out and result.path.suffix == ".mp3"
    assert result.source_duration_s == 3.5
    assert abs(result.duration_s - 3.5) < 0.05
    assert result.size == result.path.stat().st_size
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    info = probe(result.path)
    assert info["codec_name"] == "mp3" and info["channels"] == 1
    # Decoded by pydub on its own (the container's estimate includes the encoder's padding).
    with result.path.open("rb") as f:
        assert abs(AudioSegment.from_file(f, format="mp3").duration_seconds - 3.5) < 0.05
    assert src.read_bytes() == before
    assert listing(out) == [result.path.name]


def test_wav_to_ogg_opus(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-2.wav", 4.0)
    result = convert_recording(src, tmp_path, options("ogg"))

    assert result.format == "ogg" and result.path.suffix == ".ogg"
    assert result.path.read_bytes()[:4] == b"OggS"
    info = probe(result.path)
    assert info["codec_name"] == "opus" and info["channels"] == 1
    assert abs(result.duration_s - 4.0) < 0.05


def test_bitrate_is_applied(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-3.wav", 10.0, rate=16000)
    low = convert_recording(src, tmp_path, options("mp3", bitrate="16k"))
    high = convert_recording(src, tmp_path, options("mp3", bitrate="64k"))
    assert 16_000 < low.size < 26_000  # 16 kbit/s for 10 s, plus headers
    assert high.size > 3 * low.size


def test_stereo_44k_source_becomes_mono_opus(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-4.wav", 2.0, rate=44100, channels=2)
    result = convert_recording(src, tmp_path, options("ogg"))
    info = probe(result.path)
    assert info["channels"] == 1
    assert abs(result.duration_s - 2.0) < 0.05


def test_the_real_mixmonitor_recording_converts(tmp_path: Path) -> None:
    before = hashlib.sha256(FIXTURE_WAV.read_bytes()).hexdigest()
    result = convert_recording(FIXTURE_WAV, tmp_path, options("mp3"))
    assert result.source_duration_s == 20.2
    assert abs(result.duration_s - 20.2) < 0.05
    assert probe(result.path)["channels"] == 1
    assert hashlib.sha256(FIXTURE_WAV.read_bytes()).hexdigest() == before


def test_wav49_gsm_recording_is_decoded_by_ffmpeg(tmp_path: Path) -> None:
    pcm = write_wav(tmp_path / "pcm.wav", 3.0)
    gsm = tmp_path / "call-5.WAV"
    subprocess.run(
        [FFMPEG or "", "-v", "error", "-i", pcm, "-c:a", "gsm_ms", "-f", "wav", gsm],
        check=True,
    )
    header = read_wav_header(gsm.read_bytes())
    assert header is not None and header.format_tag == 0x31

    result = convert_recording(gsm, tmp_path, options("mp3"))
    assert abs(result.duration_s - 3.0) < 0.1
    with pytest.raises(ConverterUnavailable):
        inspect_recording(gsm)


def test_target_wav_keeps_a_mono_pcm_source_as_it_is(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-6.wav", 1.5)
    result = convert_recording(src, tmp_path, options("wav"))
    assert result.path == src and not result.converted
    assert result.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert result.duration_s == 1.5


def test_target_wav_writes_a_mono_copy_of_a_stereo_source(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-7.wav", 1.5, channels=2)
    out = tmp_path / "out"
    out.mkdir()
    result = convert_recording(src, out, options("wav"))
    assert result.converted and result.path.parent == out
    header = read_wav_header(result.path.read_bytes())
    assert header is not None and header.channels == 1
    assert result.duration_s == 1.5


# ------------------------------------------------------------------ corrupt and odd sources


def test_truncated_wav_is_corrupt_and_the_original_is_kept(tmp_path: Path) -> None:
    data = wav_bytes(4.0)
    src = tmp_path / "call-8.wav"
    src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(CorruptAudio) as err:
        convert_recording(src, out, options("mp3"))

    assert err.value.error_id == "recording-corrupt-audio"
    assert "truncated" in err.value.message and "call-8.wav" in err.value.message
    assert err.value.details["declared_bytes"] == 64000
    assert src.read_bytes() == data[: len(data) // 2]
    assert listing(out) == []


def test_bytes_that_are_not_audio_are_corrupt(tmp_path: Path) -> None:
    src = tmp_path / "call-9.wav"
    src.write_bytes(b"this is not a recording\n" * 200)
    with pytest.raises(CorruptAudio) as err:
        convert_recording(src, tmp_path, options("mp3"))
    assert "ffmpeg cannot decode call-9.wav" in err.value.message
    assert listing(tmp_path) == ["call-9.wav"]


def test_malformed_riff_is_corrupt(tmp_path: Path) -> None:
    src = tmp_path / "call-10.wav"
    src.write_bytes(b"RIFF\x10\x00\x00\x00WAVEdata\x04\x00\x00\x00abcd")
    with pytest.raises(CorruptAudio, match="data chunk comes before the fmt chunk"):
        convert_recording(src, tmp_path, options("mp3"))


def test_header_only_wav_is_empty_audio(tmp_path: Path) -> None:
    # What MixMonitor leaves for an unanswered call with option b: a 44-byte WAV.
    src = tmp_path / "call-11.wav"
    src.write_bytes(wav_bytes(0.0))
    assert src.stat().st_size == 44
    with pytest.raises(EmptyAudio) as err:
        convert_recording(src, tmp_path, options("mp3"))
    assert isinstance(err.value, CorruptAudio)


def test_unfinalised_header_keeps_the_audio_written_so_far(tmp_path: Path) -> None:
    # Asterisk fills in the sizes on close; after a crash they stay 0.
    data = bytearray(wav_bytes(2.0))
    data[4:8] = data[40:44] = b"\x00\x00\x00\x00"
    src = tmp_path / "call-12.wav"
    src.write_bytes(bytes(data))
    result = convert_recording(src, tmp_path, options("mp3"))
    assert result.source_duration_s == 2.0
    assert abs(result.duration_s - 2.0) < 0.05


def test_target_wav_rewrites_an_unfinalised_header(tmp_path: Path) -> None:
    data = bytearray(wav_bytes(2.0))
    data[4:8] = data[40:44] = b"\x00\x00\x00\x00"
    src = tmp_path / "call-20.wav"
    src.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    result = convert_recording(src, out, ConvertOptions(format="wav", ffmpeg=None))
    assert result.converted and result.duration_s == 2.0
    header = read_wav_header(result.path.read_bytes())
    assert header is not None and header.finalised and header.declared_data_size == 32000


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(RecordingMissing):
        convert_recording(tmp_path / "nope.wav", tmp_path, options("mp3"))


# ------------------------------------------------------------------ verification of the output


def test_output_shorter_than_the_source_fails_verification(tmp_path: Path) -> None:
    # An encoder that leaves a truncated file behind (a real ffmpeg, then truncate).
    broken = script(
        tmp_path / "ffmpeg-truncating",
        f'"{FFMPEG}" "$@" || exit $?\n'
        'for last; do :; done\ncase "$last" in *.part.mp3) truncate -s 3000 "$last";; esac\n',
    )
    src = write_wav(tmp_path / "spool" / "call-13.wav", 6.0)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConversionFailed) as err:
        convert_recording(src, out, ConvertOptions(format="mp3", ffmpeg=broken))
    assert err.value.details["source_duration_s"] == 6.0
    assert err.value.details["duration_s"] < 5.0
    assert listing(out) == []
    assert src.exists()


def test_output_that_does_not_decode_fails_verification(tmp_path: Path) -> None:
    broken = script(
        tmp_path / "ffmpeg-garbage",
        f'"{FFMPEG}" "$@" || exit $?\n'
        'for last; do :; done\ncase "$last" in *.part.ogg) printf garbage > "$last";; esac\n',
    )
    src = write_wav(tmp_path / "call-14.wav", 2.0)
    with pytest.raises(ConversionFailed, match="does not decode"):
        convert_recording(src, tmp_path, ConvertOptions(format="ogg", ffmpeg=broken))
    assert listing(tmp_path) == ["call-14.wav", "ffmpeg-garbage"]


def test_encoder_error_is_a_conversion_failure(tmp_path: Path) -> None:
    failing = script(tmp_path / "ffmpeg-failing", 'echo "encoder exploded" >&2\nexit 1\n')
    src = write_wav(tmp_path / "call-15.wav", 1.0)
    with pytest.raises(ConversionFailed, match="encoder exploded"):
        convert_recording(src, tmp_path, ConvertOptions(format="mp3", ffmpeg=failing))


@pytest.mark.parametrize("channels", [1, 2], ids=["direct", "normalised"])
def test_unwritable_output_directory_is_storage_unavailable(tmp_path: Path, channels: int) -> None:
    src = write_wav(tmp_path / "call-16.wav", 1.0, channels=channels)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        convert_recording(src, not_a_dir, options("mp3"))
    assert src.exists()


def test_a_full_disk_while_encoding_is_storage_unavailable(tmp_path: Path) -> None:
    # /dev/full takes no bytes (ENOSPC), as a full disk would; the "encoder" writes there.
    full = script(tmp_path / "ffmpeg-full", "cat /dev/zero > /dev/full\n")
    src = write_wav(tmp_path / "call-21.wav", 1.0)
    with pytest.raises(StorageUnavailable, match="No space left on device"):
        convert_recording(src, tmp_path, ConvertOptions(format="mp3", ffmpeg=full))
    assert listing(tmp_path) == ["call-21.wav", "ffmpeg-full"]


# ------------------------------------------------------------------ without ffmpeg


def test_no_ffmpeg_means_converter_unavailable_but_wav_still_inspects(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-17.wav", 2.5)
    with pytest.raises(ConverterUnavailable) as err:
        convert_recording(src, tmp_path, ConvertOptions(format="mp3", ffmpeg=None))
    assert err.value.transient
    kept = inspect_recording(src)
    assert kept.path == src and kept.format == "wav" and kept.duration_s == 2.5
    assert not kept.converted


def test_an_ffmpeg_path_that_does_not_run_is_converter_unavailable(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-18.wav", 1.0)
    with pytest.raises(ConverterUnavailable, match="cannot run ffmpeg"):
        convert_recording(src, tmp_path, ConvertOptions(ffmpeg=str(tmp_path / "no-ffmpeg")))


def test_find_ffmpeg_follows_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_ffmpeg() is None
    fake = script(tmp_path / "ffmpeg", "exit 0\n")
    assert find_ffmpeg() == fake


def test_without_ffmpeg_on_path_the_pool_keeps_wav_and_says_so_once(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "call-19.wav", 1.0)
    code = f"""
import asyncio, json, logging, pathlib
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
from recordings.pool import ConverterPool

async def main():
    async with ConverterPool(workers=1, format="mp3") as pool:
        results = [await pool.convert(pathlib.Path({str(src)!r}), pathlib.Path({str(tmp_path)!r}))
                   for _ in range(2)]
        status = {{}}
        pool.provide_status(status)
    print(json.dumps({{"formats": [r.format for r in results],
                      "converted": [r.converted for r in results], "status": status}}))

asyncio.run(main())
"""
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["formats"] == ["wav", "wav"] and report["converted"] == [False, False]
    entry = report["status"]["recordings_converter"]
    assert entry["status"] == "degraded" and "ffmpeg not found" in entry["detail"]
    assert proc.stderr.count("ffmpeg not found") == 1


# ------------------------------------------------------------------ errors cross processes


def test_errors_pickle_with_their_details() -> None:
    error = CorruptAudio("x.wav is truncated", details={"file": "x.wav", "declared_bytes": 10})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is CorruptAudio
    assert copy.message == "x.wav is truncated" and copy.details == error.details


def test_options_refuse_odd_values() -> None:
    with pytest.raises(ValueError, match="bitrate"):
        ConvertOptions(bitrate="32k -f null")
    with pytest.raises(ValueError, match="format"):
        # A value outside the Format type on purpose: the check is for untyped callers.
        ConvertOptions(format="flac")  # type: ignore[arg-type]


def test_audio_segment_reads_what_we_write(tmp_path: Path) -> None:
    # Guards the test helper itself: the WAVs really are 8 kHz mono 16-bit.
    src = write_wav(tmp_path / "x.wav", 1.0)
    with src.open("rb") as f:
        segment = AudioSegment.from_file(f, format="wav")
    assert (segment.frame_rate, segment.channels, segment.sample_width) == (8000, 1, 2)
