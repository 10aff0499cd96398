.DEFAULT_GOAL := help
.PHONY: help example test lint fmt bench memcheck

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

example: ## Build ferroloop and run examples/hello.py on it
	@scripts/example.sh

test: ## Build for Python 3.11-3.13 and run every test (lints, conformance, CPython's test_asyncio)
	@scripts/test.sh

memcheck: ## Run ferroloop's tests under valgrind's memcheck (needs valgrind; slow)
	@scripts/memcheck.sh

lint: ## cargo fmt/clippy and ruff
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	ruff check python tests bench examples && ruff format --check python tests bench examples

fmt: ## Format Rust and Python sources
	cargo fmt
	ruff format python tests bench examples

bench: ## Benchmarks: ferroloop side by side with asyncio, uvloop and rloop
	bench/setup.sh && bench/.venv/bin/python bench/run.py
