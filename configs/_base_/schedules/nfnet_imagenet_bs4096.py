# NFNet ImageNet schedule (paper Sec. 6.1 + DeepMind's released config): total batch 4096,
# 360 epochs, SGD + Nesterov 0.9, lr 0.1 x 4096 / 256 = 1.6, 5 warmup epochs from 0, cosine
# to 0, weight decay 2e-5 (not on gains / biases / skip gains), AGC lambda 0.01 on every
# parameter but the classifier weight, EMA of the weights with decay 0.99999.
# (the types below come from nfnets_mm: the model base / leaf configs import it)
optim_wrapper = dict(
    # DeepMind trains in bf16 with fp32 master weights: dtype='auto' autocasts to bf16
    # where the GPU computes it natively (Ampere+), else to fp16 with a logged message;
    # loss_scale='auto' = no scaling for bf16, dynamic for fp16. AGC sees the unscaled
    # gradients. dtype='float16' / 'bfloat16' / 'float32' force one.
    type='AmpAGCOptimWrapper',
    dtype='auto',
    loss_scale='auto',
    # Groups the parameters by name: no decay on gains / biases / skip gains (its
    # default paramwise_cfg) and no AGC on the names in clip_grad.exclude.
    constructor='AGCOptimWrapperConstructor',
    optimizer=dict(
        type='SGD', lr=0.1 * 4096 / 256, momentum=0.9, nesterov=True, weight_decay=2e-5),
    clip_grad=dict(type='agc', clipping=0.01, eps=1e-3, exclude=['head.fc.weight']),
)

warmup_epochs = 5
max_epochs = 360
param_scheduler = [
    # Linear warmup "from 0": MMEngine's LinearLR needs start_factor > 0 (its chained
    # update divides by it), so 1e-6 stands for 0; epoch-specified, stepped per iter.
    dict(type='LinearLR', start_factor=1e-6, end_factor=1.0, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    # Cosine decay to exactly 0 over the remaining 355 epochs, stepped per iteration.
    # T_max defaults to end - begin (MMEngine), so --cfg-options train_cfg.max_epochs=N,
    # which moves `end` (tools/train.py), also moves the cosine's period.
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()

# lr 1.6 is for a total batch of 4096 (e.g. 8 GPUs x 512, 16 x 256, 32 x 128). With another
# total batch, `tools/train.py ... --auto-scale-lr` scales the lr linearly (the paper's
# rule); AGC's lambda is not rescaled (the paper uses a smaller lambda for larger batches).
auto_scale_lr = dict(base_batch_size=4096, enable=False)

custom_hooks = [
    # DeepMind's EMA: ema = d * ema + (1 - d) * w after every step, d = min(0.99999,
    # (1 + t) / (10 + t)). DeepMindEMA implements exactly that (MMEngine's
    # MomentumAnnealingEMA is one step off: gamma / (gamma + t)); WarmupEMAHook gives it
    # the initial weights so the first update is 0.1 * w_0 + 0.9 * w_1, as DeepMind's.
    # Validation and saved checkpoints use the averaged weights.
    dict(type='NFWarmupEMAHook', ema_type='NFDeepMindEMA', momentum=1e-5, warmup=True,
         priority='ABOVE_NORMAL'),
    # PNG of loss / lr / AGC clip fraction / accuracy in the run's log folder at the end.
    dict(type='NFPlotCurveHook'),
    # RNG states (Python, NumPy, torch CPU / CUDA, per rank) in every checkpoint, restored
    # on resume (docs/training.md, "What resume restores").
    dict(type='NFRNGStateHook'),
]
