"""`demo/app.py`, the entry point a Space and a container run: every setting comes from the environment.

README promises `CAPTIONER_MODEL`, `CAPTIONER_PROVIDER`, `CAPTIONER_HOST`, `CAPTIONER_PORT` (or `PORT`),
`CAPTIONER_SHARE`, `CAPTIONER_MAX_QUEUE` and `CAPTIONER_API_KEYS`; here the file is started for real, as
`python demo/app.py` from another folder, and each setting is seen to take effect (where it listens, which bundle
answers, the share attempt, bad values refused; the keys on a real server in test_rest_api.py).

Slow (but the last test): starts the app (Gradio, the real VGG16 encoder) in subprocesses.
"""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import OFFLINE, REPO, Drained, ask_caption, free_port, wait_for_server

APP = REPO / "demo" / "app.py"


def app_env(home: Path, **settings: str) -> dict:
    """A clean environment: only what a Space would have, plus the settings under test, offline (the share
    attempt must fail here as it does without a network)."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), **OFFLINE, **settings}


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


@pytest.mark.slow
def test_app_py_serves_the_bundle_host_and_port_from_the_environment(exported_run, tmp_path):

    from demo.captioner import Captioner
    from demo.web.page import example_images

    port = free_port()
    bundle = exported_run / "onnx"
    env = app_env(tmp_path, CAPTIONER_MODEL=str(bundle), CAPTIONER_HOST="127.0.0.2", PORT=str(port),
                  CAPTIONER_PROVIDER="cpu", CAPTIONER_SHARE="1")
    # from tmp_path: the default models/default/onnx does not exist there, so only CAPTIONER_MODEL can answer
    process, url = wait_for_server([sys.executable, str(APP)], f"http://127.0.0.2:{port}/", cwd=tmp_path, env=env)
    server = Drained(process)
    try:
        assert refused(f"http://127.0.0.1:{port}/"), "CAPTIONER_HOST=127.0.0.2: nothing listens on 127.0.0.1"
        image = example_images()[0]
        result = ask_caption(url, image)
        expected = Captioner(bundle, provider="cpu").compare(image)  # both with the product's defaults
        assert result["provider"] == "cpu" and result["variant"] == "fp32"
        assert result["greedy"]["caption"] == expected.greedy.caption
        assert result["greedy"]["log_prob"] == pytest.approx(expected.greedy.log_prob, abs=1e-4)
        assert [c["caption"] for c in result["beam"]["candidates"]] == [c.caption for c in expected.beam.candidates]
        server.wait_for_line(("share:", "public link:"))  # CAPTIONER_SHARE: one line about the tunnel, after
    finally:
        output = server.stop()
    assert "Traceback" not in output, output
    assert len([line for line in server.lines if line.startswith(("share:", "public link:"))]) == 1, output


@pytest.mark.slow
@pytest.mark.parametrize("settings, message", [
    ({"CAPTIONER_PORT": "http", "PORT": "7860"}, "error: CAPTIONER_PORT (or PORT) must be a port number, not 'http'"),
    ({"PORT": "80a"}, "error: CAPTIONER_PORT (or PORT) must be a port number, not '80a'"),
    ({"CAPTIONER_PROVIDER": "tpu"}, "error: provider must be one of ('auto', 'cuda', 'cpu'), not 'tpu'"),
    ({"CAPTIONER_MAX_BATCH_SIZE": "lots"},
     "error: CAPTIONER_MAX_BATCH_SIZE must be a whole number (1: no batching), not 'lots'"),
], ids=["captioner-port-first", "port", "provider", "max-batch-size"])
def test_app_py_refuses_bad_settings_in_one_line(exported_run, tmp_path, settings, message):
    env = app_env(tmp_path, CAPTIONER_MODEL=str(exported_run / "onnx"), CAPTIONER_HOST="127.0.0.1", **settings)
    if "PORT" not in settings:
        env["CAPTIONER_PORT"] = str(free_port())
    result = subprocess.run([sys.executable, str(APP)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == message and "Traceback" not in result.stderr, result.stderr


def test_from_env_reads_each_variable_and_its_defaults(monkeypatch):
    """The precedence the README states: CAPTIONER_PORT over PORT; 0.0.0.0 (a container's) by default."""
    from demo.web.serve import ServeConfig

    for name in ("CAPTIONER_MODEL", "CAPTIONER_PROVIDER", "CAPTIONER_HOST", "CAPTIONER_PORT", "PORT",
                 "CAPTIONER_SHARE", "CAPTIONER_MAX_BATCH_SIZE", "CAPTIONER_MAX_QUEUE", "CAPTIONER_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    assert ServeConfig.from_env() == ServeConfig(Path("models/default/onnx"), "0.0.0.0", 7860, False, "auto", 8)
    monkeypatch.setenv("CAPTIONER_MAX_BATCH_SIZE", "1")
    assert ServeConfig.from_env().max_batch_size == 1
    monkeypatch.setenv("CAPTIONER_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="max batch size must be at least 1"):
        ServeConfig.from_env()
    monkeypatch.delenv("CAPTIONER_MAX_BATCH_SIZE")
    monkeypatch.setenv("PORT", "8080")
    assert ServeConfig.from_env().port == 8080
    monkeypatch.setenv("CAPTIONER_PORT", "9090")
    monkeypatch.setenv("CAPTIONER_SHARE", "true")
    assert (ServeConfig.from_env().port, ServeConfig.from_env().share) == (9090, True)
    monkeypatch.setenv("CAPTIONER_SHARE", "0")
    assert ServeConfig.from_env().share is False
    assert ServeConfig.from_env().api_keys() == ()  # open by default
    monkeypatch.setenv("CAPTIONER_API_KEYS", " one,two ,, one")
    assert ServeConfig.from_env().api_keys() == ("one", "two")
    assert ServeConfig(api_key="three").api_keys() == ("three", "one", "two"), "the flag's and the variable's"
    monkeypatch.setenv("CAPTIONER_MAX_QUEUE", "5")
    assert ServeConfig.from_env().max_queue == 5
    monkeypatch.setenv("CAPTIONER_MAX_QUEUE", "many")
    with pytest.raises(ValueError, match="CAPTIONER_MAX_QUEUE must be a whole number"):
        ServeConfig.from_env()
