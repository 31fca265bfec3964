# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test lint bench clean

demo:
	scripts/bootstrap
	.venv/bin/access-eval demo

test:
	scripts/bootstrap --all
	scripts/test

lint:
	.venv/bin/ruff check processor tests bench
	.venv/bin/mypy

bench:
	scripts/bootstrap
	.venv/bin/python bench/bench_kafka.py

clean:
	-.venv/bin/access-eval local stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
