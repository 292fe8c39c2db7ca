"""InvarianceClassifier: fine-tuning on real digits, optimiser options, checkpoint round trip."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lightning_inv.data.digits import CentredDigits
from lightning_inv.models.backbones import BackboneError, create_backbone
from lightning_inv.models.classifier import InvarianceClassifier


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.mark.slow
def test_fine_tuning_on_digits_lowers_loss_and_beats_chance(tmp_path):
    torch.manual_seed(0)
    module = InvarianceClassifier("tf_efficientnet_lite0", num_classes=10, lr=1e-3, image_size=48)
    train = DataLoader(
        CentredDigits("train", canvas=48, digit_size=24), batch_size=48, shuffle=True
    )
    val = DataLoader(CentredDigits("val", canvas=48, digit_size=24), batch_size=128)
    trainer = _trainer(max_steps=30, max_epochs=2)
    before = trainer.validate(module, val, verbose=False)[0]
    trainer.fit(module, train)
    after = trainer.validate(module, val, verbose=False)[0]
    assert after["val/loss"] < 0.7 * before["val/loss"]
    assert after["val/acc"] > 0.5  # chance is 0.1
    path = tmp_path / "digits.ckpt"
    trainer.save_checkpoint(path)
    restored = InvarianceClassifier.from_checkpoint(path)
    images = next(iter(val))["image"][:8]
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(images), module(images))
    # create_backbone reads the same Lightning checkpoint as plain weights.
    backbone, _ = create_backbone("tf_efficientnet_lite0", num_classes=10, checkpoint=path)
    with torch.no_grad():
        torch.testing.assert_close(backbone(restored.normalize(images)), restored(images))


def test_freeze_backbone_trains_the_head_only():
    module = InvarianceClassifier(
        "resnet18", pretrained=False, num_classes=10, freeze_backbone=True
    )
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


def test_backbone_learning_rate_is_scaled():
    module = InvarianceClassifier(
        "resnet18",
        pretrained=False,
        num_classes=10,
        lr=1e-2,
        backbone_lr_scale=0.1,
        optimizer="sgd",
    )
    loader = DataLoader(CentredDigits("val", canvas=32, digit_size=16), batch_size=64)
    trainer = _trainer(max_steps=1)
    trainer.fit(module, loader)
    groups = trainer.optimizers[0].param_groups
    assert groups[0]["initial_lr"] == pytest.approx(1e-2)
    assert groups[1]["initial_lr"] == pytest.approx(1e-3)
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)


def test_label_outside_class_range_is_a_clear_error():
    module = InvarianceClassifier("resnet18", pretrained=False, num_classes=5)
    batch = {"image": torch.rand(2, 3, 32, 32), "label": torch.tensor([1, 7])}
    with pytest.raises(ValueError, match="outside the model's 5 classes"):
        module.training_step(batch, 0)


def test_from_checkpoint_rejects_plain_state_dicts(tmp_path):
    model, _ = create_backbone("resnet18")
    path = tmp_path / "plain.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(BackboneError, match=r"not a checkpoint of train\.py"):
        InvarianceClassifier.from_checkpoint(path)


def test_lie_penalty_is_the_lie_derivative_along_a_random_translation(make_tiny):
    """``translation_lie`` (the training penalty) equals, per image, ||d softmax / dt||^2 along
    cos(a) X_x + sin(a) X_y with the angles it draws, computed from the measuring core's
    derivatives; its gradient reaches the backbone; in training it is of the trained function
    (batch statistics as constants). Catches: a penalty on the logits instead of the softmax,
    one axis only, a penalty detached from the weights, a penalty on the test-time function
    beside a loss on the training one, or one with statistics detached from the weights (both
    collapsed test accuracy on digits)."""
    import math

    from lightning_inv.measuring.lie import Linearized, logit_derivatives, softmax_derivative

    classifier = make_tiny(32)
    images = torch.rand(3, 3, 32, 32)
    torch.manual_seed(5)
    logits, penalty = classifier.translation_lie(images)
    torch.manual_seed(5)
    angle = torch.rand(3, 1, 1, 1) * (2 * math.pi)
    with torch.no_grad():
        base, d = logit_derivatives(Linearized(classifier), images, ("translate_x", "translate_y"))
    along = torch.cos(angle.view(3, 1)) * d[:, 0] + torch.sin(angle.view(3, 1)) * d[:, 1]
    expected = softmax_derivative(base, along[:, None]).pow(2).sum(-1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-3)
    assert torch.allclose(logits, base, atol=1e-4)
    penalty.backward()
    grads = [p.grad for p in classifier.model.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    # In training: the function being trained, its batch statistics held constant: the dual
    # pass gives the training logits, and nothing is updated by it.
    from lightning_inv.models.classifier import recorded_batch_statistics

    classifier.train()
    with recorded_batch_statistics(classifier.model) as statistics:
        trained = classifier(images)
    kept = {n: b.clone() for n, b in classifier.model.named_buffers()}
    torch.manual_seed(5)
    primal, in_training = classifier.translation_lie(images, statistics)
    assert torch.allclose(primal, trained, atol=1e-4)
    assert not torch.allclose(primal, logits, atol=1e-2)  # not the test-time function
    assert in_training.item() > 0
    assert classifier.model.training and classifier.model.bn1.training
    assert all(torch.equal(b, kept[n]) for n, b in classifier.model.named_buffers())
    # Through the statistics to the weights: scaling a convolution followed by a batch norm
    # leaves the training function, hence the penalty, unchanged, so the penalty's gradient has
    # no component along that convolution's weights. With statistics detached from the weights
    # it has one (shrinking them lowers the penalty; the normalisation undoes the shrinking).
    classifier.zero_grad()
    in_training.backward()
    weight = classifier.model.conv1[3].weight  # the deep stem: conv, bn, relu, conv, bn, ...
    assert isinstance(classifier.model.conv1[4], torch.nn.BatchNorm2d)
    along = (weight.grad * weight).sum() / (weight.grad.norm() * weight.norm())
    assert abs(along.item()) < 1e-3
