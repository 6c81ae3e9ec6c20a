# Mask R-CNN + FPN with an NFNet backbone (NFNet paper Sec. 6.3): MMDetection's R-50 Mask R-CNN
# with the ResNet replaced by NFNet-F0 (leaves set `arch` and the matching checkpoint).
#
# - DeepMind's forward (TF 'SAME' padding, tanh-GELU) because the backbone starts from
#   DeepMind's released ImageNet weights ('dm-nfnets://F0': downloaded and converted in
#   memory; ImageClassifier keys, hence prefix='backbone.').
# - Stage outputs at strides 4, 8, 16, 32 into the FPN; the final 1x1 conv to 2 x 1536
#   only feeds the classifier and is left out, so FPN in_channels are the stage widths of
#   nfnets_mm/variants.py (equal to NFNet(...).out_channels; NFNeckWiringCheckHook checks it
#   at runner start).
# - No normalization layers in the backbone: nothing to freeze or synchronise (no
#   norm_eval, no SyncBN), so any per-GPU batch (1, 2, ...) trains the same model.
#   `frozen_stages` works as in mmdet's ResNet (stem + first N stages get no gradient).
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
from nfnets_mm.engine.optim_wrappers.agc_constructor import detector_output_layers  # noqa
from nfnets_mm.variants import get_variant  # noqa: E402

model = dict(
    backbone=dict(
        _delete_=True,
        type='NFNet',
        arch='F0',
        out_indices=(0, 1, 2, 3),  # strides 4, 8, 16, 32
        with_final_conv=False,
        frozen_stages=-1,
        drop_path_rate=0.1,  # DeepMind's NFNet default (the ImageNet recipe uses 0.25)
        padding='same',
        act_cfg=dict(type='GELU', approximate='tanh'),
        init_cfg=dict(type='Pretrained', checkpoint='dm-nfnets://F0', prefix='backbone.')),
    neck=dict(in_channels=list(get_variant('F0').widths)),
)

# AGC leaves the detector's output layers unclipped, the detection counterpart of
# DeepMind's unclipped classifier: RPN objectness and box deltas, R-CNN class scores and
# box deltas, mask logits (fnmatch patterns on model.named_parameters(); a pattern that
# matches no parameter is an error). Leaves use it as clip_grad.exclude.
agc_exclude = detector_output_layers('MaskRCNN')
