"""Nothing hangs and nothing floods the terminal when a helper program fails: METEOR's Java child is stopped
after its time limit or when it dies, with one warning line, and METEOR is None; a failed kernel compile
is one warning line; paths with spaces reach the METEOR jar, the C++ compiler and (through the Makefile)
Python whole."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from experiments import metrics as M
from minigpt.fast import kernels

# pycocoevalcap's Meteor jar on "a pub by the river" against "a pub near the river" (from its own folder)
JAR_SCORE = 35.71361959045425
ROOT = Path(__file__).resolve().parents[1]


def bounded(fn, seconds: float):
    """fn() on a thread, with the warnings it raised; fails (rather than hanging the suite) if it takes longer."""
    out = {}

    def target():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["value"] = fn()
        out["warnings"] = [str(w.message) for w in caught if "METEOR" in str(w.message)]

    start = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    return out["value"], out["warnings"], time.monotonic() - start


def fake_meteor(monkeypatch, command: list[str]):
    """METEOR 'installed' (java found, jar present) but its command replaced by `command`."""
    monkeypatch.setattr(M, "meteor_files", lambda: (Path("meteor-1.5.jar"), Path("data/paraphrase-en.gz")))
    monkeypatch.setattr(M.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(M, "meteor_command", lambda *args: command)


def test_a_meteor_child_that_never_answers_is_killed_after_the_time_limit(monkeypatch, tmp_path):
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    fake_meteor(monkeypatch, [sys.executable, "-c", code])  # never reads its input, never answers
    monkeypatch.setenv("MINIGPT_METEOR_TIMEOUT", "2")
    hyps = [f"the pub number {i} is near the river and serves cheap food" for i in range(3000)]  # > a pipe's 64 KB
    refs = [[h, "a pub by the river"] for h in hyps]
    value, warned, seconds = bounded(lambda: M.meteor(hyps, refs), 30)
    assert value is None and seconds < 15
    assert len(warned) == 1 and "\n" not in warned[0]
    assert "no answer within 2 s" in warned[0] and "MINIGPT_METEOR_TIMEOUT" in warned[0]
    with pytest.raises(ProcessLookupError):  # killed and reaped: no java left behind
        os.kill(int(pid_file.read_text()), 0)


def test_a_meteor_child_that_dies_is_reported_with_its_last_error(monkeypatch):
    code = ("import sys; sys.stderr.write('java.lang.RuntimeException: Error: file not found "
            "(file:/a%2520b/paraphrase-en.gz)\\n'); sys.exit(1)")
    fake_meteor(monkeypatch, [sys.executable, "-c", code])
    value, warned, seconds = bounded(lambda: M.meteor(["a pub"], [["a pub"]]), 30)
    assert value is None and seconds < 10
    assert len(warned) == 1 and "exit code 1" in warned[0] and "file not found" in warned[0]


def test_a_bad_meteor_time_limit_warns_and_the_run_goes_on(monkeypatch):
    fake_meteor(monkeypatch, [sys.executable, "-c", "pass"])
    monkeypatch.setenv("MINIGPT_METEOR_TIMEOUT", "ten")
    value, warned, _ = bounded(lambda: M.meteor(["a pub"], [["a pub"]]), 30)
    assert value is None and len(warned) == 1 and "MINIGPT_METEOR_TIMEOUT='ten'" in warned[0]


FAKE_JAR = """import sys
# Meteor's -stdio protocol: SCORE ||| refs... ||| hyp -> statistics; EVAL ||| stats... -> one score each, then the total
for line in sys.stdin:
    fields = line.rstrip("\\n").split(" ||| ")
    if fields[0] == "SCORE":
        print(len(fields), flush=True)
    else:
        stats = [float(s) for s in fields[1:]]
        print(*stats, sum(stats) / 100, sep="\\n", flush=True)
