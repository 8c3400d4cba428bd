"""The CLI run as a user runs it: a real process, its output and its exit code."""
import subprocess
import sys

import pytest

from anyformer.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "anyformer", *args], capture_output=True, text=True, timeout=120)


def test_list_prints_catalogue_as_a_user_sees_it():
    proc = run("list", "mixer")
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
