"""Running a plan's jobs: dependencies first, a few at a time, within a deadline; Ctrl-C saves every run."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from minigpt.io import atomic_write

from .jobs import Clock, Job


def job_setup(runner: int) -> Callable[[], None]:
    """What a job's process does before it starts: take Ctrl-C (SIGINT) as Python does by default, even where the
    sweep was started in the background (`cmd &`), which makes its children ignore SIGINT; and, on Linux, have
    the kernel send it SIGTERM (on which training saves its state and stops, as on Ctrl-C) when the runner
    (`runner`, its pid) dies, even by `kill -9`: no job runs on as an orphan that a rerun would duplicate."""
    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: the lock still refuses a second runner
            return
        if os.getppid() != runner:  # the runner died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
    return setup


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def sigterm_as_ctrl_c(signum, frame):
    raise KeyboardInterrupt


class Runner:
    """Runs jobs as subprocesses: dependencies first, `max_jobs` at a time, each with `threads` CPU threads (by
    default the machine's cores shared out), until all are settled or the time `end` passes. Each job's output
    goes to out/logs/<name>.log and every job's status to out/jobs.json, rewritten as it changes."""

    def __init__(self, jobs: list[Job], out: Path, max_jobs: int, end: float | None, poll: float = 1.0,
                 threads: int | None = None, grace: float = 60.0, start_late: bool = False):
        self.jobs, self.out, self.max_jobs, self.end, self.poll = jobs, out, max_jobs, end, poll
        self.grace, self.start_late = grace, start_late
        self.by_name = {j.name: j for j in jobs}
        self.running: dict[str, subprocess.Popen] = {}
        self.clock = Clock(jobs)
        self.t0 = time.time()
        threads = str(threads or max(1, (os.cpu_count() or 1) // max_jobs))
        # progress bars refresh rarely in the logs; expandable segments fragment GPU memory less when jobs share it
        self.env = {"TQDM_MININTERVAL": "10", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", **os.environ,
                    "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}

    def say(self, message: str) -> None:
        print(f"[{time.time() - self.t0:6.0f}s] {message}", flush=True)

    def write_status(self) -> None:
        rows = [{"name": j.name, "status": j.status, "seconds": j.seconds, "returncode": j.returncode,
                 "started_after": None if j.started is None else round(j.started - self.t0, 1),
                 "command": " ".join(j.cmd)} for j in self.jobs]
        atomic_write(self.out / "jobs.json", lambda t: Path(t).write_text(json.dumps(rows, indent=2) + "\n"))

    def ended(self, name: str, returncode: int, not_done: str) -> Job:
        """Record that job `name` has ended: done if it exited cleanly and wrote its result, else `not_done`."""
        j = self.by_name[name]
        j.seconds, j.returncode = round(time.time() - j.started, 1), returncode
        j.status = "done" if returncode == 0 and j.done_file.exists() else not_done
        return j

    def reap(self) -> None:
        """Record the jobs that have ended since the last look."""
        for name, proc in list(self.running.items()):
            if proc.poll() is None:
                continue
            j = self.ended(name, proc.returncode, "failed")
            if j.status == "done":
                self.clock.add(j, j.seconds)
            del self.running[name]
            left = sum(x.status in ("waiting", "running") for x in self.jobs)
            self.say(f"{j.status}: {name} ({j.seconds:.0f}s); {left} jobs left")

    def stop(self, why: str) -> None:
        """Stop the running jobs as Ctrl-C would (training saves its state, so the next run resumes it), killing
        any that have not ended `grace` seconds later; each is recorded as unfinished (or done, if it just
        finished)."""
        for proc in self.running.values():
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:  # it has just ended by itself
                pass
        for name, proc in self.running.items():
            how = "stopped"
            try:
                proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                how = f"killed {self.grace:.0f} s after Ctrl-C (what it did since its last checkpoint is lost)"
            j = self.ended(name, proc.returncode, "unfinished")
            self.say(f"{why}: {how if j.status == 'unfinished' else 'done'}: {name}")
        self.running.clear()

    def start(self, j: Job) -> None:
        j.status, j.started = "running", time.time()
        with open(self.out / "logs" / f"{j.name}.log", "a") as log:
            self.running[j.name] = subprocess.Popen(j.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                    start_new_session=True, preexec_fn=job_setup(os.getpid()))
        self.say(f"started {j.name}")

    def schedule(self) -> None:
        """Settle or start each waiting job whose turn it is."""
        now = time.time()
        for j in self.jobs:
            if j.status != "waiting":
                continue
            deps = [self.by_name[d].status for d in j.needs]
            if any(s in ("failed", "skipped", "unfinished") for s in deps):
                j.status = "skipped"
                continue
            ready = all(s == "done" for s in deps)
            if ready and j.wanted is not None and not j.wanted():
                j.status = "not needed"  # settled before the clock: an unwanted job is never "skipped"
                self.say(f"not needed: {j.name}")
                continue
            if self.end is not None and (now >= self.end or (now + self.clock(j) > self.end and not self.start_late)):
                j.status = "skipped"
                seconds, source = self.clock.expect(j)
                self.say(f"no time left for {j.name} (expected {seconds:.0f}s: {source})")
                continue
            first_waiting = any(not x.later and x.needs and x.status == "waiting" for x in self.jobs)
            if len(self.running) < self.max_jobs and ready and not (j.later and first_waiting):
                self.start(j)

    def loop(self) -> list[Job]:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        for j in self.jobs:
            if j.done_file.exists():
                j.status = "done"
        while True:
            self.reap()
            if self.end is not None and time.time() >= self.end:
                self.stop("deadline")
            self.schedule()
            self.write_status()
            if not self.running and all(j.status != "waiting" for j in self.jobs):
                break
            time.sleep(self.poll)
        counts = {s: sum(j.status == s for j in self.jobs)
                  for s in ("done", "failed", "unfinished", "skipped", "not needed")}
        self.say(", ".join(f"{v} {k}" for k, v in counts.items()))
        return self.jobs

    def run(self) -> list[Job]:
        """The loop, with Ctrl-C or SIGTERM on the runner stopping its jobs as the deadline does: they are
        recorded as unfinished and SystemExit says how to resume them."""
        in_main = threading.current_thread() is threading.main_thread()
        term = signal.signal(signal.SIGTERM, sigterm_as_ctrl_c) if in_main else None
        ctrl_c = signal.getsignal(signal.SIGINT)
        try:
            return self.loop()
        except KeyboardInterrupt:
            if in_main:  # a second Ctrl-C must not cut the runs' saving short
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            print(f"interrupted: stopping {len(self.running)} run(s), each saving its training state "
                  f"(up to {self.grace:.0f} s)", flush=True)
            self.stop("interrupted")
            self.write_status()
            stopped = [j.name for j in self.jobs if j.status == "unfinished"]
            raise SystemExit(f"interrupted: {len(stopped)} run(s) unfinished"
                             f"{' (' + ', '.join(stopped) + ')' if stopped else ''}"
                             "; the same command resumes them from their saved training state")
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, term)
                signal.signal(signal.SIGINT, ctrl_c)


def run_jobs(jobs: list[Job], out: Path, max_jobs: int, end: float | None, poll: float = 1.0,
             threads: int | None = None, grace: float = 60.0, start_late: bool = False) -> list[Job]:
    """Run `jobs` (see Runner) until all are settled or the time `end` passes. Jobs still running then get
    Ctrl-C (SIGINT), on which training saves its state and stops, and are killed if they have not ended
    `grace` seconds later. A job expected to outlast `end` is skipped, unless `start_late`: then it starts
    anyway, and what it does before `end` is saved for the next run to resume.

    Ctrl-C or SIGTERM on the runner stops its jobs the same way, records them and raises SystemExit."""
    return Runner(jobs, out, max_jobs, end, poll, threads, grace, start_late).run()