"""


def test_meteor_speaks_the_jar_protocol_from_a_folder_with_a_space(monkeypatch, tmp_path):
    script = tmp_path / "sp ace" / "fake meteor.py"
    script.parent.mkdir()
    script.write_text(FAKE_JAR)
    fake_meteor(monkeypatch, [sys.executable, str(script)])
    value, warned, _ = bounded(lambda: M.meteor(["a pub", "a cafe"], [["a pub", "an inn"], ["x", "y", "z"]]), 30)
    assert warned == [] and value == pytest.approx(100 * (4 + 5) / 100)  # SCORE lines of 4 and 5 fields


def test_the_meteor_command_keeps_paths_with_spaces_whole():
    jar, table = Path("/my clone/meteor-1.5.jar"), Path("/my clone/data/paraphrase-en.gz")
    cmd = M.meteor_command("java", jar, table)
    assert cmd[:4] == ["java", "-Xmx2G", "-jar", "/my clone/meteor-1.5.jar"]
    assert cmd[-2:] == ["-a", "/my clone/data/paraphrase-en.gz"]  # the jar's own lookup breaks on a space


@pytest.mark.skipif(shutil.which("java") is None or M.meteor_files() is None, reason="java or pycocoevalcap missing")
def test_the_real_meteor_jar_scores_from_a_folder_with_a_space(monkeypatch, tmp_path):
    jar, table = M.meteor_files()
    folder = tmp_path / "sp ace"
    (folder / "data").mkdir(parents=True)
    shutil.copy(jar, folder / jar.name)
    (folder / "data" / table.name).symlink_to(table)
    monkeypatch.setattr(M, "meteor_files", lambda: (folder / jar.name, folder / "data" / table.name))
    value, warned, _ = bounded(lambda: M.meteor(["a pub by the river"], [["a pub near the river"]]), 120)
    assert warned == [] and value == pytest.approx(JAR_SCORE, abs=1e-9)


def test_a_failed_compile_is_one_warning_line(monkeypatch):
    output = "\n".join(f"/tmp/sp ace/x.cpp:{i}: error: something" for i in range(1900))
    message = (f"backend='inductor' raised:\nCppCompileError: C++ compile error\n\nCommand:\ng++ /tmp/sp ace/x.cpp "
               f"-o x.so\n\nOutput:\ng++: error: /tmp/sp: No such file or directory\n{output}")  # as inductor's

    def broken(fn, **kw):
        def call(*args):
            raise RuntimeError(message)
        return call

    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_broken", False)
    monkeypatch.setattr(torch, "compile", broken)
    h = torch.randn(64, 600, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = kernels.gelu(h)
    ours = [str(w.message) for w in caught if "minigpt" in str(w.message)]
    assert len(ours) == 1 and "\n" not in ours[0] and len(ours[0]) < 500
    assert "raised: CppCompileError: C++ compile error; g++: error: /tmp/sp: No such file" in ours[0]
    assert "MINIGPT_COMPILE=0" in ours[0]
    torch.testing.assert_close(y, F.gelu(h, approximate="tanh"), atol=0, rtol=0)


def test_paths_with_spaces_are_kept_out_of_the_compiler_command(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    lib = tmp_path / "my clone" / ".venv" / "torch" / "lib"
    lib.mkdir(parents=True)
    monkeypatch.setattr(cpp_extension, "TORCH_LIB_PATH", str(lib))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "my clone" / "cache"))
    monkeypatch.setattr(kernels, "_space_free_temp", lambda: str(tmp_path))
    kernels._spaceless_paths()
    cache, link = os.environ["TORCHINDUCTOR_CACHE_DIR"], cpp_extension.TORCH_LIB_PATH
    assert " " not in cache and cache.startswith(str(tmp_path))
    assert " " not in link and os.path.realpath(link) == str(lib.resolve())
    cpp_extension.TORCH_LIB_PATH = str(lib)  # a second process: reuses the link
    kernels._spaceless_paths()
    assert cpp_extension.TORCH_LIB_PATH == link


def test_a_temp_folder_with_a_space_is_not_chosen(monkeypatch):
    monkeypatch.setattr(kernels.tempfile, "gettempdir", lambda: "/tmp/my temp")
    assert kernels._space_free_temp() in ("/tmp", "/var/tmp")


def test_waiting_for_compile_workers_is_bounded_unless_the_user_set_a_bound():
    import torch._inductor.config as config

    with config.patch(compile_worker_wait_timeout=0):  # inductor's default: wait forever
        kernels._bound_the_wait()
        assert config.compile_worker_wait_timeout == kernels.COMPILE_WAIT_S
    with config.patch(compile_worker_wait_timeout=42):  # TORCHINDUCTOR_COMPILE_WORKER_WAIT_TIMEOUT=42
        kernels._bound_the_wait()
        assert config.compile_worker_wait_timeout == 42


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("target, module", [("experiment", "experiments.run"), ("ablation", "experiments.plans")])
def test_make_passes_paths_with_spaces_as_one_argument(target, module):
    values = dict(MODEL="/tmp/my models/gpt2", DATA_DIR="/tmp/it's here/data", LEN="10", SEEDS="0,1")
    out = subprocess.run(["make", "-n", target, *(f"{k}={v}" for k, v in values.items())], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    line = next(line for line in out.replace("\\\n", " ").splitlines() if f"-m {module}" in line)
    args = shlex.split(line)  # as the shell that make starts splits it
    assert any(a.endswith("model=/tmp/my models/gpt2") for a in args)
    assert any(a.endswith("data_dir=/tmp/it's here/data") for a in args)
