"""Reports, read from result files alone: a study's (`study`), the paper's findings with a verdict each
(`findings`, drawn by `figure`), and the reference sweeps at a fixed lr per arm (`sweeps`).
`python -m experiments.reports` (make plots) writes studies/RESULTS.md and studies/reference/RESULTS.md."""
