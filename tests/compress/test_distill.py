"""Distillation (ScaleKD-lite): the objective's parts against their definitions (the task loss
when every teacher term is off, T^2 KL, CAP's shapes and mask, the DC-free view as the DCT
with its zero frequency removed), the job end to end (the notes, the written run, an exact
resume) and one-line refusals of students and teachers that cannot be paired."""
import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from anyformer import catalog, rundir
from anyformer.compress import compress, distill
from anyformer.compress.data import Judged
from anyformer.compress.distill import hidden_states, parse_layers
from anyformer.compress.distill_loss import CrossAttentionProjector, DistillObjective, feature_distance, logit_distance, remove_dc
from anyformer.errors import ConfigError
from anyformer.tasks.evaluation import evaluate
from anyformer.tasks.resolve import model_for_task
from tests.cli_run import run_cli
from tests.infer.helpers import train_tiny
from tests.train.killing import killed_after_first_checkpoint

CPU = torch.device("cpu")
# Narrower, shallower, another mixer and 4 x 4 patches (5 tokens) against the teacher's 2 x 2 (17).
STUDENT = {"preset": "vit", "dim": 16, "depth": 1, "heads": 2, "mixer": "fnet", "encoder": {"name": "patches", "patch_size": 4}}
STEPS = 6
# Student layer 0 against teacher layer 0 (through the teacher's layer 1: TPP) and layer 1 (direct).
LAYERS = "0:0,0:-1"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    # Checkpoints every 3 steps, which the students inherit: the resume test stops one at step 3.
    return train_tiny({"name": "digits"}, tmp_path_factory.mktemp("distill") / "teacher", model="vit",
                      **{"model.depth": 2, "train.checkpoint_every": 3})


