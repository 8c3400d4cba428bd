"""Properties every faithful token mixer has, checked over the whole registry: what an output
can read (reach), what a causal output must not depend on (later tokens, or how many there
are), and that training mode computes the evaluation function unless the mixer declares
itself stochastic. A mixer that legitimately lacks one declares so; the test checks the
declaration (a wrong one fails too)."""
import pytest
import torch

from anyformer import registry

from .helpers import DIM, HEADS, LEN, make_mixer, mixer_class

MIXERS = registry.list_components("mixer")
TOKEN_MIXING = [n for n in MIXERS if mixer_class(n).mixes_tokens]
CAUSAL = [n for n in MIXERS if mixer_class(n).supports_causal]


def _call(mixer, x, layer):
    return mixer(x, layer=layer) if mixer_class(mixer.name).depth_aware else mixer(x)


def _stack(name, layers, causal=False):
    """seed -> `layers` residual layers of the mixer (distinct weights drawn from the seed,
    float64, eval): x [1, L, D] -> [1, L, D]."""
    return lambda seed: _layers(name, layers, causal, seed)


def _layers(name, layers, causal, seed):
    torch.manual_seed(seed)
    mixers = [make_mixer(name, causal=causal).double().eval() for _ in range(layers)]

    def run(x):
        for i, m in enumerate(mixers):
            x = x + _call(m, x, i)
        return x

    return run


def reach(build, length=LEN, draws=8):
    """Bool [L, L]: True where output i depends on input j (the Jacobian's block norms are
    non-zero) for any of a few draws of weights and input: a ReLU score (GAU's relu^2) can
    be exactly 0 at one draw, which is not a structural gap."""
    found = torch.zeros(length, length, dtype=torch.bool)
    for seed in range(draws):
        run = build(seed)
        x = torch.randn(1, length, DIM, dtype=torch.float64, requires_grad=True)
        y = run(x)
        r = torch.randn_like(y)
        rows = []
        for i in range(length):
            (g,) = torch.autograd.grad((y[0, i] * r[0, i]).sum(), x, retain_graph=True)
            rows.append(g[0].norm(dim=-1))
        J = torch.stack(rows)
        # float64: a structural gap is exactly 0, or roundoff (an FFT convolution's ~1e-17).
        found |= J > 1e-12 * J.max()
    return found


@pytest.mark.parametrize("name", TOKEN_MIXING)
def test_declared_reach(name):
    """After `reach_layers` layers every output reads every input; a mixer whose receptive
    field grows with depth (reach_layers None) reads more through two layers than one, and
    a mixer of reach k > 1 does not yet reach everything through k - 1 layers."""
    k = mixer_class(name).reach_layers
    if k is None:
        one, two = reach(_stack(name, 1)), reach(_stack(name, 2))
        assert not one.all(), f"{name}: declares a local receptive field but one layer already reaches every token"
        assert (two & ~one).any() and (one <= two).all(), f"{name}: two layers read no more than one"
        return
    assert reach(_stack(name, k)).all(), f"{name}: declares reach in {k} layer(s), but some inputs never reach some outputs"
    if k > 1:
        assert not reach(_stack(name, k - 1)).all(), f"{name}: declares reach_layers {k} but {k - 1} suffice"


@pytest.mark.parametrize("name", [n for n in CAUSAL if mixer_class(n).mixes_tokens])
def test_causal_reach_reads_the_whole_past(name):
    """A causal mixer's output i reads no j > i; a global one (reach_layers 1) every j <= i."""
    k = mixer_class(name).reach_layers
    R = reach(_stack(name, k or 1, causal=True))
    past = torch.ones(LEN, LEN, dtype=torch.bool).tril()
    assert not (R & ~past).any(), f"{name}: a causal output reads a later token"
    if k == 1:
        assert R[past].all(), f"{name}: a causal output misses part of its past after {k} layer(s)"


@pytest.mark.parametrize("name", [n for n in CAUSAL if not mixer_class(n).needs_grid])
@pytest.mark.parametrize("prefix", [1, 5, LEN // 2])
def test_causal_outputs_do_not_depend_on_the_length(name, prefix):
    """A causal output at i is a function of tokens 0..i alone: the outputs of a prefix equal
    the same positions of the whole sequence (normalising by the total length, slicing by
    it, or selecting over it all break this). Sequences, not grids: a grid fixes L."""
    torch.manual_seed(0)
    cls = mixer_class(name)
    mixer = registry.build("mixer", name, dim=DIM, heads=HEADS, max_len=LEN, causal=True,
                           **cls.example_options).double().eval()
    x = torch.randn(2, LEN, DIM, dtype=torch.float64)
    full = _call(mixer, x, 0)
    part = _call(mixer, x[:, :prefix], 0)
    torch.testing.assert_close(part, full[:, :prefix], rtol=1e-7, atol=1e-9,
                               msg=lambda m: f"{name}: outputs at the first {prefix} positions change with the tokens that follow\n{m}")


@pytest.mark.parametrize("name", MIXERS)
def test_training_mode_computes_the_eval_function_unless_declared_stochastic(name):
    """Without dropout, a mixer that does not declare `stochastic_in_training` gives the same
    output in train and eval mode (one that declares it may differ: a redraw, a sample)."""
    torch.manual_seed(0)
    mixer = make_mixer(name).double()
    x = torch.randn(2, LEN, DIM, dtype=torch.float64)
    y_eval = _call(mixer.eval(), x, 1)
    torch.manual_seed(3)
    y_train = _call(mixer.train(), x, 1)
    assert torch.isfinite(y_train).all()
    if not mixer_class(name).stochastic_in_training:
        torch.testing.assert_close(y_train, y_eval, msg=lambda m: f"{name}: training mode changes the output without declaring it\n{m}")
