# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test test-k8s lint bench clean image test-image test-dashboard

demo:
	scripts/bootstrap
	.venv/bin/access-eval demo

test:
	scripts/bootstrap --all
	scripts/test

# Only the chart against the real Kubernetes API server (tests/test_k8s_apply.py).
test-k8s:
	scripts/bootstrap --all
	scripts/test -m k8s

lint:
	.venv/bin/ruff check processor tests bench
	.venv/bin/mypy

# Container image without a Docker daemon or registry (buildah on a Debian base; see tests/image_harness.py).
image:
	scripts/bootstrap --all
	.venv/bin/python tests/image_harness.py build localhost/access-eval:0.1.0

test-image:
	scripts/bootstrap --all
	.venv/bin/python -m pytest -m image tests/test_image.py tests/test_dockerfile.py

test-dashboard:
	scripts/bootstrap --all
	.venv/bin/python -m pytest tests/test_dashboard_schema.py

bench:
	scripts/bootstrap
	.venv/bin/python bench/bench_kafka.py

clean:
	-.venv/bin/access-eval local stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