@pytest.fixture(scope="module")
def distilled(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "out"
    before = digest(teacher)
    result = compress(teacher, "distill", out, device="cpu", student=STUDENT, steps=STEPS, layers=LAYERS)
    assert digest(teacher) == before  # the teacher run is never written to
    return out, result


@pytest.fixture(scope="module")
def task():
    return catalog.build_task({"name": "digits"})


def tiny_pair(task, teacher_depth=2):
    torch.manual_seed(0)
    teacher = catalog.create(model_for_task({"preset": "vit", "dim": 32, "depth": teacher_depth, "heads": 2}, task)).eval()
    student = catalog.create(model_for_task(STUDENT, task))
    return teacher, student, task.splits()["train"].batch(torch.arange(4))


def test_with_every_teacher_term_off_the_objective_is_the_task_loss(task):
    teacher, student, batch = tiny_pair(task)
    teacher.forward = lambda *a, **k: pytest.fail("no teacher term: the teacher is never run")
    objective = DistillObjective(teacher, task, alpha=0.0, temperature=1.0, feature_weight=0.0, pairs=[(0, 1)],
                                 shapes=[((5, 16), (17, 32))], perceive=[False], heads=2)
    assert list(objective.parameters()) == []  # no projector without a feature term
    out, hidden = student(batch.inputs, return_hidden=True)
    assert torch.equal(objective(student, batch, out, hidden), task.loss(out, batch.target))


def test_logits_alone_are_t_squared_kl_and_alpha_weighs_them_against_the_task(task):
    teacher, student, batch = tiny_pair(task)
    out, hidden = student(batch.inputs, return_hidden=True)
    with torch.no_grad():
        t_out = teacher(batch.inputs)
    T = 3.0
    kl = F.kl_div(F.log_softmax(out / T, -1), F.log_softmax(t_out / T, -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(logit_distance(out, t_out, T), T * T * kl, rtol=1e-6, atol=0)
    assert float(logit_distance(t_out, t_out, T)) == pytest.approx(0.0, abs=1e-7)
    objective = DistillObjective(teacher, task, 0.25, T, 0.0, [], [], [], 2)
    want = 0.75 * task.loss(out, batch.target) + 0.25 * T * T * kl
    torch.testing.assert_close(objective(student, batch, out, hidden), want, rtol=1e-6, atol=0)


def test_the_projector_maps_student_tokens_to_the_teachers_and_ignores_padding():
    torch.manual_seed(0)
    cap = CrossAttentionProjector(student_dim=12, teacher_dim=20, student_tokens=7, teacher_tokens=5, heads=4)
    x = torch.randn(3, 7, 12)
    assert cap(x).shape == (3, 5, 20) and cap(x, length=4).shape == (3, 4, 20)
    assert cap(x[:, :6]).shape == (3, 5, 20)  # a shorter student sequence: the first positions
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[:, 5:] = False
    changed = x.clone()
    changed[:, 5:] = 100.0  # padded tokens: whatever they hold, the queries never read them
    torch.testing.assert_close(cap(changed, mask), cap(x, mask), rtol=0, atol=1e-6)
    assert not torch.allclose(cap(changed), cap(x))


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix C (C @ x transforms x along its first axis)."""
    k, i = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c


def test_the_dc_free_view_is_the_reference_dct_with_its_zero_frequency_removed():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, dtype=torch.float64)  # 16 tokens: a 4 x 4 feature map, 3 channels
    view = remove_dc(x)
    torch.testing.assert_close(view.mean(dim=1), torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=1e-12)
    c = dct_matrix(4)
    grid = x.reshape(2, 4, 4, 3).permute(0, 3, 1, 2)  # [B, C, H, W], as the reference's feature maps
    freq = c @ grid @ c.T
    freq[:, :, 0, 0] = 0  # the reference zeroes the (0, 0) coefficient of the 2-D DCT
    back = (c.T @ freq @ c).permute(0, 2, 3, 1).reshape(2, 16, 3)
    torch.testing.assert_close(view, back, rtol=0, atol=1e-12)
    mask = torch.tensor([[True] * 10 + [False] * 6, [True] * 16])
    masked = remove_dc(x, mask)
    torch.testing.assert_close(masked[0, :10].mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(masked[0, 10:], x[0, 10:])  # padding left as it is
    # The feature distance: 0 for the same direction at any scale, 4 for the opposite one.
    assert float(feature_distance(3 * x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(feature_distance(-x, x)) == pytest.approx(4.0)
    assert float(feature_distance(-x, x, torch.zeros(2, 16, dtype=torch.bool))) == 0.0


def test_feature_mimicking_reaches_the_student_and_every_projector_but_never_the_teacher(task):
    teacher, student, batch = tiny_pair(task)
    objective = DistillObjective(teacher, task, 0.5, 1.0, 1.0, [(0, 0), (0, 1)], [((5, 16), (17, 32))] * 2, [True, False], 2)
    assert not any(n.startswith("teacher") for n in objective.state_dict())  # the teacher is not checkpointed
    out, hidden = student(batch.inputs, return_hidden=True)
    objective(student, batch, out, hidden).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.parameters())
    assert student.stack.blocks[0].part("ffn").fc1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_the_job_reports_teacher_alone_and_distilled_and_writes_a_run_that_loads(distilled, teacher):
    out, result = distilled
    notes = result["notes"]
    metric = notes["metric"]
    assert metric == result["metric"] == "accuracy" and notes["steps"] == STEPS
    assert notes["teacher"]["test"][metric] == result["before"][metric]
    assert notes["alone"]["steps"] == notes["distilled"]["steps"] == STEPS
    assert notes["alone"]["parameters"] == notes["distilled"]["parameters"] == result["after"]["parameters"]
    assert notes["alone"]["test"] != notes["distilled"]["test"]  # the objective changed the training
    assert notes["objective"]["layers"] == [[0, 0], [0, 1]] and notes["objective"]["perception"] == [True, False]
    assert rundir.read_json(out / "compress.json")["notes"] == rundir.jsonable(notes)
    model, config = catalog.load_run(out)
    assert config["model"]["dim"] == 16 and config["model"]["encoder"]["patch_size"] == 4
    fresh = evaluate(model, catalog.build_task(config["task"]), "test", 64, CPU, "fp32")
    assert fresh[metric] == result["after"][metric] == notes["distilled"]["test"][metric]
    assert rundir.read_json(out / "summary.json")["final"]["test"][metric] == fresh[metric]
    # Both training runs are ordinary run directories; the distilled one is the written model.
    assert load_file(out / "model.safetensors").keys() == load_file(out / "distill" / "model.safetensors").keys()
    assert all(torch.equal(load_file(out / "model.safetensors")[k], v) for k, v in load_file(out / "distill" / "model.safetensors").items())
    assert rundir.read_json(out / "alone" / "summary.json")["steps"] == STEPS


def test_a_distillation_stopped_midway_resumes_exactly(distilled, teacher, tmp_path, monkeypatch):
    whole, _ = distilled

    with killed_after_first_checkpoint(monkeypatch):  # a kill right after the step-3 checkpoint is on disk
        compress(teacher, "distill", tmp_path / "out", device="cpu", student=STUDENT, steps=STEPS, layers=LAYERS, alone=False)
    part = tmp_path / "out" / "distill"
    state = load_file(part / "state.safetensors")
    assert rundir.read_json(part / "state.json")["step"] == 3 and any(k.startswith("objective.") for k in state)
    with pytest.raises(ConfigError, match="started with other alpha"):
        compress(teacher, "distill", tmp_path / "out", device="cpu", student=STUDENT, steps=STEPS, layers=LAYERS, alpha=0.2)
    compress(teacher, "distill", tmp_path / "out", device="cpu", student=STUDENT, steps=STEPS, layers=LAYERS, alone=False)
    for name in ("model.safetensors", "state.safetensors"):  # the student, and the projectors with their optimizer state
        a, b = load_file(whole / "distill" / name), load_file(part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "out" / "distill" / "metrics.jsonl").read_text() == (whole / "distill" / "metrics.jsonl").read_text()


def fake_run(folder: Path, model: dict, **fields) -> Path:
    """A run directory of an untrained model on digits (no training needed to be refused)."""
    task = catalog.build_task({"name": "digits"})
    cfg = model_for_task(model, task, **fields)
    folder.mkdir(parents=True)
    rundir.atomic_write_text(folder / "config.yaml", yaml.safe_dump({"model": cfg.to_dict(), "task": {"name": "digits"}}))
    rundir.save_weights(catalog.create(cfg), folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("options, says", [
    ({"student": {"preset": "vit", "head": {"name": "cls", "num_classes": 12}}},
     "--student: the model's head num_classes=12 does not fit task 'digits', whose data needs 10"),
    ({"student": {"preset": "vit", "num_classes": 12}}, "--student: the model's head num_classes=12 does not fit task 'digits'"),
    ({"student": {"preset": "vit", "encoder": {"name": "tokens"}}}, "--student: model.encoder 'tokens' does not fit task 'digits'"),
    ({"student": "no-such-preset"}, "--student: unknown preset 'no-such-preset'"),
    ({}, "distill needs --student"),
    ({"student": Path("s.yaml")}, "--student must be a preset name, a YAML path (a str) or a dict"),
    ({"student": STUDENT, "alpha": 1.5}, "--alpha must be a number in [0.0, 1.0]"),
    ({"student": STUDENT, "temperature": 0}, "--temperature must be a number in (0.0, inf)"),
    ({"student": STUDENT, "feature_weight": -1.0}, "--feature-weight must be a number in [0.0, inf)"),
    ({"student": STUDENT, "steps": 0}, "--steps must be an integer >= 1"),
    ({"student": STUDENT, "layers": "1:0"}, "--layers 1:0: student layer 1 outside 0..0 (the student has 1 layers)"),
    ({"student": STUDENT, "layers": "0:-3"}, "--layers 0:-3: teacher layer -3 outside 0..1 (the teacher has 2 layers)"),
    ({"student": STUDENT, "layers": "last"}, "--layers: 'last' is no pair S:T"),
    ({"student": STUDENT, "heads": 1}, "option 'heads' does not apply to method 'distill'"),
])
def test_bad_students_and_options_are_one_line_and_write_nothing(teacher, tmp_path, options, says):
    before = digest(teacher)
    with pytest.raises(ConfigError) as err:
        compress(teacher, "distill", tmp_path / "out", device="cpu", **options)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and digest(teacher) == before


def test_teachers_that_cannot_teach_the_task_are_refused(tmp_path):
    wrong = fake_run(tmp_path / "wrong", {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}, num_classes=12)
    with pytest.raises(ConfigError, match=r"^the teacher .*wrong: the model's head num_classes=12 does not fit task 'digits'"):
        compress(wrong, "distill", tmp_path / "o1", device="cpu", student=STUDENT)
    staged = fake_run(tmp_path / "nest", {"preset": "nest", "dim": 16, "arch": {"name": "nest", "block_size": 1}})
    with pytest.raises(ConfigError, match=r"--perception: the teacher's arch 'nest' cannot run its later layers alone.*--no-perception"):
        compress(staged, "distill", tmp_path / "o2", device="cpu", student=STUDENT, layers="0:0")
    # Judged by closeness to its outputs on a file of sentences (--data FILE), there is no task to train on.
    sentences = Judged([], None, "cosine", True)
    with pytest.raises(ConfigError, match="distill trains the student on a task: pass --data TASK"):
        distill.apply(catalog.load_run(staged)[0], {}, sentences, CPU, student=STUDENT, out=tmp_path / "o3")
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_hidden_states_are_required_and_layers_parse():
    class NoHidden(torch.nn.Module):
        def forward(self, x, mask=None):
            return x

    batch = catalog.build_task({"name": "digits"}).splits()["train"].batch(torch.arange(2))
    with pytest.raises(ConfigError, match="the teacher's arch NoHidden returns no hidden states"):
        hidden_states(NoHidden(), batch, "teacher")
    assert parse_layers("0:1, -1:-1") == [(0, 1), (-1, -1)] == parse_layers([[0, 1], "-1:-1"])


def test_the_command_takes_the_teacher_as_run_or_teacher_but_not_two(teacher, tmp_path, capsys):
    code, _, err = run_cli(["compress", teacher, "--teacher", tmp_path, "--method", "distill", "--out", tmp_path / "o",
                            "--student", "vit"], capsys)
    assert code == 2 and "differ; give the run to compress once" in err and len(err.strip().splitlines()) == 1
    # --teacher alone is the run: the refusal comes from distill's own options, after the run was read.
    code, _, err = run_cli(["compress", "--teacher", teacher, "--method", "distill", "--out", tmp_path / "o",
                            "--student", "vit", "--alpha", "2"], capsys)
    assert code == 2 and "--alpha must be a number in [0.0, 1.0], got 2.0" in err
    code, _, err = run_cli(["compress", "--method", "distill", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "give the run directory to compress" in err


def test_an_imported_teacher_distils_on_the_task_data_names(tmp_path):
    import transformers as T
    from anyformer.interop.hf.convert import import_hf
    T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=256, n_positions=256)).save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "run")
    gpt = {"preset": "gpt", "dim": 16, "depth": 1, "heads": 2}
    with pytest.raises(ConfigError, match="pass --data with a file of sentences .* or a task"):
        compress(tmp_path / "run", "distill", tmp_path / "o0", device="cpu", student=gpt)
    text = Path(__file__).with_name("sentences.txt")  # a small corpus: a byte-level lm task of a few windows
    result = compress(tmp_path / "run", "distill", tmp_path / "out", data=f"lm:{text}", device="cpu", student=gpt, steps=2,
                      layers="0:0", alone=False)
    notes = result["notes"]  # language modelling: the KL over real target positions, TPP through layer 1
    assert notes["objective"]["perception"] == [True] and notes["distilled"]["steps"] == 2
    assert rundir.read_config(tmp_path / "out" / "distill")["task"]["name"] == "lm"
    assert notes["distilled"]["test"]["loss"] == result["after"]["loss"]
