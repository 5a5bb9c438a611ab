"""The scaling study: segmentation quality against the number of real scans, per synthetic source.

A grid of cells, (number of real tumor CTs) x (synthetic source) x (synthetic
ratio) x (seed). Each cell trains segmentation on the real subset plus its
synthetic source, predicts the fixed in-distribution (ID) and
out-of-distribution (OOD) test cohorts and evaluates them. A cell is its own
run folder; it counts as finished when ``cell.json`` exists, so a rerun skips
finished cells and a killed study resumes (training resumes from its last
checkpoint, prediction skips written cases). Cells can run as separate
processes (``tumorgen scaling run --cell ID``).

The phantom-world version of the paper's setting (Bassi et al., Table 5 /
Figure 8): tumor-annotated real cases come from site A only and are few;
healthy cases with organ masks come from several sites; synthetic tumors are
inserted into those healthy cases; the OOD test set is a site never seen with
tumors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from cohort.config import bounded, dump_config, load_config, save_config
from cohort.errors import BatchReport
from cohort.io import read_json, write_json

console = Console(stderr=True)
NONE = "none"


@dataclass
class PhantomCohort:
    """A phantom cohort the study generates itself (cohort.phantom)."""

    site: str = "A"
    n: int = 8
    tumor_fraction: float = 1.0
    seed: int = 0
    organs: list[str] = field(default_factory=lambda: ["liver", "pancreas", "kidney"])  # where tumors grow


@dataclass
class CohortSource:
    """A cohort given by ``path`` (any layout), or generated from ``phantom``."""

    path: str | None = None
    phantom: PhantomCohort | None = None


@dataclass
class FilterStep:
    """How a filtered source is made from another: score its cohort with a trained
    discriminator folder (``tumorgen filter train``), apply the config's policy, keep the
    accepted cases. ``segmentor``: a segmentation run folder for the FreeTumor gate."""

    model: str = ""
    config: str | None = None  # FilterConfig YAML (a path, or relative to configs/); None = the shipped filter.yaml
    config_set: list[str] = field(default_factory=list)
    segmentor: str | None = None
    #: train the discriminator in the study (``tumorgen filter train``'s API) instead of naming ``model``:
    #: real tumors = the study's real_train cohort; synthetic = a second cohort of the filtered source's maker
    #: drawn with ``train_seed`` (``train_per_case`` per healthy case), so no case it judges was seen in training
    train: bool = False
    train_seed: int = 1
    train_per_case: int = 1


@dataclass
class GeneratorStep:
    """A ControlNet latent diffusion generator for the study's diffusion sources: reuse ``model``
    (the controlnet stage's model folder), or train it here through :func:`generative.train.train_stage`,
    autoencoder -> diffusion UNet -> ControlNet, each stage resumed from its last checkpoint after a kill
    and skipped once its ``train_summary.json`` exists."""

    name: str = "generator"
    model: str | None = None  # an existing controlnet model folder: reused, nothing trained
    config: str = "generative/phantom.yaml"  # GenerativeConfig YAML (a path, or relative to configs/)
    config_set: list[str] = field(default_factory=list)  # --set overrides for every stage
    autoencoder_set: list[str] = field(default_factory=list)
    diffusion_set: list[str] = field(default_factory=list)
    controlnet_set: list[str] = field(default_factory=list)
    cohort: CohortSource | None = None  # training CTs; None = the study's real_train cohort


@dataclass
class SyntheticSource:
    """A synthetic source of the grid, exactly one of:

    - ``path``: an existing cohort or manifest;
    - ``method``: a registered synthesizer (:mod:`generative.registry`: "ca", "rules",
      "diffusion", ...) the study runs on the healthy cohorts itself, with ``params`` (its
      config; diffusion needs ``model: DIR``) and, for diffusion, optionally a ``sample_spec``
      YAML (several tumors per case) instead of one tumor in one of ``organs`` per case;
      ``onthefly: true`` synthesizes during training instead (no cohort is written);
      ``generator: NAME`` (method diffusion) takes ``params.model`` from the study's generator stage;
    - ``filtered_from``: the cases of another source (by name) that a ``filter`` accepts.
    """

    name: str = "ca"
    path: str | None = None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sample_spec: str | None = None
    onthefly: bool = False
    filtered_from: str | None = None
    filter: FilterStep | None = None
    generator: str | None = None  # a generators[].name: the diffusion model comes from that stage
    accepted_only: bool = False
    organs: list[str] = field(default_factory=lambda: ["liver"])
    per_case: int = 1
    seed: int = 0


@dataclass
class Grid:
    real_sizes: list[int] = field(default_factory=lambda: [2, 4, 8])
    sources: list[str] = field(default_factory=lambda: [NONE])
    ratios: list[float] = field(default_factory=lambda: [3.0])  # synthetic : real sampling weight
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class ReportConfig:
    """The report's statistics (:mod:`evaluation.scaling_report`): paired bootstrap over test cases
    and seeds, and the sources the lessons are judged on."""

    n_boot: int = bounded(2000, ge=100)
    seed: int = 0
    ci_level: float = bounded(0.95, gt=0, lt=1)
    primary: str | None = None  # lessons b-d; None = diffusion_filtered when in the grid, else the last source
    order: list[str] = field(default_factory=lambda: ["rules", "ca", "diffusion", "diffusion_filtered"])  # lesson e
    ratio: float | None = None  # the synthetic ratio the lessons use; None = the largest of grid.ratios
    publish: str | None = None  # copy the small results here after `scaling run` / `scaling report`


@dataclass
class ScalingConfig:
    name: str = "scaling"
    real_train: CohortSource = field(default_factory=lambda: CohortSource(phantom=PhantomCohort("A", 8, 1.0, 100)))
    healthy: list[CohortSource] = field(default_factory=list)
    test_id: CohortSource = field(default_factory=lambda: CohortSource(phantom=PhantomCohort("A", 6, 0.5, 900)))
    test_ood: CohortSource = field(default_factory=lambda: CohortSource(phantom=PhantomCohort("C", 6, 0.5, 950)))
    synthetic: list[SyntheticSource] = field(default_factory=list)
    grid: Grid = field(default_factory=Grid)
    phantom_spacing_mm: float = 1.5
    segmentation: str = "segmentation/demo.yaml"  # a path, or relative to the shipped configs/
    segmentation_set: list[str] = field(default_factory=list)  # --set overrides for every cell
    metrics: str | None = None
    metrics_set: list[str] = field(default_factory=list)
    tta: bool = False
    generators: list[GeneratorStep] = field(default_factory=list)
    report: ReportConfig = field(default_factory=lambda: ReportConfig())


@dataclass(frozen=True)
class Cell:
    n_real: int
    source: str
    ratio: float
    seed: int

    @property
    def id(self) -> str:
        return f"real{self.n_real:03d}_{self.source}_x{self.ratio:g}_seed{self.seed}"


def load_scaling_config(path: str | Path | None, overrides: list[str] | None = None) -> ScalingConfig:
    cfg = load_config(ScalingConfig, path, overrides or [])
    names = [s.name for s in cfg.synthetic]
    for s in cfg.grid.sources:
        if s != NONE and s not in names:
            raise ValueError(f"{path}: grid.sources names {s!r}, which is not among synthetic[].name {names}")
    check_sources(cfg, str(path))
    if any(n < 1 for n in cfg.grid.real_sizes):
        raise ValueError(f"{path}: grid.real_sizes must be >= 1")
    return cfg


def check_generators(cfg: ScalingConfig, where: str = "scaling config") -> None:
    """Generator names are unique; a reused ``model`` folder exists; a trained one has its YAML."""
    seen: set[str] = set()
    for g in cfg.generators:
        what = f"{where}: generator {g.name!r}"
        if g.name in seen:
            raise ValueError(f"{what}: the name is used twice")
        seen.add(g.name)
        if g.model:
            if not Path(g.model).is_dir():
                raise ValueError(f"{what}: model {g.model}: no such model folder")
        elif not _config_path(g.config).exists():
            raise ValueError(f"{what}: config {g.config}: no such file (a path, or relative to configs/)")


def check_sources(cfg: ScalingConfig, where: str = "scaling config") -> None:
    """Each synthetic source names exactly one of path / method / filtered_from, a known maker
    with valid params, and (filtered) an earlier source and a filter model."""
    from generative.registry import get_entry, make_config

    check_generators(cfg, where)
    seen: list[str] = []
    for s in cfg.synthetic:
        what = f"{where}: synthetic source {s.name!r}"
        given = [k for k in ("path", "method", "filtered_from") if getattr(s, k) is not None]
        if len(given) != 1:
            raise ValueError(f"{what} needs exactly one of path, method or filtered_from (got {given or 'none'})")
        if s.name in seen or s.name == NONE:
            raise ValueError(f"{what}: the name is used twice (or is {NONE!r})")
        if s.generator is not None:
            if s.method != "diffusion":
                raise ValueError(f"{what}: generator is for method 'diffusion' only (got method {s.method!r})")
            if s.generator not in {g.name for g in cfg.generators}:
                raise ValueError(f"{what}: generator {s.generator!r} is not among generators[].name "
                                 f"{[g.name for g in cfg.generators]}")
            if s.params.get("model"):
                raise ValueError(f"{what}: give params.model or generator, not both")
        if s.method is not None:
            e = get_entry(s.method)
            mcfg = make_config(s.method, s.params, f"{what}: params")
            if e.needs_model and not getattr(mcfg, "model", "") and s.generator is None:
                raise ValueError(f"{what}: method {s.method!r} needs params.model (a trained model folder) "
                                 "or generator (a generators[].name)")
            if s.sample_spec is not None and s.method != "diffusion":
                raise ValueError(f"{what}: sample_spec is for method 'diffusion' only")
        elif s.onthefly:
            raise ValueError(f"{what}: onthefly needs a method")
        if s.filtered_from is not None:
            if s.filtered_from not in seen:
                raise ValueError(f"{what}: filtered_from {s.filtered_from!r} must name a source listed before it")
            if s.filter is None or not (s.filter.model or s.filter.train):
                raise ValueError(f"{what}: filtered_from needs filter.model (a discriminator folder) "
                                 "or filter.train: true")
            if s.filter.model and s.filter.train:
                raise ValueError(f"{what}: give filter.model or filter.train, not both")
            base = next(b for b in cfg.synthetic if b.name == s.filtered_from)
            if base.onthefly:
                raise ValueError(f"{what}: cannot filter the on-the-fly source {base.name!r}")
            if s.filter.train and base.method is None:
                raise ValueError(f"{what}: filter.train needs {base.name!r} made by a method (its maker draws "
                                 "the discriminator's synthetic training cases)")
        seen.append(s.name)


def cells(cfg: ScalingConfig) -> list[Cell]:
    """Every cell of the grid; a source of "none" has one cell per size and seed (ratio 0)."""
    out = []
    for seed in cfg.grid.seeds:
        for n in sorted(cfg.grid.real_sizes):
            for src in cfg.grid.sources:
                ratios = [0.0] if src == NONE else cfg.grid.ratios
                out += [Cell(n, src, float(r), seed) for r in ratios]
    return out


def _config_path(p: str) -> Path:
    from cohort.config import config_dir

    path = Path(p)
    return path if path.exists() else config_dir() / p


# ----------------------------------------------------------------------------- data


def _materialise(src: CohortSource, out: Path, spacing: float, what: str) -> Path:
    """The cohort's folder, generating phantoms into ``out`` when asked (resumable)."""
    if src.path is not None:
        return Path(src.path)
    if src.phantom is None:
        raise ValueError(f"{what}: give a path or a phantom spec")
    from cohort.phantom import generate_cohort

    p = src.phantom
    report = generate_cohort(out, site=p.site, n=p.n, tumor_fraction=p.tumor_fraction, seed=p.seed,
                             spacing=spacing, organs=tuple(p.organs), progress=False)
    if not report.ok:
        raise RuntimeError(f"{what}: phantom generation failed:\n{report.summary()}")
    return out


@dataclass
class StudyData:
    real_train: Path
    healthy: list[Path]
    test_id: Path
    test_ood: Path
    synthetic: dict[str, Path]
    accepted_only: dict[str, bool]
    onthefly: dict[str, SyntheticSource] = field(default_factory=dict)


@contextmanager
def folder_lock(path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on ``path`` (created if missing) between processes: yields True when held.
    ``wait``: block until the holder lets go; else yield False at once when another process holds it.
    The kernel drops the lock when its process dies, so a killed run never leaves a cell locked. Where
    ``fcntl`` does not exist (Windows) there is no lock: run one process per study folder there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX everywhere this is tested
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stage(out: Path, name: str, fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` once: ``<out>/stages/<name>.json`` (written atomically after ``fn`` returned) marks the
    stage finished, so a rerun skips it; a killed stage has no marker and reruns (each stage's own work
    resumes: cohort loops skip written cases, training continues from its last checkpoint). A second
    process running the same study waits for the stage instead of making it twice (``<name>.lock``)."""
    marker = out / "stages" / f"{name}.json"
    if marker.exists():
        return read_json(marker)
    with folder_lock(out / "stages" / f"{name}.lock", wait=True):
        if marker.exists():  # made by the process this one waited for
            return read_json(marker)
        _fresh_accelerate()
        t0 = time.perf_counter()
        result = fn()
        info = {"stage": name, "seconds": round(time.perf_counter() - t0, 1),
                **({"path": str(result)} if isinstance(result, (str, Path)) else {})}
        write_json(marker, info)
    return info


def _fresh_accelerate() -> None:
    """Stages share one process with different precisions (generator, filter, segmentation);
    accelerate keeps one global state per process, so clear it before each stage."""
    try:
        from accelerate.state import AcceleratorState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return
    AcceleratorState._reset_state(reset_partial_state=True)


def _cohort(src: CohortSource, out: Path, spacing: float, what: str, study: Path) -> Path:
    """A study cohort, phantoms generated once (stage ``data_<name>``)."""
    if src.path is not None:
        return Path(src.path)
    stage(study, f"data_{out.name}", lambda: _materialise(src, out, spacing, what))
    return out


def train_generator(g: GeneratorStep, cohort: Path, gdir: Path, show: bool = True) -> Path:
    """The controlnet model folder of ``g``: reused, or trained stage by stage into ``gdir``
    (autoencoder -> diffusion -> controlnet, each resumable; a stage whose ``train_summary.json``
    exists is finished and skipped)."""
    if g.model:
        return Path(g.model)
    from generative.train import train_stage

    base = [f"data.cohort={cohort}", f"output_dir={gdir}", *g.config_set]
    prev: Path | None = None
    for name, extra in (("autoencoder", g.autoencoder_set), ("diffusion", g.diffusion_set),
                        ("controlnet", g.controlnet_set)):
        sdir = gdir / name
        if not (sdir / "train_summary.json").exists() or not (sdir / "model").is_dir():
            _fresh_accelerate()
            init = [f"init_from={prev}"] if prev is not None else []
            train_stage(name, _config_path(g.config), sdir, resume=True, overrides=base + init + list(extra),
                        progress=show)
        prev = sdir / "model"
    assert prev is not None
    return prev


def train_filter(s: SyntheticSource, base: SyntheticSource, healthy: list[Path], real: Path, out: Path) -> Path:
    """The discriminator of the filtered source ``s`` (``filter.train``): real tumors of ``real`` against a
    second cohort of ``base``'s maker drawn with ``filter.train_seed``. Trained into a temporary folder and
    renamed into place, so ``<out>/filters/<name>/discriminator`` exists only when complete."""
    import os

    from cohort.config import load_config
    from cohort.io import clean_stale_temps, make_temp_dir
    from generative.quality import train_discriminator
    from generative.quality.config import FilterConfig

    f = s.filter
    assert f is not None
    fdir = out / "filters" / s.name
    disc = fdir / "discriminator"
    if disc.is_dir():
        return disc
    syn = out / "data" / f"filter_train_{s.name}"
    stage(out, f"synthetic_{syn.name}", lambda: make_synthetic_cohort(
        replace(base, name=syn.name, seed=f.train_seed, per_case=f.train_per_case), healthy, syn))
    fcfg = load_config(FilterConfig, _config_path(f.config) if f.config else _config_path("generative/filter.yaml"),
                       list(f.config_set))
    fdir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(fdir)  # a training killed before its rename
    tmp = make_temp_dir(fdir, "discriminator")
    _fresh_accelerate()
    train_discriminator([real], [syn], fcfg, tmp)
    os.replace(tmp, disc)
    return disc


def prepare_data(cfg: ScalingConfig, out: Path, show: bool = False) -> StudyData:
    """Every cohort the cells share, each made once and resumable: phantoms, generators, the
    synthetic cohorts (rules, CA, diffusion from a generator), trained filters and filtered manifests."""
    d = out / "data"
    sp = cfg.phantom_spacing_mm
    check_sources(cfg)
    real = _cohort(cfg.real_train, d / "real_train", sp, "real_train", out)
    healthy = [_cohort(h, d / f"healthy_{i}", sp, f"healthy[{i}]", out) for i, h in enumerate(cfg.healthy)]
    tid = _cohort(cfg.test_id, d / "test_id", sp, "test_id", out)
    tood = _cohort(cfg.test_ood, d / "test_ood", sp, "test_ood", out)
    models: dict[str, Path] = {}
    used = {s.generator for s in cfg.synthetic if s.generator is not None}
    for g in cfg.generators:
        if g.name not in used:
            continue
        gdata = real if g.cohort is None else _cohort(g.cohort, d / f"generator_{g.name}", sp,
                                                      f"generator {g.name!r}: cohort", out)
        gdir = out / "generators" / g.name
        info = stage(out, f"generator_{g.name}", lambda g=g, gdata=gdata, gdir=gdir: train_generator(g, gdata, gdir, show))
        models[g.name] = Path(info["path"])
    synthetic: dict[str, Path] = {}
    accepted: dict[str, bool] = {}
    onthefly: dict[str, SyntheticSource] = {}
    resolved: dict[str, SyntheticSource] = {}
    for s in cfg.synthetic:
        if s.generator is not None:
            s = replace(s, params={**s.params, "model": str(models[s.generator])})
        resolved[s.name] = s
        accepted[s.name] = s.accepted_only
        if s.path is not None:
            synthetic[s.name] = Path(s.path)
        elif s.filtered_from is not None:
            assert s.filter is not None
            f = s.filter
            if f.train:
                disc = train_filter(s, resolved[s.filtered_from], healthy, real, out)
                s = replace(s, filter=replace(f, model=str(disc), train=False))
            target = d / f"filtered_{s.name}"
            stage(out, f"filtered_{s.name}", lambda s=s, target=target: make_filtered_source(
                s, synthetic[s.filtered_from], target))
            synthetic[s.name] = target / "manifest.jsonl"
            accepted[s.name] = True
        else:
            if not healthy:
                raise ValueError(f"synthetic source {s.name!r} ({s.method}) needs healthy cohorts to insert tumors into")
            if s.onthefly:
                onthefly[s.name] = s
                continue
            target = d / f"synthetic_{s.name}"
            stage(out, f"synthetic_{s.name}", lambda s=s, target=target: make_synthetic_cohort(s, healthy, target))
            synthetic[s.name] = target
    return StudyData(real, healthy, tid, tood, synthetic, accepted, onthefly)


def make_synthetic_cohort(s: SyntheticSource, healthy: list[Path], target: Path) -> Path:
    """Tumors of the registered maker ``s.method`` inserted into every healthy case, through
    the one cohort loop (resumable: finished cases are skipped)."""
    from cohort.config import load_config
    from generative.registry import build_synthesizer
    from generative.tumors import synthesize_cohort
    from generative.tumors.base import TumorSpec

    params = dict(s.params)
    plan: Any = [TumorSpec(organ=o) for o in s.organs]
    n_per_case = s.per_case
    if s.sample_spec is not None:
        import dataclasses

        from generative.diffusion.config import SampleSpec
        from generative.diffusion.sample import sample_plan

        spec = load_config(SampleSpec, _config_path(s.sample_spec))
        plan, n_per_case = sample_plan(spec), spec.cases_per_source
        params = {**dataclasses.asdict(spec.inpaint), **params}  # the spec's sampler settings; params win
    synth = build_synthesizer(s.method, params, f"synthetic source {s.name!r}: params")
    report = BatchReport()
    for h in healthy:
        report.merge(synthesize_cohort(h, target, synth, plan, seed=s.seed, n_per_case=n_per_case, progress=False))
    if not report.done and not report.skipped:
        raise RuntimeError(f"synthetic source {s.name!r}: no case could be synthesized:\n{report.summary()}")
    return target


def make_filtered_source(s: SyntheticSource, cohort: Path, target: Path) -> Path:
    """Score ``cohort`` with ``s.filter.model``, apply the filter policy; returns the filtered
    manifest (accepted and rejected cases, read with ``accepted_only``). Resumable: a finished
    manifest is kept."""
    from cohort.config import load_config
    from generative.quality import apply_filter, score_cohort
    from generative.quality.config import FilterConfig

    f = s.filter
    assert f is not None
    manifest = target / "manifest.jsonl"
    if manifest.exists():
        return manifest
    fcfg = load_config(FilterConfig, _config_path(f.config) if f.config else _config_path("generative/filter.yaml"),
                       list(f.config_set))
    segmentor = None
    if f.segmentor:
        from segmentation.predict import build_segmentor

        segmentor = build_segmentor(Path(f.segmentor))
    target.mkdir(parents=True, exist_ok=True)
    scores = score_cohort(f.model, cohort, fcfg, segmentor=segmentor, out_path=target / "scores.jsonl")
    apply_filter(scores, f.model, target, fcfg)
    return manifest


# ----------------------------------------------------------------------------- cells


def cell_config(cfg: ScalingConfig, cell: Cell, data: StudyData):
    """The segmentation config of one cell: the shared base plus this cell's sources and seed."""
    from segmentation.config import SourceConfig, load_seg_config, validate

    seg = load_seg_config(_config_path(cfg.segmentation), list(cfg.segmentation_set))
    sources = [SourceConfig(name="real", path=str(data.real_train), kind="real", weight=1.0, max_cases=cell.n_real)]
    otf = data.onthefly.get(cell.source)
    if cell.source != NONE and otf is None:
        sources.append(SourceConfig(name=cell.source, path=str(data.synthetic[cell.source]), kind="synthetic",
                                    weight=float(cell.ratio), accepted_only=data.accepted_only.get(cell.source, False)))
    if otf is not None:
        # on-the-fly: the healthy cohorts are a source whose draws get a tumor from the maker
        sources = sources + [
            SourceConfig(name=f"{cell.source}_healthy{i}", path=str(h), kind="real",
                         weight=float(cell.ratio) / len(data.healthy))
            for i, h in enumerate(data.healthy)]
        seg.onthefly.method = otf.method
        seg.onthefly.prob = 1.0
        seg.onthefly.organs = list(otf.organs)
        seg.onthefly.params = dict(otf.params)
        seg.onthefly.sources = [s.name for s in sources[1:]]
    seg.sources = sources
    # validation: held out from the real subset would shrink tiny subsets; use the ID test's
    # first cases only for monitoring (never for model selection), so every cell trains on n_real.
    seg.val_sources = [SourceConfig(name="val", path=str(data.test_id), kind="real", max_cases=2)]
    seg.data.seed = cell.seed
    seg.train.seed = cell.seed
    return validate(seg, f"cell {cell.id}")


def run_cell(cfg: ScalingConfig, cell: Cell, data: StudyData, out: Path, show: bool = True) -> dict[str, Any]:
    """Train, predict ID and OOD, evaluate; write ``cell.json`` last. Resumable."""
    from evaluation.evaluate import evaluate_cohort, load_metrics_config
    from segmentation.health import FIT_NAME
    from segmentation.predict import predict_cohort
    from segmentation.train import train_segmentation

    cdir = out / "cells" / cell.id
    done = cdir / "cell.json"
    if done.exists():
        return read_json(done)
    cdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seg_cfg = cell_config(cfg, cell, data)
    synth = spec_for = None
    if seg_cfg.onthefly.method is not None:
        from generative.registry import resolve_onthefly

        synth, spec_for = resolve_onthefly(seg_cfg.onthefly.method, dict(seg_cfg.onthefly.params))
    model = train_segmentation(seg_cfg, cdir / "seg", resume=True, show=show, synthesizer=synth, spec_for=spec_for)
    t_train = time.perf_counter() - t0
    mcfg = load_metrics_config(_config_path(cfg.metrics) if cfg.metrics else None, list(cfg.metrics_set))
    result: dict[str, Any] = {"cell": cell.id, "n_real": cell.n_real, "source": cell.source, "ratio": cell.ratio,
                              "seed": cell.seed, "train_seconds": round(t_train, 1)}
    counts = cdir / "seg" / "source_counts.json"
    if counts.exists():
        result["source_counts"] = read_json(counts)
    fit = cdir / "seg" / FIT_NAME  # does the model segment its own training tumors (segmentation.health)
    if fit.exists():
        result["train_fit"] = read_json(fit)
    for split, gt in (("id", data.test_id), ("ood", data.test_ood)):
        pred_dir = cdir / f"pred_{split}"
        rep = predict_cohort(model, gt, pred_dir, tta=cfg.tta, save_prob=True, overwrite=False, show=show)
        if not rep.ok:
            raise RuntimeError(f"cell {cell.id}: prediction failed on {split}:\n{rep.summary()}")
        summary, erep = evaluate_cohort(pred_dir, gt, cdir / f"eval_{split}", mcfg)
        if not erep.ok:
            raise RuntimeError(f"cell {cell.id}: evaluation failed on {split}:\n{erep.summary()}")
        result[split] = headline(read_json(cdir / f"eval_{split}" / "summary.json"))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(done, result)
    return result


#: the resolved config of a study folder: the whole record of what its cells and cohorts were made with
RECORD = "scaling.yaml"

#: config sections a finished study may change (they add cells or redo the report, never change a made one)
MAY_CHANGE = ("name", "grid", "report")


def check_record(cfg: ScalingConfig, out: Path) -> None:
    """Refuse to run ``cfg`` in a study folder whose recorded config differs in anything the finished
    stages and cells depend on (everything but ``grid`` and ``report``): its cohorts, models and cells
    would be silently reused for a different study."""
    import yaml

    path = out / RECORD
    if not path.exists():
        return
    old = yaml.safe_load(path.read_text()) or {}
    new = yaml.safe_load(dump_config(cfg)) or {}
    differ = sorted(k for k in set(old) | set(new) if k not in MAY_CHANGE and old.get(k) != new.get(k))
    if differ:
        raise ValueError(f"{path}: this study folder was made with another config (it differs in {differ}); "
                         "use a new --out, or delete the folder to start over")


def run_study(cfg: ScalingConfig, out: str | Path, only: list[str] | None = None, show: bool = True) -> BatchReport:
    """Run every (or the named) unfinished cell. Failed cells are reported; the rest go on."""
    from rich.progress import Progress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_record(cfg, out)
    save_config(cfg, out / RECORD)
    data = prepare_data(cfg, out, show=show)
    todo = [c for c in cells(cfg) if only is None or c.id in only]
    if only:
        unknown = set(only) - {c.id for c in todo}
        if unknown:
            raise ValueError(f"unknown cell id(s) {sorted(unknown)}; `tumorgen scaling run --list` lists them")
    report = BatchReport()
    busy: list[str] = []
    with Progress(disable=not show) as prog:
        task = prog.add_task("scaling cells", total=len(todo))
        for c in todo:
            if (out / "cells" / c.id / "cell.json").exists():
                report.skipped.append(c.id)
                prog.advance(task)
                continue
            # several processes may run one study folder (one core each): each takes the cells no other holds
            with folder_lock(out / "cells" / f"{c.id}.lock", wait=False) as mine:
                if not mine:
                    busy.append(c.id)
                elif (out / "cells" / c.id / "cell.json").exists():  # finished while this one waited its turn
                    report.skipped.append(c.id)
                else:
                    prog.update(task, description=f"cell {c.id}")
                    try:
                        run_cell(cfg, c, data, out, show=show)
                        report.done.append(c.id)
                    except Exception as e:  # one broken cell must not stop the grid
                        report.fail(c.id, f"{type(e).__name__}: {e}")
            prog.advance(task)
    if busy:
        report.skipped.extend(busy)
        console.print(f"{len(busy)} cell(s) running in another process, left to it: {', '.join(busy)}",
                      highlight=False)
    return report


# ----------------------------------------------------------------------------- numbers

#: The headline metrics of Table 5, as (key in a cell's result, label for reports); every
#: sensitivity comes with the false positives beside it (FP/case and lesion precision,
#: see :mod:`evaluation.metrics`)
HEADLINE = (
    ("dsc", "DSC"),
    ("nsd", "NSD"),
    ("patient_sensitivity", "patient sens."),
    ("patient_sensitivity_localised", "patient sens. (localised)"),
    ("patient_specificity", "patient spec."),
    ("tumor_sensitivity", "tumor sens."),
    ("early_tumor_sensitivity", "early tumor sens."),
    ("fp_per_case", "FP/case"),
    ("lesion_precision", "lesion prec."),
)

#: headline key -> its name in an evaluation summary.json, where they differ
SUMMARY_KEYS = {"fp_per_case": "false_positive_components_per_case"}


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Pick the pooled (all lesion types) headline numbers out of an evaluation summary.json.

    Also keeps the evaluation's ``warnings``, its ``overlap_rule`` and the warning limits
    (``warn_fp_per_case``, ``warn_lesion_precision``) the report flags the cell's numbers with.
    """
    from evaluation.metrics import MetricsConfig

    overall = summary.get("overall", summary) or {}
    out: dict[str, Any] = {}
    for key, _ in HEADLINE:
        v = overall.get(SUMMARY_KEYS.get(key, key), overall.get(key))
        if isinstance(v, dict):
            out[key] = v.get("value")
            out[key + "_ci"] = [v.get("ci_low"), v.get("ci_high")]
            out[key + "_n"] = v.get("n")
        else:
            out[key] = v
    config = summary.get("config") or {}
    default = MetricsConfig()
    out["overlap_rule"] = config.get("overlap_rule", default.overlap_rule)
    out["warn_fp_per_case"] = config.get("warn_fp_per_case", default.warn_fp_per_case)
    out["warn_lesion_precision"] = config.get("warn_lesion_precision", default.warn_lesion_precision)
    out["warnings"] = list(summary.get("warnings", []))
    return out
