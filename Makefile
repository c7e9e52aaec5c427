# The two front doors: `make experiment LEN=10` and `make test`. Each sets up its own virtualenv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# (VENV itself must be a path without spaces: make cannot name a target with one. The clone's own path
# may have spaces: every recipe runs inside it and uses relative paths.)

# `$(call quote,TEXT)`: TEXT as one shell word, in single quotes (a ' inside becomes '\''), so that a
# value with spaces, such as MODEL="/data/my models/gpt2", reaches Python as one argument.
quote = '$(subst ','\'',$(1))'
# `$(call opt,KEY,VALUE)`: the quoted --KEY=VALUE, or nothing where VALUE is empty.
opt = $(if $(2),$(call quote,--$(1)=$(2)))

# Experiment settings: unset variables fall back to experiments/configs/defaults.json. ARGS is passed
# as written (several arguments; quote inside it yourself).
exp_args = $(call opt,task,$(TASK)) $(call opt,model,$(MODEL)) $(call opt,prefix_len,$(LEN)) \
	$(call opt,depth,$(DEPTH)) $(call opt,reparam,$(REPARAM)) $(call opt,seed,$(SEED)) \
	$(call opt,epochs,$(EPOCHS)) $(call opt,method,$(METHOD)) $(call opt,init,$(INIT)) $(call opt,head,$(HEAD)) \
	$(call opt,lr,$(LR)) $(call opt,max_train,$(MAX_TRAIN)) $(call opt,max_test,$(MAX_TEST)) \
	$(call opt,data_dir,$(DATA_DIR)) $(ARGS)

.PHONY: setup test check lab slides experiment ablation plots notebooks bench pretrain scale clean-venv

$(VENV)/.runtime: requirements.txt
	@test -x "$(PY)" || "$(PYTHON)" -m venv "$(VENV)"
	"$(PY)" -m pip install -q --upgrade pip
	"$(PY)" -m pip install -q -r requirements.txt
	@touch "$@"

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	"$(PY)" -m pip install -q -r requirements-test.txt
	@touch "$@"

setup: $(VENV)/.test

test: $(VENV)/.test
	"$(PY)" -m pytest -q $(PYTEST_ARGS)

# Open the notebooks in JupyterLab (installed into the venv on first use; quit with Ctrl-C). As root (a
# container, say) JupyterLab refuses to start unless told to allow it.
lab: $(VENV)/.test
	@"$(PY)" -c "import jupyterlab" 2>/dev/null || "$(PY)" -m pip install -q jupyterlab
	"$(PY)" -m jupyter lab $$(test "$$(id -u)" = 0 && echo --allow-root) notebooks/

# The notebooks as reveal.js slide decks in .cache/slides/ (nbconvert installed into the venv on first use).
slides: $(VENV)/.test
	@"$(PY)" -c "import nbconvert" 2>/dev/null || "$(PY)" -m pip install -q nbconvert
	"$(PY)" -m course.slides $(NB)

# Grade the course's exercises (course/exercises/; course/README.md): all, or EX="1.1 3.2" for some.
check: $(VENV)/.runtime
	"$(PY)" -m course $(EX)

experiment: $(VENV)/.runtime
	"$(PY)" -m experiments.run $(exp_args)

# The ablation sweeps (the plan studies/ablation/plan.json) into results/ablation/ (OUT=...): TASK (default e2e),
# SWEEPS, SEEDS, JOBS; MODEL, EPOCHS, MAX_TRAIN, MAX_TEST and DATA_DIR change every run.
ablation_sets = $(call opt,set=model,$(MODEL)) $(call opt,set=epochs,$(EPOCHS)) \
	$(call opt,set=max_train,$(MAX_TRAIN)) $(call opt,set=max_test,$(MAX_TEST)) $(call opt,set=data_dir,$(DATA_DIR))

ablation: $(VENV)/.runtime
	"$(PY)" -m experiments.plans run ablation $(call opt,out,$(or $(OUT),results/ablation)) \
		$(call opt,tasks,$(or $(TASK),e2e)) $(call opt,sweeps,$(SWEEPS)) $(call opt,seeds,$(SEEDS)) \
		$(call opt,jobs,$(JOBS)) $(ablation_sets) $(ARGS)

plots: $(VENV)/.runtime
	"$(PY)" -m experiments.reports $(call opt,results,$(RESULTS))

notebooks: $(VENV)/.test  # NB: notebook names, several, passed as written
	"$(PY)" notebooks/execute.py $(NB)

bench: $(VENV)/.test
	"$(PY)" -m bench.bench $(ARGS)

pretrain: $(VENV)/.runtime
	"$(PY)" -m minigpt.pretraining $(ARGS)

# The scale curve (studies/scale/plan.json): pretrain a family of models, prefix-tune and fine-tune
# each; a GPU job (about 9 minutes on one H200). ARGS e.g. "--deadline 600 --jobs 8".
scale: $(VENV)/.runtime
	"$(PY)" -m experiments.plans run scale $(ARGS)

clean-venv:
	rm -rf "$(VENV)"
