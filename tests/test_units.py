"""Unit parsing: memory sizes in megabytes, durations in seconds, and their display."""

from __future__ import annotations

import pytest

from executor.model.units import (
    format_duration,
    format_memory,
    parse_duration,
    parse_memory,
    parse_whole_seconds,
)


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [
        ("4GB", 4000),
        ("4gb", 4000),
        ("4 GB", 4000),
        ("4G", 4000),
        ("512MB", 512),
        ("512M", 512),
        ("1TB", 1_000_000),
        ("1.5GiB", 1611),  # 1.5 * 2**30 bytes = 1610.6 MB
        ("2GiB", 2147),
        ("1MiB", 1),
        ("1024KiB", 1),
        ("2500KB", 2),  # 2.5 MB, rounded half to even
        ("3500kb", 4),
        ("1KB", 1),  # never rounds down to zero
        ("1024", 1024),  # a bare number is megabytes, like an integer
        (" 8GB ", 8000),
    ],
)
def test_parse_memory_strings(text, megabytes):
    assert parse_memory(text) == megabytes


@pytest.mark.parametrize(("value", "megabytes"), [(1024, 1024), (1, 1), (2048.0, 2048)])
def test_parse_memory_numbers_are_megabytes(value, megabytes):
    result = parse_memory(value)
    assert result == megabytes
    assert isinstance(result, int)


def test_parse_memory_bare_string_and_integer_agree():
    assert parse_memory("4096") == parse_memory(4096) == 4096


def test_parse_memory_fraction_of_a_megabyte_is_not_zero():
    assert parse_memory(0.5) == 1


@pytest.mark.parametrize("bad", ["lots", "4XB", "GB", "", "4 G B", "-4GB", "4,5GB", "four GB"])
def test_parse_memory_rejects_garbage_with_examples(bad):
    with pytest.raises(ValueError) as info:
        parse_memory(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "is not a memory size" in message
    assert "'4GB'" in message and "'512MB'" in message


@pytest.mark.parametrize("bad", [0, -1, -2.5, "0GB", "0"])
def test_parse_memory_rejects_zero_and_negative(bad):
    with pytest.raises(ValueError, match="must be positive; write e.g. '4GB'"):
        parse_memory(bad)


@pytest.mark.parametrize("bad", [True, False])
def test_parse_memory_rejects_booleans(bad):
    # YAML reads `memory: yes` as True; bool is an int subclass and must not pass as 1 MB.
    with pytest.raises(ValueError, match="is not a memory size"):
        parse_memory(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("30min", 1800),
        ("2h", 7200),
        ("2hr", 7200),
        ("2H", 7200),
        ("90s", 90),
        ("90sec", 90),
        ("1.5h", 5400),
        ("1d", 86400),
        (" 10 m ", 600),
        ("01:30:00", 5400),
        ("2:00:00", 7200),
        ("30:00", 1800),  # Slurm M:S: 30 minutes, not 30 hours
        ("1:30", 90),
        ("0:45", 45),
        ("1-00:00:00", 86400),
        ("2-12:30:15", 2 * 86400 + 12 * 3600 + 30 * 60 + 15),
        ("1-12", 86400 + 12 * 3600),  # Slurm D-H
        ("1-12:30", 86400 + 12 * 3600 + 30 * 60),  # Slurm D-H:M
    ],
)
def test_parse_duration_strings(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("value", "seconds"), [(90, 90.0), (7200, 7200.0), (1.5, 1.5)])
def test_parse_duration_numbers_are_seconds(value, seconds):
    result = parse_duration(value)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "bad", ["soon", "30", "30x", "h", "", "1:2:3:4", "-30m", "1 hour", "12-", "thirty minutes"]
)
def test_parse_duration_rejects_garbage_with_examples(bad):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "is not a duration" in message
    assert "'30m'" in message and "'01:30:00'" in message


@pytest.mark.parametrize("bad", [0, -5, "0m", "0:00", "00:00:00", "0s"])
def test_parse_duration_rejects_zero_and_negative(bad):
    with pytest.raises(ValueError, match="must be positive; write e.g. '30m'"):
        parse_duration(bad)


def test_parse_duration_rejects_booleans():
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(True)


@pytest.mark.parametrize(("value", "seconds"), [("2m", 120), (45, 45), (0.2, 1), ("1:30", 90)])
def test_parse_whole_seconds_rounds_up(value, seconds):
    assert parse_whole_seconds(value) == seconds
    assert isinstance(parse_whole_seconds(value), int)


@pytest.mark.parametrize(
    ("megabytes", "text"),
    [
        (None, "-"),
        (512, "512MB"),
        (999, "999MB"),
        (1000, "1.0GB"),
        (4000, "4.0GB"),
        (1611, "1.6GB"),
    ],
)
def test_format_memory(megabytes, text):
    assert format_memory(megabytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0.0s"),
        (5.25, "5.2s"),
        (59, "59.0s"),
        (60, "1m00s"),
        (90, "1m30s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (5400, "1h30m"),
        (86400 + 60, "24h01m"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["4GB", "512MB", "1.5GB"])
def test_format_memory_reads_back(text):
    assert parse_memory(format_memory(parse_memory(text))) == parse_memory(text)
