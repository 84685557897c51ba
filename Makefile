# Developer shortcuts. The canonical test command is scripts/test.sh (what CI runs).
PYTHON ?= python3

.PHONY: compile debug test testinstalled bench clean

compile:          ## build the Cython engine in place (release flags)
	$(PYTHON) setup.py build_ext --inplace

debug:            ## build with annotate/linetrace, -O0 -g
	KATO_DEBUG=1 $(PYTHON) setup.py build_ext --inplace --force

test:             ## install test dependencies and run the whole suite
	scripts/test.sh

testinstalled:    ## run the suite against the installed package
	cd /tmp && $(PYTHON) -m pytest $(CURDIR)/tests

bench:            ## engine + HTTP benchmarks, compared with the stored baselines
	$(PYTHON) -m pytest bench --benchmark-storage=file://bench/baselines

clean:            ## remove generated C++, annotations and extension modules
	rm -rf build engine/*.cpp engine/*.c engine/*.html engine/*.so
