"""The fine-tuning loss is the paper's (MedSAM's): Dice with sigmoid and squared predictions + BCE on logits."""

from __future__ import annotations

import math

import pytest
import torch

from bratsmedsam.segmenter.finetune import loss_fn


def test_the_loss_equals_the_papers_formula_on_a_hand_computed_example():
    # Logits on a 2x2 slice, chosen so the sigmoids are round: s(0) = 1/2, s(ln 3) = 3/4, s(-ln 3) = 1/4.
    ln3 = math.log(3.0)
    logits = torch.tensor([[[[0.0, ln3], [-ln3, 0.0]]]])  # (B=1, C=1, H=2, W=2)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # p = (1/2, 3/4, 1/4, 1/2), t = (1, 1, 0, 0)
    # Dice (squared_pred): 1 - (2 sum(p t) + e) / (sum(p^2) + sum(t^2) + e), MONAI's smoothing e = 1e-5
    #   sum(p t) = 1/2 + 3/4 = 5/4; sum(p^2) = 1/4 + 9/16 + 1/16 + 1/4 = 9/8; sum(t^2) = 2
    #   -> 1 - (5/2 + e) / (25/8 + e) = 1 - 0.8 = 0.2 (to 1e-6)
    # BCE with logits, mean over the 4 pixels: -[t log p + (1 - t) log(1 - p)]
    #   = (ln 2 + ln 4/3 + ln 4/3 + ln 2) / 4 = ln(8/3) / 2 = 0.490415
    e = 1e-5
    dice = 1 - (2.5 + e) / (25 / 8 + e)
    bce = math.log(8 / 3) / 2
    assert abs(dice - 0.2) < 1e-6 and abs(bce - 0.4904146) < 1e-6
    assert float(loss_fn()(logits, target)) == pytest.approx(dice + bce, abs=1e-6)  # 0.690415


def test_the_loss_is_monais_dice_plus_bce_with_logits_on_one_channel_logits():
    """MedSAM's training script composes exactly these two; DiceCELoss must not fall back to cross-entropy
    (which is 0 for one channel) or weight the terms differently."""
    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 37, 53, generator=g) * 3
    target = (torch.rand(1, 1, 37, 53, generator=g) > 0.6).float()
    want = (DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")(logits, target)
            + torch.nn.BCEWithLogitsLoss()(logits, target))
    got = loss_fn()(logits, target)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert float(got) > float(torch.nn.BCEWithLogitsLoss()(logits, target)) + 0.05  # the Dice term is there


def test_the_loss_falls_as_the_logits_agree_with_the_target():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    losses = [float(loss_fn()(k * (2 * target - 1), target)) for k in (0.0, 1.0, 4.0)]
    assert losses[0] > losses[1] > losses[2]



def test_the_iou_head_loss_is_the_squared_error_of_the_predicted_against_the_actual_iou():
    import torch

    from bratsmedsam.segmenter.finetune import iou_head_loss

    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1  # 4 px
    logits = -torch.ones(2, 1, 4, 4)
    logits[0, 0, :2, :3] = 1  # 6 px predicted, 4 of them right: IoU 4/6
    # second sample: nothing true, nothing predicted -> IoU 1 by convention
    pred = torch.tensor([[0.5], [0.8]])
    expected = ((0.5 - 4 / 6) ** 2 + (0.8 - 1.0) ** 2) / 2
    assert float(iou_head_loss(logits, target, pred)) == pytest.approx(expected, rel=1e-6)
