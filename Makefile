# Two commands on a fresh Debian/Ubuntu machine (README "Set-up"):
#   make run    dump the shipped sample capture
#   make test   run every test
# Both first install the system libraries the build links against when they are missing.

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# sox: the tests check that `voice --float` WAVs read without warnings; tshark: the
# Wireshark dissector's agreement tests; groff-base: the man page test renders every page;
# jq: README and guide examples pipe into it, and tests/readme_examples.rs runs them.
SYSTEM_PACKAGES := libpcap-dev libopus-dev pkg-config tshark sox groff-base jq

.PHONY: deps run test bench lint sample man

deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  echo 'wireshark-common wireshark-common/install-setuid boolean false' | $(SUDO) debconf-set-selections; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

run: deps
	$(CARGO) run --release --quiet -- dump samples/session.pcap --summary

# man/dissonance.1 and one page per subcommand, generated from the clap definition
# (not committed: regenerate after changing a flag).
man:
	$(CARGO) run --quiet -- man --out-dir man

sample: deps
	samples/make.sh

test: deps
	$(CARGO) test --workspace

bench: deps
	$(CARGO) bench --bench codec

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
