"""Probe heads: configuration, losses per problem type, standardisation, save/reload, frozen backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import run_without_package
from hf_jukebox_mir.models.configuration_jukebox_probe import JukeboxProbeConfig
from hf_jukebox_mir.models.errors import JukeboxConfigError, JukeboxInputError
from hf_jukebox_mir.models.modeling_jukebox_probe import (
    JukeboxProbeForAudioClassification,
    JukeboxProbeForSequenceClassification,
)

DIM = 12


def _config(problem_type: str, num_labels: int = 3, **kwargs) -> JukeboxProbeConfig:
    return JukeboxProbeConfig(
        input_dim=DIM, problem_type=problem_type, id2label={i: f"out{i}" for i in range(num_labels)}, **kwargs
    )


def _labels(problem_type: str, batch: int = 5, num_labels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if problem_type == "single_label_classification":
        return torch.randint(0, num_labels, (batch,), generator=g)
    if problem_type == "multi_label_classification":
        return torch.randint(0, 2, (batch, num_labels), generator=g).float()
    return torch.randn(batch, num_labels, generator=g)


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_and_labels():
    config = JukeboxProbeConfig(input_dim=72, hidden_size=512, id2label={0: "major", 1: "minor"})
    assert config.problem_type == "single_label_classification"
    assert config.num_labels == 2 and config.label2id == {"major": 0, "minor": 1}
    assert not config.is_linear and JukeboxProbeConfig().is_linear
    assert JukeboxProbeConfig.model_type == "jukebox_mir_probe"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(problem_type="ranking"), "problem_type must be one of"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
        (dict(hidden_size=0), "hidden_size must be None"),
        (dict(input_dim=0), "input_dim must be a positive integer"),
        (dict(standardize="yes"), "standardize must be True or False"),
        (dict(num_labels=1), "needs num_labels >= 2"),
        (dict(num_labels=0, problem_type="regression"), "num_labels must be an integer >= 1"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(JukeboxConfigError, match=message):
        JukeboxProbeConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ forward / loss


@pytest.mark.parametrize("problem_type", ["single_label_classification", "multi_label_classification", "regression"])
@pytest.mark.parametrize("hidden_size", [None, 16])
def test_loss_per_problem_type(problem_type, hidden_size):
    model = JukeboxProbeForSequenceClassification(_config(problem_type, hidden_size=hidden_size)).eval()
    features = torch.randn(5, DIM)
    labels = _labels(problem_type)
    out = model(features=features, labels=labels)
    assert out.logits.shape == (5, 3)
    if problem_type == "single_label_classification":
        expected = nn.functional.cross_entropy(out.logits, labels)
    elif problem_type == "multi_label_classification":
        expected = nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    else:
        expected = nn.functional.mse_loss(out.logits, labels)
    assert torch.allclose(out.loss, expected)
    loss, logits = model(features=features, labels=labels, return_dict=False)
    assert torch.equal(logits, out.logits) and torch.equal(loss, out.loss)
    assert model(features=features).loss is None


def test_structure_linear_vs_mlp():
    linear = JukeboxProbeForSequenceClassification(_config("regression", hidden_size=None))
    mlp = JukeboxProbeForSequenceClassification(_config("regression", hidden_size=16))
    assert {n for n, _ in linear.named_parameters()} == {"head.classifier.weight", "head.classifier.bias"}
    assert mlp.head.dense.weight.shape == (16, DIM) and mlp.head.classifier.weight.shape == (3, 16)
    # PyTorch-default init (uniform within 1/sqrt(fan_in)), not N(0, 0.02)
    bound = 1 / DIM**0.5
    assert linear.head.classifier.weight.abs().max() <= bound and linear.head.classifier.weight.std() > 0.05


def test_regression_single_output_accepts_flat_labels():
    model = JukeboxProbeForSequenceClassification(_config("regression", num_labels=1))
    out = model(features=torch.randn(4, DIM), labels=torch.randn(4))
    assert out.logits.shape == (4, 1) and out.loss.ndim == 0


def test_input_validation():
    model = JukeboxProbeForSequenceClassification(_config("single_label_classification"))
    with pytest.raises(JukeboxInputError, match=r"expected features of shape \(batch_size, 12\), got \(2, 5\)"):
        model(features=torch.randn(2, 5))
    with pytest.raises(JukeboxInputError, match="must be a float tensor"):
        model(features=[[0.0] * DIM])
    with pytest.raises(JukeboxInputError, match="integer class ids"):
        model(features=torch.randn(2, DIM), labels=torch.tensor([0.5, 1.0]))
    assert model(features=torch.randn(2, 1, DIM)).logits.shape == (2, 3)  # a single stored layer
    multi = JukeboxProbeForSequenceClassification(_config("multi_label_classification"))
    with pytest.raises(JukeboxInputError, match=r"multi-hot labels of shape \(batch_size, 3\)"):
        multi(features=torch.randn(2, DIM), labels=torch.tensor([0, 1]))


def test_standardization_buffers():
    model = JukeboxProbeForSequenceClassification(_config("single_label_classification", dropout=0.0)).eval()
    x = torch.randn(50, DIM, dtype=torch.float64) * 3 + 5
    x[:, 0] = 2.0  # constant feature -> std 1
    model.fit_standardization(x.numpy())
    assert torch.allclose(model.head.feature_mean, x.mean(0).float())
    assert model.head.feature_std[0] == 1.0
    assert torch.allclose(model.head.feature_std[1:], x.std(0, unbiased=False)[1:].float())
    z = ((x - x.mean(0)) / torch.where(x.std(0, unbiased=False) > 0, x.std(0, unbiased=False), 1.0)).float()
    head = model.head
    assert torch.allclose(model(features=x.float()).logits, head.classifier(z), atol=1e-5)
    model.fit_standardization(x, enable=False)
    assert not model.config.standardize and torch.equal(model.head.feature_std, torch.ones(DIM))
    with pytest.raises(JukeboxInputError, match="fit_standardization expects"):
        model.fit_standardization(torch.randn(4, 3))


# ------------------------------------------------------------------------------------------------ save / reload


@pytest.mark.parametrize("problem_type", ["single_label_classification", "multi_label_classification", "regression"])
def test_save_and_reload(tmp_path, problem_type):
    model = JukeboxProbeForSequenceClassification(_config(problem_type, hidden_size=8, feature_source="test"))
    model.fit_standardization(torch.randn(20, DIM) * 2 + 1)
    model.eval()
    x = torch.randn(6, DIM)
    expected = model(features=x).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = JukeboxProbeForSequenceClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.problem_type == problem_type and reloaded.config.feature_source == "test"
    assert reloaded.config.id2label == {0: "out0", 1: "out1", 2: "out2"}
    assert torch.equal(reloaded.head.feature_mean, model.head.feature_mean)
    assert torch.allclose(reloaded(features=x).logits, expected)


def test_auto_classes_after_registration(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

    AutoConfig.register("jukebox_mir_probe", JukeboxProbeConfig, exist_ok=True)
    AutoModel.register(JukeboxProbeConfig, JukeboxProbeForSequenceClassification, exist_ok=True)
    AutoModelForAudioClassification.register(JukeboxProbeConfig, JukeboxProbeForSequenceClassification, exist_ok=True)
    model = JukeboxProbeForSequenceClassification(_config("regression"))
    model.save_pretrained(tmp_path)
    assert isinstance(AutoModelForAudioClassification.from_pretrained(tmp_path), JukeboxProbeForSequenceClassification)
    assert isinstance(AutoModel.from_pretrained(tmp_path), JukeboxProbeForSequenceClassification)


# ------------------------------------------------------------------------------------------------ end to end


class TinyBackbone(nn.Module):
    """(B, samples) -> (B, frames, DIM): strided conv, dropout, batch norm (to check eval mode)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, DIM, kernel_size=8, stride=8)
        self.norm = nn.BatchNorm1d(DIM)
        self.dropout = nn.Dropout(0.5)

    def forward(self, input_values):
        hidden = self.norm(self.conv(input_values[:, None, :]))  # (B, DIM, frames)
        return self.dropout(hidden.transpose(1, 2))  # (B, frames, DIM)


