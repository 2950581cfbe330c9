# Everyday commands. `make test` is the test command the README and CI use.
.PHONY: test ort fixtures run bench-registry lint

test:            ## Run the whole test suite (fetches ONNX Runtime, starts an S3 server)
	./scripts/test.sh

ort:             ## Fetch the official ONNX Runtime library into .ort/
	./scripts/fetch-ort.sh

fixtures:        ## Regenerate the ONNX test fixtures
	python3 scripts/gen_fixtures.py

lint:            ## Formatting and clippy, as CI checks them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

run:             ## Run `ferry up` from source
	cargo run --release -- up

bench-registry:  ## Upload/download a 500 MiB model through the registry vs cp
	./bench/registry.sh
