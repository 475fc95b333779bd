"""All-or-nothing results (``stforecast.publish``) and readers that validate before they act.

Fast lane: every reading command (``report``, ``query``, ``scenarios``, ``sensitivity``,
``score`` and the Python API ``stforecast.load``) on every kind of damaged results folder exits 2
with exactly one line and no traceback, and leaves every file byte for byte as it was (a good
``report.html`` in the folder included); the lock, the swap (with and without an atomic exchange),
the clean-up of leftovers and the refusal to replace a folder that is not results.

Slow lane (real runs in subprocesses, tiny settings, the fit from the session's fit cache): a run
killed with SIGKILL at each stage leaves the previous results byte-identical and the next run
leaves no staging folder; a second run into a folder that is being written is refused; a
``--no-report`` run leaves no report of an earlier run; ``report`` replaces the charts as a
whole. The runs pause at a stage through ``stforecast.run``'s test hook
(``STFORECAST_TEST_PAUSE_AT``), so no kill depends on timing.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import stforecast
from stforecast import publish
from stforecast.company import load_company
from stforecast.errors import ResultsError
from stforecast.results import (Provenance, Summary, load_results, write_results,
                                write_root_attrs)

ROOT = Path(__file__).resolve().parents[1]
#: A real summary.json with chart data (what ``report`` needs): the committed default run's.
SUMMARY = ROOT / "results" / "sensetime" / "summary.json"
YEARS = ["FY21", "FY22", "FY23"]
GOOD_REPORT = b"<html>the good report of an earlier run</html>\n"


# --------------------------------------------------------------------------- a results folder
def _predictive(seed=0, chain=2, draw=10, path=5):
    rng = np.random.default_rng(seed)
    scenarios = ["base", "risk-weighted"]
    lead = (len(scenarios), chain, draw, path)
    dims = ("scenario", "chain", "draw", "path")
    revenue = rng.normal([4700.0, 5900.0, 7200.0], [300.0, 900.0, 1600.0], lead + (3,))
    margin = rng.normal(0.7, 0.05, lead + (3,))
    return xr.Dataset(
        {"revenue": (dims + ("year",), revenue),
         "cash": (dims + ("year",), rng.normal(4000.0, 1200.0, lead + (3,))),
         "gross_margin": (dims + ("year",), margin),
         "target_price": (dims, rng.lognormal(1.8, 0.3, lead)),
         "cash_burn": (dims, rng.normal(2500.0, 400.0, lead))},
        coords={"year": YEARS, "scenario": scenarios})


def _write_folder(folder: Path, summary_path: Path = SUMMARY, groups=None, attrs=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    summary = Summary.from_json(summary_path.read_text(), summary_path)
    provenance = Provenance.for_run(load_company("sensetime"), summary.seed, summary.settings)
    groups = {"posterior_predictive": _predictive()} if groups is None else groups
    write_results(folder, summary, groups, provenance)
    if attrs is not None:  # root attributes replaced
        import h5py
        with h5py.File(folder / "forecast.nc", "a") as f:
            for k in list(f.attrs):
                del f.attrs[k]
            for k, v in attrs.items():
                f.attrs[k] = v
    (folder / "report.html").write_bytes(GOOD_REPORT)
    (folder / "fan_revenue.png").write_bytes(b"\x89PNG good chart")
    return folder


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("good") / "res")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def snapshot(root: Path) -> dict:
    """Every entry below ``root``: bytes of regular files (size, mtime and inode above 64 MB),
    the kind of anything else."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            mode = p.lstat().st_mode
            st = p.lstat()
            if not stat.S_ISREG(mode):
                value = stat.S_IFMT(mode)
            elif st.st_size > 64 << 20:
                value = (st.st_size, st.st_mtime_ns, st.st_ino)
            else:
                value = p.read_bytes()
            out[str(p.relative_to(root))] = value
    return out


# --------------------------------------------------------------------------- damage
def _rewrite_json(folder, change):
    d = json.loads((folder / "summary.json").read_text())
    change(d)
    (folder / "summary.json").write_text(json.dumps(d))


