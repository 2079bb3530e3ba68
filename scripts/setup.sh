#!/usr/bin/env bash
# Creates the virtual environment and installs invar with its test, report, tensorboard and
# frameworks extras (the corpus's HF Trainer and Lightning cases; versions pinned in pyproject.toml).
# torch: the tested version is pinned (TORCH_VERSION, default 2.13.0). A torch that is
# already importable by $PY is kept (set KEEP_TORCH=0 to force the pin); the venv then
# sees it through --system-site-packages.
set -euo pipefail
PY=${PY:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
KEEP_TORCH=${KEEP_TORCH:-1}

if [ "$KEEP_TORCH" = 1 ] && "$PY" -c 'import torch' >/dev/null 2>&1; then
  echo "setup: keeping the torch already installed for $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  "$PY" -m venv --system-site-packages "$VENV"
else
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
fi
# The report and tensorboard extras are tested too; the torch installed above is a constraint,
# so that no extra makes pip replace it.
TORCH_PIN=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
"$VENV/bin/pip" install -q -e ".[test,report,tensorboard,frameworks]" -c <(echo "torch==$TORCH_PIN")
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
