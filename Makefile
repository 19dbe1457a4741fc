# Shortcuts for the scripts (which need nothing but bash on a fresh machine).
.PHONY: demo test models
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
models:
	bash scripts/bootstrap.sh && .venv/bin/inferq models build-examples