def _other_run_attrs(folder):
    import h5py
    with h5py.File(folder / "forecast.nc", "a") as f:
        f.attrs["seed"] = int(np.asarray(f.attrs["seed"]).reshape(-1)[0]) + 1


def _altered_input(folder):
    import h5py
    with h5py.File(folder / "forecast.nc", "a") as f:
        f.attrs["priors_text"] = str(f.attrs["priors_text"]) + "\n# edited\n"


def _only_group(name, ds=None):
    def damage(folder):
        (folder / "forecast.nc").unlink()
        summary = Summary.from_json((folder / "summary.json").read_text())
        provenance = Provenance.for_run(load_company("sensetime"), summary.seed,
                                        summary.settings)
        data = ds if ds is not None else xr.Dataset({"x": ("d", np.arange(3.0))})
        data.to_netcdf(folder / "forecast.nc", group=name, engine="h5netcdf")
        write_root_attrs(folder / "forecast.nc", provenance.to_attrs())
    return damage


def _no_root_attrs(folder):
    (folder / "forecast.nc").unlink()
    _predictive().to_netcdf(folder / "forecast.nc", group="posterior_predictive",
                            engine="h5netcdf")


def _replace_with_dir(name):
    def damage(folder):
        (folder / name).unlink()
        (folder / name).mkdir()
    return damage


def _fifo(name):
    def damage(folder):
        (folder / name).unlink()
        os.mkfifo(folder / name)
    return damage


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _killed_mid_swap(folder):
    """What a writer killed between its two renames leaves: no folder, its set-aside copy."""
    folder.rename(folder.parent / f".{folder.name}.old-{_dead_pid()}-0a1b2c3d")


