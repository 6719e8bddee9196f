"""Bad input to the command line: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def assert_clean_failure(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]


def test_sample_data_with_a_missing_real_cases_dir_fails_cleanly(tmp_path):
    res = run_cli("sample-data", "--out", str(tmp_path / "o"), "--cases", "1", "--real-cases",
                  str(tmp_path / "missing"), cwd=tmp_path)
    assert_clean_failure(res, "missing")
    assert not (tmp_path / "o").exists()


def test_sample_data_with_a_missing_atlas_dir_fails_cleanly(tmp_path):
    res = run_cli("sample-data", "--out", str(tmp_path / "o"), "--cases", "1", "--no-real", "--atlas",
                  str(tmp_path / "missing"), cwd=tmp_path)
    assert_clean_failure(res, "atlas", "missing")


def test_sample_data_with_an_unwritable_out_fails_cleanly(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = run_cli("sample-data", "--out", str(blocker / "studies"), "--cases", "1", "--no-real", cwd=tmp_path)
    assert_clean_failure(res, "a-file")


@pytest.mark.parametrize("count", ["-1"])
def test_sample_data_with_a_negative_case_count_fails_cleanly(tmp_path, count):
    res = run_cli("sample-data", "--out", str(tmp_path / "o"), "--cases", count, cwd=tmp_path)
    assert_clean_failure(res, "--cases")


def test_sample_data_with_a_non_numeric_case_count_exits_with_usage_not_a_traceback(tmp_path):
    res = run_cli("sample-data", "--out", str(tmp_path / "o"), "--cases", "many", cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "--cases" in res.stderr


def test_sample_data_with_an_atlas_dir_lacking_the_sri24_files_fails_cleanly(tmp_path):
    (tmp_path / "atlas").mkdir()
    res = run_cli("sample-data", "--out", str(tmp_path / "o"), "--cases", "1", "--no-real", "--atlas",
                  str(tmp_path / "atlas"), cwd=tmp_path)
    assert_clean_failure(res, "tissues.nii.gz")


def test_evaluate_with_a_negative_closing_radius_fails_cleanly_and_writes_nothing(tmp_path):
    res = run_cli("evaluate", "--data", str(tmp_path / "d"), "--close-px", "-1", "--out", str(tmp_path / "r"),
                  cwd=tmp_path)
    assert_clean_failure(res, "--close-px")
    assert not (tmp_path / "r").exists()
