# nsnet build, install and test entry points. Tests, the demo and the benchmark need root:
# they create throw-away network namespaces and never touch the root netns.

# A fresh Debian machine has Go in /usr/local/go but not always on PATH.
export PATH := /usr/local/go/bin:$(PATH)
# Static binaries: nsnet executes itself as the init inside containers whose root
# filesystem has no C library.
export CGO_ENABLED ?= 0

GO          ?= go
PREFIX      ?= /usr/local
CNI_BIN_DIR ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d
DESTDIR     ?=
TEST_TIMEOUT ?= 40m
BENCH_FLAGS ?=
RUNBENCH_FLAGS ?=

BIN := bin
# Debian packages the plugins and tests call (ip, nft, iptables, conntrack, ping, socat, nc).
DEB_PACKAGES := iproute2 iptables nftables conntrack iputils-ping socat netcat-openbsd busybox-static
# Debian packages only the benchmark calls: the runtimes runbench compares nsnet run with.
BENCH_DEB_PACKAGES := runc crun bubblewrap

# install-debs installs the Debian packages of $(1) that are missing.
define install-debs
missing=; \
for p in $(1); do \
	dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$p"; \
done; \
if [ -z "$$missing" ]; then echo "Debian packages present: $(1)"; exit 0; fi; \
echo "installing:$$missing"; \
export DEBIAN_FRONTEND=noninteractive; \
apt-get update -q && apt-get install -y -q --no-install-recommends $$missing
endef

.PHONY: all build install install-conf test bench bench-deps demo fmt vet deps clean

all: build

# Builds the main packages under plugins/ and cmd/ (cmd/ may have none yet; go list then warns
# that the pattern matched no packages). -e lists broken packages too, so go build reports why.
build:
	@mkdir -p $(BIN)
	@pkgs=$$($(GO) list -e -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./plugins/... ./cmd/...) || exit 1; \
	if [ -z "$$pkgs" ]; then echo "no main packages under plugins/ or cmd/ yet" >&2; exit 0; fi; \
	echo $(GO) build -o $(BIN)/ $$pkgs; \
	$(GO) build -o $(BIN)/ $$pkgs

# Plugins go to the CNI bin dir, the nsnet runtime (when built) to $(PREFIX)/bin.
install: build
	install -d $(DESTDIR)$(CNI_BIN_DIR)
	@for d in plugins/*/; do \
		p=$$(basename $$d); \
		if [ -f $(BIN)/$$p ]; then \
			echo "install $(BIN)/$$p $(DESTDIR)$(CNI_BIN_DIR)/$$p"; \
			install -m 0755 $(BIN)/$$p $(DESTDIR)$(CNI_BIN_DIR)/$$p || exit 1; \
		fi; \
	done
	@if [ -f $(BIN)/nsnet ]; then \
		install -d $(DESTDIR)$(PREFIX)/bin && \
		install -m 0755 $(BIN)/nsnet $(DESTDIR)$(PREFIX)/bin/nsnet && \
		echo "install $(BIN)/nsnet $(DESTDIR)$(PREFIX)/bin/nsnet"; \
	fi

install-conf:
	install -d $(DESTDIR)$(CNI_CONF_DIR)
	@for f in cni-conf/*.conflist; do \
		[ -e "$$f" ] || continue; \
		echo "install $$f $(DESTDIR)$(CNI_CONF_DIR)/"; \
		install -m 0644 "$$f" $(DESTDIR)$(CNI_CONF_DIR)/ || exit 1; \
	done

# The whole suite, one package at a time (the machine has 2 cores and tests share the kernel).
test:
	@[ "$$(id -u)" = 0 ] || echo "warning: not root; tests that create namespaces will be skipped" >&2
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...

bench: build bench-deps
	$(GO) run ./test/cmd/cnibench -bin $(CURDIR)/$(BIN) $(BENCH_FLAGS)
	$(GO) run ./test/cmd/runbench -bin $(CURDIR)/$(BIN) $(RUNBENCH_FLAGS)
	$(GO) run ./test/cmd/runbench -bin $(CURDIR)/$(BIN) -net $(RUNBENCH_FLAGS)

# ADD/CHECK/DEL of a container through cnitool, inside a throw-away host netns.
demo: install
	CNI_PATH=$(DESTDIR)$(CNI_BIN_DIR) ./scripts/demo.sh

fmt:
	gofmt -s -w $$(find . -name '*.go' -not -path './.git/*')

vet:
	$(GO) vet ./...

deps:
	@$(call install-debs,$(DEB_PACKAGES))

bench-deps: deps
	@$(call install-debs,$(BENCH_DEB_PACKAGES))

clean:
	rm -rf $(BIN)
