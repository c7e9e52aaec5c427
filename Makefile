# The two front doors: `make experiment LEN=10` and `make test`. Each sets up its own virtualenv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

# Experiment settings: unset variables fall back to experiments/configs/defaults.json.
exp_args = $(if $(TASK),--task=$(TASK)) $(if $(MODEL),--model=$(MODEL)) $(if $(LEN),--prefix_len=$(LEN)) \
	$(if $(DEPTH),--depth=$(DEPTH)) $(if $(REPARAM),--reparam=$(REPARAM)) $(if $(SEED),--seed=$(SEED)) \
	$(if $(EPOCHS),--epochs=$(EPOCHS)) $(if $(METHOD),--method=$(METHOD)) $(if $(INIT),--init=$(INIT)) $(if $(HEAD),--head=$(HEAD)) \
	$(if $(LR),--lr=$(LR)) $(if $(MAX_TRAIN),--max_train=$(MAX_TRAIN)) $(if $(MAX_TEST),--max_test=$(MAX_TEST)) \
	$(if $(DATA_DIR),--data_dir=$(DATA_DIR)) $(ARGS)

.PHONY: setup test experiment ablation plots notebooks bench pretrain scale clean-venv

$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	@touch $@

setup: $(VENV)/.test

test: $(VENV)/.test
	$(PY) -m pytest -q $(PYTEST_ARGS)

experiment: $(VENV)/.runtime
	$(PY) -m experiments.run $(exp_args)

# The ablation sweeps (the plan studies/ablation/plan.json) into results/ablation/ (OUT=...): TASK (default e2e),
# SWEEPS, SEEDS, JOBS; MODEL, EPOCHS, MAX_TRAIN, MAX_TEST and DATA_DIR change every run.
ablation_sets = $(if $(MODEL),"--set=model=$(MODEL)") $(if $(EPOCHS),--set=epochs=$(EPOCHS)) \
	$(if $(MAX_TRAIN),--set=max_train=$(MAX_TRAIN)) $(if $(MAX_TEST),--set=max_test=$(MAX_TEST)) \
	$(if $(DATA_DIR),"--set=data_dir=$(DATA_DIR)")

ablation: $(VENV)/.runtime
	$(PY) -m experiments.plans run ablation "--out=$(or $(OUT),results/ablation)" --tasks=$(or $(TASK),e2e) \
		$(if $(SWEEPS),--sweeps=$(SWEEPS)) $(if $(SEEDS),--seeds=$(SEEDS)) $(if $(JOBS),--jobs=$(JOBS)) $(ablation_sets) $(ARGS)

plots: $(VENV)/.runtime
	$(PY) -m experiments.reports $(if $(RESULTS),--results=$(RESULTS))

notebooks: $(VENV)/.test
	$(PY) notebooks/execute.py $(NB)

bench: $(VENV)/.test
	$(PY) -m bench.bench $(ARGS)

pretrain: $(VENV)/.runtime
	$(PY) -m minigpt.pretraining $(ARGS)

# The scale curve (studies/scale/plan.json): pretrain a family of models, prefix-tune and fine-tune
# each; a GPU job (about 9 minutes on one H200). ARGS e.g. "--deadline 600 --jobs 8".
scale: $(VENV)/.runtime
	$(PY) -m experiments.plans run scale $(ARGS)

clean-venv:
	rm -rf $(VENV)
