# Transfer schedule of the NFNet paper, Sec. 6.2: fine-tune all layers on ImageNet with a
# total batch of 2048 and "a small learning rate of 0.1 with cosine annealing for 15,000
# steps". The paper states no warmup and no lr scaling for it: lr 0.1 is for batch 2048.
# SGD-Nesterov 0.9, wd 2e-5 and AGC 0.01 (not on the classifier weight) as in the NFNet
# recipe (the paper does not list them for fine-tuning). No EMA.
optim_wrapper = dict(
    # bf16 autocast where the GPU has it, else fp16 (logged); no loss scaling for bf16.
    type='AmpAGCOptimWrapper',
    dtype='auto',
    loss_scale='auto',
    constructor='AGCOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=2e-5),
    clip_grad=dict(type='agc', clipping=0.01, eps=1e-3, exclude=['head.fc.weight']),
)

max_iters = 15000
param_scheduler = [
    # T_max defaults to end - begin (MMEngine), so --cfg-options train_cfg.max_iters=N,
    # which moves `end` (tools/train.py), also moves the cosine's period.
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000)
val_cfg = dict()
test_cfg = dict()

# 8 GPUs x 256 = 2048; other totals: --auto-scale-lr rescales lr 0.1 linearly.
auto_scale_lr = dict(base_batch_size=2048, enable=False)

# RNGStateHook: RNG states in every checkpoint, restored on resume (docs/training.md).
custom_hooks = [dict(type='NFPlotCurveHook'), dict(type='NFRNGStateHook')]
