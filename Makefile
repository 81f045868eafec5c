# The two commands of the README. Both create .venv if needed (pip into a venv; conda users see environment.yml).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean slurm-up slurm-down slurm-status

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make demo: synthesize the embedded cohort and run the whole paper story into outputs/ (~6-12 min on 2 cores)
demo: $(STAMP)
	$(BIN)/exaonepath-lab demo --out outputs

## make test: the full test suite (notebooks included)
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

## make slurm-up / slurm-down: a one-node SLURM on this machine (root; state in /var/tmp/exaonepath-lab-slurm)
slurm-up:
	scripts/slurm_local.sh up

slurm-down:
	scripts/slurm_local.sh down

slurm-status:
	scripts/slurm_local.sh status

clean:
	rm -rf outputs .pytest_cache
