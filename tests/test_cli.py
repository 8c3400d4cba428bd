"""The CLI run as a user runs it: its output and its exit code. A few tests start a real
process; the rest run `main` in this one (each process start costs seconds of imports)."""
import subprocess
import sys
from types import SimpleNamespace

import pytest

from anyformer.cli import main
from tests.cli_run import run_cli


def run(*args):
    """`anyformer ARGS` in a new process, as a user's shell runs it."""
    return subprocess.run([sys.executable, "-m", "anyformer", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli(capsys):
    """`anyformer ARGS` in this process: the same fields as a finished process."""
    def call(*args):
        code, out, err = run_cli(args, capsys)
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return call


def test_list_prints_catalogue_as_a_user_sees_it(cli):
    proc = cli("list", "mixer")
    assert proc.returncode == 0, proc.stderr
    for name in ("softmax", "local", "linear", "L^2", "Katharopoulos"):
        assert name in proc.stdout


def test_show_unknown_preset_one_line_exit_2():
    proc = run("show", "nosuchpreset")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown preset 'nosuchpreset'" in lines[0] and "valid:" in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback():
    proc = run("--debug", "show", "nosuchpreset")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_show_resolves_overrides(capsys):
    main(["show", "vit", "--set", "mixer=linear", "--set", "depth=2"])
    out = capsys.readouterr().out
    assert "name: linear" in out and "depth: 2" in out
    assert "block 1 mixer" in out and "block 2 mixer" not in out and "total" in out


@pytest.mark.parametrize("args,match", [
    (["show", "gpt", "--set", "heads=3"], "not divisible"),
    (["show", "gpt", "--set", "mixer=fnett"], "unknown mixer"),
    (["show", "gpt", "--set", "nonsense"], "key=value"),
    (["list", "mixers"], "did you mean 'mixer'"),
])
def test_errors_exit_2_with_one_line(args, match, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert match in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_show_yaml_file(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  preset: bert\n  depth: 1\n  norm: {name: rmsnorm, placement: peri}\n")
    main(["show", str(path)])
    out = capsys.readouterr().out
    assert "rmsnorm" in out and "peri" in out


def test_unexpected_errors_are_one_line_without_debug(monkeypatch, capsys):
    import anyformer.presets as presets

    def broken(name):
        raise KeyError("boom")

    monkeypatch.setattr(presets, "load_preset", broken)
    with pytest.raises(SystemExit) as done:
        main(["show", "vit"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err


# ---------------------------------------------------------------- one config resolution path

def _read_yaml(path):
    import yaml

    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("setting, field, option, value", [
    ("ffn.ratio=2", "ffn", "ratio", 2.0),
    ("mixer.attn_dropout=0.1", "mixer", "attn_dropout", 0.1),
])
def test_train_takes_an_option_of_a_component_the_preset_brings(tmp_path, setting, field, option, value, cli):
    """`--set component.option=v` merges into the component the model already has, in
    train as in show (before, train failed with 'model.ffn.name: Field required')."""
    out = tmp_path / "run"
    proc = cli("train", "--set", setting, "--set", "dim=16", "--set", "depth=1", "--set", "heads=2",
               "--steps", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    model = _read_yaml(out / "config.yaml")["model"]
    assert model[field][option] == pytest.approx(value)
    assert model[field]["name"] == {"ffn": "mlp", "mixer": "softmax"}[field]
    shown = cli("show", "vit", "--set", setting)
    assert shown.returncode == 0, shown.stderr
    assert _read_yaml_text(shown.stdout)["model"][field][option] == pytest.approx(value)


def _read_yaml_text(text):
    """The YAML that `show` prints above its parameter table."""
    import yaml

    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if "parameters:" in line)
    return yaml.safe_load("\n".join(lines[:end]))


def test_compare_reads_the_users_text_file_given_by_task_path(tmp_path, cli):
    """`--set task.path=` supplies the text task's required path before the task is checked
    (before: "option 'path': Field required")."""
    rows = [(f"{'good great fine' if i % 2 else 'bad awful poor'} item {i}", "pos" if i % 2 else "neg") for i in range(60)]
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    out = tmp_path / "cmp"
    proc = cli("compare", "--task", "text-csv", "--set", f"task.path={path}", "--models", "bert",
               "--steps", "2", "--set", "dim=16", "--set", "depth=1", "--set", "heads=2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    import json

    result = json.loads((out / "results.json").read_text())
    models = [r for r in result["rows"] if not r["baseline"]]
    assert result["task"] == "text-csv" and [r["model"] for r in models] == ["bert"]
    assert models[0]["steps"] == 2
    config = _read_yaml(out / "bert" / "seed-0" / "config.yaml")
    assert config["task"]["path"] == str(path) and config["model"]["dim"] == 16


def test_compare_task_argument_after_a_colon_names_the_users_file(tmp_path, cli):
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(f"w{i} x,{'ab'[i % 2]}\n" for i in range(40)))
    proc = cli("compare", "--task", f"text-csv:{path}", "--models", "bert", "--steps", "1",
               "--set", "dim=16", "--set", "depth=1", "--set", "heads=2", "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    assert _read_yaml(tmp_path / "c" / "bert" / "seed-0" / "config.yaml")["task"]["path"] == str(path)


def test_compare_takes_an_option_of_a_component_the_preset_brings(tmp_path, cli):
    out = tmp_path / "cmp"
    proc = cli("compare", "--task", "digits", "--models", "vit", "--steps", "1", "--set", "ffn.ratio=2",
               "--set", "dim=16", "--set", "depth=1", "--set", "heads=2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    ffn = _read_yaml(out / "vit" / "seed-0" / "config.yaml")["model"]["ffn"]
    assert ffn == {**ffn, "name": "mlp", "ratio": 2.0, "activation": "gelu"}  # the preset's other options kept


def test_set_model_names_a_preset_in_train_and_is_a_clear_error_in_show(tmp_path, cli):
    proc = cli("train", "--set", "model=gpt", "--set", "task=modular", "--set", "train.steps=1",
               "--set", "dim=16", "--set", "depth=1", "--set", "heads=2", "--out", str(tmp_path / "g"))
    assert proc.returncode == 0, proc.stderr
    assert _read_yaml(tmp_path / "g" / "config.yaml")["model"]["preset"] == "gpt"
    proc = cli("show", "vit", "--set", "model=gpt")
    assert proc.returncode == 2 and "names no model field" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_train_with_two_assignments_after_one_set_says_how_to_repeat_it(cli):
    proc = cli("train", "--set", "dim=16", "depth=1")
    assert proc.returncode == 2 and "--set dim=16 --set depth=1" in proc.stderr


def _damage(run_dir, name, how):
    path = run_dir / name
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    elif how == "pickle":  # a pickle where safetensors belong: refused, never unpickled
        import pickle

        path.write_bytes(pickle.dumps({"step": 1}))
    elif how == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("command, name, how", [
    ("resume", "state.json", "truncate"),
    ("resume", "state.safetensors", "truncate"),
    ("resume", "state.safetensors", "pickle"),
    ("resume", "model.safetensors", "truncate"),
    ("eval", "config.yaml", "empty"),
    ("eval", "model.safetensors", "pickle"),
])
def test_a_damaged_run_directory_is_refused_in_one_line_and_left_as_it_was(tmp_path, capsys, command, name, how):
    run_dir = tmp_path / "r"
    small = ["--set", "dim=16", "--set", "depth=1", "--set", "heads=2", "--steps", "4"]
    main(["train", *small, "--set", "train.checkpoint_every=2", "--out", str(run_dir)])
    (run_dir / "summary.json").unlink()  # a run killed after its last checkpoint
    damaged = _damage(run_dir, name, how)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    capsys.readouterr()
    args = ["train", *small, "--set", "train.checkpoint_every=2", "--out", str(run_dir), "--resume"] if command == "resume" \
        else ["eval", str(run_dir)]
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert done.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert str(damaged) in " ".join(err.split()) and "internal error" not in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing was modified


@pytest.mark.parametrize("args, says", [
    (["train", "--set"], "'--set' requires an argument"),
    (["train", "--steps", "abc"], "Invalid value for '--steps'"),
    (["train", "--nosuch"], "No such option: --nosuch"),
    (["nosuchcommand"], "No such command"),
])
def test_parser_errors_are_one_line_not_a_usage_block(args, says, cli):
    proc = cli(*args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], proc.stderr
