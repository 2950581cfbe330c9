# Everyday commands. `make test` is the test command the README and CI use.
.PHONY: up test ort fixtures screenshots bench-registry bench-serving lint

up:              ## Fetch ONNX Runtime, build, and run `ferry up` on 127.0.0.1:8080
	./scripts/fetch-ort.sh
	cargo run --release -- up

test:            ## Run the whole test suite (fetches ONNX Runtime, starts an S3 server)
	./scripts/test.sh

ort:             ## Fetch the official ONNX Runtime library into .ort/
	./scripts/fetch-ort.sh

fixtures:        ## Regenerate the ONNX test fixtures
	python3 scripts/gen_fixtures.py

screenshots:     ## Regenerate the web UI's screenshots in docs/ui/ (runs its browser tests)
	./scripts/fetch-ort.sh
	cargo build
	FERRY_BIN=$${CARGO_TARGET_DIR:-target}/debug/ferry ORT_DYLIB_PATH=$(CURDIR)/.ort/libonnxruntime.so \
	  FERRY_UI_SCREENSHOTS=docs/ui python3 -m pytest -q tests/python/test_ui.py

lint:            ## Formatting and clippy, as CI checks them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

bench-registry:  ## Upload/download a 500 MiB model through ferry registry vs cp and cp + fsync
	./bench/registry.sh

bench-serving:   ## Batch-1 JSON inference under wrk vs raw ONNX Runtime
	./bench/serving.sh
