# Shop: the commands a person types. CMake does the building; this file only
# strings the steps together. See README.md.
#
#   make run      install what is missing, build, bring the whole system up
#   make test     install what is missing, build (sanitized), run every test
#   make stop     stop everything `make run` and `make test` started

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
REPO := $(CURDIR)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_DIR ?= build
RELEASE_DIR ?= build-release
FUZZ_DIR ?= build-fuzz
CMAKE_FLAGS ?=

.PHONY: all deps build build-release test run stop status clean fmt fmt-check proto-check \
        fuzz bench bench-rpc bench-events bench-login help test-faults test-cluster

all: build

help:
	@sed -n '1,10p' Makefile

deps:
	@scripts/deps.sh

# The sanitized build (AddressSanitizer + UBSan): what the tests run.
$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOP_SANITIZE=ON $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The optimized build: what `make run` and the benchmarks use.
$(RELEASE_DIR)/CMakeCache.txt:
	cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=Release -DSHOP_TESTS=OFF $(CMAKE_FLAGS)

build-release: deps $(RELEASE_DIR)/CMakeCache.txt
	cmake --build $(RELEASE_DIR) -j $(JOBS)

test: build
	@scripts/proto-check.sh
	@scripts/test.sh $(BUILD_DIR)

# The crash matrix: every crash point armed in turn under the supervisor,
# hundreds of orders, the counts checked (scripts/faults.sh; `make test`
# runs its fast mode).
test-faults: build
	@scripts/faults.sh --full --build $(BUILD_DIR)
	SHOP_FAULTS_FULL=1 CTEST_ARGS='-R test_e2e_faults' scripts/test.sh $(BUILD_DIR)

# The cluster scenarios (not part of make test): three Kafka brokers, a
# MariaDB primary and replica, two instances of every program, nodes
# killed under load (scripts/cluster-test.sh).
test-cluster: build build-release
	@scripts/cluster-test.sh --build $(BUILD_DIR) --release $(RELEASE_DIR)

run: build-release
	@scripts/run.sh $(RELEASE_DIR)

stop:
	@scripts/services.sh stop --profile run
	@scripts/infra.sh stop --profile run
	@scripts/infra.sh stop --profile test

status:
	@scripts/infra.sh status --profile run || true
	@scripts/services.sh status --profile run || true

clean:
	rm -rf $(BUILD_DIR) $(RELEASE_DIR) $(FUZZ_DIR)
	find gen -mindepth 1 ! -name README.md -delete

FMT_FILES = $(shell git ls-files '*.c' '*.h' | grep -v '^gen/')
fmt:
	clang-format -i $(FMT_FILES)

fmt-check:
	clang-format --dry-run -Werror $(FMT_FILES)

# buf lint + format + breaking, against the previous commit of main (the
# commit before HEAD, so main is never compared with itself).
proto-check:
	@scripts/proto-check.sh

# libFuzzer (clang) over the decode paths: a fixed seed and a run count,
# never a time limit. New inputs go to build-fuzz/corpus; the committed
# seeds in tests/fuzz/corpus stay as they are. The test suite runs a short
# pass of the same targets (<target>_fuzz_short).
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= rpc_envelope user_command user_query product_command product_query \
                order_command order_query audit_query events gateway
fuzz: deps
	cmake -S . -B $(FUZZ_DIR) -DCMAKE_C_COMPILER=clang -DSHOP_FUZZ=ON -DSHOP_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target $(addsuffix _fuzz,$(FUZZ_TARGETS))
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  $(FUZZ_DIR)/tests/$${t}_fuzz -seed=1 -runs=$(FUZZ_RUNS) $(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t; \
	done

bench-rpc: build-release
	$(RELEASE_DIR)/bin/bench-rpc

# Needs the test profile's MariaDB and Kafka (started here if they are down;
# stopped again by make stop).
bench-events: build-release
	SHOP_ADMIN_BIN=$(REPO)/$(RELEASE_DIR)/bin/shop-admin scripts/infra.sh start --profile test
	eval "$$(scripts/infra.sh env --profile test)"; $(RELEASE_DIR)/bin/bench-events

# Other users' GetMe latency while Login is flooded with wrong passwords on
# one account, and the share the throttle answers. Starts the test
# profile's infrastructure and Shop programs (optimized build) and stops
# the programs again; make stop stops the infrastructure.
bench-login: build-release
	SHOP_ADMIN_BIN=$(REPO)/$(RELEASE_DIR)/bin/shop-admin scripts/infra.sh start --profile test
	scripts/services.sh start --profile test --build $(RELEASE_DIR)
	eval "$$(scripts/infra.sh env --profile test)"; \
	  SHOP_CONFIG=$(REPO)/config/test.yaml $(RELEASE_DIR)/bin/bench-login-flood; \
	  rc=$$?; scripts/services.sh stop --profile test --build $(RELEASE_DIR); exit $$rc

# Everything at once on a stack of its own (scripts/bench.sh): bench-rpc,
# bench-events, CreateOrder's raw MariaDB transaction, and shop-loadgen
# against every Shop program; one table of figures, baselines and aims.
bench: build-release
	scripts/bench.sh $(RELEASE_DIR)
