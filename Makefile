# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test test-k8s lint bench clean image test-image test-dashboard soak

demo:
	scripts/bootstrap
	.venv/bin/access-eval demo

test:
	scripts/bootstrap --all
	scripts/test

# Only the chart against the real Kubernetes API server (tests/k8s/test_k8s_apply.py).
test-k8s:
	scripts/bootstrap --all
	scripts/test -m k8s

lint:
	.venv/bin/ruff check processor tests bench scripts/build_image.py
	.venv/bin/mypy

# The randomized fault soak for as long as you like (docs/guarantees.md, "Soak"); output in var/soak/<seed>/.
# E.g. make soak DURATION=2h SEED=123456 (SEED empty: random, printed).
DURATION ?= 60m
SEED ?=
soak:
	scripts/bootstrap --all
	scripts/soak --duration $(DURATION) $(if $(SEED),--seed $(SEED))

# Container image without a Docker daemon or registry (buildah on a Debian base; see scripts/build_image.py).
image:
	scripts/bootstrap --all
	.venv/bin/python scripts/build_image.py build localhost/access-eval:0.1.0

test-image:
	scripts/bootstrap --all
	.venv/bin/python -m pytest -m image tests/packaging/test_image.py tests/packaging/test_dockerfile.py

test-dashboard:
	scripts/bootstrap --all
	.venv/bin/python -m pytest tests/k8s/test_dashboard_schema.py

bench:
	scripts/bootstrap
	.venv/bin/python bench/bench_kafka.py

clean:
	-.venv/bin/access-eval local stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
