# `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,deploy]'
	touch $(STAMP)

demo: $(STAMP) bible-deps
	$(BIN)/plmkit demo

# The documentation that `plmkit data build --name en-docs` reads (plmkit/data/en_docs.py SOURCES).
EN_DOCS_PACKAGES := python3-doc linux-doc postgresql-doc default-jdk-doc perl-doc erlang-doc \
  lilypond-doc-html qtbase5-doc-html qtdeclarative5-doc-html qtmultimedia5-doc-html \
  qtquickcontrols2-5-doc-html qtquickcontrols5-doc-html qtwebengine5-doc-html qttools5-doc-html \
  qtlocation5-doc-html qtconnectivity5-doc-html qt3d5-doc-html qtcharts5-doc-html \
  qtdatavisualization5-doc-html qtxmlpatterns5-doc-html qtscript5-doc-html qtsensors5-doc-html \
  qtvirtualkeyboard5-doc-html qtscxml5-doc-html qtwayland5-doc-html qtremoteobjects5-doc-html \
  qtwebsockets5-doc-html qtnetworkauth5-doc-html qtserialport5-doc-html qtwebchannel5-doc-html \
  qtgamepad5-doc-html qtspeech5-doc-html rust-doc python-django-doc python-sqlalchemy-doc \
  python-scipy-doc python-sympy-doc sphinx-doc sqlite3-doc apache2-doc octave-doc maxima-doc \
  r-doc-html cmake-doc git-doc nodejs-doc bash-doc debian-handbook ghc-doc python-sklearn-doc \
  python-pandas-doc python-statsmodels-doc python-astropy-doc libglib2.0-doc libgtk-3-doc \
  libgtk-4-doc libreoffice-help-en-us gimp-help-en wireshark-doc libvirt-doc exim4-doc-html \
  bind9-doc postfix-doc libboost1.74-doc racket-doc fp-docs-3.2.2 swi-prolog-doc grass-doc \
  postgis-doc docutils-doc debian-reference-en debian-policy developers-reference debian-faq \
  vim-runtime
# Debian packages for the Bible datasets (diatheke reads the public-domain WEB, KJV and
# Reina-Valera texts), tcmalloc, which the plmkit command preloads (plmkit/training/allocator.py), and
# the documentation of the en-docs corpus.
# `make demo` installs the first two too: the README's tour builds the Bible datasets.
.PHONY: bible-deps
system-deps: bible-deps
bible-deps:
	@command -v diatheke >/dev/null && test -d /usr/share/sword/modules/texts/ztext/engKJV2006eb \
	  && test -d /usr/share/sword/modules/texts/ztext/engWEB2015eb \
	  && test -d /usr/share/sword/modules/texts/ztext/spaRV1909eb \
	  && ldconfig -p | grep -q libtcmalloc_minimal.so.4 || { apt-get update -qq \
	  && apt-get install -y -qq diatheke sword-text-web sword-text-kjv sword-text-sparv \
	  libtcmalloc-minimal4; }
system-deps:
	@dpkg-query -W $(EN_DOCS_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq \
	  && apt-get install -y -qq --no-install-recommends $(EN_DOCS_PACKAGES); }
# Chromium, the headless browser that checks the `plmkit serve` page (tests/test_serve.py).
.PHONY: browser-deps
system-deps: browser-deps
browser-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# `make test` leaves out the tests marked slow (minutes each); `make test-all` runs them too.
test: $(STAMP) system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -m "not slow"

test-all: $(STAMP) system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/plmkit bench --modes train,train-defaults,infer --json benchmarks/suite.json --markdown BENCHMARKS.md

clean:
	rm -rf $(VENV) build *.egg-info