DAMAGE = {
    "forecast-half": lambda f: (f / "forecast.nc").write_bytes(
        (f / "forecast.nc").read_bytes()[: (f / "forecast.nc").stat().st_size // 2]),
    "forecast-empty": lambda f: (f / "forecast.nc").write_bytes(b""),
    "forecast-text": lambda f: (f / "forecast.nc").write_text("not a draws file\n"),
    "forecast-json": lambda f: (f / "forecast.nc").write_bytes((f / "summary.json").read_bytes()),
    "forecast-missing": lambda f: (f / "forecast.nc").unlink(),
    "forecast-folder": _replace_with_dir("forecast.nc"),
    "forecast-fifo": _fifo("forecast.nc"),
    "group-missing": _only_group("posterior"),
    "group-empty": _only_group("posterior_predictive", xr.Dataset()),
    "root-attrs-missing": _no_root_attrs,
    "draws-of-another-run": _other_run_attrs,
    "stored-input-altered": _altered_input,
    "summary-empty": lambda f: (f / "summary.json").write_text(""),
    "summary-not-json": lambda f: (f / "summary.json").write_text("{not json"),
    "summary-binary": lambda f: (f / "summary.json").write_bytes(b"\xff\xfe\x00\x81garbage"),
    "summary-list": lambda f: (f / "summary.json").write_text("[]"),
    "summary-old-schema": lambda f: _rewrite_json(f, lambda d: d.update(schema_version=1)),
    "summary-key-missing": lambda f: _rewrite_json(f, lambda d: d.pop("seed")),
    "summary-key-mistyped": lambda f: _rewrite_json(f, lambda d: d.update(seed="five")),
    "summary-headline-mismatch": lambda f: _rewrite_json(
        f, lambda d: d["target_price"].update(q50=d["target_price"]["q50"] + 1)),
    "summary-missing": lambda f: (f / "summary.json").unlink(),
    "summary-folder": _replace_with_dir("summary.json"),
    "summary-fifo": _fifo("summary.json"),
    "summary-huge": lambda f: os.truncate(f / "summary.json", 17 << 20),
    "folder-killed-mid-swap": _killed_mid_swap,
}

READERS = ("report", "query", "scenarios", "sensitivity", "score", "api-load")


def _read(reader: str, folder: Path, tmp_path: Path, capsys) -> tuple[int, str, str]:
    from stforecast.cli import main

    if reader == "api-load":
        try:
            stforecast.load(folder)
        except ResultsError as exc:
            return 2, "", f"error: {exc}\n"
        return 0, "", ""
    args = {"report": ["report"], "query": ["query", "P(target_price > 6.73)"],
            "scenarios": ["scenarios"], "sensitivity": ["sensitivity", "revenue[FY23]"],
            "score": ["score", str(tmp_path / "actuals.toml")]}[reader]
    code = main(args + ["--results", str(folder)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_results_refused_in_one_line_untouched(reader, damage, good, tmp_path, capsys):
    folder = _copy(good, tmp_path / "res")
    DAMAGE[damage](folder)
    (tmp_path / "actuals.toml").write_text("[revenue]\nFY21 = 4700\n")
    before = snapshot(tmp_path)
    code, out, err = _read(reader, folder, tmp_path, capsys)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert out == ""
    assert snapshot(tmp_path) == before  # nothing written, no lock file, no staging folder


@pytest.mark.parametrize("reader", READERS[1:])  # report's success path: the slow lane
def test_good_results_are_read(reader, good, tmp_path, capsys):
    """The damaged cases fail because of the damage: the same folder undamaged is read."""
    (tmp_path / "actuals.toml").write_text("[revenue]\nFY21 = 4700\n")
    code, out, err = _read(reader, good, tmp_path, capsys)
    assert code == 0, err


def _damage_chunks(folder: Path) -> None:
    """Overwrite the middle of the first compressed chunk of every predictive variable."""
    import h5py
    spots = []
    with h5py.File(folder / "forecast.nc", "r") as f:
        for name, ds in f["posterior_predictive"].items():
            if ds.chunks and ds.attrs.get("CLASS") != b"DIMENSION_SCALE":
                info = ds.id.get_chunk_info(0)
                spots.append((info.byte_offset + info.size // 3, max(8, info.size // 3)))
    assert spots
    with open(folder / "forecast.nc", "r+b") as fh:
        for offset, size in spots:
            fh.seek(offset)
            fh.write(b"\xa5" * size)


@pytest.mark.parametrize("reader", ["query", "sensitivity", "score"])
def test_damaged_draws_refused_by_their_readers(reader, tmp_path, capsys):
    """A byte-level damage inside the compressed draws (the file opens, the structure is
    intact) is found when the draws are read: one line, exit 2."""
    ds = _predictive()
    for v in ds.data_vars:
        ds[v].encoding = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    folder = _write_folder(tmp_path / "res", groups={"posterior_predictive": ds})
    (tmp_path / "actuals.toml").write_text("[revenue]\nFY21 = 4700\n")
    assert _read(reader, folder, tmp_path, capsys)[0] == 0
    _damage_chunks(folder)
    before = snapshot(tmp_path)
    code, out, err = _read(reader, folder, tmp_path, capsys)
    assert code == 2 and out == "", (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(folder) in err and "cannot read" in err, err
    assert snapshot(tmp_path) == before


def test_reader_names_the_killed_swap(good, tmp_path):
    folder = _copy(good, tmp_path / "res")
    _killed_mid_swap(folder)
    with pytest.raises(ResultsError, match=r"killed while replacing it; the previous results "
                                           r"are in \.res\.old-\d+-0a1b2c3d"):
        load_results(folder)


def test_missing_group_named(good, tmp_path):
    folder = _copy(good, tmp_path / "res")
    _only_group("posterior")(folder)
    with pytest.raises(ResultsError) as err:
        load_results(folder)
    assert str(err.value) == (f"{folder / 'forecast.nc'}: key 'posterior_predictive': expected "
                              f"the group 'posterior_predictive' of the draws (the file has: "
                              f"posterior)")
    assert load_results(folder, ()).require(("posterior",)).summary.seed > 0


def test_draws_of_another_run_named(good, tmp_path):
    folder = _copy(good, tmp_path / "res")
    _other_run_attrs(folder)
    with pytest.raises(ResultsError, match="key 'seed': expected the seed of summary.json .* "
                                           "different runs"):
        load_results(folder)


def test_report_refuses_under_a_running_writer(good, tmp_path, capsys):
    from stforecast.cli import main

    folder = _copy(good, tmp_path / "res")
    holder = _hold_lock(folder)
    try:
        before = snapshot(folder)
        assert main(["report", "--results", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another stforecast process is writing" in err
        assert snapshot(folder) == before
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- the lock
def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock (until killed)."""
    code = ("import sys, time\nfrom stforecast import publish\n"
            f"with publish.folder_lock({str(folder)!r}):\n"
            "    print('locked', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_refuses_a_second_writer_and_dies_with_its_process(tmp_path):
    folder = tmp_path / "res"
    holder = _hold_lock(folder)
    try:
        assert publish.is_locked(folder)
        with pytest.raises(ResultsError, match="another stforecast process is writing") as err:
            with publish.folder_lock(folder):
                pass
        assert "\n" not in str(err.value)
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: the kernel releases the lock
        holder.wait()
    assert publish.lock_path(folder).exists()  # the file stays and does not block
    assert not publish.is_locked(folder)
    with publish.folder_lock(folder):
        with publish.folder_lock(folder):  # re-entrant in one process
            assert publish.is_locked(folder)
    assert not publish.is_locked(folder)


# --------------------------------------------------------------------------- the swap
def _replace(folder: Path, files: dict, **kw) -> None:
    with publish.replacing(folder, **kw) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_folder_replaced_as_a_whole(exchange, tmp_path, monkeypatch):
    if not exchange:
        monkeypatch.setattr(publish, "_EXCHANGE", None)
    elif publish._EXCHANGE is None:
        pytest.skip("no atomic exchange on this system")
    folder = tmp_path / "res"
    _replace(folder, {"summary.json": b"1", "forecast.nc": b"1", "report.html": b"1",
                      "fan_revenue.png": b"1"})
    seen = []
    _replace(folder, {"summary.json": b"2", "forecast.nc": b"2"},
             between=lambda: seen.append(sorted(os.listdir(folder)) if folder.exists() else None))
    # a --no-report run over a folder with a report: nothing of the earlier run survives
    assert snapshot(folder) == {"summary.json": b"2", "forecast.nc": b"2"}
    assert seen == ([["forecast.nc", "summary.json"]] if exchange else [None])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".res.lock", "res"]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_failure_inside_leaves_the_folder(exchange, tmp_path, monkeypatch):
    if not exchange:
        monkeypatch.setattr(publish, "_EXCHANGE", None)
    folder = _write_folder(tmp_path / "res")
    before = snapshot(folder)
    with pytest.raises(KeyboardInterrupt):
        with publish.replacing(folder) as tmp:
            (tmp / "summary.json").write_text("half")
            raise KeyboardInterrupt
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".res.lock", "res"]


def test_killed_between_two_renames_is_repaired(tmp_path, monkeypatch):
    monkeypatch.setattr(publish, "_EXCHANGE", None)
    folder = _write_folder(tmp_path / "res")
    before = snapshot(folder)

    def killed():
        raise SystemExit("killed")  # the process ends between the renames

    with pytest.raises(SystemExit):
        _replace(folder, {"summary.json": b"new"}, between=killed)
    assert not folder.exists() and publish.interrupted(folder) is not None
    with pytest.raises(ResultsError, match="killed while replacing"):
        load_results(folder)
    with publish.folder_lock(folder):
        publish.clean(folder)  # what the next run does first
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".res.lock", "res"]


def test_leftovers_of_dead_processes_cleaned(tmp_path):
    dead = _dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = [f".res.tmp-{dead}-1a2b3c4d", f".res.tmp-{dead}", f".res.old-{dead}-0f0f0f0f",
                f".res.tmp-{alive.pid}-aaaa0000",  # same folder: the lock says it is stale
                f".other.tmp-{dead}-00000000"]
        kept = [f".other.tmp-{alive.pid}-11111111",  # another folder's live writer
                "notes", ".res.tmp-notapid", f".res.old-{dead}-backup"]
        for name in left + kept:
            (tmp_path / name).mkdir()
            (tmp_path / name / "forecast.nc").write_bytes(b"x" * 100)
        kept.append(f".res.tmp-{dead}-2b3c4d5e")  # a name like ours, but not only results
        (tmp_path / kept[-1]).mkdir()
        (tmp_path / kept[-1] / "thesis.docx").write_text("the user's")
        (tmp_path / left[0] / ".report.html.x1y2.tmp").write_text("the report's own temp")
        (tmp_path / f".universe.json.tmp-{dead}").write_text("a file, not a staging folder")
        _replace(tmp_path / "res", {"summary.json": b"new"})
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == sorted(kept + [".res.lock", "res", f".universe.json.tmp-{dead}"])
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("content", ["notes.txt", "sub/", "forecast.nc/"])
def test_folder_with_other_files_is_not_replaced(content, tmp_path):
    folder = _write_folder(tmp_path / "res")
    if content.endswith("/"):
        (folder / content.rstrip("/")).unlink(missing_ok=True)
        (folder / content.rstrip("/")).mkdir()
    else:
        (folder / content).write_text("the user's")
    before = snapshot(tmp_path)
    with pytest.raises(ResultsError, match="which no run writes; a run replaces the whole") as e:
        _replace(folder, {"summary.json": b"new"})
    assert "\n" not in str(e.value)
    assert {k: v for k, v in snapshot(tmp_path).items() if k != ".res.lock"} == before


def test_out_that_is_a_file_or_a_root_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="it is a file"):
        _replace(tmp_path / "file", {"summary.json": b"new"})
    assert (tmp_path / "file").read_text() == "x"
    with pytest.raises(ResultsError, match="not a file system root"):
        _replace(Path("/"), {"summary.json": b"new"})


def test_a_link_to_a_results_folder_stays_a_link(tmp_path):
    target = _write_folder(tmp_path / "data" / "res")
    link = tmp_path / "res"
    link.symlink_to(target)
    _replace(link, {"summary.json": b"new"})
    assert link.is_symlink() and (target / "summary.json").read_bytes() == b"new"


# --------------------------------------------------------------------------- kills (slow lane)
#: Tiny runs; every run has one seed, so all read the fit the first one put in the session's fit
#: cache. The previous results have 100 paths, the new ones 200 (``settings.paths`` tells them).
TINY = ["--draws", "50", "--tune", "50", "--chains", "2", "--seed", "7", "--no-progress"]
STAGES = ("fit", "simulate", "write", "report", "publish")
WAIT_S = 600


def _cli(*args, exchange=True) -> list[str]:
    pre = "" if exchange else "import stforecast.publish as p; p._EXCHANGE = None; "
    return [sys.executable, "-c",
            pre + "import sys; from stforecast.cli import main; sys.exit(main(sys.argv[1:]))",
            *args]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg", **extra}


def _run(*args, exchange=True) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args, exchange=exchange), capture_output=True, text=True,
                          env=_env(), timeout=WAIT_S)


def _new_run(out: Path, *extra) -> list[str]:
    return ["run", "--out", str(out), "--paths", "200", *TINY, *extra]


def _run_paused(out: Path, stage: str, *extra, exchange=True) -> subprocess.Popen:
    """A run into ``out`` that pauses at ``stage`` (the test hook); returns once it is there."""
    marker = out.parent / f"paused-{stage}-{time.monotonic_ns()}"
    proc = subprocess.Popen(_cli(*_new_run(out, *extra), exchange=exchange),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(STFORECAST_TEST_PAUSE_AT=f"{stage}:{marker}"))
    deadline = time.monotonic() + WAIT_S
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {stage}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no pause at {stage}"
        time.sleep(0.1)
    assert marker.read_text().split()[0] == str(proc.pid)
    marker.unlink()
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _paths(out: Path) -> int:
    return load_results(out).summary.settings.paths


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A complete results folder with its report (a real tiny run, 100 paths, in a subprocess;
    its fit is in the session's fit cache, which every later run reads)."""
    out = tmp_path_factory.mktemp("previous") / "res"
    # TINY's fit, made first in this process (it compiles the model once for the session's
    # worker, not in a subprocess): every run below, this one too, reads it
    from shared_fits import ensure_fit
    from stforecast.fit import FitSettings
    from stforecast.run import RunSettings
    ensure_fit(RunSettings(seed=7, fit=FitSettings(draws=50, tune=50, chains=2)))
    proc = _run("run", "--out", str(out), "--paths", "100", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").exists() and _paths(out) == 100
    return out


@pytest.fixture(scope="module")
def killed(previous, tmp_path_factory):
    """A copy of the previous results, into which the runs of the kill tests are killed."""
    out = tmp_path_factory.mktemp("kills") / "res"
    _copy(previous, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_run_killed_at_a_stage_leaves_previous_results(stage, killed, previous):
    before = snapshot(previous)
    staged_before = _leftovers(killed.parent)
    proc = _run_paused(killed, stage, *([] if stage == "report" else ["--no-report"]))
    _kill(proc)
    assert snapshot(killed) == before
    staged = sorted(set(_leftovers(killed.parent)) - set(staged_before))
    assert len(staged) == (stage in ("write", "report", "publish")), staged
    if staged:  # the staging folder is what the kill interrupted
        assert (killed.parent / staged[0] / "summary.json").exists()
        assert (killed.parent / staged[0] / "report.html").exists() == (stage == "report")
    assert _paths(killed) == 100


@pytest.mark.slow
def test_next_run_after_the_kills_leaves_no_staging_folder(killed):
    """Runs after the kill tests (same module, same folder): the leftovers of the killed runs
    are gone; ``--no-report`` over a folder with a report leaves no report, and lists none."""
    nxt = _run(*_new_run(killed, "--no-report"))
    assert nxt.returncode == 0, nxt.stderr
    assert _leftovers(killed.parent) == []
    assert _paths(killed) == 200
    assert sorted(p.name for p in killed.iterdir()) == ["forecast.nc", "summary.json"]
    assert "report.html" not in nxt.stdout and "summary.json" in nxt.stdout


@pytest.mark.slow
def test_run_killed_mid_swap(previous, tmp_path):
    """With the atomic exchange: the new folder is in place, whole; without it: the folder is
    missing, readers say so in one line, and the next run puts the previous folder back, byte
    for byte, before it starts fitting."""
    out = tmp_path / "res"
    _copy(previous, out)
    before = snapshot(out)
    if publish._EXCHANGE is not None:
        _kill(_run_paused(out, "swap", "--no-report"))
        assert _paths(out) == 200
        assert sorted(p.name for p in out.iterdir()) == ["forecast.nc", "summary.json"]
        assert _leftovers(tmp_path)
        _restore(previous, out)
    _kill(_run_paused(out, "swap", "--no-report", exchange=False))
    assert not out.exists()
    q = _run("query", "P(target_price > 1)", "--results", str(out))
    assert q.returncode == 2 and q.stderr.count("\n") == 1, q.stderr
    assert "killed while replacing" in q.stderr and q.stdout == ""
    nxt = _run_paused(out, "fit", "--no-report")  # the next run, lock taken, before fitting
    try:
        assert snapshot(out) == before
        assert _leftovers(tmp_path) == []
    finally:
        _kill(nxt)


def _restore(src: Path, out: Path) -> None:
    import shutil
    shutil.rmtree(out)
    _copy(src, out)


@pytest.mark.slow
def test_concurrent_run_into_one_folder_is_refused(previous, tmp_path):
    out = tmp_path / "res"
    _copy(previous, out)
    before = snapshot(out)
    first = _run_paused(out, "fit", "--no-report")
    try:
        second = _run(*_new_run(out, "--no-report"))
        assert second.returncode == 2 and second.stdout == "", second
        assert second.stderr.count("\n") == 1 and "another stforecast process is writing" in \
            second.stderr
        assert snapshot(out) == before
    finally:
        _kill(first)
    assert not publish.is_locked(out)  # the lock died with the run


@pytest.mark.slow
def test_report_replaces_the_charts_as_a_whole(previous, tmp_path):
    out = tmp_path / "res"
    _copy(previous, out)
    (out / "chart_of_an_older_version.png").write_bytes(b"\x89PNG stale")
    data = {n: (out / n).read_bytes() for n in ("forecast.nc", "summary.json")}
    proc = _run("report", "--results", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not (out / "chart_of_an_older_version.png").exists()
    assert {n: (out / n).read_bytes() for n in data} == data
    assert (out / "report.html").read_bytes() == (previous / "report.html").read_bytes()
    assert _leftovers(tmp_path) == []
