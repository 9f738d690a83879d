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
FORCE       ?=
TEST_TIMEOUT ?= 40m
BENCH_FLAGS ?=
VMTEST_FLAGS ?=
RUNBENCH_FLAGS ?=

BIN := bin
# Debian packages the plugins and tests call (ip, nft, iptables, conntrack, ping, socat, nc).
DEB_PACKAGES := iproute2 iptables nftables conntrack iputils-ping socat netcat-openbsd busybox-static
# Debian packages the end-to-end tests (test/e2e) drive: containerd 1.6 (ctr and its CRI
# plugin) with runc, and podman 4.3 with conmon. containers-common, which podman pulls in, needs
# a network stack: naming containernetworking-plugins picks it over netavark, so podman's CNI
# backend is available (its own conflists are not used; the tests give it ours).
E2E_DEB_PACKAGES := containerd runc podman conmon containernetworking-plugins
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

.PHONY: all build install install-conf test vmtest bench bench-deps demo fmt vet deps clean

all: build

# Builds the main packages under plugins/ and cmd/ (cmd/ may have none yet; go list then warns
# that the pattern matched no packages). -e lists broken packages too, so go build reports why.
build:
	@mkdir -p $(BIN)
	@pkgs=$$($(GO) list -e -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./plugins/... ./cmd/...) || exit 1; \
	if [ -z "$$pkgs" ]; then echo "no main packages under plugins/ or cmd/ yet" >&2; exit 0; fi; \
	echo $(GO) build -o $(BIN)/ $$pkgs; \
	$(GO) build -o $(BIN)/ $$pkgs

# Plugins go to the CNI bin dir, the nsnet runtime (when built) to $(PREFIX)/bin. A file already
# there that differs from ours (another plugin of the same name, a user's build, an older build
# of nsnet) is never replaced without FORCE=1, and then nothing is installed; identical files
# are left as they are.
install: build
	@pairs=; \
	for d in plugins/*/; do \
		p=$$(basename $$d); \
		if [ -f $(BIN)/$$p ]; then pairs="$$pairs $(BIN)/$$p:$(DESTDIR)$(CNI_BIN_DIR)/$$p"; fi; \
	done; \
	if [ -f $(BIN)/nsnet ]; then pairs="$$pairs $(BIN)/nsnet:$(DESTDIR)$(PREFIX)/bin/nsnet"; fi; \
	conflict=0; \
	for pair in $$pairs; do \
		src=$${pair%%:*}; dst=$${pair#*:}; \
		if [ -e "$$dst" ] && ! cmp -s "$$src" "$$dst"; then \
			if [ "$(FORCE)" = 1 ]; then echo "replacing $$dst (FORCE=1)"; \
			else \
				what="not a build of nsnet"; \
				if $(GO) version -m "$$dst" 2>/dev/null | grep -q "^[[:space:]]*path[[:space:]]*github.com/nsnet/nsnet/"; then what="another build of nsnet"; fi; \
				echo "make install: $$dst exists and differs from $$src ($$what); not overwriting it (FORCE=1 replaces it)" >&2; \
				conflict=1; \
			fi; \
		fi; \
	done; \
	[ $$conflict = 0 ] || exit 1; \
	for pair in $$pairs; do \
		src=$${pair%%:*}; dst=$${pair#*:}; \
		if cmp -s "$$src" "$$dst"; then echo "unchanged $$dst"; continue; fi; \
		echo "install $$src $$dst"; \
		install -d "$$(dirname "$$dst")" && install -m 0755 "$$src" "$$dst" || exit 1; \
	done

install-conf:
	install -d $(DESTDIR)$(CNI_CONF_DIR)
	@for f in cni-conf/*.conflist; do \
		[ -e "$$f" ] || continue; \
		echo "install $$f $(DESTDIR)$(CNI_CONF_DIR)/"; \
		install -m 0644 "$$f" $(DESTDIR)$(CNI_CONF_DIR)/ || exit 1; \
	done

# The whole suite, one package at a time (the machine has 2 cores and tests share the kernel),
# then the cgroup v2 and systemd suites in a VM (vmtest; needs root, as it installs qemu).
test:
	@[ "$$(id -u)" = 0 ] || echo "warning: not root; tests that create namespaces will be skipped" >&2
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory vmtest; \
	else echo "warning: not root; skipping vmtest (cgroup v2 and systemd suites in a VM)" >&2; fi

# cgroup v2 (busybox init, cgroup_no_v1=all) and systemd cgroup driver suites in a throw-away qemu
# VM: no network, always under timeout, KVM only with vmx/svm. Installs qemu, Debian's kernel and
# debootstrap when missing and caches the kernel and the systemd image in ~/.cache/nsnet-test/vm.
vmtest:
	$(GO) run ./test/cmd/vmtest $(VMTEST_FLAGS)
	$(GO) run ./test/cmd/vmtest -systemd $(VMTEST_FLAGS)

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
	@$(call install-debs,$(DEB_PACKAGES) $(E2E_DEB_PACKAGES))

bench-deps: deps
	@$(call install-debs,$(BENCH_DEB_PACKAGES))

clean:
	rm -rf $(BIN)
