"""Smoke tests of the performance tooling: the compare command, the in-process mixed
driver and the locust run.

The HTTP ones start a real ``kato serve`` on 127.0.0.1 and drive it for a few
seconds; all check that the tools run end to end and report, never how fast
anything is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_compare_command_reports_every_route(tmp_path):
    out = tmp_path / "samples.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--serve", "--rounds", "4", "--observations", "3",
         "--max-seconds", "20", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for route in ("POST /sessions", "POST observe", "POST learn", "GET predictions"):
        assert route in proc.stdout
    assert "4 rounds per URL" in proc.stdout
    assert out.stat().st_size > 0


def test_compare_command_fails_when_a_server_errors(tmp_path):
    # Nothing listens on port 9 of the loopback: the connection itself fails.
    proc = subprocess.run([sys.executable, "-m", "bench.compare", "http://127.0.0.1:9", "--rounds", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_in_process_mixed_driver_reports_per_process():
    proc = subprocess.run([sys.executable, "-m", "bench.asgi_mixed", "--processes", "2", "--sessions", "2",
                           "--cycles", "3", "--patterns", "300"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) on one data dir (KATO_WORKERS=2), 300 patterns" in proc.stdout
    for i in (0, 1):
        assert f"process {i}: 36 requests, CPU" in proc.stdout


def test_loadtest_script_runs_headless_and_writes_reports(tmp_path):
    env = {**os.environ, "KATO_LOADTEST_OUT": str(tmp_path)}
    proc = subprocess.run(["bash", "loadtest/run.sh", "-u", "2", "-r", "2", "-t", "3s"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = {p.name for p in tmp_path.iterdir()}
    assert any(n.endswith("_stats.csv") for n in names) and any(n.endswith(".html") for n in names)
    stats = next(tmp_path.glob("*_stats.csv")).read_text()
    for route in ("POST /sessions/[id]/observe", "GET /sessions/[id]/predictions", "POST /sessions/[id]/learn"):
        assert route in stats


def test_bible_corpus_is_every_kjv_verse_as_words_split_by_position():
    from bench import bible
    from engine import EngineConfig, KnowledgeBase

    verses = bible.verses()
    assert len(verses) == 31_102
    assert verses[0] == ["in", "the", "beginning", "god", "created", "the", "heaven", "and", "the", "earth"]
    train, test = bible.split(verses, every=10)
    assert len(test) == 3110 and test[0] == verses[9] and len(train) + len(test) == len(verses)
    kb = KnowledgeBase("bible-smoke")
    for record in bible.records(verses[:50]):
        kb.apply(record)
    pairs = bible.cuts([verses[0]], window=3, stride=4)
    assert pairs[0] == ([["in"]], "the") and pairs[1] == ([["beginning"], ["god"], ["created"]], "the")
    accuracy, coverage = bible.next_word_accuracy(kb, pairs, EngineConfig())
    assert accuracy == 1.0 and coverage == 1.0   # a learned verse predicts its own next words
