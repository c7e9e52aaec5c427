"""Plans of runs: a study's plan (`studies/<study>/plan.json`) as jobs, run a few at a time within a deadline,
each arm's lr chosen on dev loss from what finished. `python -m experiments.plans plan|run|report|pack STUDY`."""
from .collect import at_edge, collect, model_summary
from .jobs import Clock, Job, plan_jobs
from .runner import Runner, run_jobs
from .spec import STUDIES, arm, eval_name, fmt_lr, load_plan, model_dir, plan_file

__all__ = ["STUDIES", "Clock", "Job", "Runner", "arm", "at_edge", "collect", "eval_name", "fmt_lr", "load_plan",
           "model_dir", "model_summary", "plan_file", "plan_jobs", "run_jobs"]
