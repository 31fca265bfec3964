# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test test-k8s lint bench clean

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

bench:
	scripts/bootstrap
	.venv/bin/python bench/bench_kafka.py

clean:
	-.venv/bin/access-eval local stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
