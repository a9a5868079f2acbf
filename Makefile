# ngx_hookstream: build, run and test the nginx module.
#
#   make               build build/nginx/ngx_hookstream_module.so against
#                      Debian's nginx-dev (or NGINX_SRC=/path/to/nginx)
#   make run           start nginx with the module on 127.0.0.1:8080
#   make test          unit tests and the Test::Nginx-style suite
#   make test-asan     the suite against an AddressSanitizer build
#   make bench         load tests side by side with nchan (docs/benchmarks.md)
#   make fuzz          the frame codec's and the JSON walker's fuzz targets,
#                      each bounded in time
#   make deps          install the Debian packages everything needs

NGINX_SRC   ?= /usr/share/nginx/src
NGINX_BIN   ?= /usr/sbin/nginx
BUILD       ?= $(CURDIR)/build
BUILDDIR    ?= $(BUILD)/nginx
ASANDIR     ?= $(BUILD)/asan
MODULE      := $(BUILDDIR)/ngx_hookstream_module.so
ASAN_MODULE := $(ASANDIR)/ngx_hookstream_module.so
FUZZ_TIME   ?= 60
JOBS        ?= 2
PROVE_JOBS  ?= 1
TESTS       ?= t/

SOURCES := config $(wildcard *.c src/*.c src/*.h)

# Debian's nginx-dev ships the flags its nginx was configured with; a
# module must match them for --with-compat to load it.
CONFIGURE = cd $(NGINX_SRC) && \
    if [ -f conf_flags ]; then . ./conf_flags; \
    else NGX_CONF_FLAGS=(--with-compat --with-threads \
                         --with-http_ssl_module); fi; \
    ./configure "$${NGX_CONF_FLAGS[@]}" --with-compat --with-debug \
        --with-threads --add-dynamic-module=$(CURDIR)

SHELL := /bin/bash

.PHONY: all module asan deps run test test-unit test-t test-asan fuzz \
        lint bench clean

all: module

module: deps-build $(MODULE)

$(BUILDDIR)/Makefile: config
	@mkdir -p $(BUILDDIR)
	flock $(BUILD)/.configure.lock bash -c '$(CONFIGURE) \
	    --builddir=$(BUILDDIR) >$(BUILDDIR)/configure.log 2>&1' \
	    || { tail -20 $(BUILDDIR)/configure.log; exit 1; }

$(MODULE): $(BUILDDIR)/Makefile $(SOURCES)
	flock $(BUILDDIR)/.make.lock \
	    $(MAKE) -f $(BUILDDIR)/Makefile -C $(NGINX_SRC) -j$(JOBS) modules
	@touch $@

asan: deps-build $(ASAN_MODULE)

$(ASANDIR)/Makefile: config
	@mkdir -p $(ASANDIR)
	flock $(BUILD)/.configure.lock bash -c '$(CONFIGURE) \
	    --builddir=$(ASANDIR) \
	    --with-cc-opt="-fsanitize=address,undefined \
	        -fno-omit-frame-pointer -DNGX_DEBUG_PALLOC=1" \
	    --with-ld-opt="-fsanitize=address,undefined" \
	    >$(ASANDIR)/configure.log 2>&1' \
	    || { tail -20 $(ASANDIR)/configure.log; exit 1; }

$(ASAN_MODULE): $(ASANDIR)/Makefile $(SOURCES)
	flock $(ASANDIR)/.make.lock \
	    $(MAKE) -f $(ASANDIR)/Makefile -C $(NGINX_SRC) -j$(JOBS) modules
	@touch $@

# Packages: tools/deps.sh installs what is missing (apt-get update first).
deps-build:
	@bash tools/deps.sh build

deps: deps-build
	@bash tools/deps.sh test
	@if [ ! -d t/node/node_modules/ws ]; then \
	    cd t/node && npm install --no-audit --no-fund --silent; fi

run: deps module
	@bash examples/run.sh "$(NGINX_BIN)" "$(MODULE)"

test: deps module test-unit test-t

test-unit: module
	@$(MAKE) -s -C t/unit BUILDDIR=$(BUILDDIR) NGINX_SRC=$(NGINX_SRC) run

test-t: module
	HOOKSTREAM_MODULE=$(MODULE) NGINX_BIN=$(NGINX_BIN) \
	    prove -j$(PROVE_JOBS) -I t/lib -r $(TESTS)

test-asan: deps asan
	HOOKSTREAM_MODULE=$(ASAN_MODULE) NGINX_BIN=$(NGINX_BIN) \
	HOOKSTREAM_ASAN=1 \
	    prove -j$(PROVE_JOBS) -I t/lib -r $(TESTS)

fuzz: deps module
	@$(MAKE) -s -C t/fuzz BUILDDIR=$(BUILDDIR) NGINX_SRC=$(NGINX_SRC) \
	    FUZZ_TIME=$(FUZZ_TIME) run

# side by side with nchan on this machine; see docs/benchmarks.md
bench: deps module
	@bash tools/deps.sh bench
	$(MAKE) -C bench hsload
	bash bench/run.sh

lint:
	@bash .ci/lint

clean:
	rm -rf $(BUILD)
