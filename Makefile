# vfa: `make test` installs what the tests need and runs every test.
GO       ?= go
BIN      := bin/vfa
# Packages whose unit tests also run under the race detector.
RACE_PKGS := ./internal/... ./keys ./nvram ./ssd ./datapath ./array ./iscsi/... ./mgmt ./phonehome

.PHONY: all build deps vet unit race system test soak bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/vfa

deps:
	scripts/deps.sh

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -timeout 20m ./...

# The race pass leaves out the tests that mostly time external processes
# (SIGKILL loops, iscsi-test-cu, a 20 s idle qemu-io session): the unit pass
# runs them in full, and -short shortens the loops of the rest.
RACE_SKIP := ^(TestKill9|TestCrashKill9|TestConformance|TestQEMUIdle)$$

race:
	$(GO) test -race -short -count=1 -timeout 20m -skip '$(RACE_SKIP)' $(RACE_PKGS)

# Whole-system tests against `vfa run` with real peers.
system: build
	scripts/system-test.sh $(BIN)

test: deps build vet unit race system

# Long crash loop: 1000 SIGKILLs of a writing process.
soak:
	VFA_CRASH_ITERATIONS=1000 $(GO) test -count=1 -timeout 0 -run '^TestCrashKill9$$' -v ./datapath

bench:
	$(GO) test -run XXX -bench . -benchtime 3x ./datapath

clean:
	rm -rf bin
