"""Diagnostics: the input-weight alignment score (docs/method.md#alignment-score), the theory training mode it
needs, and update alignment while training (cosine to bp, feedback angle, distance from init).

>>> pair = TheoryPair(model, lr=1.0)
>>> pair.train_epoch(data)
>>> alignment_metrics(pair.alignment(x, torch.Generator().manual_seed(0)))   # {"align/0": ...}
>>> Trainer(..., epoch_metrics=[update_alignment_metric(model, x_probe, y_probe)])
"""

from widealign.diagnostics.alignment_score import (
    LayerAlignment,
    alignment_metrics,
    alignment_scores,
    fan_out,
    layer_alignment,
    layer_input_shapes,
    project,
    shuffled_update,
)
from widealign.diagnostics.theory import TheoryPair
from widealign.diagnostics.update_alignment import (
    distances_from_init,
    feedback_angles,
    update_alignment,
    update_alignment_metric,
    update_cosines,
    weight_snapshot,
)

__all__ = [
    "LayerAlignment",
    "TheoryPair",
    "alignment_metrics",
    "alignment_scores",
    "distances_from_init",
    "fan_out",
    "feedback_angles",
    "layer_alignment",
    "layer_input_shapes",
    "project",
    "shuffled_update",
    "update_alignment",
    "update_alignment_metric",
    "update_cosines",
    "weight_snapshot",
]