def test_end_to_end_frozen_backbone_gets_no_grad():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = JukeboxProbeForAudioClassification(_config("single_label_classification", hidden_size=8), backbone=backbone)
    for key, value in model.backbone.state_dict().items():  # wrapping never re-initialises the backbone
        assert torch.equal(value, before[key]), key
    model.freeze_base_model()
    model.train()
    assert not model.backbone.training and model.head.training
    out = model(input_values=torch.randn(4, 64), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert torch.equal(model.backbone.norm.running_mean, before["norm.running_mean"])  # eval-mode batch norm
    model.unfreeze_base_model()
    out = model(input_values=torch.randn(4, 64), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert model.backbone.conv.weight.grad is not None


def test_end_to_end_from_probe_and_back(tmp_path):
    torch.manual_seed(0)
    probe = JukeboxProbeForSequenceClassification(_config("multi_label_classification", hidden_size=8))
    probe.fit_standardization(torch.randn(30, DIM))
    backbone = TinyBackbone().eval()
    model = JukeboxProbeForAudioClassification.from_probe(probe, backbone).eval()
    audio = torch.randn(3, 64)
    pooled = backbone(audio).mean(1)
    assert torch.allclose(model(input_values=audio).logits, probe.eval()(features=pooled).logits, atol=1e-6)
    head_only = model.to_features_probe().eval()
    assert torch.allclose(head_only(features=pooled).logits, probe(features=pooled).logits)
    # save / reload the whole model with the same kind of backbone
    model.save_pretrained(tmp_path / "e2e")
    reloaded = JukeboxProbeForAudioClassification.from_pretrained(tmp_path / "e2e", backbone=TinyBackbone()).eval()
    assert torch.allclose(reloaded(input_values=audio).logits, model(input_values=audio).logits, atol=1e-6)
    # the end-to-end folder also loads as a features-only probe (backbone keys ignored)
    features_only = JukeboxProbeForSequenceClassification.from_pretrained(tmp_path / "e2e").eval()
    assert torch.allclose(features_only(features=pooled).logits, probe(features=pooled).logits, atol=1e-6)


def test_end_to_end_custom_feature_fn_and_errors():
    backbone = TinyBackbone().eval()
    model = JukeboxProbeForAudioClassification(
        _config("regression"), backbone=backbone, feature_fn=lambda m, x: m(x).max(dim=1).values
    ).eval()
    audio = torch.randn(2, 64)
    expected = model.head(backbone(audio).max(dim=1).values)
    assert torch.allclose(model(input_values=audio).logits, expected)
    with pytest.raises(JukeboxConfigError, match="needs `backbone=`"):
        JukeboxProbeForAudioClassification(_config("regression"))
    bad = JukeboxProbeForAudioClassification(
        _config("regression"), backbone=backbone, feature_fn=lambda m, x: m(x)[:, :, :4].mean(1)
    )
    with pytest.raises(JukeboxInputError, match=r"expected features of shape \(batch_size, 12\)"):
        bad(input_values=audio)


_REMOTE_LOAD = """
import torch
from transformers import AutoModelForAudioClassification
model = AutoModelForAudioClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "transformers_modules" in type(model).__module__, type(model).__module__
expected = torch.load(sys.argv[2])
assert torch.allclose(model(features=torch.ones(2, 12)).logits, expected, atol=1e-6)
print("ok")
"""


@pytest.mark.slow
def test_trust_remote_code_loads_without_the_package(tmp_path):
    config = _config("multi_label_classification", hidden_size=4)
    model = JukeboxProbeForSequenceClassification(config)
    try:
        config.register_for_auto_class()
        model.register_for_auto_class("AutoModelForAudioClassification")
        model.fit_standardization(torch.randn(10, DIM))
        model.save_pretrained(tmp_path / "probe")
    finally:  # class-level registrations: do not leak into other tests
        JukeboxProbeConfig._auto_class = None
        JukeboxProbeForSequenceClassification._auto_class = None
    assert {"configuration_jukebox_probe.py", "modeling_jukebox_probe.py", "errors.py"} <= {
        p.name for p in (tmp_path / "probe").iterdir()
    }
    torch.save(model.eval()(features=torch.ones(2, DIM)).logits, tmp_path / "expected.pt")
    result = run_without_package(_REMOTE_LOAD, tmp_path / "probe", tmp_path / "expected.pt", tmp_path=tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
