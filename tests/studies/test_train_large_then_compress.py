"""The train-large-then-compress study (Li et al. 2020) on two tiny sizes: every size trained
under one budget through compare, each compressed to int8, pruned to the common parameter
target (met within a few parameters) and both; the rows equal the runs' own records; a rerun
after a simulated interruption (a deleted stage, a training killed after its last checkpoint)
retrains nothing finished, leaves every finished file as it was and gives the same rows."""
import shutil

import pytest

import anyformer as af
from anyformer import catalog
from anyformer.compress.measure import active_parameters
from anyformer.rundir import read_json
from anyformer.studies.train_large_then_compress import TARGET_SHARE, parse_sizes, prune_plan
from tests.cli_run import run_cli
from tests.studies.helpers import COPY, TRAIN, files, without

SIZES = "32x1x4,32x2x4"
OPTIONS = dict(task=COPY, sizes=SIZES, steps=TRAIN["steps"], finetune_steps=2, device="cpu",
               overrides={f"train.{k}": v for k, v in TRAIN.items() if k not in ("steps", "device")})
# Rewritten by every run: the study's results and compare's.
RESULTS = ("study.json", "study.csv", "study.png", "results.json", "results.csv", "report.html", "learning_curves.png",
           "quality_vs_latency.png", "quality_vs_params.png")
# Measured anew when a stage is remade.
TIMED = ("latency_ms", "memory_mb", "run")


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "tltc"
    return out, af.study("train-large-then-compress", out=out, **OPTIONS)


def test_every_size_and_variant_is_a_row_from_its_run(studied):
    out, result = studied
    assert [(r["size"], r["variant"]) for r in result["rows"]] == [
        (s, v) for s in ("32x1x4", "32x2x4") for v in ("full", "int8", "pruned", "pruned+int8")]
    rows = {(r["size"], r["variant"]): r for r in result["rows"]}
    metric = result["metric"]
    for size in ("32x1x4", "32x2x4"):
        trained = out / "train" / size / "seed-0"
        summary = read_json(trained / "summary.json")
        assert rows[(size, "full")]["train_steps"] == summary["steps"] == TRAIN["steps"]  # the same budget for every size
        assert rows[(size, "full")]["quality"] == pytest.approx(summary["final"]["test"][metric])
        assert rows[(size, "full")]["parameters"] == active_parameters(catalog.load_run(trained)[0])
        for variant, folder in (("int8", "int8"), ("pruned", "pruned"), ("pruned+int8", "pruned-int8")):
            stage = read_json(out / "compress" / size / folder / "stage.json")
            assert rows[(size, variant)]["quality"] == stage["after"][metric]
            assert rows[(size, variant)]["run"] == str(out / "compress" / size / folder)
        assert rows[(size, "int8")]["weights_mb"] < rows[(size, "full")]["weights_mb"] / 2
    assert read_json(out / "study.json") == result
    assert len((out / "study.csv").read_text().splitlines()) == 1 + len(result["rows"])
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"


def test_every_size_is_pruned_to_the_common_target(studied):
    out, result = studied
    smallest = min(r["parameters"] for r in result["rows"] if r["variant"] == "full")
    target = result["target_params"]
    assert target == round(TARGET_SHARE * smallest)
    pruned = [r for r in result["rows"] if r["variant"] == "pruned"]
    assert all(abs(r["parameters"] - target) <= 0.01 * target for r in pruned), [r["parameters"] for r in pruned]
    # The larger size loses a larger share of its heads and units to reach the same size.
    small, large = pruned
    assert large["neurons_fraction"] > small["neurons_fraction"] and large["heads_fraction"] >= small["heads_fraction"]
    # The plan predicts the pruned count exactly.
    model, _ = catalog.load_run(out / "train" / "32x2x4" / "seed-0")
    assert prune_plan(model, target).expected == large["parameters"]


def test_a_rerun_after_an_interruption_retrains_nothing_finished(studied, tmp_path, capsys):
    source, first = studied
    out = tmp_path / "tltc"
    shutil.copytree(source, out)
    before = files(out, RESULTS)
    # Interrupted: the large size's training killed after its last checkpoint (no summary
    # yet), and its last stage killed before it finished (its folder gone).
    (out / "train" / "32x2x4" / "seed-0" / "summary.json").unlink()
    shutil.rmtree(out / "compress" / "32x2x4" / "pruned-int8")
    code, stdout, stderr = run_cli(["study", "train-large-then-compress", "--task", "copy", "--out", out, "--resume",
                                    "--sizes", SIZES, "--steps", TRAIN["steps"], "--finetune-steps", 2, "--device", "cpu",
                                    *[a for k, v in COPY.items() if k != "name" for a in ("--set", f"task.{k}={v}")],
                                    *[a for k, v in OPTIONS["overrides"].items() for a in ("--set", f"{k}={v}")]], capsys)
    assert code == 0, stderr
    assert "pruned+int8" in stdout and "finished earlier, read back" in stderr
    after = files(out, RESULTS)
    resumed = "train/32x2x4/seed-0/"  # continued from its checkpoint: only its state files are rewritten
    remade = "compress/32x2x4/pruned-int8/"
    unchanged = {k for k in before if not k.startswith((resumed, remade))}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    # Resumed at its last step: the same weights, so the stages made from them stand.
    assert after[resumed + "model.safetensors"][0] == before[resumed + "model.safetensors"][0]
    rows = read_json(out / "study.json")["rows"]
    assert [without(r, "run", "train_seconds") for r in rows[:7]] == [without(r, "run", "train_seconds") for r in first["rows"][:7]]
    assert rows[:4] == [dict(r, run=r["run"].replace(str(source), str(out))) for r in first["rows"][:4]]
    assert without(rows[7], *TIMED, "train_seconds") == without(first["rows"][7], *TIMED, "train_seconds")


@pytest.mark.parametrize("sizes,message", [
    ("32x2,32x2", r"^--sizes names a size twice"),
    ("32by2", r"^--sizes '32by2': expected DIMxDEPTH or DIMxDEPTHxHEADS"),
    ("30x2x4", r"^--sizes '30x2x4': dim 30 is not divisible by 4 heads"),
])
def test_bad_sizes_are_one_line(sizes, message):
    with pytest.raises(af.ConfigError, match=message):
        parse_sizes(sizes)


def test_an_unreachable_target_and_a_resume_of_nothing_are_refused(studied, tmp_path):
    out, _ = studied
    model, _ = catalog.load_run(out / "train" / "32x2x4" / "seed-0")
    with pytest.raises(af.ConfigError, match=r"^--target-params 100: size 32x2x4 \(26,\d+ parameters\) can lose at most .*raise --target-params to at least"):
        prune_plan(model, 100, "size 32x2x4")
    with pytest.raises(af.ConfigError, match=r"^--resume: .* holds no study to continue"):
        af.study("train-large-then-compress", out=tmp_path / "none", resume=True, **OPTIONS)
    with pytest.raises(af.ConfigError, match=r"^unknown study 'train-large' \(did you mean 'train-large-then-compress'\?\)"):
        af.study("train-large")
