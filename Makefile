# Developer shortcuts. The canonical test command is scripts/test.sh (what CI runs).
PYTHON ?= python3

.PHONY: compile debug test testinstalled bench bench-save bench-check bench-1m bench-wrk compare loadtest clean

compile:          ## build the Cython engine in place (release flags)
	$(PYTHON) setup.py build_ext --inplace

debug:            ## build with annotate/linetrace, -O0 -g
	KATO_DEBUG=1 $(PYTHON) setup.py build_ext --inplace --force

test:             ## install test dependencies and run the whole suite
	scripts/test.sh

testinstalled:    ## run the suite against the installed package
	cd /tmp && $(PYTHON) -m pytest $(CURDIR)/tests

BENCH = $(PYTHON) -m pytest bench -p no:cacheprovider --benchmark-storage=file://bench/baselines

bench:            ## every benchmark (1k-100k patterns, kernels, codec, HTTP); summary table at the end
	$(BENCH)

bench-save:       ## run the benchmarks and store them as the new baseline under bench/baselines
	$(BENCH) --benchmark-save=baseline

bench-check:      ## exit 1 when an in-process median regressed >25% against the latest baseline
	$(PYTHON) -m pytest bench/bench_engine.py bench/bench_matching.py bench/bench_codec.py -p no:cacheprovider \
	    --benchmark-storage=file://bench/baselines --benchmark-compare --benchmark-compare-fail=median:25%

bench-1m:         ## the 1M-pattern sizes too (a minute to build, ~1 GB)
	$(BENCH) --bench-1m -k "1000000"

bench-wrk:        ## mixed HTTP workload under wrk: kato serve --workers 2, then 1 (req/s, latency, CPU per request)
	$(PYTHON) -m bench.wrk_mixed --workers 2 && $(PYTHON) -m bench.wrk_mixed --workers 1

compare:          ## our server beside another: make compare URL=http://127.0.0.1:9000
	$(PYTHON) -m bench.compare --serve $(URL)

loadtest:         ## headless locust run against a loopback server (needs .[loadtest])
	loadtest/run.sh

clean:            ## remove generated C++, annotations and extension modules
	rm -rf build engine/*.cpp engine/*.c engine/*.html engine/*.so
