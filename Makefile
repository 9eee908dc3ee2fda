# leukoseg build. `make` builds build/leukoseg; `make test` runs the unit tests;
# `make SANITIZE=1 test` builds into build-san/ with ASan + UBSan.
# Options: BLAS=0 (plain C matrix products), OPENMP=0, NATIVE=0 (no -march=native).

CC ?= cc
BLAS ?= 1
OPENMP ?= 1
NATIVE ?= 1
SANITIZE ?= 0

BUILD := build
CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Iinclude -Isrc
ifeq ($(SANITIZE),1)
  BUILD := build-san
  CFLAGS += -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDFLAGS += -fsanitize=address,undefined
else
  CFLAGS += -O3 -g
endif
ifeq ($(NATIVE),1)
  CFLAGS += -march=native
endif
ifeq ($(OPENMP),1)
  CFLAGS += -fopenmp
  LDFLAGS += -fopenmp
else
  CFLAGS += -Wno-unknown-pragmas
endif

PKGS := libpng libjpeg
HAVE_BLAS := $(shell [ "$(BLAS)" = 1 ] && pkg-config --exists openblas && echo 1)
ifeq ($(HAVE_BLAS),1)
  CFLAGS += -DLS_HAVE_CBLAS
  # Prefer Debian's OpenMP build of OpenBLAS (libopenblas-openmp-dev): it shares our OpenMP
  # thread pool, where the pthread build's threads fight with OpenMP's spinning workers.
  OPENBLAS_OMP := /usr/lib/x86_64-linux-gnu/openblas-openmp
  ifneq ($(wildcard $(OPENBLAS_OMP)/libopenblas.so),)
    CFLAGS += $(shell pkg-config --cflags openblas)
    LDLIBS_BLAS := -L$(OPENBLAS_OMP) -Wl,-rpath,$(OPENBLAS_OMP) -lopenblas
  else
    PKGS += openblas
  endif
endif
HAVE_CJSON := $(shell pkg-config --exists libcjson && echo 1)
ifneq ($(HAVE_CJSON),1)
  $(error libcjson not found: install libcjson-dev (apt-get install libcjson-dev))
endif
PKGS += libcjson
HAVE_MHD := $(shell pkg-config --exists libmicrohttpd && echo 1)
ifeq ($(HAVE_MHD),1)
  PKGS += libmicrohttpd
  CFLAGS += -DLS_HAVE_MHD
endif

CFLAGS += $(shell pkg-config --cflags $(PKGS))
LDLIBS := $(LDLIBS_BLAS) $(shell pkg-config --libs $(PKGS)) -lm

LIB_SRC := $(wildcard src/*.c)
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
CLI_SRC := $(wildcard cli/*.c)
CLI_OBJ := $(CLI_SRC:cli/%.c=$(BUILD)/cli/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

all: $(BUILD)/leukoseg

$(BUILD)/obj/%.o: src/%.c include/leukoseg.h $(wildcard src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/cli/%.o: cli/%.c include/leukoseg.h $(wildcard src/*.h cli/*.h) | $(BUILD)/cli
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/libleukoseg.a: $(LIB_OBJ)
	ar rcs $@ $^
$(BUILD)/leukoseg: $(CLI_OBJ) $(BUILD)/libleukoseg.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/tests/%: tests/%.c tests/testutil.h $(BUILD)/libleukoseg.a | $(BUILD)/tests
	$(CC) $(CFLAGS) $< $(BUILD)/libleukoseg.a $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/obj $(BUILD)/cli $(BUILD)/tests:
	mkdir -p $@

# Web pages built into the binary (leukoseg serve / report): tools/embed.c, a small C generator,
# turns the files in web/ into a C file of byte arrays, so the build needs no xxd.
WEB_SRC := $(sort $(wildcard web/*))
$(BUILD)/tools/embed: tools/embed.c | $(BUILD)/tools
	$(CC) -std=c11 -O2 -Wall -Wextra $< -o $@
$(BUILD)/gen/web_files.c: $(BUILD)/tools/embed $(WEB_SRC) | $(BUILD)/gen
	$(BUILD)/tools/embed $@ $(WEB_SRC)
$(BUILD)/gen/web_files.o: $(BUILD)/gen/web_files.c cli/web.h
	$(CC) $(CFLAGS) -Icli -c $< -o $@
$(BUILD)/leukoseg: $(BUILD)/gen/web_files.o
$(BUILD)/tools $(BUILD)/gen:
	mkdir -p $@

# Browser and server tests of leukoseg serve (skip with a message without node or chromium).
test-web: $(BUILD)/leukoseg
	tests/web/run.sh

tests: $(TEST_BIN)

# Unit tests (fast); each binary exits non-zero on failure.
# Tests with real data read it from here (tests/testutil.h, tests/e2e.sh).
export LEUKOSEG_DATA ?= $(abspath $(CURDIR)/../shared/data/segmentation_WBC)

test: $(TEST_BIN) $(BUILD)/leukoseg
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; $$t; done; echo "all unit tests passed"

# Everything CI runs: unit tests, the same under ASan + UBSan, end-to-end checks on real data,
# and the browser and server tests of the web page (they print SKIP without node or chromium).
check: test
	$(MAKE) SANITIZE=1 test
	tests/e2e.sh $(BUILD)/leukoseg
	tests/web/run.sh

# The main job: train the shipped configuration from scratch on the dataset (stage 1: 80 epochs,
# stage 2: 30 more epochs at a lower learning rate from stage 1's best model; each keeps the model
# with the best validation mIoU), then evaluate segmentation and cell types on each dataset's
# test split. Writes runs/main/ (under an hour on 2 cores; see README).
DATA ?= ../shared/data/segmentation_WBC
MAIN_DIR ?= runs/main
COMMON_ARGS := --balance --size 128 --batch 8 --threads 2
main: $(BUILD)/leukoseg
	$(BUILD)/leukoseg train --data "$(DATA)" --out $(MAIN_DIR)/stage1.safetensors $(COMMON_ARGS) \
		--epochs 80 --patience 20 --lr 6e-4 --warmup 300 --seed 1 --no-finalize
	$(BUILD)/leukoseg train --data "$(DATA)" --init $(MAIN_DIR)/stage1.safetensors \
		--out $(MAIN_DIR)/leukoseg-b0.safetensors $(COMMON_ARGS) \
		--epochs 30 --patience 15 --lr 2e-4 --warmup 50 --seed 2
	for set in "Dataset 1" "Dataset 2"; do \
		$(BUILD)/leukoseg eval --model $(MAIN_DIR)/leukoseg-b0.safetensors \
			--data "$(DATA)/$$set" --split test && \
		$(BUILD)/leukoseg count --eval --model $(MAIN_DIR)/leukoseg-b0.safetensors \
			--data "$(DATA)/$$set" --split test || exit 1; \
	done

clean:
	rm -rf build build-san

.PHONY: all test tests check main clean test-web
